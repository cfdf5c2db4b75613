"""Paths as a notebook user writes them. JupyterLab starts a notebook's kernel in the notebook's folder
(`notebooks/`, `notebooks/explore/`), papermill and the command line where they are run (the repository's root):
a relative path (a recipe file, a dataset folder, a run folder) is read where the process runs when it exists
there, else from the root of the source checkout rsbkit runs from; new run folders go to that checkout's `runs/`
whatever the kernel's folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union


def project_root() -> Optional[Path]:
    """The source checkout rsbkit is imported from (pyproject.toml, params/ and notebooks/ beside rsbkit/), or None
    for an installed rsbkit."""
    root = Path(__file__).resolve().parents[2]
    ok = (root / "pyproject.toml").is_file() and (root / "params").is_dir() and (root / "notebooks").is_dir()
    return root if ok else None


def checkout_path(*parts: str) -> Optional[Path]:
    """`parts` inside the source checkout (``checkout_path("findings")``), or None for an installed rsbkit, which has
    no checkout: params/, findings/ and the rest of the repository are not in the wheel."""
    root = project_root()
    return root.joinpath(*parts) if root is not None else None


def _inside_root() -> Optional[Path]:
    root = project_root()
    if root is None:
        return None
    here = Path.cwd().resolve()
    return root if here == root or root in here.parents else None


def find_path(path: Union[str, Path]) -> Path:
    """`path` as given when it is absolute or exists from here; else, inside the checkout, the same path from its
    root when that exists (``runs/demo-...`` or ``params/a3.yaml`` from a kernel in ``notebooks/``); else as given,
    for the caller's error to name."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = _inside_root()
    if root is not None and (root / p).exists():
        return Path(os.path.relpath(root / p))
    return p


def runs_root() -> Path:
    """Where new run folders go by default: the checkout's ``runs/`` when this process runs inside the checkout (as
    ``../runs`` from a kernel in ``notebooks/``), else ``./runs``."""
    root = _inside_root()
    return Path(os.path.relpath(root / "runs")) if root is not None else Path("runs")


def output_path(path: Union[str, Path]) -> Path:
    """A folder to write, as a user wrote it: a relative path under ``runs/`` goes to :func:`runs_root`."""
    p = Path(path).expanduser()
    if not p.is_absolute() and p.parts[:1] == ("runs",):
        return runs_root().joinpath(*p.parts[1:])
    return p
