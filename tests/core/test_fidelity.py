"""Each recipe ingredient checked by what rsbkit builds from it (transform, optimizer, schedule, loss, mixing,
model, sampler), against the values the papers give (docs/sources.md sections 1 and 3, written out here by hand)."""
from __future__ import annotations

import collections
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as taa
from timm.data.auto_augment import RandAugment
from timm.data.transforms import RandomResizedCropAndInterpolation
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

from rsbkit.core.data import create_mixup, epoch_order, eval_transform, train_transform
from rsbkit.core.errors import RecipeError
from rsbkit.core.losses import create_loss
from rsbkit.core.models import create_model
from rsbkit.core.optim import create_optimizer, lr_schedule
from rsbkit.core.recipes import A1, A2, A3, TORCHVISION, get_recipe, plan_batch, resnet_rs

# RSB Table 1 (docs/sources.md, section 1): what each procedure does
PAPER = {
    "a1": dict(res=224, test=224, epochs=600, lr=5e-3, wd=0.01, smoothing=0.1, drop_path=0.05, repeats=3, m=7, mixup=0.2),
    "a2": dict(res=224, test=224, epochs=300, lr=5e-3, wd=0.02, smoothing=0.0, drop_path=0.05, repeats=3, m=7, mixup=0.1),
    "a3": dict(res=160, test=224, epochs=100, lr=8e-3, wd=0.02, smoothing=0.0, drop_path=0.0, repeats=0, m=6, mixup=0.1),
}
PHOTO = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def randaugment(transform) -> RandAugment:
    return next(t for t in transform.transforms if isinstance(t, RandAugment))


def last_drop_path(model) -> float:
    """The stochastic depth rate of the last block (timm scales it linearly from 0 at the first)."""
    return getattr(model.layer4[-1].drop_path, "drop_prob", 0.0)


def op_arguments(op, calls: int = 50, seed: int = 0) -> list[tuple]:
    """The arguments a RandAugment op passes to its PIL function, with the op forced to apply."""
    seen = []
    op.prob, real = 1.0, op.aug_fn
    op.aug_fn = lambda img, *args, **kwargs: seen.append(args) or img
    random.seed(seed)
    try:
        for _ in range(calls):
            op(PHOTO)
    finally:
        op.aug_fn = real
    return seen


@pytest.mark.parametrize("name", ["a1", "a2", "a3"])
def test_rsb_procedures_build_what_the_paper_ran(name):
    recipe, paper = get_recipe(name), PAPER[name]
    tf = train_transform(recipe)
    crop = tf.transforms[0]
    assert isinstance(crop, RandomResizedCropAndInterpolation)
    assert crop.size == (paper["res"], paper["res"]) and crop.scale == (0.08, 1.0)
    ra = randaugment(tf)
    assert ra.num_layers == 2 and all(op.prob == 0.5 and op.magnitude_std == 0.5 for op in ra.ops)
    assert "SolarizeIncreasing" in {op.name for op in ra.ops}  # inc1
    rotate = next(op for op in ra.ops if op.name == "Rotate")
    degrees = [abs(a[0]) for a in op_arguments(rotate, 400)]
    assert np.mean(degrees) == pytest.approx(3 * paper["m"], abs=0.3)  # timm: 30 degrees at m10; mstd 0.5 around m
    assert not any(type(t).__name__ in ("ColorJitter", "RandomErasing") for t in tf.transforms)
    resize, center = eval_transform(recipe.test_res, recipe.crop_pct, recipe.interpolation).transforms[:2]
    assert center.size == (paper["test"], paper["test"]) and resize.size == int(paper["test"] / 0.95)

    mixup = create_mixup(recipe, 1000)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.label_smoothing) == (paper["mixup"], 1.0, paper["smoothing"])
    loss = create_loss(recipe, mixing=True)
    assert isinstance(loss, BinaryCrossEntropy) and loss.smoothing == 0 and loss.target_threshold is None
    _, targets = mixup(torch.zeros(2, 3, 8, 8), torch.tensor([0, 0]))
    assert targets[0, 0].item() == pytest.approx(1 - paper["smoothing"] + paper["smoothing"] / 1000)  # smoothing once

    model = create_model(recipe, 1000)
    assert last_drop_path(model) == pytest.approx(paper["drop_path"])
    plan = plan_batch(recipe)
    opt = create_optimizer(model, recipe, plan.lr)
    assert type(opt).__name__ == "Lamb" and plan.lr == paper["lr"] and plan.effective_batch == 2048
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, paper["wd"]}

    steps = 3
    lrs = lr_schedule(recipe, steps, plan.lr)[::steps]  # once per epoch
    assert len(lrs) == paper["epochs"]
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6])) and lrs[5] == max(lrs)  # 5 warmup epochs, then the cosine

    counts = collections.Counter(epoch_order(range(600), recipe, seed=0))
    assert set(list(counts.values())[:-1]) == {paper["repeats"] or 1}


@pytest.mark.parametrize("depth, res, magnitude, dropout, stoch_depth", [
    (50, 160, 10, 0.25, 0.0), (101, 192, 15, 0.25, 0.0), (200, 256, 15, 0.25, 0.1), (420, 320, 15, 0.4, 0.1),
])
def test_resnet_rs_builds_the_papers_model_and_augmentation(depth, res, magnitude, dropout, stoch_depth):
    recipe = resnet_rs(depth, res)
    tf = train_transform(recipe)
    assert tf.transforms[0].size == (res, res)
    ra = randaugment(tf)
    assert ra.num_layers == 2 and all(op.magnitude_std == 0 for op in ra.ops)
    rotate = next(op for op in ra.ops if op.name == "Rotate")
    # TF's RandAugment: level / 10 x 30 degrees, no clip, so m15 rotates 45 degrees
    assert {abs(a[0]) for a in op_arguments(rotate)} == {3.0 * magnitude}
    with torch.device("meta"):
        model = create_model(recipe, 1000)
    assert model.drop_rate == dropout
    assert last_drop_path(model) == pytest.approx(stoch_depth)
    assert type(model.layer1[0].se).__name__ == "SEModule"


def test_timm_would_clip_m15_without_mmax():
    clipped = taa.rand_augment_transform("rand-m15-n2", {"translate_const": 100})
    rotate = next(op for op in clipped.ops if op.name == "Rotate")
    assert {abs(a[0]) for a in op_arguments(rotate)} == {30.0}  # the trap: m15 acts as m10
    with pytest.raises(RecipeError, match=r"aa='rand-m15-n2': timm clips .* write rand-m15-n2-mmax15"):
        A3.replace(aa="rand-m15-n2")


def _resampling_used(transform, monkeypatch) -> tuple[set, set]:
    """The resampling filters the crop and RandAugment's rotations actually use over many images."""
    import torchvision.transforms.functional as F

    crop_modes, rotate_modes = set(), set()
    real_crop, real_rotate = F.resized_crop, Image.Image.rotate
    monkeypatch.setattr(F, "resized_crop", lambda *a, **k: crop_modes.add(k.get("interpolation", a[6] if len(a) > 6 else None))
                        or real_crop(*a, **k))
    monkeypatch.setattr(Image.Image, "rotate", lambda self, *a, **k: rotate_modes.add(k.get("resample")) or real_rotate(self, *a, **k))
    crop = transform.transforms[0]
    for _ in range(40):
        crop(PHOTO)
    ra = randaugment(transform) if any(isinstance(t, RandAugment) for t in transform.transforms) else None
    if ra is not None:
        rotate = next(op for op in ra.ops if op.name == "Rotate")
        rotate.prob = 1.0
        for _ in range(40):
            rotate(PHOTO)
    return {getattr(m, "value", m) for m in crop_modes}, {int(m) for m in rotate_modes}


def test_train_interpolation_random_draws_bilinear_or_bicubic_per_image(monkeypatch):
    crop, rotate = _resampling_used(train_transform(A3), monkeypatch)
    assert crop == {"bilinear", "bicubic"}
    assert rotate == {Image.Resampling.BILINEAR, Image.Resampling.BICUBIC}
    crop, rotate = _resampling_used(train_transform(A3.replace(train_interpolation="bicubic")), monkeypatch)
    assert crop == {"bicubic"} and rotate == {Image.Resampling.BICUBIC}


def test_torchvision_recipe_builds_crop_and_flip_only(monkeypatch):
    tf = train_transform(TORCHVISION)
    assert [type(t).__name__ for t in tf.transforms[:2]] == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip"]
    assert not any(isinstance(t, RandAugment) for t in tf.transforms)
    crop, _ = _resampling_used(tf, monkeypatch)
    assert crop == {"bilinear"}
    assert create_mixup(TORCHVISION, 1000) is None and type(create_loss(TORCHVISION, mixing=False)) is torch.nn.CrossEntropyLoss
    assert eval_transform(224, TORCHVISION.crop_pct, TORCHVISION.interpolation).transforms[0].size == 256


def test_a2_is_derived_from_a1():
    changed = {k for k, v in A1.to_dict().items() if A2.to_dict()[k] != v}
    assert changed == {"name", "epochs", "weight_decay", "smoothing", "mixup"}
    assert isinstance(create_loss(A1.replace(mixup=0, cutmix=0), mixing=False), BinaryCrossEntropy)
    assert isinstance(create_loss(TORCHVISION.replace(mixup=0.2), mixing=True), SoftTargetCrossEntropy)
