"""Run folders as one table (:func:`load_runs`: a row per run, its recipe's fields, result and cost,
and a sweep point's parameters), and the per-epoch hooks that mirror a run's rows into TensorBoard
(:func:`epoch_hooks`). pandas and TensorBoard are imported when called: neither is needed to train."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import RunError
from ..core.runs import load_run

SWEEP_POINT = "sweep_point.json"  # written by the sweep runner beside a point's records


def _find_runs(path: Path) -> list[Path]:
    """Run folders at or below `path`: those with result.json or recipe.yaml, and sweep points with only
    sweep_point.json (a point that failed early) unless run folders lie below them. A study notebook run
    into its sweep's folder (``rsbkit run seed_variance.ipynb --out runs/sweeps/seeds``) leaves a
    sweep_point.json above the seeds' runs: that folder is not a run of its own."""
    def trained(folder: Path) -> bool:
        return (folder / "result.json").is_file() or (folder / "recipe.yaml").is_file()

    if trained(path):
        return [path]
    found = {p.parent for name in ("result.json", "recipe.yaml", SWEEP_POINT) for p in path.rglob(name)}
    return sorted(f for f in found if trained(f) or not any(g != f and f in g.parents for g in found))


def _cell(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # hashable, so groupby works


def load_runs(paths: Union[str, Path, Iterable[Union[str, Path]]] = "runs") -> pandas.DataFrame:  # noqa: F821
    """One row per run folder found under `paths` (a run folder, a folder of runs, or a list).

    Columns: ``run`` (folder), ``name`` (its last part), ``recipe`` (the recipe's
    name), ``status``, every other recipe field (``model``, ``lr``,
    ``loss`` ...), the final metrics (``final_top1``, ``best_top1``, ``best_epoch``,
    ``final_top5``, ``epochs_done``), the cost (``wall_s``, ``imgs_per_s``,
    ``peak_mem_mb``, ``device_name``), ``data`` (the dataset's name), ``lr_used`` and ``effective_batch`` as the
    run resolved them, ``error``, and ``param.<name>`` for a sweep point's notebook
    parameters. A run that never finished has status ``running`` (or none) and
    empty metrics; it is listed, not dropped.
    """
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    folders: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RunError(f"no run folder or folder of runs at {p}")
        folders += [f for f in _find_runs(p) if f not in folders]
    rows = []
    for folder in folders:
        run = load_run(folder)
        recipe = dict(run["recipe"] or {})
        resolved = recipe.pop("resolved", None) or {}
        recipe.update(recipe.pop("execution", None) or {})  # one column per field, however it was filed
        result = run["result"] or {}
        row: dict[str, Any] = dict(run=str(folder), name=folder.name, recipe=recipe.pop("name", None),
                                   status=result.get("status"))
        row.update({k: _cell(v) for k, v in recipe.items()})
        for key in ("final_top1", "best_top1", "best_epoch", "final_top5", "final_loss", "epochs_done",
                    "wall_s", "imgs_per_s", "peak_mem_mb", "device_name", "num_skipped", "code_version", "error"):
            row[key] = result.get(key)
        row["data"] = (result.get("data") or {}).get("name")
        row["lr_used"] = resolved.get("lr")
        row["effective_batch"] = resolved.get("effective_batch")
        point = folder / SWEEP_POINT
        if point.is_file():
            info = json.loads(point.read_text())
            row.update({f"param.{k}": _cell(v) for k, v in info.get("parameters", {}).items()})
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
