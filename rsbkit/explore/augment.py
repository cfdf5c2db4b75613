"""RSB's augmentations as timm applies them: RandAugment, RandomResizedCrop, mixup and CutMix.

Nothing here reimplements an op: RandAugment samples come from timm's own
``RandAugment`` object, with each of its ops wrapped only to record which ran;
crops come from timm's ``RandomResizedCropAndInterpolation.get_params``; mixed
targets from timm's ``mixup_target`` and CutMix boxes from ``cutmix_bbox_and_lam``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import AugmentOp
from timm.data.mixup import cutmix_bbox_and_lam, mixup_target
from timm.data.transforms import RandomResizedCropAndInterpolation

from ..core.augment import FILL, RandAugmentConfig, parse_randaugment, randaugment, timm_hparams  # noqa: F401 (the explorers read them here)
from ..core.errors import RecipeError
from ..core.recipes import A1, A2, A3, Recipe


def apply_op(img: Image.Image, name: str, magnitude: float, *, seed: int = 0) -> Image.Image:
    """One RandAugment op at a fixed magnitude, always applied (rotate/shear/translate pick a random sign: `seed`)."""
    random.seed(seed)
    try:
        op = AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=timm_hparams())
    except KeyError:
        raise RecipeError(f"unknown RandAugment op {name!r}; timm's ops: {', '.join(parse_randaugment('rand-inc1').ops)}") from None
    return op(img)


class _Recorded:
    """A timm AugmentOp that notes whether it changed the image (prob < 1 may skip it)."""

    def __init__(self, op: AugmentOp, log: list):
        self.op, self.log = op, log

    def __call__(self, img):
        out = self.op(img)
        self.log.append((self.op.name, out is not img))
        return out


def randaugment_samples(img: Image.Image, aa: str, n: int = 8, *, seed: int = 0) -> list[tuple[Image.Image, list[str]]]:
    """`n` draws of timm's RandAugment on `img`: each augmented image with the ops that ran on it."""
    ra = randaugment(aa)
    log: list = []
    ra.ops = [_Recorded(op, log) for op in ra.ops]
    random.seed(seed)
    np.random.seed(seed)  # timm picks ops with numpy, applies them and their magnitude noise with `random`
    out = []
    for _ in range(n):
        log.clear()
        result = ra(img)
        out.append((result, [name for name, ran in log if ran]))
    return out


def op_frequencies(aa: str, draws: int = 2000, *, seed: int = 0) -> dict[str, float]:
    """How often each op runs per image over many draws (n ops chosen with replacement, each applied with p)."""
    tiny = Image.new("RGB", (8, 8), (128, 128, 128))
    counts: dict[str, int] = {name: 0 for name in parse_randaugment(aa).ops}
    for _, ran in randaugment_samples(tiny, aa, draws, seed=seed):
        for name in ran:
            counts[name] += 1
    return {k: v / draws for k, v in counts.items()}


# ------------------------------------------------------------------ RandomResizedCrop and flip


def rrc_boxes(img: Image.Image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), n: int = 8, *,
              seed: int = 0) -> list[tuple[int, int, int, int]]:
    """`n` crops timm's RandomResizedCrop would take: (top, left, height, width) in the image's pixels."""
    _check_range("scale", scale, 0, 1)
    _check_range("ratio", ratio, 0, float("inf"))
    random.seed(seed)
    return [tuple(int(v) for v in RandomResizedCropAndInterpolation.get_params(img, tuple(scale), tuple(ratio)))
            for _ in range(n)]


def rrc_samples(img: Image.Image, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), n: int = 8, *,
                hflip: float = 0.5, seed: int = 0) -> list[tuple[Image.Image, tuple[int, int, int, int], bool]]:
    """The crops resized to `size` (bicubic) and flipped with probability `hflip`: (image, box, flipped)."""
    out = []
    rng = random.Random(seed + 1)
    for top, left, h, w in rrc_boxes(img, scale, ratio, n, seed=seed):
        crop = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)
        flipped = rng.random() < hflip
        out.append((crop.transpose(Image.FLIP_LEFT_RIGHT) if flipped else crop, (top, left, h, w), flipped))
    return out


def _check_range(name: str, pair, lo: float, hi: float) -> None:
    if len(pair) != 2 or not lo < pair[0] <= pair[1] <= hi:
        raise RecipeError(f"{name}={tuple(pair)}: give (min, max) with {lo} < min <= max <= {hi}")


# ------------------------------------------------------------------ mixup and CutMix


@dataclass(frozen=True)
class Mixed:
    image: np.ndarray  # H x W x 3 uint8
    target: np.ndarray  # the soft target vector the loss sees
    lam: float  # the weight of the first image after CutMix's box correction
    box: Optional[tuple[int, int, int, int]]  # CutMix's pasted box (top, bottom, left, right)


def mix_pair(a: Image.Image, b: Image.Image, label_a: int, label_b: int, num_classes: int, lam: float,
             mode: str = "mixup", *, smoothing: float = 0.0, seed: int = 0) -> Mixed:
    """Mix image `a` with `b` as timm's Mixup does for a batch element and its flipped partner.

    mixup: ``lam * a + (1 - lam) * b``; cutmix: a box of `b` (area about 1 - lam) pasted
    into `a`, and lam corrected to the box's exact area. The target is timm's
    ``mixup_target``: ``lam * onehot(a) + (1 - lam) * onehot(b)``, smoothed.
    """
    if mode not in ("mixup", "cutmix"):
        raise RecipeError(f"mode={mode!r}: use mixup or cutmix")
    if not 0.0 <= lam <= 1.0:
        raise RecipeError(f"lam={lam}: lambda lies in [0, 1]")
    if a.size != b.size:
        raise RecipeError(f"images must match in size to be mixed ({a.size} vs {b.size}); use images.center_square")
    x = torch.from_numpy(np.stack([np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))])).permute(0, 3, 1, 2).float()
    box = None
    if mode == "mixup":
        mixed = lam * x[0] + (1 - lam) * x[1]
    else:
        np.random.seed(seed)  # timm's rand_bbox draws the box centre with numpy
        (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x.shape, lam, correct_lam=True)
        mixed = x[0].clone()
        mixed[:, yl:yh, xl:xh] = x[1][:, yl:yh, xl:xh]
        box = (int(yl), int(yh), int(xl), int(xh))
    target = mixup_target(torch.tensor([label_a, label_b]), num_classes, lam=float(lam), smoothing=smoothing)[0]
    return Mixed(mixed.round().clamp(0, 255).byte().permute(1, 2, 0).numpy(), target.numpy(), float(lam), box)


# ------------------------------------------------------------------ presets


def preset(recipe: Recipe) -> dict[str, Any]:
    """The augmentation settings of a recipe, for the explorer's one-click presets."""
    return dict(aa=recipe.aa, scale=tuple(recipe.scale), ratio=tuple(recipe.ratio), hflip=recipe.hflip,
                mixup=recipe.mixup, cutmix=recipe.cutmix, smoothing=recipe.smoothing, train_res=recipe.train_res,
                test_res=recipe.test_res, crop_pct=recipe.crop_pct, bce_target_thresh=recipe.bce_target_thresh)


PRESETS = {"A1": preset(A1), "A2": preset(A2), "A3": preset(A3)}
