"""Run folders: one per training run, holding its evidence.

    runs/<name>/
      recipe.yaml    the resolved recipe (with the scaled LR and what else was derived)
      metrics.csv    one row per epoch (METRIC_COLUMNS)
      result.json    final and best top-1/top-5, cost, versions, seed, skipped files, status
      last.pt        full training state after the last finished epoch (resume from it)
      best.pt        weights of the epoch with the best val top-1

Every file is written to a temporary name and renamed, so a crash never leaves
half a file.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional, Union

import yaml

from .recipes import Recipe

METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "val_top1", "val_top5", "val_loss", "ema_top1",
    "imgs_per_s", "epoch_s", "peak_mem_mb", "skipped",
)


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"


def default_run_dir(recipe: Recipe, root: Union[str, Path] = "runs") -> Path:
    return Path(root) / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Union[str, Path], mode: str = "w") -> Iterator[IO]:
    """Yield a temporary file beside `path`; on success fsync it and rename it over `path`.

    A crash mid-write leaves the previous file intact (rename is atomic on POSIX)
    and no temporary file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def write_recipe(run: RunFolder, recipe: Recipe, resolved: dict[str, Any]) -> None:
    text = "# resolved recipe of this run; `python -m rsbkit train THIS_FILE` repeats it\n"
    text += yaml.safe_dump({**recipe.to_dict(), "resolved": resolved}, sort_keys=False)
    atomic_write_text(run.recipe, text)


def write_metrics(run: RunFolder, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row.get(k, "") for k in METRIC_COLUMNS} for row in rows)
    atomic_write_text(run.metrics, buf.getvalue())


def write_result(run: RunFolder, result: dict[str, Any]) -> None:
    atomic_write_text(run.result, json.dumps(result, indent=2, default=str) + "\n")


def read_metrics(path: Union[str, Path]) -> list[dict[str, Any]]:
    """metrics.csv as a list of dicts with numbers parsed (empty cells become None)."""
    def parse(v: str):
        if v == "":
            return None
        try:
            return int(v)
        except ValueError:
            return float(v)

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_run(path: Union[str, Path]) -> dict[str, Any]:
    """A run folder's records: ``{'path', 'recipe', 'metrics', 'result'}`` (missing files give None)."""
    run = RunFolder(Path(path))
    if not run.path.is_dir():
        from .errors import RunError

        raise RunError(f"run folder {run.path} does not exist")
    return dict(
        path=str(run.path),
        recipe=yaml.safe_load(run.recipe.read_text()) if run.recipe.is_file() else None,
        metrics=read_metrics(run.metrics) if run.metrics.is_file() else None,
        result=json.loads(run.result.read_text()) if run.result.is_file() else None,
    )


def code_version() -> str:
    """The git commit of the rsbkit source (with +dirty), or the package version outside git."""
    from . import __version__

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"rsbkit {__version__}"
    return f"{commit}{'+dirty' if dirty else ''}"


def environment(device_name: str) -> dict[str, Optional[str]]:
    import timm
    import torch

    from . import __version__

    return dict(
        device_name=device_name,
        torch=torch.__version__,
        timm=timm.__version__,
        rsbkit=__version__,
        code_version=code_version(),
        python=platform.python_version(),
        host=platform.node(),
    )
