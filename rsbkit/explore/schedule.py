"""A recipe's learning-rate schedule at any batch size, its train size per epoch (progressive
resizing, FFCV's), and what A1/A2/A3 cost."""
from __future__ import annotations

import math
from typing import Optional

from ..core.optim import lr_schedule
from ..core.recipes import A1, A2, A3, Recipe, plan_batch

IMAGENET_TRAIN = 1_281_167


def lr_curve(recipe: Recipe, batch_size: Optional[int] = None, *, grad_accum: Optional[bool] = None,
             dataset_size: int = IMAGENET_TRAIN, points: int = 1000):
    """(DataFrame of epoch and lr, BatchPlan): the schedule the loop would follow, scaling rule applied.

    Steps per epoch are ``dataset_size // effective batch`` (the loader drops the last
    partial batch); the LR comes from the same timm scheduler as the training loop.
    """
    import pandas as pd

    changes = {}
    if batch_size is not None:
        changes["batch_size"] = int(batch_size)
    if grad_accum is not None:
        changes["grad_accum"] = bool(grad_accum)
    recipe = recipe.replace(**changes) if changes else recipe
    plan = plan_batch(recipe)
    steps = max(1, dataset_size // plan.effective_batch)
    if recipe.total_epochs * steps > 2_000_000:
        steps = math.ceil(2_000_000 / recipe.total_epochs)  # the shape is the same; keeps the curve quick to compute
    lrs = lr_schedule(recipe, steps, plan.lr)
    stride = max(1, len(lrs) // points)
    return pd.DataFrame(dict(epoch=[i / steps for i in range(0, len(lrs), stride)], lr=lrs[::stride])), plan


FFCV_RAMP = (65 / 88, 76 / 88)  # FFCV's rn50_88_epochs config: the growth from epoch 65 to 76 of 88


def progressive(recipe: Recipe, start: int, ramp=FFCV_RAMP, step: int = 32) -> Recipe:
    """`recipe` with progressive resizing from `start` px to its train_res, growing over the fractions
    `ramp` of its epochs (default FFCV's proportions: 74% to 86% of the run), in steps of `step` px."""
    first, last = round(ramp[0] * recipe.epochs), round(ramp[1] * recipe.epochs)
    return recipe.replace(train_res_start=int(start), train_res_ramp=(first, max(last, first + 1)), train_res_step=step)


def train_res_curve(recipe: Recipe):
    """One row per epoch (1-based): the train size ``recipe.train_res_at`` gives it, and its pixels per
    image relative to train_res (the step's compute scales about with it)."""
    import pandas as pd

    sizes = [recipe.train_res_at(e) for e in range(recipe.total_epochs)]
    return pd.DataFrame(dict(epoch=range(1, len(sizes) + 1), train_res=sizes,
                             relative_pixels=[(s / recipe.train_res) ** 2 for s in sizes]))


def pixel_epochs(recipe: Recipe) -> int:
    """Pixels per image summed over the schedule's epochs (train_res squared each, or the epoch's size)."""
    return sum(recipe.train_res_at(e) ** 2 for e in range(recipe.epochs))


def cost_table(recipes=(A1, A2, A3)):
    """Epochs x pixels per image of each recipe (each epoch at its own size), relative to A1, beside the
    paper's reported hours."""
    import pandas as pd

    ref = pixel_epochs(recipes[0])
    rows = []
    for r in recipes:
        rep = r.reported
        rows.append(dict(recipe=r.name, epochs=r.epochs, train_res=r.train_res, test_res=r.test_res,
                         relative_compute=pixel_epochs(r) / ref,
                         reported_hours=rep.train_hours if rep else None,
                         gpus=f"{rep.gpus} x {rep.gpu}" if rep and rep.gpus else None,
                         reported_top1=rep.top1 if rep else None))
    return pd.DataFrame(rows)
