"""What the procedure notebooks (train, evaluate_resolution) call: parameters in, validated objects out.

A notebook's parameters cell holds plain literals (papermill injects new ones);
the next cell hands them to a function here, which turns names into objects and
fails with the core library's message (unknown recipe, field, dataset, device)
before anything long starts.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
import yaml

from ..core.data import Data, load_data
from ..core.devices import pick_device
from ..core.distributed import stream, torchrun_command
from ..core.errors import RunError
from ..core.evaluate import default_resolutions, evaluate, load_data_for, load_model, resolution_sweep
from ..core.optim import lr_schedule
from ..core.paths import find_path, output_path, runs_root
from ..core.recipes import RECIPES, Recipe, Reported, base_recipe, batch_lr, changes, load_recipe, lr_scaling, plan_batch
from ..core.run_options import BY_NAME, check_values, to_flags, train_values
from ..core.runs import atomic_write_text, check_resume, load_run, read_metrics, stamped_folder
from ..core.train import train
from .paper import FIXRES_TIMM, TABLE9_CROP
from .table import epoch_hooks

NOTEBOOK_PROGRESS = ("line", "none")  # a tqdm bar in a saved notebook is noise
TRAIN_NOTEBOOK = "notebooks/procedures/train.ipynb"  # found in the checkout or the installed package (sweep.find_notebook)


def none_if_empty(value: Any) -> Any:
    return None if value in ("", "auto") else value


@dataclass
class TrainSetup:
    """A validated training procedure: what train.ipynb runs. `options` are its run options
    (rsbkit.core.run_options, the notebook's), as :func:`train_setup` checked them; `device` is the one they
    resolved to."""

    recipe: Recipe
    data: Data
    run_dir: Path
    device: str
    options: dict[str, Any] = field(default_factory=dict)
    launch: dict[str, Any] = field(default_factory=dict, repr=False)  # the data arguments torchrun's processes get
    base: Optional[Recipe] = field(default=None, repr=False)  # the named recipe this one builds on (recipes.base_recipe)
    _schedule: Optional[tuple[list[float], list[float]]] = field(default=None, repr=False)

    def option(self, name: str) -> Any:
        return self.options.get(name, BY_NAME[name].default)

    @property
    def nproc(self) -> int:
        return self.option("nproc")

    @property
    def resume(self) -> bool:
        return self.option("resume")

    def train(self, on_epoch: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
        """Run `rsbkit.core.train.train` (under torchrun when ``nproc > 1``), with TensorBoard logging when asked for."""

        with epoch_hooks(self.run_dir, on_epoch, self.option("tensorboard")) as each:
            if self.nproc > 1:
                return self._torchrun(each)
            settings = {k: v for k, v in train_values(self.options).items() if k not in DATA_OPTIONS}  # data: loaded
            return train(self.recipe, self.data, self.run_dir, **{**settings, "device": self.device}, on_epoch=each)

    def torchrun_command(self) -> list[str]:
        """The torchrun command line this setup runs when ``nproc > 1``: every run option that is not its default
        becomes its flag (rsbkit.core.run_options.to_flags); TensorBoard is written here, from metrics.csv."""

        options = {k: v for k, v in self.options.items() if k != "tensorboard"}
        args = [str(self.run_dir / "recipe.yaml"), "--out", str(self.run_dir), "--data", str(self.launch.get("data", "default")),
                *to_flags({**options, "device": self.device})]
        return torchrun_command(self.nproc, args)

    def _torchrun(self, on_epoch: Optional[Callable[[dict[str, Any]], None]]) -> dict[str, Any]:
        """Launch torchrun, stream its log here, and feed `on_epoch` from metrics.csv as epochs end."""

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            (self.run_dir / "recipe.yaml").write_text(self.recipe.to_yaml())
        metrics, seen, stamp = self.run_dir / "metrics.csv", 0, None

        def new_rows() -> None:  # metrics.csv is rewritten whole (atomically) after every epoch: read it when it changed
            nonlocal seen, stamp
            if on_epoch is None or not metrics.is_file() or metrics.stat().st_mtime_ns == stamp:
                return
            stamp = metrics.stat().st_mtime_ns
            rows = read_metrics(metrics)
            for row in rows[seen:]:
                on_epoch(row)
            seen = max(seen, len(rows))

        code = stream(self.torchrun_command(), log=lambda line: print(line, flush=True), every=new_rows)
        result_file = self.run_dir / "result.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else None
        if code != 0 or result is None or result["status"] not in ("completed", "stopped"):
            status = result["status"] if result else "no result.json"
            raise RunError(f"torchrun with {self.nproc} processes exited with code {code} (run status: {status}); "
                           "its log is above")
        return result

    def changes(self):
        """What this run's recipe changes from its base recipe: field, base value, this run's value."""

        return changes(self.recipe, self.base or Recipe())

    def recipe_note(self) -> str:
        """One line: the recipe, its base and where the whole resolved recipe goes."""
        n = len(self.changes())
        base = self.base.name if self.base is not None else "rsbkit's field defaults"
        what = f"{base} as it is" if n == 0 else f"{base} with {n} change{'s' * (n != 1)}"
        return (f"recipe {self.recipe.name}: {what}; every field, resolved (LR after batch scaling, steps per epoch), "
                f"goes to {self.run_dir / 'recipe.yaml'}")

    def schedule(self) -> Optional[tuple[list[float], list[float]]]:
        """(epoch, lr) over the whole run as planned, read once the run has written recipe.yaml."""
        if self._schedule is None and (self.run_dir / "recipe.yaml").is_file():
            self._schedule = planned_schedule(self.run_dir, self.recipe)
        return self._schedule

    def curves(self, rows: list[dict[str, Any]]):
        """The live figure of this run: loss, LR (with the planned schedule) and top-1 per epoch."""
        from .figures import curves_figure  # plotly only where a figure is drawn: the CLI and bench run without it

        return curves_figure(rows, schedule=self.schedule(),
                             title=f"{self.recipe.name}: {self.recipe.model} on {self.data.label}")

    def beside_paper(self, result: dict[str, Any]):
        return beside_paper(result, self.recipe)

    def notebook_note(self) -> str:
        """Where the executed notebook is kept: in the run folder when run by `rsbkit run`/`sweep`."""
        # `rsbkit run`/`sweep` have papermill save into .NAME.ipynb.partial and rename it to NAME.ipynb at the end
        kept = sorted({p.name for p in self.run_dir.glob("*.ipynb")} |
                      {p.name[1:-len(".partial")] for p in self.run_dir.glob(".*.ipynb.partial")})
        if kept:
            return f"the executed notebook is kept in the run folder: {self.run_dir / kept[0]}"
        return (f"no executed notebook in {self.run_dir}: run this notebook with `python -m rsbkit run "
                f"{TRAIN_NOTEBOOK} --out {self.run_dir}` (or give papermill an output path inside "
                "the run folder) to keep it with the run")


DATA_OPTIONS = ("limit_train", "limit_val", "data_root")  # applied when the setup loads the data


def planned_schedule(run_dir: Union[str, Path], recipe: Optional[Recipe] = None) -> Optional[tuple[list[float], list[float]]]:
    """(epoch, lr) over a run as planned, from its recipe.yaml (the LR and steps it resolved), or None before it has one:
    the dashed line under the recorded LR of every curves figure (the train notebook's, the tour's)."""
    path = find_path(run_dir) / "recipe.yaml"
    if not path.is_file():
        return None
    resolved = yaml.safe_load(path.read_text()).get("resolved") or {}
    if "steps_per_epoch" not in resolved:
        return None
    recipe = recipe or load_recipe(path)
    steps = resolved["steps_per_epoch"]
    lrs = lr_schedule(recipe, steps, resolved["lr"])
    stride = max(1, len(lrs) // 2000)  # a plot needs no more points
    return [i / steps for i in range(0, len(lrs), stride)], lrs[::stride]


def run_curves(run_dir: Union[str, Path]) -> list[Path]:
    """Draw a finished run folder's curves (loss, LR over its planned schedule, top-1 per epoch) into it, as the train
    notebook leaves them: ``curves.png``, or ``curves.html`` where no Chromium can export a PNG. What ``rsbkit train``
    calls at its end. Returns the files written; none where plotly is not installed (the GPU image)."""
    try:
        from .figures import curves_figure, save_figure
    except ImportError:
        return []
    folder = find_path(run_dir)
    run = load_run(folder)
    recipe = load_recipe(folder / "recipe.yaml")
    title = f"{recipe.name}: {recipe.model}, {run_scale(run['result'] or {})}"
    files = save_figure(curves_figure(run["metrics"] or [], schedule=planned_schedule(folder, recipe), title=title),
                        folder / "curves")
    return [p for p in (files.png, files.html) if p is not None]


def train_setup(
    *,
    recipe: Union[str, Recipe],
    overrides: Optional[dict[str, Any]] = None,
    data: str = "default",
    seed: Optional[int] = None,
    out_dir: Optional[str] = None,
    options: Optional[dict[str, Any]] = None,
    **named: Any,
) -> TrainSetup:
    """Validate the train notebook's parameters; every error names the parameter and the fix.

    What is trained: `recipe` with `overrides` and `seed`, on `data`, into `out_dir`. How: the run options
    (rsbkit.core.run_options: device, workers, resume, progress, limit_train, ..., nproc), as keywords or in the
    `options` dict (the notebook passes every option its namespace defines, so one that papermill injects arrives
    too). ``nproc > 1`` trains under torchrun (DistributedDataParallel), one process per GPU.
    """
    if overrides is not None and not isinstance(overrides, dict):
        raise RunError(f"overrides must be a dict of recipe fields, e.g. {{'epochs': 5}}; got {overrides!r}")
    if options is not None and not isinstance(options, dict):
        raise RunError(f"options must be a dict of run options, e.g. {{'check_every': 10}}; got {options!r}")
    twice = sorted(set(options or {}) & set(named))
    if twice:
        raise RunError(f"run option(s) {', '.join(twice)} given twice, as a parameter and in options: give each once")
    values = {k: none_if_empty(v) for k, v in {**(options or {}), **named}.items()}
    values.setdefault("progress", "line")
    check_values(values, "notebook")
    if values["progress"] not in NOTEBOOK_PROGRESS:
        raise RunError(f"progress={values['progress']!r}: use one of {', '.join(NOTEBOOK_PROGRESS)} in a notebook")
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = seed

    base = base_recipe(recipe)
    if isinstance(recipe, Recipe):
        recipe = recipe.replace(**overrides) if overrides else recipe
    else:
        recipe = load_recipe(recipe, **overrides)
    nproc = values.get("nproc", 1)
    plan_batch(recipe, nproc, values.get("micro_batch"))  # a batch that cannot be split fails here, naming the numbers
    dataset = load_data(data, root=values.get("data_root"), limit_train=values.get("limit_train"),
                        limit_val=values.get("limit_val"))
    device = str(pick_device(values.get("device")))
    out = output_path(out_dir) if none_if_empty(out_dir) else stamped_folder(recipe.name)
    check_resume(out, values.get("resume", False))
    if nproc > 1 and device.startswith("cuda"):

        if torch.cuda.device_count() < nproc:
            raise RunError(f"nproc={nproc} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                           "use at most one process per GPU")
        device = "cuda"  # each process takes the GPU of its local rank
    values["device"] = device
    return TrainSetup(recipe=recipe, data=dataset, run_dir=out, device=device, options=values, launch=dict(data=data),
                      base=base)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def beside_paper(result: dict[str, Any], recipe: Recipe):
    """This run's numbers in one column, the paper row its recipe reproduces in the next.

    The paper's row is what the run's result.json carries (a demo or smoke run of A3 carries A3's, Table 1 of RSB),
    else the recipe's own; its column names the paper recipe (model, epochs and resolutions are the paper's:
    ResNet-50 or the ResNet-RS model on ImageNet-1k at full length, so a scaled-down run compares only in kind).
    Without a paper row there is no paper column (``attrs['source']`` says so), never a copy of the run's recipe.
    """
    import pandas as pd

    saved = result.get("reported")
    rep = Reported(**saved) if saved else recipe.reported
    base = next((r for r in RECIPES.values() if rep is not None and r.reported == rep), None)
    data = result.get("data") or {}

    def pct(x: Optional[float]) -> str:
        return "" if x is None else f"{x:.2f}"

    def paper(value: Any) -> str:
        return "" if base is None or value is None else str(value)

    rows = [
        ("data", f"{data.get('title') or data.get('name')} ({data.get('train_images')} train / {data.get('val_images')} val, "
                 f"{data.get('num_classes')} classes)", "ImageNet-1k (1,281,167 train / 50,000 val, 1000 classes)"),
        ("model", recipe.model, paper(base and base.model)),
        ("epochs", str(result.get("epochs_done")), paper(base and base.epochs)),
        ("train / test resolution", f"{recipe.train_res} / {recipe.test_res}",
         paper(base and f"{base.train_res} / {base.test_res}")),
        ("val top-1 (%), final", pct(result.get("final_top1")), pct(rep.top1) if rep else ""),
        ("val top-1 (%), best epoch", f"{pct(result.get('best_top1'))} (epoch {result.get('best_epoch')})", ""),
        ("ImageNet-ReaL top-1 (%)", "", pct(rep.real) if rep else ""),
        ("ImageNet-V2 top-1 (%)", "", pct(rep.v2) if rep else ""),
        ("training time", f"{_duration(result.get('wall_s') or 0)} on {result.get('device_name')}",
         f"{rep.train_hours} h on {rep.gpus} x {rep.gpu}" if rep and rep.train_hours else ""),
        ("peak memory", f"{result.get('peak_mem_mb')} MB" + (" (process RSS)" if result.get("device") == "cpu" else ""),
         f"{rep.peak_mem_gb} GB per GPU" if rep and rep.peak_mem_gb else ""),
        ("train images/s", str(result.get("imgs_per_s")), ""),
    ]
    if rep is None:  # nothing published to cite: the run's column alone
        table = pd.DataFrame([r[:2] for r in rows], columns=["", "this run"]).set_index("")
        table.attrs["source"] = "no published numbers for this recipe, so no paper column"
        return table
    title = f"paper ({base.name})" if base is not None else "paper"
    table = pd.DataFrame(rows, columns=["", "this run", title]).set_index("")
    table.attrs["source"] = rep.source
    return table


def reported_of(source: Union[str, Path], recipe: Optional[Recipe]) -> Optional[Reported]:
    """What the paper reports for the recipe that trained `source`: a run folder's result.json carries it
    (a smoke or demo run of A3 carries A3's), else the recipe's own."""
    if Path(source).is_dir():
        saved = (load_run(source)["result"] or {}).get("reported")
        return Reported(**saved) if saved else None
    return recipe.reported if recipe is not None else None


def paper_table(model, reported: Optional[Reported], data: Union[Data, str, Path], *, test_res: int, crop_pct: float,
                interpolation: str = "bicubic", real_json: Union[str, Path, None] = None,
                v2: Union[str, Path, None] = None, device: Optional[str] = None):
    """The paper's Table 1 columns for this model: val top-1, ReaL top-1 (with `real_json`, ImageNet's val
    images as `data`) and ImageNet-V2 top-1 (`v2`: its folder of class folders 0..999), in one row, with
    the row the paper reports (`reported`) under it."""
    import pandas as pd

    kwargs = dict(test_res=test_res, crop_pct=crop_pct, interpolation=interpolation, device=device)
    val = evaluate(model, data, real_json=real_json, **kwargs)
    v2_top1 = evaluate(model, load_data_for(model, v2), **kwargs)["top1"] if v2 else None
    rep = reported
    name = next((r.name for r in RECIPES.values() if rep is not None and r.reported == rep), "its recipe")
    rows = {f"this model ({test_res} px, crop {crop_pct:g})": (val["top1"], val.get("real_top1"), v2_top1)}
    if rep is not None:
        rows[f"paper ({name}, ImageNet-1k)"] = (rep.top1, rep.real, rep.v2)
    rows = {k: tuple(float("nan") if v is None else v for v in row) for k, row in rows.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["val top-1", "ReaL top-1", "V2 top-1"])
    table.attrs["source"] = rep.source if rep else "no published numbers for this recipe"
    return table


def out_folder(out_dir: Optional[str], fallback: Path) -> Path:
    folder = output_path(out_dir) if none_if_empty(out_dir) else fallback
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------ evaluate_resolution.ipynb


@dataclass
class ResolutionStudy:
    table: Any  # DataFrame: test_res, crop_pct, resize_to, top1, top5, loss
    train_res: Optional[int]
    recipe_test_res: Optional[int]
    out_dir: Path

    def pivot(self):
        """Top-1 with test resolutions as rows and crop ratios as columns (Table 9's layout)."""
        return self.table.pivot(index="test_res", columns="crop_pct", values="top1")

    def summary(self) -> str:
        """What the table says about the FixRes effect, in one paragraph."""
        best = self.table.loc[self.table["top1"].idxmax()]
        res, crop, top1 = int(best.test_res), float(best.crop_pct), float(best.top1)
        text = f"best top-1 {top1:.2f}% at test {res} px, crop {crop:g}."
        if self.train_res is not None and (self.table["test_res"] == self.train_res).any():
            at_train = float(self.table[self.table["test_res"] == self.train_res]["top1"].max())
            if res == self.train_res:
                text += f" The train resolution ({self.train_res} px) is the best test resolution here: no FixRes gain."
            else:
                side = "larger" if res > self.train_res else "smaller"
                text += (f" At the train resolution ({self.train_res} px) the best crop gives {at_train:.2f}%: testing "
                         f"at the {side} {res} px gains {top1 - at_train:+.2f} points"
                         + (" (the FixRes effect)." if side == "larger" else "."))
        return text


def resolution_study(
    *, source: str, data: str = "default", resolutions: Optional[list] = None, crops: Optional[list] = None,
    ema: bool = False, device: Optional[str] = None, limit_val: Optional[int] = None, out_dir: Optional[str] = None,
) -> ResolutionStudy:
    """Top-1 of a run, checkpoint or timm pretrained model over test resolutions x crop ratios."""

    if not source:
        raise RunError("source is empty: give a run folder, a checkpoint file or a timm pretrained name")
    crops = list(crops or [0.875, 0.95, 1.0])
    bad = [c for c in crops if not isinstance(c, (int, float)) or not 0 < c <= 1]
    if bad:
        raise RunError(f"crops {bad}: crop ratios lie in (0, 1], e.g. [0.875, 0.95, 1.0]")
    model, recipe = load_model(source, ema=ema, device="cpu")
    train_res = recipe.train_res if recipe else None
    resolutions = list(resolutions or default_resolutions(train_res or 224))
    bad = [r for r in resolutions if not isinstance(r, int) or r < 8]
    if bad:
        raise RunError(f"resolutions {bad}: give integers of at least 8 px")
    dataset = load_data_for(model, data, limit_val=limit_val or None)  # a folder without train/ (V2) too
    table = resolution_sweep(model, dataset, resolutions, crops,
                             interpolation=recipe.interpolation if recipe else "bicubic", device=none_if_empty(device))
    fallback = Path(source) if Path(source).is_dir() else stamped_folder("resolution")
    folder = out_folder(out_dir, fallback)

    atomic_write_text(folder / "resolution.csv", table.to_csv(index=False))
    return ResolutionStudy(table, train_res, recipe.test_res if recipe else None, folder)


def paper_resolution_tables():
    """The paper's crop-ratio table (Table 9) and timm's FixRes points, as DataFrames."""
    import pandas as pd

    crop = pd.DataFrame(TABLE9_CROP).pivot(index="crop_pct", columns="recipe", values="mean")
    return crop, pd.DataFrame(FIXRES_TIMM)


# ------------------------------------------------------------------ the tour

# The record of one run of the demo procedure (params/demo.yaml; its recipe.yaml, metrics.csv and result.json, no
# checkpoints), shipped inside the package so the tour shows a finished run on a machine that has trained none.
DEMO_RECORD = Path(__file__).resolve().parents[1] / "embedded" / "demo_run"


def run_scale(result: dict[str, Any]) -> str:
    """A run's scale in words, from its result.json: epochs (done of planned), train / val images and the data."""
    data = result.get("data") or {}
    done, planned = result.get("epochs_done"), result.get("epochs")
    epochs = f"{done} epoch{'s' * (done != 1)}" if done == planned else f"{done} of {planned} epochs"
    images = data.get("train_images")
    size = f"{images:,} train / {data.get('val_images'):,} val images" if isinstance(images, int) else "unknown data size"
    limited = [f"limited to {data[k]:,}" for k in ("limit_train",) if data.get(k)]
    return f"{epochs}, {size}{' (' + limited[0] + ')' if limited else ''} of {data.get('title') or data.get('name')}"


def _scale_numbers(result: dict[str, Any]) -> tuple[Any, Any]:
    return result.get("epochs_done"), (result.get("data") or {}).get("train_images")


def finished_runs(runs: Union[str, Path, None] = None) -> list[Path]:
    """Completed runs under `runs` (default: the checkout's runs/), newest first: what the tour lists, never shows
    unasked."""
    root = find_path(runs) if runs is not None else runs_root()
    done = []
    for result in root.glob("*/result.json") if root.is_dir() else ():
        try:
            record = json.loads(result.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "completed":
            done.append((result.stat().st_mtime, result.parent))
    return [folder for _, folder in sorted(done, reverse=True)]


@dataclass
class ShownRun:
    """The run the tour shows: its folder, record (rsbkit.core.runs.load_run), recipe, and a line saying which run
    it is and at what scale."""

    folder: Path
    record: dict[str, Any]
    recipe: Recipe
    line: str

    @property
    def train_images(self) -> Optional[int]:
        return ((self.record["result"] or {}).get("data") or {}).get("train_images")


def tour_run(run: str = "", runs: Union[str, Path, None] = None, listed: int = 3) -> ShownRun:
    """The run the tour shows: the one named (`run`, a run folder), else the committed record of the demo procedure
    (:data:`DEMO_RECORD`), never whatever finished last under runs/ (a 2-epoch test run is not "the finished run").
    The line says which run, its scale (epochs, images), how it differs in scale from the demo record, and, with `run`
    empty, names the newest `listed` finished runs under `runs` that `run=` could show."""
    demo_record = load_run(DEMO_RECORD)
    demo = demo_record["result"]
    if none_if_empty(run):
        folder = find_path(run)
        if not (folder / "result.json").is_file():
            raise RunError(f"run={run!r}: {folder} holds no result.json; give a run folder (runs/demo-...), or leave "
                           "run empty to show the committed record of the demo procedure")
        record = load_run(folder)
        result = record["result"] or {}
        line = f"the run you named, {folder}: {run_scale(result)}; {result.get('status')}"
        if result.get("final_top1") is not None:
            line += f", final top-1 {result['final_top1']:.2f}%"
        if _scale_numbers(result) != _scale_numbers(demo):
            line += (f". Not at the demo's scale ({run_scale(demo)}): its top-1 is not the demo procedure's, "
                     f"and compares with the demo's {demo['final_top1']:.2f}% only in kind")
    else:
        folder, record = DEMO_RECORD, demo_record
        when = (demo.get("attempts") or [{}])[0].get("started", "")
        line = (f"the committed record of the demo procedure (params/demo.yaml, trained {when[:10]}): {run_scale(demo)}, "
                f"final top-1 {demo['final_top1']:.2f}%")
        yours = [f for f in finished_runs(runs) if f.resolve() != DEMO_RECORD.resolve()][:listed]
        if yours:
            scales = "; ".join(f"{f} ({run_scale(load_run(f)['result'] or {})})" for f in yours)
            line += f". To show a run of yours instead, set run= to its folder; the newest finished under runs/: {scales}"
        else:
            line += ". `bash scripts/demo.sh` trains your own; set run= to its folder to show it"
    return ShownRun(folder, record, load_recipe(folder / "recipe.yaml"), line)


def lr_note(recipe: Recipe, paper: Optional[Recipe] = None) -> str:
    """The LR a recipe trains with at its batch, and the batch rule beside it: what the paper recipe it follows
    (default: its base recipe, else A3) defines, and what that recipe's rule would give at this batch."""
    plan = batch_lr(recipe)
    if paper is None:
        base = base_recipe(recipe)
        paper = base if base != Recipe() else RECIPES["a3"]
    text = f"{recipe.name} trains at batch {recipe.batch_size} with peak LR {plan.lr:g} ({plan.rule})."
    if (paper.lr, paper.lr_base_size) != (recipe.lr, recipe.lr_base_size):
        b, how = recipe.batch_size, lr_scaling(paper)
        at_batch = batch_lr(paper.replace(batch_size=b, grad_accum=False))
        formula = {"sqrt": f" x sqrt({b}/{paper.lr_base_size})", "linear": f" x {b}/{paper.lr_base_size}"}.get(how, "")
        text += (f" {paper.name} defines LR {paper.lr:g} for a global batch of {paper.lr_base_size}; at batch {b} its "
                 f"rule ({how} scaling, timm's for {paper.opt}) would give {paper.lr:g}{formula} = {at_batch.lr:.4g}. "
                 f"{recipe.name} defines its LR for a batch of {recipe.lr_base_size}"
                 + (", its own batch: no scaling." if recipe.lr_base_size == b else "."))
    return text
