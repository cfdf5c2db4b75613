"""Try an explorer's change: a short run of the recipe with the change, at a stated scale, in ``runs/explore/``, in a
background thread so the widgets stay live; one at a time (a second is refused, not queued).

The run is an ordinary run folder (``rsbkit.core.train.train``: recipe.yaml, metrics.csv, result.json), so the
report and compare notebooks read it. The scale shortens the recipe the same way for every change: its epochs, the
warmup, a multistep schedule's milestones and a progressive-resizing ramp in proportion, and the images it trains
and tests on; ``Scale.describe`` says so beside the button.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import RecipeError, RunError
from ..core.paths import runs_root
from ..core.recipes import Recipe
from ..core.train import train
from .change import Change


@dataclass(frozen=True)
class Scale:
    """How short a trial is: `epochs` of the recipe's schedule, on `limit_train` images of `data`, tested on
    `limit_val`."""

    epochs: int = 2
    limit_train: int = 2000
    limit_val: int = 500
    data: str = "default"

    def describe(self) -> str:
        return (f"{self.epochs} epoch(s) on {self.limit_train:,} training images of {self.data}, tested on "
                f"{self.limit_val:,}: one seed, at a scale that shows a trend, not a verdict")

    def apply(self, recipe: Recipe) -> Recipe:
        """`recipe` shortened to `epochs`: warmup, milestones and a progressive ramp kept in proportion."""
        e0, e = recipe.epochs, self.epochs
        if e < 1:
            raise RecipeError(f"a trial of {e} epochs: give epochs >= 1")
        changes: dict[str, Any] = dict(epochs=e, warmup_epochs=min(round(recipe.warmup_epochs * e / e0), e - 1 if e > 1 else 0))
        if recipe.decay_milestones:
            changes["decay_milestones"] = tuple(sorted({m for m in (round(m * e / e0) for m in recipe.decay_milestones)
                                                        if 0 < m < e}))
        if recipe.train_res_start is not None:
            total = e + recipe.cooldown_epochs
            first = min(round(recipe.train_res_ramp[0] * e / e0), total - 1)
            changes["train_res_ramp"] = (first, max(first + 1, min(round(recipe.train_res_ramp[1] * e / e0), total)))
        return recipe.replace(name=f"{recipe.name}-trial", **changes)


QUICK = Scale()


@dataclass
class Trial:
    """One background run: its folder, the recipe it trains, and when done its result or its error."""

    recipe: Recipe
    out_dir: Path
    scale: Scale
    thread: Optional[threading.Thread] = None
    result: Optional[dict[str, Any]] = None
    error: Optional[BaseException] = None
    lines: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> Trial:
        if self.thread is not None:
            self.thread.join(timeout)
        return self


_LOCK = threading.Lock()
_CURRENT: list[Trial] = []  # the trial started last (at most one runs)


def running() -> Optional[Trial]:
    """The trial now running, if any."""
    return next((t for t in _CURRENT if not t.done), None)


def try_change(change: Change, scale: Scale = QUICK, *, out_dir: Union[str, Path, None] = None,
               on_epoch: Optional[Callable[[dict[str, Any]], None]] = None, runner: Optional[Callable[..., dict]] = None,
               **settings: Any) -> Trial:
    """Start a short run of ``change.base`` with `change`, at `scale`, in a background thread; return its Trial at
    once. A change that is not a recipe, or a second trial while one runs, is refused with a RecipeError or
    RunError (nothing starts). `settings` are train()'s run options (device, workers, ...); `runner` is the training
    function (rsbkit.core.train.train)."""
    if change.error:
        raise RecipeError(f"not a recipe, so nothing to try: {change.error}")
    recipe = scale.apply(change.base.replace(**change.fields))
    runner = runner or train
    with _LOCK:
        busy = running()
        if busy is not None:
            raise RunError(f"a trial is running in {busy.out_dir}; wait for it to end before trying another")
        folder = Path(out_dir) if out_dir is not None else _new_folder(recipe)
        trial = Trial(recipe, folder, scale)

        def log(line: str) -> None:
            trial.lines.append(str(line))

        def work() -> None:
            try:
                trial.result = runner(recipe, scale.data, folder, limit_train=scale.limit_train, limit_val=scale.limit_val,
                                      on_epoch=on_epoch, log=log, progress="none", **settings)
            except BaseException as exc:  # kept for the caller to show: a thread's exception reaches no one
                trial.error = exc

        trial.thread = threading.Thread(target=work, name=f"rsbkit trial {folder.name}", daemon=True)
        _CURRENT[:] = [trial]
        trial.thread.start()
    return trial


def _new_folder(recipe: Recipe) -> Path:
    root = runs_root() / "explore"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{stamp}-{recipe.name}", 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{recipe.name}-{n}"
    return path
