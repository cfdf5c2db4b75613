"""Try an explorer's change: a short run of the recipe with the change, at a stated scale, in ``runs/explore/``, in a
background thread so the widgets stay live; one at a time (a second is refused, not queued).

The run is an ordinary run folder (``rsbkit.core.train.train``: recipe.yaml, metrics.csv, result.json), so the
report and compare notebooks read it. The scale shortens the recipe the same way for every change: its epochs, the
warmup, a multistep schedule's milestones and a progressive-resizing ramp in proportion, and the images it trains
and tests on; ``Scale.describe`` says so beside the button.

With ``reference=True`` the trial is read beside the reference run at the same scale: the base recipe with no
change, run once per base and scale in ``runs/explore/reference-<base>-<scale>/`` and reused; when it is missing,
the trial runs it too, after the change (:func:`reference_folder`). :func:`one_seed_text` says what one seed at
this scale can and cannot tell; the number of seeds a comparison needs comes from the seed study's arithmetic
(``rsbkit.workbook.study_stats``), which this layer may not import: the notebook passes it in as `seeds`.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import RecipeError, RsbkitError, RunError
from ..core.paths import runs_root
from ..core.recipes import Recipe, load_recipe
from ..core.runs import read_metrics
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

    @property
    def key(self) -> str:
        """The scale in a folder name: ``2ep-2000-500-default``."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.epochs}ep-{self.limit_train}-{self.limit_val}-{self.data}")

    def duration(self, recipe: Optional[Recipe] = None) -> str:
        """How long a trial takes, as measured: only the default scale of the demo recipe has a figure (93 s on a
        loaded 2-core host); never less is promised."""
        if self == QUICK and (recipe is None or recipe.name in ("demo", "demo-trial")):
            return "about 1.5 minutes on 2 cores (measured: 93 s on a loaded 2-core host)"
        return ("not measured at this scale and recipe (the demo at the default scale takes about 1.5 minutes on 2 "
                "cores; a bigger model, resolution or scale takes longer)")

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
    base: Optional[Recipe] = None  # the recipe the change is from (its reference's recipe, at this scale)
    reference: Optional[Path] = None  # the reference run's folder, when the trial is read beside one
    reference_result: Optional[dict[str, Any]] = None
    reference_ran: bool = False  # the reference was missing, so this trial runs it (after the change)
    phase: str = "change"  # what runs now: "change", then "reference" when it runs one, then "done"

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
               reference: bool = False, on_reference_epoch: Optional[Callable[[dict[str, Any]], None]] = None,
               on_done: Optional[Callable[[Trial], None]] = None, **settings: Any) -> Trial:
    """Start a short run of ``change.base`` with `change`, at `scale`, in a background thread; return its Trial at
    once. A change that is not a recipe, or a second trial while one runs, is refused with a RecipeError or
    RunError (nothing starts). `settings` are train()'s run options (device, workers, ...); `runner` is the training
    function (rsbkit.core.train.train). With `reference`, the trial finds the base's reference run at this scale
    (:func:`find_reference`), or runs it after the change (`on_reference_epoch` sees its epochs). `on_done` is
    called in the thread with the Trial when everything it runs has ended (its result or error set)."""
    if change.error:
        raise RecipeError(f"not a recipe, so nothing to try: {change.error}")
    recipe = scale.apply(change.base.replace(**change.fields))
    runner = runner or train
    with _LOCK:
        busy = running()
        if busy is not None:
            raise RunError(f"a trial is running in {busy.out_dir}; wait for it to end before trying another")
        folder = Path(out_dir) if out_dir is not None else _new_folder(recipe)
        trial = Trial(recipe, folder, scale, base=change.base)
        if reference:
            trial.reference, trial.reference_result = find_reference(change.base, scale)
            trial.reference_ran = trial.reference_result is None

        def log(line: str) -> None:
            trial.lines.append(str(line))

        def work() -> None:
            try:
                trial.result = runner(recipe, scale.data, folder, limit_train=scale.limit_train, limit_val=scale.limit_val,
                                      on_epoch=on_epoch, log=log, progress="none", **settings)
                if trial.reference_ran:
                    trial.phase = "reference"
                    trial.reference_result = runner(reference_recipe(change.base, scale), scale.data, trial.reference,
                                                    limit_train=scale.limit_train, limit_val=scale.limit_val,
                                                    on_epoch=on_reference_epoch, log=log, progress="none", **settings)
            except BaseException as exc:  # kept for the caller to show: a thread's exception reaches no one
                trial.error = exc
            trial.phase = "done"
            if on_done is not None:
                try:
                    on_done(trial)
                except Exception as exc:  # a display that fails must not pass as the run's success
                    trial.lines.append(f"on_done failed: {type(exc).__name__}: {exc}")

        trial.thread = threading.Thread(target=work, name=f"rsbkit trial {folder.name}", daemon=True)
        _CURRENT[:] = [trial]
        trial.thread.start()
    return trial


def reference_recipe(base: Recipe, scale: Scale) -> Recipe:
    """The reference of a trial from `base` at `scale`: the base with no change, shortened the same way."""
    return scale.apply(base).replace(name=f"{base.name}-reference")


def reference_folder(base: Recipe, scale: Scale, n: int = 1) -> Path:
    """``runs/explore/reference-<base>-<scale>/`` (``-2``, ``-3`` ... when an earlier folder of that name holds
    another recipe, one edited since, or a run that did not complete)."""
    name = f"reference-{re.sub(r'[^A-Za-z0-9._-]+', '_', base.name)}-{scale.key}"
    return runs_root() / "explore" / (name if n == 1 else f"{name}-{n}")


def find_reference(base: Recipe, scale: Scale) -> tuple[Path, Optional[dict[str, Any]]]:
    """The base's reference run at `scale`: (its folder, its result) where a completed run of exactly that recipe
    and scale is, else (the folder to run it in, None)."""
    expected, n = reference_recipe(base, scale), 1
    while True:
        folder = reference_folder(base, scale, n)
        if not folder.exists():
            return folder, None
        try:
            result = json.loads((folder / "result.json").read_text())
            same = (load_recipe(folder / "recipe.yaml").replace(name=expected.name) == expected
                    and result.get("status") == "completed" and (result.get("data") or {}).get("limit_train") == scale.limit_train
                    and (result.get("data") or {}).get("limit_val") == scale.limit_val)
        except (OSError, ValueError, RsbkitError):
            same = False
        if same:
            return folder, result
        n += 1


def epoch_rows(folder: Union[str, Path, None]) -> list[dict[str, Any]]:
    """A run folder's metrics.csv rows (none when it has none yet)."""
    path = Path(folder) / "metrics.csv" if folder is not None else None
    return read_metrics(path) if path is not None and path.is_file() else []


def one_seed_text(trial: Trial, seeds: Optional[Callable[[float], str]] = None) -> str:
    """What a finished trial beside its reference can and cannot tell, as plain sentences. `seeds(diff)` (the
    notebook's: ``rsbkit.workbook.run_studies.trial_seeds``) adds how many seeds a comparison of a difference of
    `diff` points would need; without it the text names the seed study that says so."""
    if trial.error is not None:
        return f"The trial failed: {type(trial.error).__name__}: {trial.error}"
    mine = (trial.result or {}).get("final_top1")
    ref = (trial.reference_result or {}).get("final_top1")
    scale = trial.scale
    where = f"{scale.epochs} epoch(s), {scale.limit_train:,} training images, one seed"
    if mine is None or ref is None:
        return f"Final test top-1 of this change: {mine}; of the reference: {ref} (no comparison without both)."
    diff = float(mine) - float(ref)
    base = trial.base.name if trial.base is not None else "the recipe"
    lines = [f"Final test top-1 at this scale ({where}): this change {mine:.2f}%, the reference ({base}, no change) "
             f"{ref:.2f}%: {diff:+.2f} points.",
             "What one seed at this scale can tell: that the change trains (no error, no divergence), and how its curves "
             "move beside the reference's in the first epochs.",
             f"What it cannot tell: whether {diff:+.2f} points is the change or seed noise, nor what the change does over "
             f"a whole run: {scale.epochs} epoch(s) of a shortened schedule on {scale.limit_train:,} images, tested on "
             f"{scale.limit_val:,} (one image is {100 / scale.limit_val:.2f} points) favours what learns fastest, not what "
             "ends best; and each run is one draw at the recipe's seed, not a spread."]
    lines.append(seeds(diff) if seeds is not None else
                 "How many seeds a real comparison needs: the seed study (notebooks/studies/seed_variance.ipynb) measures "
                 "one run's spread at a scale, and the compare notebook reads differences against it.")
    return "\n".join(lines)


def _new_folder(recipe: Recipe) -> Path:
    root = runs_root() / "explore"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{stamp}-{recipe.name}", 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{recipe.name}-{n}"
    return path
