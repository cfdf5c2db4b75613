"""Training loss from a recipe, as timm's train.py builds it."""
from __future__ import annotations

import torch
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from .recipes import Recipe


def create_loss(recipe: Recipe, mixing: bool) -> torch.nn.Module:
    """BCE or CE. With mixup/cutmix (`mixing`) the targets arrive as smoothed soft
    vectors from timm's Mixup, so the loss must not smooth them again."""
    if recipe.loss == "bce":
        smoothing = 0.0 if mixing else recipe.smoothing
        return BinaryCrossEntropy(smoothing=smoothing, target_threshold=recipe.bce_target_thresh)
    if mixing:
        return SoftTargetCrossEntropy()
    if recipe.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.smoothing)
    return torch.nn.CrossEntropyLoss()
