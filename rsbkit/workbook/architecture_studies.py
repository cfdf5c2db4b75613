"""The studies across models: architectures (RSB Table 3), transfer (RSB Table 5) and ResNet-RS scaling.

Each study is a grid of train-notebook runs through the sweep runner (so a
re-run reuses finished points, and a cluster runs them with ``--executor``),
plus speed measured on this machine by :func:`rsbkit.core.models.profile`. A model
that timm does not know or that cannot run at a resolution is reported in the
tables' ``error`` column; the rest of the grid runs.
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
from .sweep import Point, Sweep, expand, find_notebook, notebook_parameters, point_label, route_parameters, run_and_load
from .train_and_evaluate import TRAIN_NOTEBOOK

RUN_COLUMNS = ["status", "final_top1", "best_top1", "wall_s", "imgs_per_s", "error"]


@dataclass
class Study:
    table: pd.DataFrame  # one row per grid point: what was measured and what was trained
    out_dir: Path
    device: str  # where the speeds were measured
    errors: dict[str, str] = field(default_factory=dict)  # point -> why it failed

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


# ---------------------------------------------------------------- architectures (Table 3)


def paper_table3() -> pd.DataFrame:
    return pd.DataFrame([r._asdict() for r in TABLE3]).rename(columns=dict(
        paper_name="architecture", a1="paper_A1", a2="paper_A2", a3="paper_A3", original="paper_original"))


def architecture_study(*, recipe: str, models: Sequence[str], data: str = "default", out_dir: str,
                       train: bool = True, speed_res: Optional[int] = None, speed_batch: int = 32,
                       speed_steps: int = 10, limit_train: Optional[int] = None, limit_val: Optional[int] = None,
                       device: str = "auto", workers: Optional[int] = None, jobs: int = 1,
                       log: Callable[[str], None] = print) -> Study:
    """One recipe across architectures: size and speed measured here, top-1 from training each, and the
    paper's Table 3 columns for the architectures it has."""
    spec = load_recipe(recipe)
    res = speed_res or spec.train_res
    out = Path(out_dir)
    speeds = profile_models(list(dict.fromkeys(models)), res, num_classes=_num_classes(data), batch=speed_batch,
                            steps=speed_steps, device=None if device == "auto" else device, log=log)
    table = speeds.rename(columns={"error": "speed_error"})
    # a model too big or too small for the speed measurement may still train: only unknown names are dropped
    runnable = [m for m, e in zip(speeds["model"], speeds["error"]) if pd.isna(e) or "cannot run at" in str(e)]
    if train and runnable:
        sweep = expand(TRAIN_NOTEBOOK, out / "runs", _common(recipe, data, limit_train, limit_val, device, workers),
                       {"model": runnable}, where="architecture study")
        runs = _train_points(sweep, jobs, log)
        runs["model"] = runs["point"].map({p.name: m for p, m in zip(sweep.points, runnable)})
        table = table.merge(runs[["model", *RUN_COLUMNS]], on="model", how="left")
    paper = paper_table3().drop(columns=["res_a1a2", "res_a3"]).rename(columns={"timm": "model"})
    table = table.merge(paper, on="model", how="left")
    return Study(table, out, str(speeds["device"].iloc[0]) if len(speeds) else "")


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
                  workers: Optional[int] = None, jobs: int = 1, log: Callable[[str], None] = print) -> Study:
    """The ResNet-RS grid: depth x width x resolution x training length, trained through the sweep
    runner, with training and inference speed of every (model, width, resolution) measured here."""
    for name, values in (("models", models), ("resolutions", resolutions), ("epochs", epochs)):
        if not values:
            raise RunError(f"scaling study: {name} is empty; give at least one value")
    out = Path(out_dir)
    grid = scaling_points(models, widths, resolutions, epochs)
    classes = _num_classes(data)
    speed = {}
    for m, w, r in dict.fromkeys((g["model"], g["width"], g["train_res"]) for g in grid):
        row = profile(m, r, width=w, num_classes=classes, batch=speed_batch, steps=speed_steps,
                      device=None if device == "auto" else device)
        log(f"{m} w{w:g} @{r}: " + (row["error"] or f"{row['train_imgs_per_s']} img/s train"))
        speed[(m, w, r)] = row
    runnable = [g for g in grid if speed[(g["model"], g["width"], g["train_res"])]["error"] is None]
    rows, runs, point_of = [], pd.DataFrame(), {}
    if runnable:
        sweep = expand(TRAIN_NOTEBOOK, out / "runs", _common(recipe, data, limit_train, limit_val, device, workers),
                       points=runnable, where="scaling study")
        runs = _train_points(sweep, jobs, log).set_index("point")
        point_of = {id(g): p.name for p, g in zip(sweep.points, runnable)}
    for g in grid:
        s = speed[(g["model"], g["width"], g["train_res"])]
        name = point_of.get(id(g))
        run = runs.loc[name] if name is not None and name in runs.index else None
        rows.append(dict(model=g["model"], width=g["width"], res=g["train_res"], epochs=g["epochs"],
                         params_m=s["params_m"], gmacs=s["gmacs"], train_imgs_per_s=s["train_imgs_per_s"],
                         infer_imgs_per_s=s["infer_imgs_per_s"], train_peak_mem_mb=s["train_peak_mem_mb"],
                         top1=None if run is None else run["final_top1"],
                         status="not run" if run is None else run["status"],
                         error=s["error"] if run is None else run["error"],
                         scaling="width" if g["width"] != 1.0 else "depth"))
    device_name = next((s["device"] for s in speed.values()), "")
    table = pd.DataFrame(rows)
    return Study(table, out, device_name)


def depth_versus_width(table: pd.DataFrame) -> pd.DataFrame:
    """Per training length and resolution: each width-scaled model beside the depth-scaled model of
    the nearest cost (GMACs), and which of the two reached the higher top-1."""
    out = []
    done = table.dropna(subset=["top1", "gmacs"])
    for (epochs, res), group in done.groupby(["epochs", "res"]):
        depth = group[group["width"] == 1.0]
        wide = group[group["width"] != 1.0]
        for _, w in wide.iterrows():
            if depth.empty:
                continue
            d = depth.iloc[(depth["gmacs"] - w["gmacs"]).abs().argsort().iloc[0]]
            out.append(dict(epochs=epochs, res=res, width_model=f"{w['model']} x{w['width']:g}", width_gmacs=w["gmacs"],
                            width_top1=w["top1"], depth_model=d["model"], depth_gmacs=d["gmacs"], depth_top1=d["top1"],
                            better="depth" if d["top1"] > w["top1"] else "width" if w["top1"] > d["top1"] else "tie"))
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

