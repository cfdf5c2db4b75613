"""A recipe's batch on a given number of processes: the LR for the batch (timm's scaling
rules, :func:`batch_lr`), its split into processes, forward passes and accumulation steps
(:func:`split_batch`), and both as one plan (:func:`plan_batch`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import DistributedError, RecipeError
from .schema import Recipe


@dataclass(frozen=True)
class BatchPlan:
    """How a run's batch relates to the batch the recipe's LR is defined for, and how it is split."""

    lr: float  # the peak LR the optimizer gets
    accum_steps: int  # micro-batches per optimizer step, in each process
    effective_batch: int  # images per optimizer step, over all processes
    rule: str  # one line saying what was done, printed at the start of a run
    world_size: int = 1  # processes (ranks) sharing each step
    micro_batch: int = 0  # images per forward pass in each process

    @property
    def per_rank(self) -> int:
        """Images each process contributes to one optimizer step."""
        return self.micro_batch * self.accum_steps


def lr_scaling(recipe: Recipe) -> str:
    """The rule that maps `lr` at lr_base_size to another batch: the recipe's `lr_scale`, or for
    ``auto`` timm train.py's: square root for LAMB and the Adam family (names with "lamb" or "ada"), else linear."""
    if recipe.lr_scale != "auto":
        return recipe.lr_scale
    return "sqrt" if any(k in recipe.opt.lower() for k in ("ada", "lamb")) else "linear"


@dataclass(frozen=True)
class BatchLR:
    """The LR for a recipe's batch: what :func:`batch_lr` decides, before the batch is split over processes."""

    lr: float  # the peak LR the optimizer gets
    batch: int  # images per optimizer step, over all processes (lr_base_size when grad_accum accumulates to it)
    rule: str  # one line saying what was done


def batch_lr(recipe: Recipe) -> BatchLR:
    """The LR for the run's batch: unchanged when batch_size == lr_base_size or with `grad_accum`
    (accumulate to lr_base_size); otherwise scaled by `lr_scale` (see :func:`lr_scaling`): sqrt
    ``lr x (batch / base) ** 0.5``, linear ``lr x batch / base`` (Goyal et al. 2017), or none (``lr`` as
    given, as 2021's train.py did with --lr). It depends only on the global batch: the same recipe on 1 or 8
    processes makes the same updates."""
    b, base = recipe.batch_size, recipe.lr_base_size
    if b == base:
        return BatchLR(recipe.lr, b, f"batch {b}: lr {recipe.lr:g} as defined by the recipe")
    if recipe.grad_accum:
        if base % b:
            raise RecipeError(
                f"grad_accum needs lr_base_size ({base}) to be a multiple of batch_size ({b}); "
                f"use a batch_size that divides {base}, or grad_accum: false to scale the LR"
            )
        return BatchLR(recipe.lr, base, f"batch {b} x {base // b} accumulation steps = {base}: lr {recipe.lr:g} unchanged")
    how = lr_scaling(recipe)
    why = " (timm's rule for " + recipe.opt + ")" if recipe.lr_scale == "auto" else ""
    if how == "none":
        return BatchLR(recipe.lr, b, f"batch {b} (the recipe's LR is for {base}): lr {recipe.lr:g} used as given (lr_scale: none)")
    lr = recipe.lr * (b / base) ** (0.5 if how == "sqrt" else 1.0)
    formula = f"sqrt({b}/{base})" if how == "sqrt" else f"{b}/{base}"
    return BatchLR(lr, b, f"batch {b} (the recipe's LR is for {base}): lr {recipe.lr:g} x {formula} = {lr:.4g} ({how} scaling{why}; "
                          f"grad_accum: true accumulates to {base} instead)")


def split_batch(recipe: Recipe, batch: int, world_size: int = 1, micro_batch: Optional[int] = None) -> tuple[int, int]:
    """(micro_batch, accumulation steps): a step's `batch` images split over `world_size` ranks in forward passes
    of `micro_batch` (default ``batch_size / world_size``), accumulating the rest. With repeated augmentation
    the default makes at least `aug_repeats` forward passes per step over all processes, so an image's copies
    (consecutive in timm's order) never share a BatchNorm batch: one process takes 4 x 512 for A1's 2048, as
    each of the paper's 4 GPUs took 512."""
    b = recipe.batch_size
    if world_size < 1:
        raise DistributedError(f"world_size={world_size}: need at least one process")
    if batch % world_size:
        raise DistributedError(
            f"the global batch of {batch} images cannot be split over {world_size} processes (not divisible); "
            f"use a number of processes that divides {batch}, or a batch_size that {world_size} divides"
        )
    per_rank = batch // world_size
    repeats = recipe.aug_repeats if recipe.aug_repeats > 1 else 1
    given = micro_batch is not None
    if micro_batch is None:
        if b % world_size:
            raise DistributedError(
                f"batch_size {b} cannot be split over {world_size} processes; set micro_batch (images per forward "
                f"pass per process, dividing {per_rank}) or use a number of processes that divides {b}"
            )
        micro_batch = b // world_size
        if world_size * (per_rank // micro_batch) < repeats:  # copies of an image would share a forward pass
            accum = next((a for a in range(-(-repeats // world_size), per_rank + 1) if per_rank % a == 0), None)
            micro_batch = per_rank // accum if accum else micro_batch
    if micro_batch < 1 or per_rank % micro_batch:
        raise DistributedError(
            f"micro_batch {micro_batch} does not divide the {per_rank} images each of {world_size} process(es) takes per "
            f"step, so no whole number of accumulation steps gives the global batch {batch}; use a micro_batch dividing {per_rank}"
        )
    accum = per_rank // micro_batch
    if world_size * accum < repeats:
        raise DistributedError(
            f"aug_repeats {repeats} puts {repeats} copies of an image next to each other in a step; "
            f"{world_size} process(es) x {accum} forward pass(es) of {micro_batch} images would put copies in one BatchNorm "
            f"batch. Use at least {repeats} forward passes per step: " + (
                f"a micro_batch of at most {per_rank * world_size // repeats} dividing {per_rank}" if given else
                f"a batch that splits into {repeats} or more parts") + ", or aug_repeats: 0"
        )
    return micro_batch, accum


def plan_batch(recipe: Recipe, world_size: int = 1, micro_batch: Optional[int] = None) -> BatchPlan:
    """The LR for the run's batch (:func:`batch_lr`) and the batch's split over processes and forward passes
    (:func:`split_batch`), with one line saying both."""
    scaled = batch_lr(recipe)
    micro_batch, accum = split_batch(recipe, scaled.batch, world_size, micro_batch)
    rule = scaled.rule
    if world_size > 1 or micro_batch != recipe.batch_size:
        rule += f"; {world_size} process(es) x {micro_batch} images x {accum} accumulation step(s) per update"
        if recipe.aug_repeats > 1:
            rule += f" (aug_repeats {recipe.aug_repeats}: an image's copies in different forward passes)"
    return BatchPlan(scaled.lr, accum, scaled.batch, rule, world_size, micro_batch)
