"""What a study notebook is about to train, said before it starts: the number of training points its sweep files
hold, how many are not completed yet (completed points are reused), and an estimated time.

The estimate scales the committed demo record's wall time (rsbkit/embedded/demo_run: 10 epochs of 12,000 images of
resnet18 at 32 px on a 2-core CPU) by each point's epochs x train images, plus the start of its notebook; it says
so, since another model, resolution or machine (a GPU) runs at another pace."""
from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..core.recipes import load_recipe
from .resnet_rs_studies import scaled_sweep  # a sweep as a study runs it (its seeds, its scale)
from .sweep import Sweep, load_sweep, notebook_parameters, pending
from .train_and_evaluate import DEMO_RECORD, none_if_empty

SWEEP_PARAMETERS = ("sweep", "reference", "sweeps")  # study notebook parameters that name the sweep files it runs
READ_ONLY_PARAMETERS = ("runs", "runs_csv")  # a study given one of these reads finished runs and trains nothing
NOTEBOOK_START_S = 15.0  # a point's kernel start, imports and data loading, seconds (2-core CPU)


@functools.lru_cache(maxsize=1)
def _demo_result() -> dict[str, Any]:
    """The committed demo record's result.json: the pace every estimate scales (read once)."""
    return json.loads((DEMO_RECORD / "result.json").read_text())


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


@dataclass(frozen=True)
class StudyPlan:
    points: int  # training points in the sweep files
    to_run: int  # of them, not completed yet: what starts
    seconds: Optional[float]  # estimated time of those (None: none could be estimated)
    unestimated: int  # points to run whose data size is not known here (data other than the embedded subset)
    jobs: int = 1
    reads: str = ""  # the parameter naming finished runs, when the study trains nothing

    def line(self) -> str:
        if self.reads:
            return f"{self.reads} is given: this study reads finished runs and trains nothing"
        if not self.points:
            return "no sweep file given: nothing trains"
        if not self.to_run:
            return f"all {self.points} training points are completed: nothing trains, the study reads them"
        reused = f" ({self.points - self.to_run} completed, reused)" if self.to_run < self.points else ""
        text = f"this study starts {self.to_run} training point{'s' * (self.to_run != 1)} of {self.points}{reused}"
        if self.seconds is not None:
            demo = _demo_result()
            text += (f": about {_duration(self.seconds / max(1, self.jobs))}"
                     + (f" with {self.jobs} at once, each on its own device" if self.jobs > 1 else "")
                     + f", at the demo record's pace ({demo['wall_s']:.0f} s for {demo['epochs_done']} epochs of "
                     f"{demo['data']['train_images']:,} images of {demo['model']} on a 2-core CPU, plus "
                     f"{NOTEBOOK_START_S:.0f} s to start each notebook; another model, resolution or a GPU changes it)")
        if self.unestimated:
            text += f"; {self.unestimated} on other data not estimated"
        return text


def point_seconds(parameters: dict[str, Any]) -> Optional[float]:
    """A train notebook point's estimated seconds at the demo record's pace, or None when its data size is unknown."""
    demo = _demo_result()
    if none_if_empty(parameters.get("data", "default")) not in (None, "default"):
        return None
    images = demo["data"]["train_images"]
    if parameters.get("limit_train"):
        images = min(images, int(parameters["limit_train"]))
    recipe = load_recipe(parameters["recipe"], **parameters.get("overrides", {})) if "recipe" in parameters else None
    epochs = recipe.epochs if recipe is not None else demo["epochs_done"]
    if recipe is not None and recipe.unlabelled:  # a Noisy Student's epochs hold its pseudo-labelled images too
        images = round(images * (1 + recipe.pseudo_ratio))
    per_image_epoch = demo["wall_s"] / (demo["epochs_done"] * demo["data"]["train_images"])
    return NOTEBOOK_START_S + per_image_epoch * epochs * images


def sweeps_plan(files: list, jobs: int = 1) -> StudyPlan:
    """The plan of the sweep files a study runs (:class:`StudyPlan`)."""
    return plan_of([load_sweep(file) for file in files], jobs)


def study_line(sweep: str, *, runs: str = "", runs_csv: str = "", seeds: Optional[list] = None, scale: str = "demo",
               jobs: int = 1) -> str:
    """What a study notebook that runs one sweep file (at `seeds` and `scale`, or reads `runs` or `runs_csv`) is about
    to train, in one line: the additive, weight-decay and regime notebooks print it before they start."""
    reads = "runs" if none_if_empty(runs) else "runs_csv" if none_if_empty(runs_csv) else ""
    if reads:
        return StudyPlan(0, 0, None, 0, reads=reads).line()
    return plan_of([scaled_sweep(sweep, seeds=seeds or None, scale=scale)], jobs).line()


def plan_of(sweeps: list[Sweep], jobs: int = 1) -> StudyPlan:
    """The plan of `sweeps` as they stand on disk (completed points reused)."""
    points = todo = unknown = 0
    seconds: Optional[float] = None
    for sweep in sweeps:
        points += len(sweep.points)
        for point in pending(sweep):
            todo += 1
            s = point_seconds(point.parameters)
            if s is None:
                unknown += 1
            else:
                seconds = (seconds or 0.0) + s
    return StudyPlan(points, todo, seconds, unknown, jobs)


def _sweep_files(values: dict[str, Any]) -> list:
    files: list = []
    for name in SWEEP_PARAMETERS:
        value = values.get(name)
        given = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        files += [v for v in given if isinstance(v, str) and v.endswith((".yaml", ".yml"))]  # ablation's reference: a row
    return files


def study_plan(notebook: Union[str, Path], values: dict[str, Any]) -> Optional[StudyPlan]:
    """What `rsbkit run NOTEBOOK` is about to train: None for a notebook that runs no sweep file; else the plan of
    the sweep files its parameters name (`values`, over the notebook's defaults)."""
    declared = notebook_parameters(notebook)
    if not set(SWEEP_PARAMETERS) & set(declared):
        return None
    merged = {}
    for name, spec in declared.items():
        try:
            merged[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            merged[name] = None
    merged.update(values)
    if merged.get("seeds") or merged.get("scale", "demo") != "demo":  # the study rewrites its sweep's points itself
        return None
    reads = next((n for n in READ_ONLY_PARAMETERS if none_if_empty(merged.get(n))), "")
    if reads:
        return StudyPlan(0, 0, None, 0, reads=reads)
    try:
        return sweeps_plan(_sweep_files(merged), int(merged.get("jobs") or 1))
    except Exception:  # an estimate never stops a run: a bad sweep file fails in the notebook, with its message
        return None
