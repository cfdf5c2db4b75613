"""The batched tensor RandAugment against timm's PIL RandAugment: each op on real photos, and the
policy's draws (op choice, application rate, magnitudes) over many images."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as taa

from rsbkit.core.augment import FILL, GEOMETRIC, BatchRandAugment, Policy, apply_op, draw, op_argument
from rsbkit.explore.images import photos

OPS = taa._RAND_INCREASING_TRANSFORMS + ["Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness"]


@pytest.fixture(scope="module")
def batch():
    imgs = [im.crop((0, 0, 96, 96)) for im in photos(size=96).values()]  # 4 of scikit-image's colour photos
    tensor = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in imgs]).float()
    return imgs, tensor


def pil_reference(imgs, name: str, arg: float) -> torch.Tensor:
    fn = taa.NAME_TO_OP[name]
    if name in ("AutoContrast", "Equalize", "Invert"):
        args = ()
    elif "Posterize" in name or "Solarize" in name:
        args = (int(arg),)
    else:
        args = (arg,)
    out = [np.asarray(fn(im, *args, fillcolor=FILL, resample=Image.BILINEAR)) for im in imgs]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("magnitude, negate", [(3.0, False), (9.0, True), (10.0, False)])
def test_each_op_matches_timm_on_photos(batch, name, magnitude, negate):
    """Pixel and colour ops match PIL to the unit (PIL's truncation included); the affine ops differ
    where bilinear samples land between pixels differently from PIL's, and at the fill's edge."""
    imgs, tensor = batch
    arg = op_argument(name, torch.full((4,), magnitude), torch.full((4,), negate))
    ours = apply_op(tensor.clone(), name, arg)
    if name == "PosterizeIncreasing" and magnitude == 10:
        # 0 bits kept: Pillow 13 refuses (ValueError), so timm's op fails at magnitude 10; here it is black
        with pytest.raises(ValueError, match="bits must be between"):
            pil_reference(imgs, name, 0)
        assert ours.max() == 0
        return
    diff = (ours - pil_reference(imgs, name, arg[0].item())).abs()
    if name in GEOMETRIC:
        assert diff.mean() < 1.0, diff.mean()
        assert (diff <= 2).float().mean() > 0.97
    else:
        assert diff.mean() < 0.01 and diff.max() <= 1, (diff.mean(), diff.max())


@pytest.mark.parametrize("negate", [False, True])
def test_level_arguments_are_timms(monkeypatch, negate):
    monkeypatch.setattr(taa, "_randomly_negate", (lambda v: -v) if negate else (lambda v: v))
    hp = dict(taa._HPARAMS_DEFAULT)
    m = torch.tensor([0.0, 4.0, 7.5, 10.0])
    for name in OPS:
        level_fn = taa.LEVEL_TO_ARG[name]
        if level_fn is None:
            continue
        ours = op_argument(name, m, torch.full((4,), negate))
        expected = [level_fn(v, hp)[0] for v in m.tolist()]
        assert ours.tolist() == pytest.approx(expected, abs=1e-6), name


def test_policy_draws_match_timm_over_many_images():
    """rand-m9-mstd0.5-inc1: 2 ops per image from 15, with replacement, each run with p 0.5, magnitude
    ~ N(9, 0.5) clipped to [0, 10]; timm's own transform gives the reference frequencies."""
    config = "rand-m9-mstd0.5-inc1"
    policy = Policy.from_timm(config)
    assert (policy.num_ops, policy.magnitude, policy.magnitude_std, policy.prob, len(policy.ops)) == (2, 9.0, 0.5, 0.5, 15)
    n = 20000
    d = draw(policy, n, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(d.op.flatten(), minlength=15).float() / (2 * n)
    assert (counts - 1 / 15).abs().max() < 0.01
    assert abs(d.applied.float().mean().item() - 0.5) < 0.01
    ran = torch.zeros(15)
    for layer in range(2):
        ran += torch.bincount(d.op[layer][d.applied[layer]], minlength=15).float()
    ran /= n
    # timm, over 3000 images, with the same op list: how often each op runs per image
    random.seed(0)
    np.random.seed(0)
    transform = taa.rand_augment_transform(config, dict(translate_const=100, img_mean=FILL))
    seen, mags = {name: 0 for name in policy.ops}, []
    for op in transform.ops:
        op.aug_fn = (lambda name: lambda img, *a, **k: (seen.__setitem__(name, seen[name] + 1), img)[1])(op.name)
        if op.level_fn is not None:
            op.level_fn = (lambda fn: lambda m, h: (mags.append(m), fn(m, h))[1])(op.level_fn)
    tiny = Image.new("RGB", (4, 4))
    for _ in range(3000):
        transform(tiny)
    for k, name in enumerate(policy.ops):
        assert abs(ran[k].item() - seen[name] / 3000) < 0.025, name
    ours = d.magnitude[d.applied]
    assert abs(ours.mean().item() - float(np.mean(mags))) < 0.05
    assert abs(ours.std().item() - float(np.std(mags))) < 0.05
    assert ours.max().item() <= 10.0 and 0.45 < ours.std().item() < 0.55  # N(9, 0.5) barely clipped at 10


def test_batch_transform_shapes_randomness_and_errors(batch):
    _, tensor = batch
    images = tensor.to(torch.uint8).repeat(4, 1, 1, 1)  # 16 images
    ra = BatchRandAugment("rand-m6-mstd0.5-inc1")
    out = ra(images, generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    again = ra(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # a seeded generator repeats the batch exactly
    changed = (out.float() - images.float()).abs().mean(dim=(1, 2, 3)) > 0
    assert 0.5 < changed.float().mean() < 1.0  # P(no op runs) = 0.25: most images change, not all
    with pytest.raises(ValueError, match="uint8 images"):
        ra(images.float())


def test_crop_boxes_follow_timms_random_resized_crop():
    """Area fraction and aspect ratio of the boxes over many draws, against timm's get_params."""
    from timm.data.transforms import RandomResizedCropAndInterpolation

    from rsbkit.core.augment import crop_boxes

    n, scale, ratio = 20000, (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = crop_boxes(torch.full((n,), 120), torch.full((n,), 160), scale, ratio, generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 120).all() and (left + w <= 160).all()
    random.seed(0)
    img = Image.new("RGB", (160, 120))
    ref = torch.tensor([RandomResizedCropAndInterpolation.get_params(img, scale, ratio) for _ in range(5000)]).float()
    for ours, theirs in (((h * w) / (120 * 160), (ref[:, 2] * ref[:, 3]) / (120 * 160)), (w / h, ref[:, 3] / ref[:, 2])):
        for q in (0.1, 0.5, 0.9):
            assert abs(torch.quantile(ours, q) - torch.quantile(theirs, q)) < 0.03
    # timm's fallback when nothing fits: a tall image and a wide ratio range gives the central crop
    tall = crop_boxes(torch.tensor([300]), torch.tensor([50]), (0.99, 1.0), (2.0, 3.0), generator=torch.Generator().manual_seed(0))
    assert tall.tolist() == [[RandomResizedCropAndInterpolation.get_params(Image.new("RGB", (50, 300)), (0.99, 1.0), (2.0, 3.0))[k]
                              for k in range(4)]]


def test_device_augment_gives_normalised_crops_of_the_recipe_size(batch):
    from rsbkit.core.augment import DeviceAugment
    from rsbkit.core.recipes import A3

    _, tensor = batch
    images = tensor.to(torch.uint8)
    transform = DeviceAugment(A3.replace(train_res=64))
    out = transform(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 64, 64) and out.dtype == torch.float32
    assert -2.2 < out.min() and out.max() < 2.7  # ImageNet mean/std normalisation of 0..255 values
    # with every random part off it is the identity: the whole 96 px image, unflipped, at 96 px
    plain = DeviceAugment(A3.replace(train_res=96, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, aa=None))
    same = plain(images) * plain.std + plain.mean
    assert (same - tensor).abs().max() < 1e-3
