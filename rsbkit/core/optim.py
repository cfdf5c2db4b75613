"""Optimizer and LR schedule from a recipe, both built by timm."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Optional

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from .recipes import Recipe


def create_optimizer(model: torch.nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """timm's optimizer for `recipe.opt`; no weight decay on norm and bias unless `decay_norm_bias`."""
    extra = {}
    if recipe.opt.startswith("lamb"):
        extra["max_grad_norm"] = recipe.lamb_clip
    return create_optimizer_v2(
        model,
        opt=recipe.opt,
        lr=lr,
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,  # used by SGD-family optimizers only
        filter_bias_and_bn=not recipe.decay_norm_bias,
        **extra,
    )


def create_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int) -> Scheduler:
    """timm's cosine or multistep schedule over `epochs`, then `cooldown_epochs` at min_lr.

    Drive it as timm's train.py does: ``step(epoch)`` at the start of every epoch and
    ``step_update(updates)`` after every optimizer step. timm makes the one that does
    not match `sched_on_updates` a no-op: per epoch (the default, as RSB ran) the LR
    changes at epoch boundaries only; per update, at every step.
    """
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=recipe.sched,
        num_epochs=recipe.epochs,
        decay_milestones=list(recipe.decay_milestones),
        decay_rate=recipe.decay_rate,
        min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        cooldown_epochs=recipe.cooldown_epochs,
        step_on_epochs=not recipe.sched_on_updates,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


def _driven_lrs(recipe: Recipe, steps_per_epoch: int, lr: float, updates: Iterable[int]) -> Iterator[tuple[int, float]]:
    """(update, LR) at each of `updates` (0-based optimizer steps, increasing), from the same timm scheduler driven the
    same way as the training loop: ``step(epoch)`` as each epoch starts, ``step_update(n)`` after the n-th step (one
    of the two acts, as `sched_on_updates` says)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = create_scheduler(optimizer, recipe, steps_per_epoch)
    epoch = None
    for update in updates:
        if update // steps_per_epoch != epoch:
            epoch = update // steps_per_epoch
            scheduler.step(epoch)
        if update:
            scheduler.step_update(update)
        yield update, optimizer.param_groups[0]["lr"]


def lr_schedule(recipe: Recipe, steps_per_epoch: int, lr: float) -> list[float]:
    """The LR of every optimizer step of the run (`total_epochs` x `steps_per_epoch`), from the
    same timm scheduler driven the same way as the training loop."""
    return [value for _, value in _driven_lrs(recipe, steps_per_epoch, lr, range(recipe.total_epochs * steps_per_epoch))]


def schedule_warning(recipe: Recipe, steps_per_epoch: int, lr: float, samples: int = 2000) -> Optional[str]:
    """A line for a run whose schedule never reaches its recipe's LR, or None: every epoch is warmup (a 1-epoch run
    of a recipe with warmup trains at ``warmup_lr`` throughout), or the schedule is so short that the LR peaks under
    90% of the recipe's (timm decays from epoch 0, so the cosine has moved on when warmup ends: 97.6% for the
    demo's 1 warmup epoch of 10, 50% for 1 of 2). Such a run says little about the recipe."""
    total = recipe.total_epochs * steps_per_epoch
    stride = max(1, total // samples) if recipe.sched_on_updates else steps_per_epoch  # per epoch: one LR an epoch
    update, peak = max(_driven_lrs(recipe, steps_per_epoch, lr, range(0, total, stride)), key=lambda pair: pair[1])
    at = update // steps_per_epoch
    if recipe.total_epochs <= recipe.warmup_epochs:
        return (f"every epoch of this run is warmup ({recipe.total_epochs} epoch(s), warmup_epochs "
                f"{recipe.warmup_epochs}): the LR peaks at {peak:.3g}, never the recipe's {lr:.3g}, and the results say "
                "little about the recipe. Train more epochs than warmup_epochs, or set warmup_epochs: 0 for a smoke run")
    if peak < 0.9 * lr:
        return (f"the LR peaks at {peak:.3g} (epoch {at + 1}), {100 * peak / lr:.0f}% of the recipe's {lr:.3g}: "
                f"{recipe.total_epochs} epochs are too few for {recipe.warmup_epochs} warmup epoch(s): timm's decay "
                "counts its epochs from the start of the run, warmup included, so it is already under way when the "
                "warmup ends; the results say little about the recipe")
    return None
