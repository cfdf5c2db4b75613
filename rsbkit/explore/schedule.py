"""A recipe's learning-rate schedule at any batch size, and what A1/A2/A3 cost."""
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


def cost_table(recipes=(A1, A2, A3)):
    """Epochs x pixels per image of each recipe, relative to A1, beside the paper's reported hours."""
    import pandas as pd

    ref = recipes[0].epochs * recipes[0].train_res ** 2
    rows = []
    for r in recipes:
        rep = r.reported
        rows.append(dict(recipe=r.name, epochs=r.epochs, train_res=r.train_res, test_res=r.test_res,
                         relative_compute=r.epochs * r.train_res ** 2 / ref,
                         reported_hours=rep.train_hours if rep else None,
                         gpus=f"{rep.gpus} x {rep.gpu}" if rep and rep.gpus else None,
                         reported_top1=rep.top1 if rep else None))
    return pd.DataFrame(rows)
