"""Checkpoints: written atomically, read with ``weights_only=True``, checked on load."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch

from .errors import CheckpointError
from .runs import atomic_file

FORMAT = "rsbkit-checkpoint"
VERSION = 1


def save_checkpoint(path: Union[str, Path], state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    with atomic_file(path, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Read an rsbkit checkpoint; a missing, truncated or foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, disallowed globals
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it may be truncated or not a PyTorch file: use the run's other checkpoint (best.pt / last.pt) or retrain"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not an rsbkit checkpoint (found {keys}); for plain timm/torch weights use "
            "rsbkit.evaluate.load_model(PATH, model=NAME, num_classes=N)"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this rsbkit reads version {VERSION}")
    return state
