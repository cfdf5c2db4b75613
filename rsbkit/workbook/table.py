"""Run folders as one table (:func:`load_runs`: a row per run, its recipe's fields, result and cost,
and a sweep point's parameters), and the per-epoch hooks that mirror a run's rows into TensorBoard
(:func:`epoch_hooks`). pandas and TensorBoard are imported when called: neither is needed to train."""
from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import RecipeError, RunError
from ..core.paths import find_path
from ..core.recipes import Recipe, from_timm_args, plan_batch
from ..core.recipes.timm_args import read_args
from ..core.runs import RunFolder, load_run, read_metrics

DEFAULTS = {k: v for k, v in Recipe().to_dict().items() if k != "name"}

SWEEP_POINT = "sweep_point.json"  # written by the sweep runner beside a point's records


def _find_runs(path: Path) -> list[Path]:
    """Run folders at or below `path`: those with result.json or recipe.yaml, and sweep points with only
    sweep_point.json (a point that failed early) unless run folders lie below them. A study notebook run
    into its sweep's folder (``rsbkit run seed_variance.ipynb --out runs/sweeps/seeds``) leaves a
    sweep_point.json above the seeds' runs: that folder is not a run of its own."""
    def trained(folder: Path) -> bool:
        return (folder / "result.json").is_file() or (folder / "recipe.yaml").is_file() or is_timm_run(folder)

    if trained(path):
        return [path]
    found = {p.parent for name in ("result.json", "recipe.yaml", SWEEP_POINT, TIMM_SUMMARY) for p in path.rglob(name)}
    found = {f for f in found if (f / TIMM_SUMMARY).is_file() <= trained(f)}
    return sorted(f for f in found if trained(f) or not any(g != f and f in g.parents for g in found))


TIMM_ARGS, TIMM_SUMMARY = "args.yaml", "summary.csv"  # what timm's train.py writes into its output folder


def is_timm_run(folder: Path) -> bool:
    """A timm train.py output folder: its args.yaml and summary.csv, and no rsbkit records (recipe.yaml comes first)."""
    return (folder / TIMM_ARGS).is_file() and (folder / TIMM_SUMMARY).is_file() and not (folder / "recipe.yaml").is_file()


def run_metrics(folder: Union[str, Path]) -> list[dict[str, Any]]:
    """A run's rows per epoch in rsbkit's columns: its metrics.csv, or a timm run's summary.csv (epoch counted
    from 1; eval_* as val_*, which are the EMA model's when that run had --model-ema)."""
    folder = Path(folder)
    if is_timm_run(folder):
        return [dict(epoch=int(r["epoch"]) + 1, lr=float(r["lr"]), train_loss=float(r["train_loss"]),
                     val_top1=float(r["eval_top1"]), val_top5=float(r["eval_top5"]), val_loss=float(r["eval_loss"]))
                for r in csv.DictReader(open(folder / TIMM_SUMMARY))]
    metrics = RunFolder(folder).metrics
    return read_metrics(metrics) if metrics.is_file() else []


def _timm_row(folder: Path) -> dict[str, Any]:
    """A timm run's row: its recipe through the importer (one process assumed: args.yaml does not say), the
    results from summary.csv."""
    args = read_args(folder / TIMM_ARGS)
    rows = run_metrics(folder)
    try:
        recipe = from_timm_args(args)[0]
        fields, lr_used, batch, error = recipe.to_dict(), plan_batch(recipe).lr, recipe.batch_size, None
    except RecipeError as exc:  # a run rsbkit cannot express: still listed, with what args.yaml says
        fields, lr_used, batch, error = {"model": args.get("model")}, args.get("lr"), args.get("batch_size"), str(exc)
    best = max(rows, key=lambda r: r["val_top1"]) if rows else {}
    epochs = int(args.get("epochs") or 0) + int(args.get("cooldown_epochs") or 0)
    row = dict(run=str(folder), name=folder.name, recipe=fields.pop("name", folder.name), source="timm",
               status="completed" if rows and len(rows) >= epochs else "incomplete")
    row.update({k: _cell(v) for k, v in fields.items()})
    last = rows[-1] if rows else {}
    row.update(final_top1=last.get("val_top1"), final_top5=last.get("val_top5"), final_loss=last.get("val_loss"),
               best_top1=best.get("val_top1"), best_epoch=best.get("epoch"), epochs_done=len(rows),
               data=Path(str(args.get("data_dir") or args.get("data") or "")).name or None, lr_used=lr_used,
               effective_batch=batch, error=error)
    return row


def _cell(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # hashable, so groupby works


def load_runs(paths: Union[str, Path, Iterable[Union[str, Path]]] = "runs") -> pandas.DataFrame:  # noqa: F821
    """One row per run folder found under `paths` (a run folder, a folder of runs, or a list).

    Columns: ``run`` (folder), ``name`` (its last part), ``recipe`` (the recipe's
    name), ``status``, every other recipe field (``model``, ``lr``,
    ``loss`` ...), the final metrics (``final_top1``, ``best_top1``, ``best_epoch``,
    ``final_top5``, ``epochs_done``; ``final_ema_top1``, the EMA weights' at the end, for a run with model_ema;
    ``train_top1``, the final weights' top-1 on training images read as the test images are, and ``fit_gap``, it
    minus ``final_top1``: how much the run overfits), the cost (``wall_s``, ``imgs_per_s``,
    ``peak_mem_mb``, ``device_name``), ``data`` (the dataset's name), ``train_images`` and ``val_images`` (as
    trained and evaluated), ``limit_train`` and ``limit_val`` (the limits asked for, if any), ``warnings`` (what
    the run's start said about it, e.g. a schedule that never left warmup), ``lr_used`` and ``effective_batch`` as the
    run resolved them, ``error``, and ``param.<name>`` for a sweep point's notebook
    parameters (and ``step_index``, ``step``, ``step_paper`` for a cumulative sweep's step), and ``source`` (``rsbkit``, or ``timm`` for a train.py output folder: args.yaml read through
    rsbkit.core.recipes.from_timm_args, the results from summary.csv). A run that never finished has status
    ``running`` (or none) and empty metrics; it is listed, not dropped.
    """
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    folders: list[Path] = []
    for p in map(find_path, paths):
        if not p.exists():
            raise RunError(f"no run folder or folder of runs at {p}")
        folders += [f for f in _find_runs(p) if f not in folders]
    rows = []
    for folder in folders:
        if is_timm_run(folder):
            rows.append(_timm_row(folder))
            continue
        run = load_run(folder)
        recipe = dict(run["recipe"] or {})
        resolved = recipe.pop("resolved", None) or {}
        recipe.update(recipe.pop("execution", None) or {})  # one column per field, however it was filed
        result = run["result"] or {}
        row: dict[str, Any] = dict(run=str(folder), name=folder.name, recipe=recipe.pop("name", None), source="rsbkit",
                                   status=result.get("status"))
        row.update({k: _cell(v) for k, v in recipe.items()})
        for k, v in DEFAULTS.items() if run["recipe"] else ():  # a field newer than the run: it trained with the
            row.setdefault(k, _cell(v))  # default, since each new field's default is what ran before it existed
        for key in ("final_top1", "best_top1", "best_epoch", "final_top5", "final_loss", "epochs_done",
                    "wall_s", "imgs_per_s", "peak_mem_mb", "device_name", "num_skipped", "code_version", "error"):
            row[key] = result.get(key)
        ema = [r.get("ema_top1") for r in run["metrics"] or [] if r.get("ema_top1") is not None]
        row["final_ema_top1"] = result.get("final_ema_top1", ema[-1] if ema and result else None)
        row["train_top1"] = result.get("train_top1")  # the final weights on training images, unaugmented
        row["fit_gap"] = (None if row["train_top1"] is None or row["final_top1"] is None
                          else round(row["train_top1"] - row["final_top1"], 4))  # how much the run overfits
        data = result.get("data") or {}
        row["data"] = data.get("name")
        for key in ("train_images", "val_images", "limit_train", "limit_val"):  # a 512-image smoke run is not the demo
            row[key] = data.get(key)
        row["warnings"] = "; ".join(result.get("warnings") or []) or None
        row["lr_used"] = resolved.get("lr")
        row["effective_batch"] = resolved.get("effective_batch")
        point = folder / SWEEP_POINT
        if point.is_file():
            info = json.loads(point.read_text())
            row.update({f"param.{k}": _cell(v) for k, v in info.get("parameters", {}).items()})
            if info.get("step"):  # a cumulative sweep's step: its place, name and published value
                row.update(step_index=info["step"]["index"], step=info["step"]["name"], step_paper=info["step"].get("paper"),
                           seeds_added_after=bool(info["step"].get("seeds_added_after", False)))
            if info.get("added_after_results"):  # the sweep runner saw it added after other points' results
                row["seeds_added_after"] = True
            if row["status"] is None:
                row["status"], row["error"] = info.get("status"), info.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


class TensorBoardLogger:
    """An ``on_epoch`` hook writing each metrics row to ``<run>/tensorboard`` (``tensorboard --logdir runs``)."""

    def __init__(self, run_dir: Union[str, Path]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RunError("TensorBoard logging needs the tensorboard package: pip install tensorboard "
                           "(or pip install 'rsbkit[tensorboard]'), or turn tensorboard off") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, row: dict[str, Any]) -> None:
        for key in ("lr", "train_loss", "val_top1", "val_top5", "val_loss", "ema_top1", "imgs_per_s"):
            if row.get(key) is not None:
                self.writer.add_scalar(key, row[key], global_step=row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def epoch_hooks(run_dir: Union[str, Path], on_epoch: Optional[Callable[[dict[str, Any]], None]] = None,
                tensorboard: bool = False):
    """The ``on_epoch`` hook of a run: `on_epoch` and, when asked, a :class:`TensorBoardLogger`, closed at the
    end; None when there is neither."""
    board = TensorBoardLogger(run_dir) if tensorboard else None
    hooks = [h for h in (on_epoch, board) if h is not None]
    try:
        yield (lambda row: [h(row) for h in hooks]) if hooks else None
    finally:
        if board is not None:
            board.close()
