"""The papers' published tables, as data, so a study can be laid out beside them.

Numbers are ImageNet-1k val top-1 (%) of ResNet-50, copied from "ResNet strikes
back" (Wightman, Touvron, Jegou 2021; ../shared/seeds/002) and from timm's
re-validation of the released weights (REFERENCE.md section 1). They describe
ImageNet at full scale: a run on other data or at smoke scale is put beside
them to compare the *direction* of an effect, never the value.
"""
from __future__ import annotations

from typing import NamedTuple

RSB = "Wightman, Touvron, Jegou, ResNet strikes back (2021)"


class AblationRow(NamedTuple):
    loss: str  # "bce" | "ce"
    lr: float  # at global batch 2048
    weight_decay: float
    repeated_aug: bool  # 3 repeats (RA) or none
    top1: float


# Table 6: the main ablation, A2 procedure, seed 0. The A2 row is BCE, 5e-3, 0.02, RA.
TABLE6_A2 = tuple(AblationRow(*row) for row in (
    ("bce", 2e-3, 0.02, True, 78.24), ("bce", 2e-3, 0.03, True, 78.47),
    ("bce", 3e-3, 0.02, True, 79.16), ("bce", 3e-3, 0.03, True, 79.28),
    ("bce", 5e-3, 0.01, True, 79.66), ("bce", 5e-3, 0.02, True, 79.85),
    ("bce", 5e-3, 0.03, True, 79.73), ("bce", 8e-3, 0.02, True, 79.63),
    ("bce", 3e-3, 0.02, False, 78.74), ("bce", 5e-3, 0.02, False, 79.57),
    ("bce", 5e-3, 0.03, False, 79.58),
    ("ce", 2e-3, 0.02, True, 77.37), ("ce", 3e-3, 0.02, True, 78.22),
    ("ce", 5e-3, 0.02, True, 79.18), ("ce", 5e-3, 0.03, True, 79.23),
    ("ce", 5e-3, 0.05, True, 79.31), ("ce", 8e-3, 0.03, True, 79.12),
    ("ce", 3e-3, 0.02, False, 77.71), ("ce", 5e-3, 0.01, False, 78.93),
    ("ce", 5e-3, 0.02, False, 79.00), ("ce", 5e-3, 0.03, False, 78.62),
    ("ce", 8e-3, 0.02, False, 78.72),
))


class CropRow(NamedTuple):
    recipe: str
    crop_pct: float
    mean: float  # over 10 seeds
    std: float
    max: float
    min: float
    seed0: float


# Table 9: test crop ratio, 10 seeds per recipe. 0.95 is "comparable but not
# statistically better than the standard 0.875".
TABLE9_CROP = tuple(CropRow(*row) for row in (
    ("a1", 0.875, 80.18, 0.14, 80.45, 79.90, 80.14), ("a1", 0.9, 80.22, 0.15, 80.54, 79.98, 80.25),
    ("a1", 0.95, 80.24, 0.14, 80.49, 79.91, 80.38), ("a1", 1.0, 80.15, 0.11, 80.15, 79.66, 80.19),
    ("a2", 0.875, 79.67, 0.08, 79.91, 79.59, 79.91), ("a2", 0.9, 79.73, 0.09, 79.89, 79.56, 79.75),
    ("a2", 0.95, 79.68, 0.09, 79.85, 79.57, 79.85), ("a2", 1.0, 79.58, 0.13, 79.88, 79.32, 79.88),
    ("a3", 0.875, 77.69, 0.10, 77.85, 77.48, 77.69), ("a3", 0.9, 77.86, 0.09, 78.01, 77.62, 77.83),
    ("a3", 0.95, 78.00, 0.09, 78.09, 77.83, 78.06), ("a3", 1.0, 78.02, 0.10, 78.16, 77.83, 77.93),
))


class ResolutionPoint(NamedTuple):
    recipe: str
    test_res: int
    crop_pct: float
    top1: float


# timm's re-validation of the released RSB weights (resnet50.a{1,2,3}_in1k): the
# FixRes effect of Figure 4. A1 and A2 (trained at 224) gain at 288; A3 (trained
# at 160) is best at 224 and loses 2 points when tested at its train resolution.
FIXRES_TIMM = (
    ResolutionPoint("a1", 224, 0.95, 80.38), ResolutionPoint("a1", 288, 1.0, 81.24),
    ResolutionPoint("a2", 224, 0.95, 79.83), ResolutionPoint("a2", 288, 1.0, 80.77),
    ResolutionPoint("a3", 160, 0.95, 75.99), ResolutionPoint("a3", 224, 0.95, 78.05),
)

# Figure 2: 100 seeds of A2 give a roughly Gaussian spread; 10 seeds give a std
# of 0.08-0.15 points (Table 9's std column).
SEED_STD_RANGE = (0.08, 0.15)

# Table 7 (regularisation, one seed each): top-1 of A1 / A2 / A3 by stochastic depth
# rate, and without / with label smoothing.
DROP_PATH = {0.0: (79.94, 79.79, 78.06), 0.05: (80.38, 79.85, 77.57), 0.1: (80.12, 79.62, 77.32)}
SMOOTHING = {False: (80.22, 79.85, 78.06), True: (80.38, 79.58, 77.99)}


def ingredients():
    """What each ingredient changed in the paper's own ablations, as top-1 deltas (points, one seed):
    a DataFrame with one row per ingredient and a column per recipe (empty where not measured)."""
    import pandas as pd

    def delta(a: float, b: float) -> float:
        return round(a - b, 2)

    t6 = {(r.loss, r.lr, r.weight_decay, r.repeated_aug): r.top1 for r in TABLE6_A2}
    rows = [
        ("BCE instead of CE (with repeated aug)", None, delta(t6["bce", 5e-3, 0.02, True], t6["ce", 5e-3, 0.02, True]), None),
        ("BCE instead of CE (without)", None, delta(t6["bce", 5e-3, 0.02, False], t6["ce", 5e-3, 0.02, False]), None),
        ("repeated augmentation x3 (BCE)", None, delta(t6["bce", 5e-3, 0.02, True], t6["bce", 5e-3, 0.02, False]), None),
        ("LR 5e-3 instead of 3e-3 (BCE, RA)", None, delta(t6["bce", 5e-3, 0.02, True], t6["bce", 3e-3, 0.02, True]), None),
        ("stochastic depth 0.05 instead of 0", *(delta(a, b) for a, b in zip(DROP_PATH[0.05], DROP_PATH[0.0]))),
        ("label smoothing 0.1", *(delta(a, b) for a, b in zip(SMOOTHING[True], SMOOTHING[False]))),
    ]
    return pd.DataFrame(rows, columns=["ingredient", "A1", "A2", "A3"]).set_index("ingredient")
