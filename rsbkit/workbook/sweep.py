"""Run notebooks through papermill: one point, or a sweep of many, each into its own run folder.

A sweep file (``params/sweeps/*.yaml``)::

    notebook: notebooks/procedures/train.ipynb   # the notebook every point runs
    out: runs/ablation                           # points go to out/<point name>/
    parameters:                                  # the same for every point
      recipe: params/demo.yaml
    grid:                                        # the cartesian product of these lists
      loss: [bce, ce]
      aug_repeats: [0, 3]
    seeds: [0, 1, 2]                             # optional: every grid point once per seed

or, instead of ``grid``, ``points:`` a list of mappings (one point each), for a
table whose rows are not a product, like the paper's Table 6 (a point's optional
``name`` labels its folder, ``<name>_seed=<seed>``, in place of all its values); or ``steps:``, a list
of cumulative steps, each point the step before it plus its own changes, for an
additive study like ResNet-RS's Table 1::

    steps:
      - {name: baseline, paper: 79.0}     # the parameters as they are; ResNet-RS's baseline ResNet-200
      - {name: cosine, sched: cosine}     # + cosine decay
      - {name: ema, model_ema: true}      # + EMA, with the cosine decay kept

A step's ``name`` labels it (its folder is ``NN-name``, NN its place in the order),
``paper`` (optional) is the published value beside it and ``seeds`` (optional) that
step's own seeds in place of the sweep's (a third seed where a delta sits near its
noise band; not carried to the next step); every other key is a change.
A ``grid`` beside ``steps`` crosses every step (folders ``NN-name_weight_decay=4e-05``), for a
table whose rows are cumulative and whose columns are a parameter, like ResNet-RS's weight-decay study.

Keys of ``parameters`` and ``grid`` are the notebook's parameters; for a notebook
with an ``overrides`` parameter (train.ipynb), recipe fields are accepted too and
go into ``overrides``. Everything is validated (keys, recipes of every point)
before the first point starts.

Each point is executed in its own papermill process (``python -m papermill``),
so a crash in one cannot take the others down, and ``jobs`` points run at once,
each pinned to one GPU (``CUDA_VISIBLE_DEVICES``) where there are several. A
point folder holds the executed notebook, its HTML export, ``parameters.yaml``,
``papermill.log`` and ``sweep_point.json`` (status, error, wall time). Running
the sweep again skips points whose status is ``completed`` and runs the rest;
a point that left a ``last.pt`` resumes from it.

The sweep's folder keeps its plan (``sweep_plan.json``): the points the sweep
file named before any result existed. A point added to the file after some
point has completed (another seed for a close call, typically) is recorded as
``added_after_results`` in its ``sweep_point.json``; the run table marks it
``seeds_added_after`` and every verdict that uses it says "seeds added after
results" (optional stopping biases verdicts; only seeds fixed before the runs
give a verdict to rely on).
"""
from __future__ import annotations

import contextlib
import html
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import torch
import yaml

from ..core.errors import RsbkitError, RunLockedError, RunWriteError
from ..core.paths import checkout_path, find_path, output_path
from ..core.processes import die_with_parent
from ..core.recipes import load_recipe, recipe_fields
from ..core.runs import POINT_LOCK_FILE, RunLock, atomic_file, atomic_write_text, stamped_folder, write_failure
from .table import SWEEP_POINT, load_runs

SWEEP_KEYS = {
    "notebook": "the notebook every point runs, e.g. notebooks/procedures/train.ipynb",
    "out": "folder of the point folders (default runs/sweeps/<file name>)",
    "parameters": "notebook parameters shared by every point",
    "grid": "parameter -> list of values; every combination is a point",
    "points": "instead of grid: a list of mappings, one point each",
    "steps": "cumulative steps, each the step before plus its changes ({name:, paper:, seeds:, field: value}); a grid crosses them",
    "seeds": "list of seeds; every grid point runs once per seed",
    "kernel": "Jupyter kernel name (default python3)",
}


class SweepError(RsbkitError):
    """A sweep file or notebook parameter that cannot run; raised before any point starts."""


@dataclass(frozen=True)
class Point:
    name: str  # the point's folder name, from the values that vary
    parameters: dict[str, Any]  # what papermill injects
    run_dir: Path
    step: Optional[dict[str, Any]] = None  # a cumulative sweep's step: index, name, its own changes, the paper's value
    added_after_results: bool = False  # not in the sweep's plan, added after another point had completed


@dataclass(frozen=True)
class Sweep:
    notebook: Path
    out: Path
    points: tuple[Point, ...]
    kernel: str = "python3"


@dataclass(frozen=True)
class PointResult:
    name: str
    status: str  # completed | failed | skipped
    error: Optional[str]
    wall_s: float
    run_dir: Path
    notebook: Path  # the executed (or failed) notebook


# ------------------------------------------------------------------ notebook parameters


SOURCE_NOTEBOOKS = checkout_path("notebooks")  # a source checkout's notebooks/ (None for an installed rsbkit)
PACKAGED_NOTEBOOKS = Path(__file__).resolve().parents[1] / "_notebooks"  # the same files in an installed rsbkit
NOTEBOOK_ROOTS = tuple(root for root in (SOURCE_NOTEBOOKS, PACKAGED_NOTEBOOKS) if root is not None)  # in this order


def find_notebook(notebook: Union[str, Path]) -> Path:
    """The notebook file a sweep, ``rsbkit run`` or a study names.

    A path that exists (relative to the working directory) is used as it is. Otherwise a
    name of rsbkit's own notebooks, ``notebooks/procedures/train.ipynb`` or
    ``procedures/train.ipynb``, is looked up in the source checkout rsbkit is imported
    from, then in the installed package (``rsbkit/_notebooks``), so the sweep files and
    the studies work from any directory and from a pip-installed rsbkit.
    """
    path = Path(notebook)
    if path.is_file():
        return path
    if not path.is_absolute():
        relative = Path(*path.parts[1:]) if path.parts[:1] == ("notebooks",) else path
        for root in NOTEBOOK_ROOTS:
            if (root / relative).is_file():
                return root / relative
    known = sorted(str(p.relative_to(root)) for root in NOTEBOOK_ROOTS if root.is_dir()
                   for p in root.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    raise SweepError(f"notebook {path} does not exist (relative paths are read from {Path.cwd()}); give a notebook "
                     f"file, or one of rsbkit's own: {', '.join(f'notebooks/{k}' for k in dict.fromkeys(known))}")


def notebook_parameters(notebook: Union[str, Path]) -> dict[str, dict[str, Any]]:
    """The notebook's parameters as papermill reads them: name -> {inferred_type_name, default, help}."""
    import papermill

    path = find_notebook(notebook)
    params = papermill.inspect_notebook(str(path))
    if not params:
        raise SweepError(f"{path} has no cell tagged 'parameters'; papermill cannot inject values into it")
    return params


def route_parameters(notebook: Path, values: dict[str, Any], declared: dict[str, Any], where: str) -> dict[str, Any]:
    """Split `values` into notebook parameters and recipe fields (into ``overrides``); reject the rest."""

    out: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    # explicit overrides first, so recipe fields given beside them (a grid's) win
    for key, value in sorted(values.items(), key=lambda kv: kv[0] != "overrides"):
        if key in declared:
            if key == "overrides":
                if not isinstance(value, dict):
                    raise SweepError(f"{where}: overrides must be a mapping of recipe fields, got {value!r}")
                overrides.update(value)
            else:
                out[key] = value
        elif "overrides" in declared and key in recipe_fields():
            overrides[key] = value
        else:
            also = " or a recipe field" if "overrides" in declared else ""
            raise SweepError(f"{where}: {key!r} is not a parameter of {notebook}{also}; "
                             f"its parameters are {', '.join(declared)}")
    if overrides:
        out["overrides"] = overrides
    return out


def _check_recipe(params: dict[str, Any], where: str) -> None:
    if "recipe" not in params:
        return

    try:
        load_recipe(params["recipe"], **params.get("overrides", {}))
    except RsbkitError as exc:
        raise SweepError(f"{where}: {exc}") from None


def point_label(value: Any) -> str:
    text = Path(value).stem if isinstance(value, str) and value.endswith((".yaml", ".yml")) else str(value)
    return "".join(c if c.isalnum() or c in ".-+" else "-" for c in text).strip("-") or "none"


# ------------------------------------------------------------------ sweep files


def is_seed_list(seeds: Any) -> bool:
    """A non-empty list of integers (``true`` is not a seed, though Python counts it as an int)."""
    return isinstance(seeds, list) and bool(seeds) and all(type(s) is int for s in seeds)


def expand(notebook: Union[str, Path], out: Union[str, Path], parameters: Optional[dict[str, Any]] = None,
           grid: Optional[dict[str, list]] = None, seeds: Optional[list[int]] = None, *,
           points: Optional[list[dict[str, Any]]] = None, steps: Optional[list[dict[str, Any]]] = None,
           kernel: str = "python3", where: str = "sweep") -> Sweep:
    """The points of a grid, a list of points or cumulative steps (times seeds), routed and validated; nothing runs."""
    notebook, out = find_notebook(notebook), Path(out)
    declared = notebook_parameters(notebook)
    grid = dict(grid or {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: grid {key!r} needs a non-empty list of values, got {values!r}")
    if steps is not None:
        if points is not None:
            raise SweepError(f"{where}: give either 'steps' or 'points', not both")
        points, labels = cumulative_steps(steps, where)
        crossing = {k for step in points for k in step} & set(grid)
        if crossing:
            raise SweepError(f"{where}: {', '.join(sorted(crossing))} is both in the grid and changed by a step; "
                             "give it in one of them")
    else:
        labels = None
    if points is not None and labels is None:  # a step may change nothing (the baseline): steps are checked above
        if grid:
            raise SweepError(f"{where}: give either 'grid' or 'points', not both")
        if not isinstance(points, list) or not points or not all(isinstance(p, dict) and p for p in points):
            raise SweepError(f"{where}: points needs a non-empty list of non-empty mappings, got {points!r}")
    combos = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    if labels is not None:  # a step's folder is named by its place and name, not by all its accumulated values;
        # a grid beside the steps crosses every step (the weight-decay study: regularizers added in turn x WD)
        rows = [{"step": label, **row, **combo} for label, row in zip(labels, points) for combo in combos]
    else:
        rows = combos if grid else list(points or [])
    own_seeds = {label: step["seeds"] for label, step in (labels or {}).items() if step["seeds"] is not None}
    if own_seeds and seeds is None:
        raise SweepError(f"{where}: step {', '.join(own_seeds)} gives its own seeds in place of the sweep's; give the "
                         "sweep's seeds too (seeds: [...])")
    if seeds is not None:
        if not is_seed_list(seeds):
            raise SweepError(f"{where}: seeds needs a non-empty list of integers, got {seeds!r}")
        if any("seed" in row for row in rows):
            raise SweepError(f"{where}: give the seeds either as 'seeds' or in the grid/points, not both")
        rows = [{**row, "seed": s} for row in (rows or [{}]) for s in own_seeds.get(row.get("step"), seeds)]
    if not rows:
        raise SweepError(f"{where}: the grid is empty; give 'grid' (parameter -> list of values), 'points' and/or 'seeds'")
    base = dict(parameters or {})
    out_points, names = [], set()
    for varying in rows:
        step = None
        if labels is not None:
            varying = dict(varying)
            label = varying.pop("step")
            step = dict(labels[label], label=label)
            name = label + "".join(f"_{k}={point_label(v)}" for k, v in varying.items() if k in grid or k == "seed")
        elif "name" in varying:  # a named point (points: [{name: n1500-none, ...}]): its name and seed label it
            varying = dict(varying)
            label = varying.pop("name")
            if not isinstance(label, str) or not STEP_NAME.match(label):
                raise SweepError(f"{where}: a point's name labels its folder: lower-case letters, digits and _.+-, "
                                 f"got {label!r}")
            name = label + (f"_seed={varying['seed']}" if "seed" in varying else "")
        else:
            name = "_".join(f"{k}={point_label(v)}" for k, v in varying.items())
        if name in names:
            raise SweepError(f"{where}: two points share the folder name {name}; make the grid values distinct")
        names.add(name)
        params = route_parameters(notebook, {**base, **varying}, declared, f"{where}, point {name}")
        run_dir = out / name
        if "out_dir" in declared:
            params["out_dir"] = str(run_dir)
        _check_recipe(params, f"{where}, point {name}")
        out_points.append(Point(name, params, run_dir, step))
    return Sweep(notebook, out, tuple(out_points), kernel)


STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")


def cumulative_steps(steps: Any, where: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """A ``steps:`` list as (each step's accumulated changes, {folder label: index, name, own changes, paper})."""
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise SweepError(f"{where}: steps needs a non-empty list of mappings ({{name: ..., field: value}}), got {steps!r}")
    rows, labels, current, seen = [], {}, {}, set()
    for index, step in enumerate(steps):
        name = step.get("name")
        if not isinstance(name, str) or not STEP_NAME.match(name) or name in seen:
            raise SweepError(f"{where}: step {index + 1} needs a name of its own, lower-case letters, digits and _.+- "
                             f"(it names the step's folder), got {name!r}")
        seen.add(name)
        paper = step.get("paper")
        if paper is not None and not isinstance(paper, (int, float)):
            raise SweepError(f"{where}: step {name!r}: paper is the published value (a number), got {paper!r}")
        seeds = step.get("seeds")
        if seeds is not None and not is_seed_list(seeds):
            raise SweepError(f"{where}: step {name!r}: seeds is the step's own list of seeds, got {seeds!r}")
        added = step.get("seeds_added_after", False)
        if not isinstance(added, bool) or (added and seeds is None):
            raise SweepError(f"{where}: step {name!r}: seeds_added_after is true when the step's own seeds were added "
                             f"after other results were seen (give them in seeds:), got {added!r}")
        changes = {k: v for k, v in step.items() if k not in ("name", "paper", "seeds", "seeds_added_after")}
        current = {**current, **changes}
        rows.append(dict(current))
        labels[f"{index:02d}-{name}"] = dict(index=index, name=name, changes=changes, paper=paper, seeds=seeds,
                                             seeds_added_after=added)
    return rows, labels


def load_sweep(path: Union[str, Path], out: Union[str, Path, None] = None) -> Sweep:
    """Read and validate a sweep file; an unknown key, an empty grid or a bad recipe fails here."""
    path = find_path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        node = yaml.compose(path.read_text())
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: expected keys {', '.join(SWEEP_KEYS)}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    for key in spec:
        if key not in SWEEP_KEYS:
            keys = "; ".join(f"{k}: {v}" for k, v in SWEEP_KEYS.items())
            raise SweepError(f"{path}, line {lines.get(key, '?')}: unknown key {key!r}. A sweep file has {keys}")
    if "notebook" not in spec:
        raise SweepError(f"{path}: no 'notebook:'; name the notebook every point runs")
    for key in ("parameters", "grid"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise SweepError(f"{path}, line {lines[key]}: {key} must be a mapping (name: value)")
    where = output_path(out or spec.get("out") or Path("runs") / "sweeps" / path.stem)  # runs/: the checkout's
    return expand(spec["notebook"], where,
                  spec.get("parameters"), spec.get("grid"), spec.get("seeds"), points=spec.get("points"), steps=spec.get("steps"),
                  kernel=spec.get("kernel", "python3"), where=str(path))


# ------------------------------------------------------------------ running


def point_status(run_dir: Union[str, Path]) -> Optional[str]:
    f = Path(run_dir) / SWEEP_POINT
    return json.loads(f.read_text()).get("status") if f.is_file() else None


def _notebook_error(path: Path) -> Optional[str]:
    """The first error a failed executed notebook shows: 'ExceptionName: message'."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename')}: {output.get('evalue')}"
    return None


def _error_on_top(path: Path, error: str) -> None:
    """Put the error message itself (not only papermill's "An Exception was encountered") in the first cell."""

    import nbformat

    nb = nbformat.read(path, as_version=4)
    text = f"\n\n**rsbkit: this run failed.** `{html.escape(error[:2000])}`\n"
    if nb.cells and "papermill-error-cell-tag" in nb.cells[0].metadata.get("tags", []):
        nb.cells[0].source += text
    else:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(text.strip()))
    with atomic_file(path, "w") as f:
        nbformat.write(nb, f)


def export_html(notebook: Path) -> Optional[Path]:
    """The executed notebook as HTML beside it (figures appear as their static PNG copies)."""
    import nbconvert
    import nbformat

    try:
        body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    except Exception as exc:  # an export problem must not fail the run it records
        print(f"rsbkit: HTML export of {notebook} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    html = notebook.with_suffix(".html")
    atomic_write_text(html, body)
    return html


def run_point(notebook: Path, point: Point, *, kernel: str = "python3", env: Optional[dict[str, str]] = None,
              started: Optional[Callable[[subprocess.Popen], None]] = None, lock_wait: float = 0.0,
              skip_completed: bool = False) -> PointResult:
    """Execute one point with papermill into its run folder, export HTML, record the outcome.

    The point's folder is locked for the duration (:class:`rsbkit.core.runs.RunLock`): a
    second process asking for it waits up to `lock_wait` seconds, then gets
    RunLockedError naming the holder. With `skip_completed`, a point that another
    process completed meanwhile is not run again. `started` gets the papermill
    process as soon as it runs (what :func:`stop_point` needs).
    """
    with RunLock(point.run_dir, POINT_LOCK_FILE, timeout=lock_wait, what="sweep point"):
        if skip_completed and point_status(point.run_dir) == "completed":
            return PointResult(point.name, SKIPPED_COMPLETED, None, 0.0, point.run_dir, point.run_dir / notebook.name)
        return _run_locked_point(notebook, point, kernel=kernel, env=env, started=started)


SKIPPED_COMPLETED = "skipped (completed before)"
SKIPPED_RUNNING = "skipped (running in another process)"


def _run_locked_point(notebook: Path, point: Point, *, kernel: str, env: Optional[dict[str, str]],
                      started: Optional[Callable[[subprocess.Popen], None]]) -> PointResult:
    run_dir = point.run_dir
    params = dict(point.parameters)
    if "resume" in notebook_parameters(notebook) and (run_dir / "last.pt").exists():
        params["resume"] = True  # a failed or preempted point continues from its checkpoint
    param_file = run_dir / "parameters.yaml"
    atomic_write_text(param_file, yaml.safe_dump(params, sort_keys=False))
    output = run_dir / notebook.name
    working = run_dir / f".{notebook.name}.partial"  # papermill saves as it goes; the final copy is renamed into place
    attempt = 1
    if (run_dir / SWEEP_POINT).is_file():
        attempt = int(json.loads((run_dir / SWEEP_POINT).read_text()).get("attempt", 1)) + 1
    record = dict(name=point.name, notebook=str(notebook), parameters=params, step=point.step, status="running", error=None,
                  added_after_results=point.added_after_results, attempt=attempt, resumed=bool(params.get("resume")), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_text(run_dir / SWEEP_POINT, json.dumps(record, indent=2, default=str) + "\n")
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(working), "-f", str(param_file), "-k", kernel,
           "--cwd", os.getcwd(), "--log-output", "--no-progress-bar"]
    t0, interrupted = time.perf_counter(), None
    with open(run_dir / "papermill.log", "a" if attempt > 1 else "w") as logfile:  # earlier attempts' logs stay
        if attempt > 1:
            logfile.write(f"\n===== attempt {attempt}{' (resumes from last.pt)' if record['resumed'] else ''} =====\n")
            logfile.flush()
        for start in range(1, KERNEL_STARTS + 1):
            begin = logfile.tell()
            with subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env={**os.environ, **PAPERMILL_ENV, **(env or {})},
                                  preexec_fn=_point_preexec()) as proc:  # papermill, and so its kernel, end with us
                if started is not None:
                    started(proc)
                try:
                    code = proc.wait()
                except BaseException as exc:  # Ctrl-C or SIGTERM here: stop the kernel too, it would train on unseen
                    stop_point(proc)
                    code, interrupted = proc.poll() or -1, exc
            logfile.flush()
            if interrupted is not None or code == 0 or start == KERNEL_STARTS or not kernel_port_clash(_read_from(logfile.name, begin)):
                break
            # nothing ran: the kernel could not bind its ports (another kernel starting at the same moment took one)
            logfile.write(f"\n===== the kernel did not start (port already in use); starting it again ({start + 1}/{KERNEL_STARTS}) =====\n")
            logfile.flush()
    wall = round(time.perf_counter() - t0, 2)
    error = f"interrupted ({interrupted or type(interrupted).__name__})" if interrupted is not None else None
    if code != 0 and error is None:
        error = _notebook_error(working) if working.exists() else None
        if error is None:
            tail = (run_dir / "papermill.log").read_text().strip().splitlines()[-1:] or [f"exit code {code}"]
            error = f"papermill exited with {code}: {tail[0][:300]}"
    try:
        if working.exists():
            _keep_notebook(working, output)
            if error is not None:
                _error_on_top(output, error)
            export_html(output)
    except RsbkitError as exc:  # a full disk: say so, keep what was there
        code, error = code or 1, str(exc)
    record.update(status="completed" if code == 0 else "interrupted" if interrupted is not None else "failed", error=error, wall_s=wall,
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        atomic_write_text(run_dir / SWEEP_POINT, json.dumps(record, indent=2, default=str) + "\n")
    except RsbkitError as exc:
        record.update(status="failed", error=f"{error}; {exc}" if error else str(exc))
    if interrupted is not None:  # recorded, the notebook kept: now the interruption goes on its way
        raise interrupted
    return PointResult(point.name, record["status"], record["error"], wall, run_dir, output)


def _keep_notebook(working: Path, output: Path) -> None:
    """Rename papermill's working copy over the executed notebook: the previous one stays whole if this fails."""
    try:
        os.replace(working, output)
    except OSError as exc:
        raise RunWriteError(write_failure(output, exc)) from exc


# papermill warns that the working copy's name (.NAME.ipynb.partial) does not end in .ipynb; it is renamed at the end
PAPERMILL_ENV = {"PYTHONWARNINGS": "ignore:The specified file:UserWarning"}
KERNEL_STARTS = 3  # tries when a kernel dies at start-up because a port it was given got taken


def _point_preexec() -> Callable[[], None]:
    """papermill's ``preexec_fn``: it ends with us (:func:`die_with_parent`), and it and its kernel ignore USR2.
    Slurm sends a job's warning signal before its time limit to every process of the job; the point's own handler
    (rsbkit.workbook.cluster.PointJob.checkpoint) then stops the notebook cleanly and requeues. A papermill that the
    same signal killed first (its default action) lost the attempt: "papermill exited with -12"."""
    die = die_with_parent()

    def preexec() -> None:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        if die is not None:
            die()

    return preexec


def kernel_port_clash(log: str) -> bool:
    """Whether papermill failed because its kernel could not bind a port: jupyter_client picks free
    ports and the kernel binds them a moment later, so two kernels starting at once can collide.
    The notebook ran nothing then, and starting again is safe."""
    return "Kernel died before replying to kernel_info" in log and "Address already in use" in log


def _read_from(path: str, offset: int) -> str:
    with open(path, errors="replace") as f:
        f.seek(offset)
        return f.read()


def stop_point(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Stop a running point cleanly: SIGTERM to the kernel and everything it started (the
    training records status 'interrupted' and keeps its last checkpoint), then let
    papermill save the notebook and exit; kill whatever is left after `timeout` s.

    Safe inside a signal handler that interrupted ``proc.wait()`` (submitit's
    preemption handler does): it watches the process instead of waiting on it.
    """

    import psutil

    try:
        papermill = psutil.Process(proc.pid)
        family = papermill.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for child in family:  # the kernel runs in its own session: signal it directly, not the group
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if papermill.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)
    for p in [*family, papermill]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def run_and_load(sweep: Sweep, *, jobs: int = 1, log: Callable[[str], None] = print):
    """:func:`run_sweep`, then the run table (``runs.load_runs``) of the points that left a run folder."""
    run_sweep(sweep, jobs=jobs, log=log)
    return load_runs([p.run_dir for p in sweep.points if p.run_dir.exists()])


def run_sweep(sweep: Sweep, *, jobs: int = 1, log: Callable[[str], None] = print):
    """Run every point not yet completed, `jobs` at a time; return one row per point (a DataFrame).

    A failing point is recorded (its error and failed notebook kept) and the
    others go on. Also writes ``<out>/sweep.json`` with every point's status.
    """
    if jobs < 1:
        raise SweepError(f"jobs={jobs}: give 1 or more")
    gpus = _gpu_ids()
    slots: queue.Queue[int] = queue.Queue()
    for i in range(jobs):
        slots.put(i)
    sweep = with_plan(sweep)
    todo = pending(sweep)
    log(f"sweep {sweep.out}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} already completed, "
        f"running {len(todo)} ({jobs} at a time{f' over GPUs {gpus}' if len(gpus) > 1 else ''})")
    late = [p.name for p in todo if p.added_after_results]
    if late:
        log(f"  added after results (recorded; their verdicts say so): {', '.join(late)}")

    running: dict[str, subprocess.Popen] = {}  # each running point's papermill: stopped whole if we are interrupted
    stopping = False

    def one(point: Point) -> PointResult:
        slot = slots.get()
        try:
            if stopping:
                return PointResult(point.name, "interrupted", None, 0.0, point.run_dir, point.run_dir / sweep.notebook.name)
            env = {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if len(gpus) > 1 else None
            said = False

            def started(proc) -> None:  # the point's lock is held and it was not completed: it runs here
                nonlocal said
                running[point.name] = proc
                if not said:  # once, also when a kernel that could not bind its port is started again
                    said = True
                    log(f"  start {point.name}" + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if env else ""))

            try:
                res = run_point(sweep.notebook, point, kernel=sweep.kernel, env=env, skip_completed=True, started=started)
            except RunLockedError as exc:
                log(f"  skip {point.name}: another process is running it ({exc.holder})")
                return PointResult(point.name, SKIPPED_RUNNING, None, 0.0, point.run_dir, point.run_dir / sweep.notebook.name)
            except RsbkitError as exc:  # its folder could not be written: the other points go on
                res = PointResult(point.name, "failed", str(exc), 0.0, point.run_dir, point.run_dir / sweep.notebook.name)
            log(f"  {res.status} {point.name}" + (f" in {res.wall_s:.0f} s" if res.status in ("completed", "failed") else "")
                + (f": {res.error}" if res.error else ""))
            return res
        finally:
            slots.put(slot)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        ran = {r.name: r for r in pool.map(one, todo)}
    except BaseException:  # Ctrl-C, or SIGTERM through the command line: the running points stop as a whole, now
        stopping = True
        for proc in list(running.values()):
            stop_point(proc)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return summarize(sweep, ran, log=log)


SWEEP_PLAN = "sweep_plan.json"  # the points a sweep named before any of them completed


def with_plan(sweep: Sweep) -> Sweep:
    """The sweep with its points added after results marked (``Point.added_after_results``); records the plan.

    The plan is the sweep folder's ``sweep_plan.json``: the points named before any point of the sweep had
    completed. A point that is not in it, first seen when a result already exists, was added after results; one
    added before any result joins the plan. A folder with results and no plan (a sweep run before rsbkit kept
    plans) takes the points that have a folder as its plan."""
    plan_file = sweep.out / SWEEP_PLAN
    names = [p.name for p in sweep.points]
    if plan_file.is_file():
        earlier = json.loads(plan_file.read_text())
        planned, late = list(earlier.get("points", [])), set(earlier.get("added_after_results", []))
    else:
        existing = [n for n in names if (sweep.out / n).exists()]
        seen = any(point_status(sweep.out / n) == "completed" for n in existing)
        planned, late = (existing if seen else names), set()
    new = [n for n in names if n not in planned and n not in late]
    if any(point_status(sweep.out / n) == "completed" for n in planned):
        late |= set(new)
    else:
        planned += new
    record = dict(points=planned, added_after_results=sorted(late))
    if not plan_file.is_file() or json.loads(plan_file.read_text()) != record:
        sweep.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(plan_file, json.dumps(record, indent=2) + "\n")
    return replace(sweep, points=tuple(replace(p, added_after_results=p.name in late) for p in sweep.points))


def pending(sweep: Sweep) -> list[Point]:
    """The points not completed yet (a rerun skips the others)."""
    return [p for p in sweep.points if point_status(p.run_dir) != "completed"]


def summarize(sweep: Sweep, ran: dict[str, PointResult], *, log: Callable[[str], None] = print):
    """One row per point (what ran now, or 'skipped' when completed before); also ``<out>/sweep.json``."""
    import pandas as pd

    rows = []
    for p in sweep.points:
        r = ran.get(p.name)
        row = dict(point=p.name, status=r.status if r else SKIPPED_COMPLETED, error=r.error if r else None,
                   wall_s=r.wall_s if r else None, run_dir=str(p.run_dir))
        if p.step is not None:  # a cumulative sweep's rows keep the steps' order and names
            row.update(step_index=p.step["index"], step=p.step["name"], paper=p.step["paper"])
        rows.append(row)
    sweep.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.out / "sweep.json", json.dumps(
        dict(notebook=str(sweep.notebook), points=[{**r, "final_status": point_status(r["run_dir"])} for r in rows]),
        indent=2) + "\n")
    failed = [r for r in rows if r["status"] == "failed"]
    elsewhere = [r for r in rows if r["status"] == SKIPPED_RUNNING]
    ran_here = sum(r["status"] == "completed" for r in rows)
    log(f"sweep {sweep.out}: {sum(point_status(p.run_dir) == 'completed' for p in sweep.points)}/{len(sweep.points)} "
        f"completed ({ran_here} run here)" + (f"; {len(failed)} failed: {', '.join(r['point'] for r in failed)}" if failed else "")
        + (f"; {len(elsewhere)} running in another process: {', '.join(r['point'] for r in elsewhere)}" if elsewhere else ""))
    return pd.DataFrame(rows)


def single_point(notebook: Union[str, Path], parameters: dict[str, Any], out: Union[str, Path, None] = None) -> Point:
    """One run of a notebook (``rsbkit run``): parameters validated, its run folder chosen."""
    notebook = find_notebook(notebook)
    declared = notebook_parameters(notebook)
    params = route_parameters(notebook, parameters, declared, f"parameters of {notebook}")
    if out is not None and params.get("out_dir") and Path(params["out_dir"]) != Path(out):
        raise SweepError(f"{notebook}: -p out_dir {params['out_dir']} and --out {out} name two run folders: "
                         "give one of them")
    if out is None:
        out = params.get("out_dir") or stamped_folder(point_label(params.get("recipe", notebook.stem)))
    if "out_dir" in declared:
        params["out_dir"] = str(out)
    _check_recipe(params, f"parameters of {notebook}")
    return Point(Path(out).name, params, Path(out))
