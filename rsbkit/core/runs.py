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
import errno
import fcntl
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional, Union

import timm
import torch
import yaml

from . import __version__
from .errors import RunError, RunLockedError, RunWriteError
from .paths import find_path, runs_root
from .recipes import Recipe, split_fields

METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_res", "train_loss", "val_top1", "val_top5", "val_loss", "ema_top1",
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


def check_resume(folder: Union[str, Path], resume: bool) -> None:
    """Refuse to train over a run folder's last.pt unless resuming, and to resume where there is none."""
    last = Path(folder) / "last.pt"
    if last.exists() and not resume:
        raise RunError(f"{folder} already holds a run (last.pt); pass resume=True to continue it (the CLI's --resume, "
                       "a notebook's parameter: set resume=True), or choose another out_dir")
    if resume and not last.exists():
        raise RunError(f"nothing to resume: resume=True but {last} does not exist; set resume=False to start the run")


def stamped_folder(name: str, root: Union[str, Path, None] = None) -> Path:
    """A new run folder's default name: `name` and the local time, e.g. runs/a3-20261201-193900, in `root` (default
    :func:`rsbkit.core.paths.runs_root`: the checkout's runs/, also from a kernel in notebooks/)."""
    return Path(root if root is not None else runs_root()) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def default_run_dir(recipe: Recipe, root: Union[str, Path, None] = None) -> Path:
    return stamped_folder(recipe.name, root)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Union[str, Path], mode: str = "w") -> Iterator[IO]:
    """Yield a temporary file beside `path`; on success fsync it and rename it over `path`.

    A crash mid-write leaves the previous file intact (rename is atomic on POSIX)
    and no temporary file behind. A write the file system refuses (no space, quota,
    read-only) raises :class:`RunWriteError` naming the file, the error and the free space.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise RunWriteError(write_failure(path, exc)) from exc
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RunWriteError(write_failure(path, exc)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_failure(path: Path, exc: OSError) -> str:
    """One line for a refused write: the file, the error, the free space, and what was kept."""

    try:
        usage = shutil.disk_usage(path.parent)
        free = f"{_size(usage.free)} free of {_size(usage.total)} on {path.parent}"
    except OSError:
        free = f"free space on {path.parent} unknown"
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    return (f"could not write {path}: {exc.strerror or exc}{f' ({name})' if name else ''}; {free}; {kept}. "
            "Free space (or fix the folder's permissions), then continue with --resume")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# ---------------------------------------------------------------- one writer per run folder

LOCK_FILE = ".rsbkit-writer.lock"  # held by the process that trains into the folder
POINT_LOCK_FILE = ".rsbkit-point.lock"  # held by the sweep or `rsbkit run` process that runs a notebook into it


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on a file in a run folder, held while the file stays open.

    The kernel releases it when its holder ends in any way (``kill -9`` included),
    so a crash never leaves a stale lock. The file also holds who took it (host, PID,
    start time, command), which the next writer's error shows.
    """

    def __init__(self, folder: Union[str, Path], name: str = LOCK_FILE, *, timeout: float = 0.0, what: str = "run folder"):
        self.path = Path(folder) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd: Optional[int] = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask() | 0o600)
        except OSError as exc:
            raise RunWriteError(write_failure(self.path, exc)) from exc
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._read_holder()
                    self.release()
                    waited = f" (waited {timeout:g} s)" if timeout else ""
                    raise RunLockedError(
                        f"{what} {Path(folder)} is in use by another writer{waited}: {holder}. Wait for it to end, or "
                        "choose another out_dir; the lock goes when that process ends, even if it is killed", holder
                    ) from None
                time.sleep(min(0.5, max(0.01, deadline - time.monotonic())))
            except OSError as exc:  # ENOLCK, EINVAL: a file system without flock (Lustre noflock, NFS without lockd)
                self.release()
                raise RunError(
                    f"cannot lock {self.path}: {exc.strerror or exc}; this file system does not support flock, so rsbkit "
                    "cannot keep a second writer out. Mount it with lock support (NFS with lockd, Lustre -o flock) "
                    "or use an out_dir on a local disk"
                ) from None
        self.holder = writer_record()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (json.dumps(self.holder) + "\n").encode(), 0)
            os.fsync(self._fd)
        except OSError as exc:
            self.release()
            raise RunWriteError(write_failure(self.path, exc)) from exc

    def _read_holder(self) -> str:
        try:
            h = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            h = {}
        if not h:
            return "its holder has not written its name yet"
        return f"host {h.get('host')}, PID {h.get('pid')}, since {h.get('started')}, command: {h.get('command')}"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def writer_record() -> dict[str, Any]:
    """Who is writing: this host, process, the time it started writing, and its command line."""
    return dict(host=platform.node(), pid=os.getpid(), started=time.strftime("%Y-%m-%dT%H:%M:%S"), command=command_line())


def command_line() -> str:
    """This process's command line, for records of who wrote a run."""

    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):  # python -m PACKAGE
        argv = ["-m", Path(argv[0]).parent.name, *argv[1:]]
    return shlex.join([Path(sys.executable).name, *argv]) if argv and argv[0] else Path(sys.executable).name


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def write_recipe(run: RunFolder, recipe: Recipe, resolved: dict[str, Any]) -> None:
    """recipe.yaml: the fields that say what is trained, then ``execution:`` (how it runs; resume may change
    these) and ``resolved:`` (what the run settled on: LR, batch split, device, input path)."""
    training, execution = split_fields(recipe)
    text = "# resolved recipe of this run; `python -m rsbkit train THIS_FILE` repeats it\n"
    text += yaml.safe_dump({**training, "execution": execution, "resolved": resolved}, sort_keys=False)
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
    run = RunFolder(find_path(path))
    if not run.path.is_dir():
        raise RunError(f"run folder {run.path} does not exist")
    return dict(
        path=str(run.path),
        recipe=yaml.safe_load(run.recipe.read_text()) if run.recipe.is_file() else None,
        metrics=read_metrics(run.metrics) if run.metrics.is_file() else None,
        result=json.loads(run.result.read_text()) if run.result.is_file() else None,
    )


def code_version() -> str:
    """The git commit of the rsbkit source (with +dirty), or the package version outside git."""

    here = Path(__file__).resolve().parents[1]  # the rsbkit package
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"rsbkit {__version__}"
    return f"{commit}{'+dirty' if dirty else ''}"


def environment(device_name: str) -> dict[str, Optional[str]]:
    return dict(
        device_name=device_name,
        torch=torch.__version__,
        timm=timm.__version__,
        rsbkit=__version__,
        code_version=code_version(),
        python=platform.python_version(),
        host=platform.node(),
    )
