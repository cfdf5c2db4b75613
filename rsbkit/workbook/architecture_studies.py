"""The studies across models: architectures (RSB Table 3), transfer (RSB Table 5) and ResNet-RS scaling.

Each study is a grid of train-notebook runs through the sweep runner (so a
re-run reuses finished points, and a cluster runs them with ``--executor``),
plus speed measured on this machine by :func:`rsbkit.core.models.profile`. A model
that timm does not know or that cannot run at a resolution is reported in the
tables' ``error`` column; the rest of the grid runs.

With ``seeds``, every configuration trains once per seed and the tables give the
mean, spread and number of seeds; architectures (against a reference) and depth
against width are then read by :func:`rsbkit.workbook.study_stats.compare_means`:
a 95% Student-t interval and one of beyond noise, within noise, cannot tell at
this number of seeds. With one run per configuration the verdict is "cannot tell"
unless a seed study's spread is given (``seed_stats``), which is then borrowed
from that study's recipe and model, with its margin and degrees of freedom.

What these verdicts do not account for: the configurations share their seeds,
but the comparisons are unpaired (conservative); each is read on its own, with no
correction over the many (length x resolution x width) comparisons of a grid
(:func:`rsbkit.workbook.study_stats.family_check` reads a table as one family);
and a width-scaled model's depth partner is the nearest in GMACs, however far,
so one depth model may stand against several width models.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import timm

from ..core.checkpoint import load_checkpoint
from ..core.data import load_data
from ..core.errors import RunError
from ..core.models import profile, profile_models
from ..core.recipes import load_recipe
from .paper import PUBLISHED_POINTS, TABLE3, TABLE5
from .run_studies import read_seed_stats
from .study_stats import BEYOND, CANNOT_TELL, SeedStats, compare_to, comparison_row, group_stats
from .sweep import Point, Sweep, expand, find_notebook, notebook_parameters, point_label, route_parameters, run_and_load
from .train_and_evaluate import TRAIN_NOTEBOOK


@dataclass
class Study:
    table: pd.DataFrame  # one row per grid point: what was measured and what was trained
    out_dir: Path
    device: str  # where the speeds were measured
    errors: dict[str, str] = field(default_factory=dict)  # point -> why it failed
    seed_stats: Optional[SeedStats] = None  # a seed study's spread, read beside the groups' own in the verdicts

    def save(self, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{name}.csv"
        self.table.to_csv(path, index=False)
        return path


def _train_points(sweep: Sweep, jobs: int, log: Callable[[str], None]) -> pd.DataFrame:
    """Run the sweep (finished points are reused) and read its runs, one row per point."""
    runs = run_and_load(sweep, jobs=jobs, log=log)
    runs["point"] = [Path(r).name for r in runs["run"]]
    return runs


def _common(recipe: str, data: str, limit_train: Optional[int], limit_val: Optional[int], device: str,
            workers: Optional[int]) -> dict[str, Any]:
    params: dict[str, Any] = dict(recipe=recipe, data=data, device=device)
    for key, value in (("limit_train", limit_train), ("limit_val", limit_val), ("workers", workers)):
        if value is not None:
            params[key] = value
    return params


def _num_classes(data: str) -> int:
    return load_data(data).num_classes


def _seed_list(seeds: Optional[Sequence[int]]) -> Optional[list[int]]:
    if seeds is None or len(seeds) == 0:
        return None
    values = list(seeds)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or len(set(values)) != len(values):
        raise RunError(f"seeds must be distinct integers, got {values!r}; for example seeds=[0, 1, 2]")
    return values


def seed_groups(runs: pd.DataFrame, by: Sequence[str], metric: str = "final_top1") -> pd.DataFrame:
    """One row per configuration (the `by` columns) over its seeds: `metric`'s ``mean``, ``std`` (ddof=1; empty
    for one seed), ``n`` (finished seeds), ``min`` and ``max``; ``runs`` (seeds run), ``status`` ("completed" when
    every seed completed, else the first other status), the first ``error`` and ``wall_s`` (summed: what the
    configuration cost)."""
    by = list(by)
    stats = group_stats(runs.dropna(subset=[metric]), by, metric) if runs[metric].notna().any() else \
        pd.DataFrame(columns=[*by, "mean", "std", "n", "min", "max"])
    rows = []
    for key, group in runs.groupby(by, sort=True, dropna=False):
        statuses = [str(s) for s in group["status"] if pd.notna(s)] if "status" in group else []
        errors = [e for e in group["error"] if pd.notna(e)] if "error" in group else []
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), runs=len(group),
                         status=next((s for s in statuses if s != "completed"), "completed" if statuses else None),
                         error=errors[0] if errors else None,
                         wall_s=float(group["wall_s"].sum()) if "wall_s" in group else math.nan))
    out = pd.DataFrame(rows).merge(stats, on=by, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    return out


# ---------------------------------------------------------------- architectures (Table 3)


def paper_table3() -> pd.DataFrame:
    return pd.DataFrame([r._asdict() for r in TABLE3]).rename(columns=dict(
        paper_name="architecture", a1="paper_A1", a2="paper_A2", a3="paper_A3", original="paper_original"))


def architecture_study(*, recipe: str, models: Sequence[str], data: str = "default", out_dir: str,
                       train: bool = True, speed_res: Optional[int] = None, speed_batch: int = 32,
                       speed_steps: int = 10, limit_train: Optional[int] = None, limit_val: Optional[int] = None,
                       device: str = "auto", workers: Optional[int] = None, jobs: int = 1,
                       seeds: Optional[Sequence[int]] = None, reference: Optional[str] = None,
                       seed_stats: Optional[str] = None, log: Callable[[str], None] = print) -> Study:
    """One recipe across architectures: size and speed measured here, top-1 from training each (once per seed in
    `seeds`; the recipe's own seed when empty), and the paper's Table 3 columns for the architectures it has.

    ``final_top1`` is the mean over seeds (``top1_std``, ``seeds``: its spread and count); every architecture is
    compared with `reference` (default: the first that trained) by :func:`study_stats.compare_to`: ``diff``, the
    95% interval ``low``/``high``, ``verdict``. `seed_stats`: a seed study's ``seed_stats.json`` (or "auto", one of
    this recipe and data) whose spread is read beside the groups' own; it was measured on one model."""
    spec = load_recipe(recipe)
    seed_list, stats = _seed_list(seeds), None
    res = speed_res or spec.train_res
    out = Path(out_dir)
    speeds = profile_models(list(dict.fromkeys(models)), res, num_classes=_num_classes(data), batch=speed_batch,
                            steps=speed_steps, device=None if device == "auto" else device, log=log)
    table = speeds.rename(columns={"error": "speed_error"})
    # a model too big or too small for the speed measurement may still train: only unknown names are dropped
    runnable = [m for m, e in zip(speeds["model"], speeds["error"]) if pd.isna(e) or "cannot run at" in str(e)]
    if train and runnable:
        sweep = expand(TRAIN_NOTEBOOK, out / "runs", _common(recipe, data, limit_train, limit_val, device, workers),
                       {"model": runnable}, seed_list, where="architecture study")
        runs = _train_points(sweep, jobs, log)
        per_point = [m for m in runnable for _ in (seed_list or [None])]  # expand's order: model, then seed
        runs["model"] = runs["point"].map({p.name: m for p, m in zip(sweep.points, per_point)})
        groups = seed_groups(runs, ["model"])
        trained = {m for m, n in zip(groups["model"], groups["n"]) if n}
        ref = reference or next((m for m in runnable if m in trained), None)
        if reference is not None and reference not in set(groups["model"]):
            raise RunError(f"architecture study: reference {reference!r} is not one of the trained models "
                           f"{list(groups['model'])}; give one of them")
        stats = read_seed_stats(seed_stats, runs)
        if ref is not None:
            done = groups[groups["n"] > 0]
            compared = compare_to(done, "model", ref, stats)
            keep = ["model", *(c for c in compared.columns if c not in groups.columns)]
            groups = groups.merge(compared[keep], on="model", how="left")
            groups["reference"] = ref
        groups = groups.rename(columns={"mean": "final_top1", "std": "top1_std", "n": "seeds"})
        groups = groups.drop(columns=["min", "max"])
        table = table.merge(groups, on="model", how="left")
    paper = paper_table3().drop(columns=["res_a1a2", "res_a3"]).rename(columns={"timm": "model"})
    table = table.merge(paper, on="model", how="left")
    return Study(table, out, str(speeds["device"].iloc[0]) if len(speeds) else "", seed_stats=stats)


# ---------------------------------------------------------------- transfer (Table 5)


def source_model(source: str) -> tuple[str, float, str]:
    """(model, width, label) of a fine-tuning source: a run folder, a checkpoint, or a timm pretrained name."""

    path = Path(source)
    if path.is_dir() and (path / "recipe.yaml").is_file():
        r = load_recipe(path / "recipe.yaml")
        return r.model, r.width, path.name
    if path.is_file():
        state = load_checkpoint(path)
        return state["recipe"]["model"], float(state["recipe"].get("width", 1.0)), f"{path.parent.name}-{path.stem}"
    if timm.is_model(source.split(".")[0]):
        return source.split(".")[0], 1.0, source
    raise RunError(f"source {source!r} is neither a run folder (with recipe.yaml), a checkpoint file, nor a timm model "
                   "name such as resnet50.a1_in1k")


def paper_table5() -> pd.DataFrame:
    return pd.DataFrame([r._asdict() for r in TABLE5]).rename(columns=dict(pytorch="PyTorch", a1="A1", a2="A2", a3="A3"))


def transfer_study(*, sources: Sequence[str], targets: Sequence[str], recipe: str, out_dir: str, scratch: bool = True,
                   limit_train: Optional[int] = None, limit_val: Optional[int] = None, device: str = "auto",
                   workers: Optional[int] = None, jobs: int = 1, log: Callable[[str], None] = print) -> Study:
    """Fine-tune every source on every target with `recipe` (and, with `scratch`, train from random
    weights for reference); the table is laid out like Table 5: targets as rows, sources as columns."""

    if not targets or not (sources or scratch):
        raise RunError(f"transfer study: give targets (got {list(targets)}) and sources (got {list(sources)}) or scratch=True")
    out = Path(out_dir)
    fine = load_recipe(recipe)
    starts = [(s, *source_model(s)) for s in sources]
    if scratch:
        models = dict.fromkeys((m, w) for _, m, w, _ in starts) or {(fine.model, fine.width): None}
        starts += [(None, m, w, f"scratch-{m}" + (f"-w{w:g}" if w != 1 else "")) for m, w in models]
    rows, points = [], []
    base = _common(recipe, "default", limit_train, limit_val, device, workers)
    notebook = find_notebook(TRAIN_NOTEBOOK)
    declared = notebook_parameters(notebook)
    for target in targets:
        data = load_data(target)
        t_label = point_label(Path(target).name or target)
        rows.append(dict(target=target, train_images=len(data.train), test_images=len(data.val), classes=data.num_classes))
        for init, model, width, label in starts:
            name = f"{label}_to_{t_label}"
            params = {**base, "data": target, "model": model, "width": width, "init": init}
            routed = route_parameters(notebook, params, declared, f"transfer study, point {name}")
            routed["out_dir"] = str(out / "runs" / name)
            points.append((Point(name, routed, out / "runs" / name), label, target))
    sweep = Sweep(notebook, out / "runs", tuple(p for p, _, _ in points))
    runs = _train_points(sweep, jobs, log).set_index("point")
    table = pd.DataFrame(rows).set_index("target")
    for point, label, target in points:
        value = runs["final_top1"].get(point.name)
        table.loc[target, label] = value if pd.notna(value) else None
    errors = {p.name: runs["error"].get(p.name) for p, _, _ in points if pd.notna(runs["error"].get(p.name))}
    return Study(table.reset_index(), out, f"fine-tuned with {fine.name}", errors)


# ---------------------------------------------------------------- ResNet-RS scaling


def scaling_points(models: Sequence[str], widths: Sequence[float], resolutions: Sequence[int],
                   epochs: Sequence[int]) -> list[dict[str, Any]]:
    """Depth scaling (every model at width 1) and width scaling (the first model at every width), each
    at every resolution (trained and tested there) and training length."""
    configs = [(m, 1.0) for m in models] + [(models[0], float(w)) for w in widths if float(w) != 1.0]
    return [dict(model=m, width=w, train_res=r, test_res=r, epochs=e)
            for e in epochs for m, w in configs for r in resolutions]


def scaling_study(*, recipe: str, models: Sequence[str], widths: Sequence[float], resolutions: Sequence[int],
                  epochs: Sequence[int], data: str = "default", out_dir: str, speed_batch: int = 32, speed_steps: int = 10,
                  limit_train: Optional[int] = None, limit_val: Optional[int] = None, device: str = "auto",
                  workers: Optional[int] = None, jobs: int = 1, seeds: Optional[Sequence[int]] = None,
                  seed_stats: Optional[str] = None, log: Callable[[str], None] = print) -> Study:
    """The ResNet-RS grid: depth x width x resolution x training length, trained through the sweep
    runner (once per seed in `seeds`; the recipe's own seed when empty), with training and inference speed of
    every (model, width, resolution) measured here. ``top1`` is the mean over seeds, ``top1_std`` and ``seeds``
    its spread and count: :func:`depth_versus_width` reads them, with `seed_stats` (a ``seed_stats.json``, or
    "auto": one of this recipe and data) kept in ``Study.seed_stats``."""
    for name, values in (("models", models), ("resolutions", resolutions), ("epochs", epochs)):
        if not values:
            raise RunError(f"scaling study: {name} is empty; give at least one value")
    out = Path(out_dir)
    seed_list = _seed_list(seeds)
    grid = scaling_points(models, widths, resolutions, epochs)
    classes = _num_classes(data)
    speed = {}
    for m, w, r in dict.fromkeys((g["model"], g["width"], g["train_res"]) for g in grid):
        row = profile(m, r, width=w, num_classes=classes, batch=speed_batch, steps=speed_steps,
                      device=None if device == "auto" else device)
        log(f"{m} w{w:g} @{r}: " + (row["error"] or f"{row['train_imgs_per_s']} img/s train"))
        speed[(m, w, r)] = row
    runnable = [g for g in grid if speed[(g["model"], g["width"], g["train_res"])]["error"] is None]
    rows, groups, stats = [], pd.DataFrame(), None
    if runnable:
        sweep = expand(TRAIN_NOTEBOOK, out / "runs", _common(recipe, data, limit_train, limit_val, device, workers),
                       points=runnable, seeds=seed_list, where="scaling study")
        runs = _train_points(sweep, jobs, log)
        per_point = [i for i in range(len(runnable)) for _ in (seed_list or [None])]  # expand's order: point, seed
        runs["config"] = runs["point"].map({p.name: i for p, i in zip(sweep.points, per_point)})
        groups = seed_groups(runs, ["config"]).set_index("config")
        stats = read_seed_stats(seed_stats, runs)
    place = {id(g): j for j, g in enumerate(runnable)}  # a grid point's index among the points trained
    for g in grid:
        s = speed[(g["model"], g["width"], g["train_res"])]
        index = place.get(id(g))
        run = groups.loc[index] if index is not None and index in groups.index else None
        rows.append(dict(model=g["model"], width=g["width"], res=g["train_res"], epochs=g["epochs"],
                         params_m=s["params_m"], gmacs=s["gmacs"], train_imgs_per_s=s["train_imgs_per_s"],
                         infer_imgs_per_s=s["infer_imgs_per_s"], train_peak_mem_mb=s["train_peak_mem_mb"],
                         top1=None if run is None else run["mean"],
                         top1_std=None if run is None else run["std"],
                         seeds=0 if run is None else int(run["n"]),
                         status="not run" if run is None else run["status"],
                         error=s["error"] if run is None else run["error"],
                         wall_s=None if run is None else run["wall_s"],
                         scaling="width" if g["width"] != 1.0 else "depth"))
    device_name = next((s["device"] for s in speed.values()), "")
    table = pd.DataFrame(rows)
    return Study(table, out, device_name, seed_stats=stats)


def depth_versus_width(table: pd.DataFrame, seed_stats: Optional[SeedStats] = None) -> pd.DataFrame:
    """Per training length and resolution: each width-scaled model beside the depth-scaled model of the nearest
    cost (GMACs), and whether either is better beyond seed noise.

    ``diff`` is width minus depth; its 95% interval and verdict come from :func:`study_stats.compare_means` over
    each configuration's seeds (``top1_std``, ``seeds``; `seed_stats`, a seed study's spread, read beside them).
    ``higher`` says which mean is higher; ``better`` names the winner only when the difference is beyond noise, and
    otherwise gives the verdict (within noise, or cannot tell at this number of seeds)."""
    out = []
    done = table.dropna(subset=["top1", "gmacs"])
    for (epochs, res), group in done.groupby(["epochs", "res"]):
        depth = group[group["width"] == 1.0]
        wide = group[group["width"] != 1.0]
        for _, w in wide.iterrows():
            if depth.empty:
                continue
            d = depth.iloc[(depth["gmacs"] - w["gmacs"]).abs().argsort().iloc[0]]
            n_w, n_d = (int(x.get("seeds", 1)) if pd.notna(x.get("seeds", 1)) else 1 for x in (w, d))
            s_w, s_d = (float(x.get("top1_std", math.nan)) if pd.notna(x.get("top1_std", math.nan)) else math.nan
                        for x in (w, d))
            diff = float(w["top1"]) - float(d["top1"])
            verdict = comparison_row(diff, n_w, n_d, seed=seed_stats, s=s_w, s_ref=s_d)
            higher = "width" if diff > 0 else "depth" if diff < 0 else "tie"
            out.append(dict(epochs=epochs, res=res, width_model=f"{w['model']} x{w['width']:g}", width_gmacs=w["gmacs"],
                            width_top1=w["top1"], width_seeds=n_w, depth_model=d["model"], depth_gmacs=d["gmacs"],
                            depth_top1=d["top1"], depth_seeds=n_d, higher=higher,
                            **{k: verdict[k] for k in ("diff", "low", "high", "df", "detectable", "verdict")},
                            better=higher if verdict["verdict"] == BEYOND else verdict["verdict"] or CANNOT_TELL))
    return pd.DataFrame(out)


def published_speed(*, names: Optional[Sequence[str]] = None, batch: int = 32, steps: int = 10, device: str = "auto",
                    log: Callable[[str], None] = print) -> pd.DataFrame:
    """The published ResNet-RS and EfficientNet points (ImageNet top-1) with their inference speed
    measured here, at their own resolutions; `names` (timm names) keeps a subset."""
    rows = []
    for p in PUBLISHED_POINTS:
        if names is not None and p.timm not in names:
            continue
        s = profile(p.timm, p.res, batch=batch, steps=steps, device=None if device == "auto" else device)
        log(f"{p.family} {p.name} @{p.res}: " + (s["error"] or f"{s['infer_imgs_per_s']} img/s inference"))
        rows.append({**p._asdict(), "gmacs": s["gmacs"], "infer_imgs_per_s": s["infer_imgs_per_s"],
                     "train_imgs_per_s": s["train_imgs_per_s"], "device": s["device"], "error": s["error"]})
    return pd.DataFrame(rows)


def pareto_front(table: pd.DataFrame, speed: str = "train_imgs_per_s", metric: str = "top1") -> pd.DataFrame:
    """The rows no other row beats on both speed and accuracy, fastest first."""
    done = table.dropna(subset=[speed, metric]).sort_values(speed, ascending=False)
    front, best = [], -math.inf
    for _, row in done.iterrows():
        if row[metric] > best:
            front.append(row)
            best = row[metric]
    return pd.DataFrame(front)

