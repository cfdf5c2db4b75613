"""Checkpoints: written atomically, read with ``weights_only=True``, checked on load.

rsbkit's own (:func:`load_checkpoint`) and timm ``train.py``'s (``last.pth.tar``, ``model_best.pth.tar``:
``arch``, ``state_dict``, ``state_dict_ema``, ``args``; :func:`read_checkpoint` tells them apart). A timm
checkpoint pickles its ``args`` as an ``argparse.Namespace``: exactly that class is allowed beyond
``weights_only``'s own, so a file holding anything more is still refused."""
from __future__ import annotations

import argparse
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


def read_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Any checkpoint rsbkit reads (its own, or a timm train.py one), as its dict; a missing, truncated or
    foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # timm's args; nothing else beyond weights_only's
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, disallowed globals
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it may be truncated or not a PyTorch file: use the run's other checkpoint (best.pt / last.pt) or retrain"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a checkpoint (found a {type(state).__name__}); for plain weights use "
                              "rsbkit.core.evaluate.load_model(PATH, model=NAME, num_classes=N)")
    return state


def is_timm_checkpoint(state: dict[str, Any]) -> bool:
    """A timm train.py checkpoint: its architecture and weights (and the run's args)."""
    return isinstance(state.get("arch"), str) and isinstance(state.get("state_dict"), dict)


def timm_weights(state: dict[str, Any], path: Union[str, Path], ema: bool) -> dict[str, torch.Tensor]:
    """A timm checkpoint's weights: ``state_dict``, or ``state_dict_ema`` (the run's --model-ema weights)."""
    key = "state_dict_ema" if ema else "state_dict"
    if not isinstance(state.get(key), dict):
        raise CheckpointError(f"{path} holds no {key!r}" + ("; the timm run had --model-ema off" if ema else ""))
    return state[key]


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Read an rsbkit checkpoint; a missing, truncated or foreign file raises CheckpointError naming it."""
    return check_format(read_checkpoint(path, map_location), path)


def check_format(state: dict[str, Any], path: Union[str, Path]) -> dict[str, Any]:
    """`state` if it is an rsbkit checkpoint of this version, else a CheckpointError saying what it is."""
    if state.get("format") != FORMAT:
        if is_timm_checkpoint(state):
            raise CheckpointError(f"{path} is a timm train.py checkpoint ({state['arch']}), not an rsbkit one: "
                                  "load_model, `rsbkit evaluate` and init: read it; it cannot be resumed")
        raise CheckpointError(
            f"{path} is not an rsbkit checkpoint (found {list(state)[:5]}); for plain timm/torch weights use "
            "rsbkit.core.evaluate.load_model(PATH, model=NAME, num_classes=N)"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this rsbkit reads version {VERSION}")
    return state
