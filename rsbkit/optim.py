"""Optimizer and LR schedule from a recipe, both built by timm."""
from __future__ import annotations

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
    """timm's cosine or multistep schedule, updated every optimizer step (call ``step_update(n)``)."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=recipe.sched,
        num_epochs=recipe.epochs,
        decay_milestones=list(recipe.decay_milestones),
        decay_rate=recipe.decay_rate,
        min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        cooldown_epochs=0,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


def lr_schedule(recipe: Recipe, steps_per_epoch: int, lr: float) -> list[float]:
    """The LR at every optimizer step of the run, from the same timm scheduler the loop uses."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = create_scheduler(optimizer, recipe, steps_per_epoch)
    out = []
    for step in range(recipe.epochs * steps_per_epoch):
        scheduler.step_update(step)
        out.append(optimizer.param_groups[0]["lr"])
    return out
