"""The train/test resolution discrepancy (Touvron et al., "Fixing the train-test resolution
discrepancy", 2019): why a model trained with RandomResizedCrop sees objects larger than
at test time, and which test resolution undoes it.

Training crops a random fraction `s` of the image area (timm: s uniform in `scale`)
and resizes it to `train_res`: an object of r pixels in an image of side L appears
at ``r * train_res / (sqrt(s) * L)``. Testing resizes the short side to
``test_res / crop_pct`` and keeps the centre `test_res`: the object appears at
``r * test_res / (crop_pct * L)``. On average over s, training magnifies by
``train_res * E[1/sqrt(s)] / L`` with ``E[1/sqrt(s)] = 2 (sqrt(b) - sqrt(a)) / (b - a)``
for s in [a, b]; the test resolution that shows objects at the same size is
``train_res * crop_pct * E[1/sqrt(s)]``. For A3 (160 px, crop 0.95, scale 0.08-1)
that is 237 px: A3 is tested at 224. Apparent size is one of two effects: the
activation statistics also change with resolution, so the measured best test
resolution sits below this estimate (timm's re-validation: A1/A2 trained at 224 are
best near 288, not 330).
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation

from ..core.data import load_data
from ..core.errors import RecipeError
from ..core.evaluate import default_resolutions, load_model, resolution_sweep


def mean_inverse_sqrt_scale(scale=(0.08, 1.0)) -> float:
    """E[1/sqrt(s)] for s uniform in `scale`: the mean linear zoom of RandomResizedCrop."""
    a, b = float(scale[0]), float(scale[1])
    if not 0 < a <= b <= 1:
        raise RecipeError(f"scale={tuple(scale)}: give (min, max) with 0 < min <= max <= 1")
    return 1 / math.sqrt(a) if a == b else 2 * (math.sqrt(b) - math.sqrt(a)) / (b - a)


def apparent_size_ratio(train_res: int, test_res: int, crop_pct: float = 0.875, scale=(0.08, 1.0)) -> float:
    """Mean apparent object size at training over that at test: > 1 means objects look larger in training."""
    if not 0 < crop_pct <= 1:
        raise RecipeError(f"crop_pct={crop_pct}: give a ratio in (0, 1]")
    return train_res * crop_pct * mean_inverse_sqrt_scale(scale) / test_res


def matching_test_res(train_res: int, crop_pct: float = 0.875, scale=(0.08, 1.0)) -> float:
    """The test resolution at which objects appear as large as in training, on average."""
    return train_res * crop_pct * mean_inverse_sqrt_scale(scale)


def object_sizes(object_frac: float, train_res: int, test_res: int, crop_pct: float = 0.875, scale=(0.08, 1.0),
                 *, samples: int = 20000, seed: int = 0) -> dict[str, float]:
    """Apparent size in pixels of an object spanning `object_frac` of the image side: at test, and the
    median and 10th/90th percentiles in training (s uniform in `scale`, square crops)."""
    s = np.random.default_rng(seed).uniform(scale[0], scale[1], samples)
    train = object_frac * train_res / np.sqrt(s)
    return dict(test=object_frac * test_res / crop_pct, train_median=float(np.median(train)),
                train_p10=float(np.percentile(train, 10)), train_p90=float(np.percentile(train, 90)),
                train_mean=object_frac * train_res * mean_inverse_sqrt_scale(scale))


RESNET_STAGES = ("stem conv", "max-pool", "stage 1", "stage 2", "stage 3", "stage 4")


def resnet_maps(res: int) -> dict[str, int]:
    """The side of each feature map of a timm ResNet (ResNet-18 to -200, the default stem) at a `res`
    px input. Every stride-2 layer (the 7x7 stem conv, padding 3; the 3x3 max-pool, padding 1; the
    first block of stages 2 to 4) maps a side n to ceil(n / 2), so the last map is 1x1 up to 32 px
    and 2x2 from 33 to 64 px, and odd sides appear where the halving rounds up."""
    sizes, n = {}, int(res)
    for stage in RESNET_STAGES:
        if stage != "stage 1":
            n = -(-n // 2)
        sizes[stage] = n
    return sizes


def resnet_map_table(resolutions):
    """:func:`resnet_maps` for each of `resolutions`: one row per input size, one column per stage."""
    import pandas as pd

    return pd.DataFrame([{"input px": int(r), **resnet_maps(r)} for r in resolutions]).set_index("input px")


def train_and_test_views(img: Image.Image, train_res: int, test_res: int, crop_pct: float = 0.875,
                         scale=(0.08, 1.0), *, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """What the network sees: one RandomResizedCrop at `train_res` (timm's sampler) and the test view
    (short side resized to test_res / crop_pct, centre crop test_res), both bicubic."""

    random.seed(seed)
    top, left, h, w = RandomResizedCropAndInterpolation.get_params(img, tuple(scale), (3 / 4, 4 / 3))
    train = img.crop((left, top, left + w, top + h)).resize((train_res, train_res), Image.BICUBIC)
    short = int(test_res / crop_pct)
    wi, hi = img.size
    k = short / min(wi, hi)
    big = img.resize((max(short, round(wi * k)), max(short, round(hi * k))), Image.BICUBIC)
    left, top = (big.width - test_res) // 2, (big.height - test_res) // 2
    return train, big.crop((left, top, left + test_res, top + test_res))


def measured_table(run: str, *, data: str = "default", limit_val: int = 500, resolutions=None):
    """A run's top-1 over test resolutions: its ``resolution.csv`` when evaluate_resolution.ipynb wrote
    one, else measured now at the recipe's crop on `limit_val` images. ``attrs['train_res']`` holds the
    run's train resolution."""

    import pandas as pd

    model, recipe = load_model(run)
    csv = Path(run) / "resolution.csv"
    if csv.is_file():
        table = pd.read_csv(csv)
    else:
        table = resolution_sweep(model, load_data(data, limit_val=limit_val or None),
                                 resolutions or default_resolutions(recipe.train_res), [recipe.crop_pct],
                                 interpolation=recipe.interpolation)
    table.attrs["train_res"] = recipe.train_res
    return table
