"""The papers' published tables, as data, so a study can be laid out beside them.

Numbers are ImageNet-1k val top-1 (%) of ResNet-50, copied from "ResNet strikes
back" (Wightman, Touvron, Jegou 2021; docs/sources.md, sections 1 and 2) and from timm's
re-validation of the released weights (docs/sources.md, section 2). They describe
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
    table = pd.DataFrame(rows, columns=["ingredient", "A1", "A2", "A3"]).set_index("ingredient")
    return table.astype(object).where(table.notna(), "")  # an unmeasured cell reads empty, not NaN


# ---------------------------------------------------------------- other architectures, transfer, ResNet-RS

RESNET_RS = "Bello et al., Revisiting ResNets: Improved Training and Scaling Strategies (2021)"


class ArchitectureRow(NamedTuple):
    """RSB Table 3: one architecture trained with the ResNet-50 procedures, no adaptation."""

    paper_name: str
    timm: str  # the timm model name closest to the paper's architecture
    res_a1a2: tuple[int, int]  # train / test resolution of A1 and A2
    res_a3: tuple[int, int]
    a1: float
    a2: float
    a3: float
    original: float  # the architecture's own published recipe


TABLE3 = tuple(ArchitectureRow(*row) for row in (
    ("ResNet-18", "resnet18", (224, 224), (160, 224), 71.5, 70.6, 68.2, 69.8),
    ("ResNet-34", "resnet34", (224, 224), (160, 224), 76.4, 75.5, 73.0, 73.3),
    ("ResNet-50", "resnet50", (224, 224), (160, 224), 80.4, 79.8, 78.1, 76.1),
    ("ResNet-101", "resnet101", (224, 224), (160, 224), 81.5, 81.3, 79.8, 77.4),
    ("ResNet-152", "resnet152", (224, 224), (160, 224), 82.0, 81.8, 80.6, 78.3),
    ("RegNetY-4GF", "regnety_040", (224, 224), (160, 224), 81.5, 81.3, 79.0, 79.4),
    ("RegNetY-8GF", "regnety_080", (224, 224), (160, 224), 82.2, 82.1, 81.1, 79.9),
    ("RegNetY-16GF", "regnety_160", (224, 224), (160, 224), 82.0, 82.2, 81.7, 80.4),
    ("RegNetY-32GF", "regnety_320", (224, 224), (160, 224), 82.5, 82.4, 82.6, 81.0),
    ("SE-ResNet-50", "seresnet50", (224, 224), (160, 224), 80.0, 80.1, 77.0, 76.7),
    ("SENet-154", "senet154", (224, 224), (160, 224), 81.7, 81.8, 81.9, 81.3),
    ("ResNet-50-D", "resnet50d", (224, 224), (160, 224), 80.7, 80.2, 78.7, 79.3),
    ("ResNeXt-50-32x4d", "resnext50_32x4d", (224, 224), (160, 224), 80.5, 80.4, 79.2, 77.6),
    ("EfficientNet-B0", "efficientnet_b0", (224, 224), (160, 224), 77.0, 76.8, 73.0, 77.1),
    ("EfficientNet-B1", "efficientnet_b1", (240, 240), (160, 224), 79.2, 79.4, 74.9, 79.1),
    ("EfficientNet-B2", "efficientnet_b2", (260, 260), (192, 256), 80.4, 80.1, 77.5, 80.1),
    ("EfficientNet-B3", "efficientnet_b3", (300, 300), (224, 288), 81.4, 81.4, 79.2, 81.6),
    ("EfficientNet-B4", "efficientnet_b4", (380, 380), (320, 380), 81.6, 82.4, 81.2, 82.9),
    ("ViT-Ti", "vit_tiny_patch16_224", (224, 224), (160, 224), 74.7, 74.1, 66.7, 72.2),
    ("ViT-S", "vit_small_patch16_224", (224, 224), (160, 224), 80.6, 79.6, 73.8, 79.8),
    ("ViT-B", "vit_base_patch16_224", (224, 224), (160, 224), 80.4, 79.8, 76.0, 81.8),
    ("ECA-ResNet-50-T", "ecaresnet50t", (224, 224), (160, 224), 81.3, 80.9, 79.6, float("nan")),
    ("EfficientNetV2-rw-S", "efficientnetv2_rw_s", (288, 384), (224, 288), 82.3, 82.9, 80.9, 83.8),
    ("EfficientNetV2-rw-M", "efficientnetv2_rw_m", (320, 384), (256, 352), 80.6, 81.9, 82.3, 84.8),
    ("ECA-ResNet-269-D", "ecaresnet269d", (320, 416), (256, 320), 83.3, 83.9, 83.3, 85.0),
))


class TransferRow(NamedTuple):
    """RSB Table 5: ResNet-50 pre-trained on ImageNet with each procedure, fine-tuned on a dataset."""

    dataset: str
    train_size: int
    test_size: int
    classes: int
    pytorch: float  # torchvision's original recipe
    a1: float
    a2: float
    a3: float


TABLE5 = tuple(TransferRow(*row) for row in (
    ("ImageNet-val", 1_281_167, 50_000, 1000, 76.1, 80.4, 79.8, 78.1),
    ("iNaturalist 2019", 265_240, 3_003, 1010, 73.2, 73.9, 75.0, 73.8),
    ("Flowers-102", 2_040, 6_149, 102, 97.9, 97.9, 97.9, 97.5),
    ("Stanford Cars", 8_144, 8_041, 196, 92.5, 92.7, 92.6, 92.5),
    ("CIFAR-100", 50_000, 10_000, 100, 86.6, 86.9, 86.2, 85.3),
    ("CIFAR-10", 50_000, 10_000, 10, 98.2, 98.3, 98.0, 97.6),
))


class PublishedPoint(NamedTuple):
    """A published model for the speed-accuracy plot: ImageNet top-1 at its resolution."""

    family: str
    name: str
    timm: str
    res: int
    top1: float


# ResNet-RS (docs/sources.md, section 3, from the ResNet-RS paper) and EfficientNet (RSB Table 3, "org." column)
PUBLISHED_POINTS = tuple(PublishedPoint(*row) for row in (
    ("ResNet-RS", "RS-50", "resnetrs50", 160, 78.8),
    ("ResNet-RS", "RS-101", "resnetrs101", 160, 80.3),
    ("ResNet-RS", "RS-101", "resnetrs101", 192, 81.2),
    ("ResNet-RS", "RS-152", "resnetrs152", 192, 82.0),
    ("ResNet-RS", "RS-152", "resnetrs152", 224, 82.2),
    ("ResNet-RS", "RS-152", "resnetrs152", 256, 83.0),
    ("ResNet-RS", "RS-200", "resnetrs200", 256, 83.4),
    ("ResNet-RS", "RS-270", "resnetrs270", 256, 83.8),
    ("ResNet-RS", "RS-350", "resnetrs350", 256, 84.0),
    ("ResNet-RS", "RS-350", "resnetrs350", 320, 84.2),
    ("ResNet-RS", "RS-420", "resnetrs420", 320, 84.4),
    ("EfficientNet", "B0", "efficientnet_b0", 224, 77.1),
    ("EfficientNet", "B1", "efficientnet_b1", 240, 79.1),
    ("EfficientNet", "B2", "efficientnet_b2", 260, 80.1),
    ("EfficientNet", "B3", "efficientnet_b3", 300, 81.6),
    ("EfficientNet", "B4", "efficientnet_b4", 380, 82.9),
))
