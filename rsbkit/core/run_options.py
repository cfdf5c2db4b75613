"""How a run executes (not what it trains): every option declared once, here.

Each :class:`RunOption` has a name, a type, a default, a help line, bounds or choices, and the entry points
that take it:

- ``train``: a keyword of :func:`rsbkit.core.train.train` (its :class:`~rsbkit.core.train.Settings` dataclass is
  built from these);
- ``cli``: a flag of ``rsbkit train`` (``--check-every``), and so of the torchrun and Slurm command lines that
  :func:`to_flags` writes;
- ``notebook``: a parameter of ``notebooks/procedures/train.ipynb`` and of
  :func:`rsbkit.workbook.train_and_evaluate.train_setup` (named in its parameters cell, injected by papermill ``-p``,
  or given in its ``options`` dict).

Adding an option is one entry in :data:`RUN_OPTIONS`; the tests check that every entry point has every option
it should (tests/core/test_run_options.py). What is trained, the recipe, is declared apart
(:mod:`rsbkit.core.recipes.schema`); its fields that change only how a run executes are its
``EXECUTION_FIELDS``.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Optional

import torch

from .errors import RunError


@dataclass(frozen=True)
class RunOption:
    name: str
    kind: type  # int, str, bool; `object` for Python objects (callables) that only the train() keyword takes
    default: Any
    help: str
    entries: tuple[str, ...] = ("train", "cli", "notebook")
    optional: bool = False  # None is a value (the default's "automatic")
    choices: tuple[str, ...] = ()
    minimum: Optional[int] = None
    metavar: Optional[str] = None
    also: tuple[type, ...] = ()  # other types a train() keyword takes (a torch.device for device)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """Raise :class:`RunError` naming the option, the value and what it takes."""
        if (value is None and (self.optional or self.kind is object)) or isinstance(value, self.also):
            return
        if self.kind is object:
            if not callable(value):
                raise RunError(f"{self.name}={value!r}: give a function ({self.help})")
            return
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise RunError(f"{self.name}={value!r}: give an integer{' or None' if self.optional else ''} ({self.help})")
        if self.kind is bool and not isinstance(value, bool):
            raise RunError(f"{self.name}={value!r}: give True or False ({self.help})")
        if self.kind is str and not isinstance(value, str):
            raise RunError(f"{self.name}={value!r}: give a string{' or None' if self.optional else ''} ({self.help})")
        if self.choices and value not in self.choices:
            raise RunError(f"{self.name}={value!r}: use one of {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            more = "an integer >= " + str(self.minimum) + (", or None" if self.optional else "")
            raise RunError(f"{self.name}={value!r}: give {more} ({self.help})")


PROGRESS = ("auto", "bar", "line", "none")

RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("device", str, None, "cuda, cuda:1, cpu or auto (default: CUDA when there is one)", optional=True,
              also=(torch.device,)),
    RunOption("workers", int, None, "loader worker processes per training process (default: from the cores, the "
              "processes on this machine and the input path)", optional=True, minimum=0, metavar="N"),
    RunOption("resume", bool, False, "continue the run in its folder from last.pt (the same weights as a run that "
              "never stopped)"),
    RunOption("progress", str, "auto", "bar (tqdm), line (one line per epoch), none, or auto (bar in a terminal, "
              "else line)", choices=PROGRESS),
    RunOption("limit_train", int, None, "train on a fixed random subset of N images (smoke runs)", optional=True,
              minimum=1, metavar="N"),
    RunOption("limit_val", int, None, "evaluate on a fixed random subset of N images", optional=True, minimum=1,
              metavar="N"),
    RunOption("eval_train", int, 2000, "after the last epoch, the final weights' top-1 on N of the training images "
              "read as the test images are (no augmentation): train_top1 in result.json, and with the test top-1 the "
              "gap that says how much the run overfits; 0: not measured", minimum=0, metavar="N"),
    RunOption("data_root", str, None, "where downloadable datasets (timm's, Fashion-MNIST) are stored", optional=True,
              metavar="DIR"),
    RunOption("micro_batch", int, None, "images per forward pass in each process, the rest accumulated (default: the "
              "recipe's plan, halved on an out-of-memory error in the first step)", optional=True, minimum=1,
              metavar="N"),
    RunOption("eval_batch_size", int, None, "images per evaluation batch in each process (default: min(256, 2 x "
              "batch_size))", optional=True, minimum=1, metavar="N"),
    RunOption("backend", str, None, "the process group's backend under torchrun (default: nccl on CUDA, gloo on "
              "CPU)", optional=True, choices=("nccl", "gloo")),
    RunOption("stop_after", int, None, "end this call after that epoch with status 'stopped' (resume continues it), "
              "e.g. to fit a cluster's time limit", optional=True, minimum=1, metavar="EPOCH"),
    RunOption("check_every", int, 50, "optimizer steps between checks of the loss for inf/NaN (each check waits for "
              "the device)", minimum=1, metavar="STEPS"),
    RunOption("tensorboard", bool, False, "also log the curves to <run folder>/tensorboard", entries=("cli", "notebook")),
    RunOption("nproc", int, 1, "training processes; above 1 the notebook launches torchrun (DistributedDataParallel, "
              "one per GPU)", entries=("notebook",), minimum=1),
    RunOption("on_epoch", object, None, "called with each epoch's metrics row (live plots)", entries=("train",)),
    RunOption("log", object, print, "where the run's lines go", entries=("train",)),
)
BY_NAME = {o.name: o for o in RUN_OPTIONS}


def options_for(entry: str) -> tuple[RunOption, ...]:
    """The options an entry point takes: ``train``, ``cli`` or ``notebook``."""
    return tuple(o for o in RUN_OPTIONS if entry in o.entries)


def check_names(values: Iterable[str], entry: str) -> None:
    """Every name known to `entry`: an unknown one is named, with the closest known."""
    known = [o.name for o in options_for(entry)]
    for name in values:
        if name not in known:
            close = get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}" if close else ""
            raise RunError(f"unknown run option {name!r}{hint}; known: {', '.join(known)}")


def check_values(values: dict[str, Any], entry: str) -> None:
    """Every name known to `entry` (:func:`check_names`), every value valid."""
    check_names(values, entry)
    for name, value in values.items():
        BY_NAME[name].check(value)


def add_flags(parser: argparse.ArgumentParser, entry: str = "cli", names: Optional[Iterable[str]] = None) -> None:
    """A flag for each option of `entry` (or for the options `names` only: ``rsbkit evaluate`` and ``bench`` take a
    few), its default and help from the declaration."""
    for o in options_for(entry) if names is None else [BY_NAME[name] for name in names]:
        if o.kind is bool:
            parser.add_argument(o.flag, dest=o.name, action="store_true", help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.name, type=o.kind, default=o.default, choices=o.choices or None,
                                metavar=o.metavar, help=o.help)


def from_args(args: argparse.Namespace, entry: str = "cli") -> dict[str, Any]:
    return {o.name: getattr(args, o.name) for o in options_for(entry)}


def to_flags(values: dict[str, Any]) -> list[str]:
    """The command-line flags of `values` that differ from the defaults (the torchrun and Slurm command lines):
    :func:`add_flags` parses them back to the same values."""
    out: list[str] = []
    for o in options_for("cli"):
        value = values.get(o.name, o.default)
        if value == o.default:
            continue
        out += [o.flag] if o.kind is bool else [o.flag, str(value)]
    return out


def train_values(values: dict[str, Any]) -> dict[str, Any]:
    """The options among `values` that :func:`rsbkit.core.train.train` takes."""
    names = {o.name for o in options_for("train")}
    return {k: v for k, v in values.items() if k in names}


def in_namespace(namespace: dict[str, Any], entry: str = "notebook", skip: Iterable[str] = ()) -> dict[str, Any]:
    """The options of `entry` defined in `namespace` (a notebook's globals: its parameters cell and what papermill
    injected), so that an option reaches the notebook without a line of its own."""
    return {o.name: namespace[o.name] for o in options_for(entry) if o.name in namespace and o.name not in skip}


def settings_fields() -> list[tuple[str, Any, Any]]:
    """(name, annotation, default) of each ``train`` option: the fields of rsbkit.core.train.Settings."""
    def annotation(o: RunOption) -> Any:
        return Any if o.kind is object else Optional[o.kind] if o.optional else o.kind

    return [(o.name, annotation(o), o.default) for o in options_for("train")]
