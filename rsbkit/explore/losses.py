"""BCE against softmax cross-entropy on mixup/cutmix targets: values, gradients, targets.

The losses are timm's: ``BinaryCrossEntropy`` (RSB's loss: one sigmoid per class)
and ``SoftTargetCrossEntropy`` (softmax over classes, what mixup uses with CE).
Gradients come from autograd on those modules.

Why BCE suits mixup/CutMix (the paper's finding): with softmax CE the classes
compete, so a target of 0.6/0.4 pushes the two logits towards a fixed gap and the
loss never reaches 0 while the prediction still moves; with BCE each class is an
independent yes/no whose target is its own weight, and the gradient of a class
is just ``sigmoid(z) - t``, unaffected by the other classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from timm.data.mixup import mixup_target
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

from ..core.errors import RecipeError

LOSSES = ("bce", "ce")


def soft_target(num_classes: int, label_a: int, label_b: int, lam: float, smoothing: float = 0.0) -> np.ndarray:
    """The target of one image mixed with another, as timm's Mixup builds it."""
    return mixup_target(torch.tensor([label_a, label_b]), num_classes, lam=lam, smoothing=smoothing)[0].numpy()


def bce_target(target: np.ndarray, threshold: Optional[float] = None) -> np.ndarray:
    """What timm's BinaryCrossEntropy trains towards: with a threshold, every target above it becomes 1
    (so label smoothing and a minority mixing weight above it are erased)."""
    t = torch.as_tensor(np.asarray(target, dtype=np.float32))
    return (t.gt(threshold).float() if threshold is not None else t).numpy()


def _loss_module(kind: str, threshold: Optional[float]):
    if kind not in LOSSES:
        raise RecipeError(f"loss {kind!r}: use one of {', '.join(LOSSES)}")
    return BinaryCrossEntropy(target_threshold=threshold, reduction="sum") if kind == "bce" else SoftTargetCrossEntropy()


@dataclass(frozen=True)
class LossPoint:
    loss: float
    grad: np.ndarray  # d loss / d logit, per class
    prob: np.ndarray  # sigmoid (bce) or softmax (ce) of the logits: what the model predicts per class


def loss_and_grad(logits, target, kind: str = "bce", *, threshold: Optional[float] = None) -> LossPoint:
    """One example's loss (summed over classes for BCE, as per-example CE is) and its gradient per class."""
    z = torch.tensor(np.asarray(logits, dtype=np.float32))[None].requires_grad_(True)
    t = torch.tensor(np.asarray(target, dtype=np.float32))[None]
    if z.shape != t.shape:
        raise RecipeError(f"logits {tuple(z.shape[1:])} and target {tuple(t.shape[1:])} must have one value per class")
    loss = _loss_module(kind, threshold)(z, t)
    loss.backward()
    prob = torch.sigmoid(z) if kind == "bce" else torch.softmax(z, -1)
    return LossPoint(float(loss.detach()), z.grad[0].numpy(), prob[0].detach().numpy())


def loss_sweep(logits, target, cls: int, values, kind: str = "bce", *, threshold: Optional[float] = None):
    """Loss and gradient of every class as the logit of class `cls` moves over `values` (a DataFrame)."""
    import pandas as pd

    rows = []
    base = np.asarray(logits, dtype=np.float32)
    for v in values:
        z = base.copy()
        z[cls] = v
        p = loss_and_grad(z, target, kind, threshold=threshold)
        rows.append(dict(logit=float(v), loss=p.loss, **{f"grad_{k}": float(g) for k, g in enumerate(p.grad)}))
    return pd.DataFrame(rows)
