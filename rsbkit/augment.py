"""timm's train-time augmentation on batches of uint8 tensors, on the training device.

This is the device half of the input path (``augment_on: device``; see
``rsbkit.data`` for the loader half). ``DeviceAugment(recipe)`` takes a batch as
the loader delivers it (whole same-size images, crops already at ``train_res``,
or JPEG bytes decoded here with torchvision's ``decode_jpeg``: nvJPEG on CUDA)
and applies RandomResizedCrop (timm's box draws, one batched ``roi_align``),
flip, RandAugment, random erasing (timm's batch ``RandomErasing``) and
normalisation. Mixup/CutMix run after it with timm's ``Mixup``.

timm's RandAugment works on one PIL image at a time. This module applies the
same policy to a whole batch ``(B, 3, H, W)`` of uint8 images on their device,
with timm's semantics:

- the op list of the config string (``inc1``: timm's increasing ops), read by
  timm's own parser (:func:`parse_randaugment`);
- ``n`` ops per image, chosen independently per image, with replacement;
- each op applied with probability 0.5;
- a magnitude per op call drawn from a Gaussian (``mstd``), clipped to
  ``[0, mmax]`` (10 unless set);
- a random sign for rotate, shear, translate and the increasing enhancements;
- rotate, shear and translate resample bilinearly or bicubically, drawn per
  image and op when ``train_interpolation`` is ``random`` (as timm);
- the fill colour of timm's ImageNet hparams, (124, 116, 104).

The ops follow PIL's definitions: autocontrast, equalize (PIL's histogram
lookup), invert, posterize, solarize, solarize-add, and the
colour/contrast/brightness/sharpness blends. Affine maps use PIL's
pixel-centre convention. Differences that remain: the crop resamples with
``roi_align``'s antialiased bilinear whatever ``train_interpolation`` says
(timm: bilinear or bicubic per image, with PIL's filters); bicubic affine ops use
torch's cubic kernel (a = -0.75; PIL's is -0.5); PIL rounds some blends to
integers at different points. The tests state the tolerances per op, measured
against timm's PIL ops on real photos, and compare the draws' statistics with
the loader path's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import RecipeError

FILL = (124, 116, 104)  # timm's img_mean for ImageNet: round(255 * IMAGENET_DEFAULT_MEAN)
LEVEL_DENOM = 10.0
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


@dataclass(frozen=True)
class RandAugmentConfig:
    """What a timm RandAugment string means, read back from the transform timm builds."""

    num_ops: int  # ops applied per image (n)
    magnitude: float  # m, on timm's 0..10 scale
    magnitude_std: float  # mstd: Gaussian noise on m per op call (inf: uniform in [0, m])
    magnitude_max: Optional[float]  # mmax: clip for m (timm default 10)
    prob: float  # chance that each chosen op is applied
    ops: tuple[str, ...]  # the op list sampled from (the `inc` variants when inc1)


def timm_hparams() -> dict:
    """The hparams timm's train transform passes to RandAugment for ImageNet-sized images."""
    return dict(translate_const=int(224 * 0.45), img_mean=FILL)


def randaugment(aa: str):
    """timm's RandAugment transform for a string such as ``rand-m7-mstd0.5-inc1`` (hparams as timm's train uses)."""
    from timm.data.auto_augment import rand_augment_transform

    if not isinstance(aa, str) or not aa.startswith("rand"):
        raise RecipeError(f"aa={aa!r}: not a RandAugment string, e.g. rand-m7-mstd0.5-inc1")
    try:
        return rand_augment_transform(aa, timm_hparams())  # the string's mstd sets magnitude_std, as timm does
    except (AssertionError, ValueError, KeyError) as exc:
        raise RecipeError(f"aa={aa!r} is not a RandAugment string timm accepts ({type(exc).__name__}: {exc}); "
                          "e.g. rand-m9-mstd0.5-inc1") from None


def parse_randaugment(aa: str) -> RandAugmentConfig:
    """Read a RandAugment string back from the transform timm builds from it."""
    ra = randaugment(aa)
    op = ra.ops[0]
    return RandAugmentConfig(num_ops=ra.num_layers, magnitude=op.magnitude, magnitude_std=op.magnitude_std,
                             magnitude_max=op.magnitude_max, prob=op.prob, ops=tuple(o.name for o in ra.ops))


@dataclass(frozen=True)
class Policy:
    """A RandAugment config: the ops, ``n`` per image, magnitude and its noise, application probability."""

    ops: tuple[str, ...]
    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.0
    magnitude_max: Optional[float] = None
    prob: float = 0.5

    @classmethod
    def from_timm(cls, config: str) -> Policy:
        """Read a timm string (``rand-m6-mstd0.5-inc1``) with timm's own parser."""
        c = parse_randaugment(config)
        return cls(ops=tuple(c.ops), num_ops=c.num_ops, magnitude=float(c.magnitude), magnitude_std=float(c.magnitude_std),
                   magnitude_max=c.magnitude_max, prob=float(c.prob))


# ---------------------------------------------------------------- magnitude -> op argument (timm's level functions)


def op_argument(name: str, magnitude: torch.Tensor, negate: torch.Tensor) -> torch.Tensor:
    """timm's ``LEVEL_TO_ARG`` for each image's magnitude (float tensor); `negate` flips the signed ones."""
    m = magnitude / LEVEL_DENOM
    sign = torch.where(negate, -1.0, 1.0)
    if name == "Rotate":
        return m * 30.0 * sign
    if name in ("ShearX", "ShearY"):
        return m * 0.3 * sign
    if name in ("TranslateXRel", "TranslateYRel"):
        return m * 0.45 * sign
    if name.endswith("Increasing") and name[:-10] in ("Color", "Contrast", "Brightness", "Sharpness"):
        return torch.clamp(1.0 + m * 0.9 * sign, min=0.1)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return m * 1.8 + 0.1
    if name == "PosterizeIncreasing":
        return 4 - torch.floor(m * 4)
    if name == "Posterize":
        return torch.floor(m * 4)
    if name == "SolarizeIncreasing":
        return 256 - torch.clamp(torch.floor(m * 256), max=256)
    if name == "Solarize":
        return torch.clamp(torch.floor(m * 256), max=256)
    if name == "SolarizeAdd":
        return torch.clamp(torch.floor(m * 110), max=128)
    return torch.zeros_like(m)  # AutoContrast, Equalize, Invert take none


# ---------------------------------------------------------------- the ops, batched with one argument per image


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance (Image.blend): degenerate + factor * (img - degenerate), truncated to uint8."""
    f = factor.view(-1, 1, 1, 1)
    out = degenerate + f * (img - degenerate)
    return torch.trunc(out).clamp(0, 255)


def _grey(img: torch.Tensor) -> torch.Tensor:
    """PIL's convert("L"): ITU-R 601-2 luma, rounded."""
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    return ((r * 299 + g * 587 + b * 114) / 1000).round().unsqueeze(1)


def autocontrast(img: torch.Tensor) -> torch.Tensor:
    lo = img.amin(dim=(2, 3), keepdim=True)
    hi = img.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    scale = 255.0 / torch.where(flat, torch.ones_like(hi), hi - lo)
    out = torch.floor((img - lo) * scale).clamp(0, 255)
    return torch.where(flat, img, out)


def equalize(img: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize, per image and channel: lut[i] = (step // 2 + count below i) // step."""
    b, c, h, w = img.shape
    values = img.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, device=img.device, dtype=torch.long)
    hist.scatter_add_(1, values, torch.ones_like(values))
    last = 255 - torch.argmax((hist.flip(1) > 0).long(), dim=1)  # the highest value present
    step = (h * w - hist.gather(1, last[:, None]).squeeze(1)) // 255
    below = torch.cumsum(hist, dim=1) - hist
    safe = torch.where(step > 0, step, torch.ones_like(step))[:, None]
    lut = ((safe // 2 + below) // safe).clamp(max=255)
    out = lut.gather(1, values).reshape(b, c, h, w).to(img.dtype)
    return torch.where((step > 0).view(b, c, 1, 1), out, img)


def posterize(img: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    keep = (2 ** (8 - bits.clamp(0, 8))).view(-1, 1, 1, 1)
    return torch.floor(img / keep) * keep


def solarize(img: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(img >= threshold.view(-1, 1, 1, 1), 255 - img, img)


def solarize_add(img: torch.Tensor, add: torch.Tensor, threshold: float = 128) -> torch.Tensor:
    return torch.where(img < threshold, (img + add.view(-1, 1, 1, 1)).clamp(max=255), img)


def color(img, factor):
    return _blend(_grey(img).expand_as(img), img, factor)


def contrast(img, factor):
    mean = torch.floor(_grey(img).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(img), img, factor)


def brightness(img, factor):
    return _blend(torch.zeros_like(img), img, factor)


def sharpness(img, factor):
    """PIL's SMOOTH filter (3x3, centre 5, total 13) as the degenerate image; border pixels unchanged."""
    kernel = torch.ones(3, 3, device=img.device, dtype=img.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(3, 1, 3, 3)
    smooth = F.conv2d(img, kernel, padding=0, groups=3).round().clamp(0, 255)
    degenerate = img.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, img, factor)


def _pil_affine(img: torch.Tensor, coeffs: torch.Tensor, fill: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """PIL's Image.transform(AFFINE, (a, b, c, d, e, f)) per image: output pixel centre (X, Y) samples
    the input at (aX + bY + c, dX + eY + f); outside the image is `fill`. `mode`: bilinear or bicubic."""
    b, _, h, w = img.shape
    a, bb, c, d, e, f = coeffs.unbind(1)
    theta = torch.stack([
        torch.stack([a, bb * h / w, a + bb * h / w + 2 * c / w - 1], dim=1),
        torch.stack([d * w / h, e, d * w / h + e + 2 * f / h - 1], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    ones = torch.ones(b, 1, h, w, device=img.device, dtype=img.dtype)
    sampled = F.grid_sample(torch.cat([img, ones], 1), grid, mode=mode, padding_mode="zeros", align_corners=False)
    inside = sampled[:, 3:].clamp(0, 1)  # bicubic overshoots at the edge
    fill_t = torch.tensor(fill, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
    return (sampled[:, :3] + (1 - inside) * fill_t).round().clamp(0, 255)


def _affine_coeffs(name: str, arg: torch.Tensor, h: int, w: int) -> torch.Tensor:
    one, zero = torch.ones_like(arg), torch.zeros_like(arg)
    if name == "ShearX":
        return torch.stack([one, arg, zero, zero, one, zero], 1)
    if name == "ShearY":
        return torch.stack([one, zero, zero, arg, one, zero], 1)
    if name == "TranslateXRel":
        return torch.stack([one, zero, arg * w, zero, one, zero], 1)
    if name == "TranslateYRel":
        return torch.stack([one, zero, zero, zero, one, arg * h], 1)
    # Rotate: PIL's matrix for a counter-clockwise turn of `arg` degrees about the centre
    t = -arg * math.pi / 180
    cos, sin = torch.cos(t), torch.sin(t)
    cx, cy = w / 2.0, h / 2.0
    a, b, d, e = cos, sin, -sin, cos
    return torch.stack([a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy], 1)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor onto `device` without waiting for it: from pinned memory, non-blocking."""
    if t.device == device:
        return t
    return (t.pin_memory() if device.type == "cuda" else t).to(device, non_blocking=True)


def apply_op(img: torch.Tensor, name: str, arg: torch.Tensor, fill: Sequence[int] = FILL,
             bicubic: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One op on a float batch holding uint8 values, with one argument per image (see :func:`op_argument`).
    `bicubic`: per image, resample the geometric ops bicubically (else bilinearly)."""
    base = name[:-10] if name.endswith("Increasing") else name
    if name in GEOMETRIC:
        coeffs = _affine_coeffs(name, arg, img.shape[2], img.shape[3])
        if bicubic is None or not bicubic.any():
            return _pil_affine(img, coeffs, fill)
        if bicubic.all():
            return _pil_affine(img, coeffs, fill, "bicubic")
        out = torch.empty_like(img)
        cubic = _to_device(bicubic.nonzero().squeeze(1), img.device)
        linear = _to_device((~bicubic).nonzero().squeeze(1), img.device)
        out[cubic] = _pil_affine(img[cubic], coeffs[cubic], fill, "bicubic")
        out[linear] = _pil_affine(img[linear], coeffs[linear], fill)
        return out
    if base == "AutoContrast":
        return autocontrast(img)
    if base == "Equalize":
        return equalize(img)
    if base == "Invert":
        return 255 - img
    if base == "Posterize":
        return posterize(img, arg)
    if base == "Solarize":
        return solarize(img, arg)
    if base == "SolarizeAdd":
        return solarize_add(img, arg)
    return {"Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness}[base](img, arg)


# ---------------------------------------------------------------- the policy on a batch


@dataclass
class Draws:
    """What the policy drew for a batch: per layer and image, the op, whether it ran, its magnitude and sign."""

    op: torch.Tensor  # (layers, B) index into the policy's ops
    applied: torch.Tensor  # (layers, B) bool
    magnitude: torch.Tensor  # (layers, B) after noise and clipping
    negate: torch.Tensor  # (layers, B) bool
    bicubic: Optional[torch.Tensor] = None  # (layers, B) bool: resampling of the geometric ops; None = bilinear


INTERPOLATIONS = ("bilinear", "bicubic", "random")


def draw(policy: Policy, batch: int, *, device=None, generator: Optional[torch.Generator] = None,
         interpolation: str = "bilinear") -> Draws:
    shape = (policy.num_ops, batch)
    op = torch.randint(len(policy.ops), shape, device=device, generator=generator)
    applied = torch.rand(shape, device=device, generator=generator) <= policy.prob
    magnitude = torch.full(shape, float(policy.magnitude), device=device)
    if policy.magnitude_std == float("inf"):
        magnitude = torch.rand(shape, device=device, generator=generator) * policy.magnitude
    elif policy.magnitude_std > 0:
        magnitude = magnitude + policy.magnitude_std * torch.randn(shape, device=device, generator=generator)
    magnitude = magnitude.clamp(0.0, policy.magnitude_max or LEVEL_DENOM)
    negate = torch.rand(shape, device=device, generator=generator) > 0.5
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
    bicubic = None
    if interpolation == "random":  # timm: random.choice((BILINEAR, BICUBIC)) per op call
        bicubic = torch.rand(shape, device=device, generator=generator) < 0.5
    elif interpolation == "bicubic":
        bicubic = torch.ones(shape, dtype=torch.bool, device=device)
    return Draws(op, applied, magnitude, negate, bicubic)


class BatchRandAugment:
    """``BatchRandAugment("rand-m6-mstd0.5-inc1")(images)``: images uint8 (B, 3, H, W) on any device."""

    def __init__(self, config: str, fill: Sequence[int] = FILL, interpolation: str = "bilinear"):
        self.policy = Policy.from_timm(config)
        self.fill = tuple(fill)
        self.interpolation = interpolation

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"BatchRandAugment takes uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        return self.apply(images.float(), self.draw(len(images), images.device, generator)).to(torch.uint8)

    def draw(self, batch: int, device=None, generator: Optional[torch.Generator] = None) -> Draws:
        return draw(self.policy, batch, device=device, generator=generator, interpolation=self.interpolation)

    def apply(self, images: torch.Tensor, d: Draws) -> torch.Tensor:
        """The drawn ops on a float batch of uint8 values; float values out (whole numbers in 0..255).

        With the draws on the CPU and the images on a GPU nothing here waits for the GPU: which
        images take which op is worked out on the CPU, and only index and argument tensors go over."""
        out = images.clone()
        dev = images.device
        for layer in range(self.policy.num_ops):
            for k, name in enumerate(self.policy.ops):
                idx = torch.nonzero((d.op[layer] == k) & d.applied[layer]).squeeze(1)
                if idx.numel() == 0:
                    continue
                arg = _to_device(op_argument(name, d.magnitude[layer, idx], d.negate[layer, idx]), dev)
                bicubic = d.bicubic[layer, idx] if d.bicubic is not None else None
                at = _to_device(idx, dev)
                out[at] = apply_op(out[at], name, arg, self.fill, bicubic)
        return out.round().clamp(0, 255)


# ---------------------------------------------------------------- RandomResizedCrop, flip, normalisation


def crop_boxes(heights: torch.Tensor, widths: torch.Tensor, scale: Sequence[float], ratio: Sequence[float], *,
               generator: Optional[torch.Generator] = None, attempts: int = 10) -> torch.Tensor:
    """timm's RandomResizedCrop boxes for images of the given sizes, all at once: (B, 4) as top, left, h, w.

    Per image: up to 10 draws of area ~ U(scale) x image area and log aspect ~ U(log ratio); the first
    that fits is kept, at a uniform position; when none fits, timm's central fallback crop."""
    b = len(heights)
    dev = heights.device
    h = heights.float()
    w = widths.float()
    area = (h * w)[:, None]
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, attempts, device=dev, generator=generator))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(b, attempts, device=dev, generator=generator))
    tw = torch.round(torch.sqrt(target * aspect))
    th = torch.round(torch.sqrt(target / aspect))
    fits = (tw <= w[:, None]) & (th <= h[:, None])
    first = torch.argmax(fits.int(), dim=1)
    found = fits.any(dim=1)
    cw = tw.gather(1, first[:, None]).squeeze(1)
    ch = th.gather(1, first[:, None]).squeeze(1)
    # timm's fallback: the central crop at the nearest allowed aspect ratio
    in_ratio = w / h
    fw = torch.where(in_ratio < min(ratio), w, torch.where(in_ratio > max(ratio), torch.round(h * max(ratio)), w))
    fh = torch.where(in_ratio < min(ratio), torch.round(w / min(ratio)), h)
    ch, cw = torch.where(found, ch, fh), torch.where(found, cw, fw)
    u = torch.rand(b, 2, device=dev, generator=generator)
    top = torch.where(found, torch.floor(u[:, 0] * (h - ch + 1)), torch.floor((h - ch) / 2))
    left = torch.where(found, torch.floor(u[:, 1] * (w - cw + 1)), torch.floor((w - cw) / 2))
    return torch.stack([top, left, ch, cw], dim=1)


def resized_crop_flip(images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor) -> torch.Tensor:
    """Crop each image of a same-size batch to its box, resize to `size` (bilinear, one batched
    ``roi_align``) and mirror the flagged ones. Float values in, float values out."""
    from torchvision.ops import roi_align

    top, left, h, w = boxes.unbind(1)
    index = torch.arange(len(images), device=images.device, dtype=images.dtype)
    rois = torch.stack([index, left, top, left + w, top + h], dim=1).to(images.dtype)
    # adaptive sampling: ceil(box / size) bilinear samples per output pixel and side, averaged (an antialiased
    # downscale, and the identity when box and output sizes agree)
    out = roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def _check_device_recipe(recipe) -> None:
    if recipe.color_jitter:
        raise RecipeError(f"{recipe.name}: color_jitter {recipe.color_jitter} has no device implementation here; "
                          "set augment_on: loader (timm's per-image transform) or color_jitter: 0")
    if recipe.aa and not str(recipe.aa).startswith("rand"):
        raise RecipeError(f"{recipe.name}: aa={recipe.aa!r} runs only in the loader (the device path has timm's RandAugment); "
                          "set augment_on: loader, or a rand-... string")


def supports_device(recipe) -> bool:
    """Whether every ingredient of the recipe's train transform has its device implementation here."""
    try:
        _check_device_recipe(recipe)
    except RecipeError:
        return False
    return True


class DeviceAugment:
    """The train transform after the loader: RandomResizedCrop (unless the loader cropped), flip,
    RandAugment, random erasing and normalisation on a uint8 batch on the training device.

    ``DeviceAugment(recipe, crop=True)(images, generator)``: `images` is a uint8 batch
    ``(B, 3, H, W)`` of same-size whole images, or a list of uint8 ``(3, h, w)``
    images of any sizes (decoded JPEGs); with ``crop=False`` a batch already cropped
    to ``train_res`` by the loader. Returns float images normalised with the
    ImageNet mean and std (as timm's), channels_last when asked. Every draw comes
    from `generator` (on the images' device), except random erasing, which draws
    from torch's and Python's global RNGs as timm's ``RandomErasing`` does.
    """

    def __init__(self, recipe, *, crop: bool = True, channels_last: bool = False,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        _check_device_recipe(recipe)
        self.size, self.scale, self.ratio, self.hflip = recipe.train_res, tuple(recipe.scale), tuple(recipe.ratio), recipe.hflip
        self.crop, self.channels_last, self.reprob = crop, channels_last, recipe.reprob
        self.randaugment = BatchRandAugment(recipe.aa, interpolation=recipe.train_interpolation) if recipe.aa else None
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self._erase = None

    def __call__(self, images, generator: Optional[torch.Generator] = None,
                 draws: Optional[torch.Generator] = None) -> torch.Tensor:
        """`generator`: on the images' device, for the crops and flips; `draws`: a CPU generator for
        RandAugment's choices (default `generator` when that is on the CPU), so nothing waits for a GPU."""
        if draws is None and (generator is None or generator.device.type == "cpu"):
            draws = generator
        if isinstance(images, (list, tuple)):
            if not self.crop:
                raise ValueError("a list of images of different sizes needs crop=True")
            batch, heights, widths = pad_batch(images)
        else:
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"DeviceAugment takes uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
            batch = images
            heights = torch.full((len(images),), images.shape[2], device=images.device)
            widths = torch.full((len(images),), images.shape[3], device=images.device)
        dev, b = batch.device, len(batch)
        if self.crop:
            boxes = crop_boxes(heights, widths, self.scale, self.ratio, generator=generator)
            flip = torch.rand(b, device=dev, generator=generator) < self.hflip
            out = resized_crop_flip(batch.float(), boxes, self.size, flip).round().clamp(0, 255)
        else:
            if batch.shape[2:] != (self.size, self.size):
                raise ValueError(f"crop=False expects crops of {self.size} px from the loader, got {tuple(batch.shape[2:])}")
            flip = torch.rand(b, device=dev, generator=generator) < self.hflip
            out = batch.float()
            out = torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)
        if self.randaugment is not None:
            out = self.randaugment.apply(out, self.randaugment.draw(b, "cpu", draws))
        mean, std = self._constants(dev)
        out = (out - mean) / std
        if self.reprob > 0:
            out = self._eraser(dev)(out)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean.device != device:  # moved once, then kept on the device
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self.mean, self.std

    def _eraser(self, device):
        if self._erase is None:
            from timm.data.random_erasing import RandomErasing

            self._erase = RandomErasing(self.reprob, mode="pixel", max_count=1, device=device)  # timm's batch mode
        return self._erase


def pad_batch(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of different sizes as one zero-padded batch (top-left aligned), with their heights and widths."""
    dev = images[0].device
    heights, widths = [im.shape[1] for im in images], [im.shape[2] for im in images]
    batch = torch.zeros(len(images), 3, max(heights), max(widths), dtype=torch.uint8, device=dev)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch, _to_device(torch.tensor(heights), dev), _to_device(torch.tensor(widths), dev)


def decode_images(encoded: Sequence[torch.Tensor], device: torch.device) -> tuple[list[torch.Tensor], list[tuple[int, str]]]:
    """Decode file bytes (uint8 CPU tensors) to RGB uint8 images on `device`: JPEGs in one batched
    torchvision ``decode_jpeg`` call (nvJPEG on CUDA), other formats with ``decode_image`` on the CPU.
    Returns the images and (position, reason) for each one that could not be decoded."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    jpeg = [i for i, e in enumerate(encoded) if len(e) > 2 and int(e[0]) == 0xFF and int(e[1]) == 0xD8]
    out: list[Optional[torch.Tensor]] = [None] * len(encoded)
    bad: list[tuple[int, str]] = []
    try:
        for i, im in zip(jpeg, decode_jpeg([encoded[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)):
            out[i] = im
    except RuntimeError:  # one bad file fails the batch: decode one by one to name it
        for i in jpeg:
            try:
                out[i] = decode_jpeg(encoded[i], mode=ImageReadMode.RGB, device=device)
            except RuntimeError as exc:
                bad.append((i, f"RuntimeError: {exc}"))
    for i in set(range(len(encoded))) - set(jpeg):
        try:
            out[i] = decode_image(encoded[i], mode=ImageReadMode.RGB).to(device, non_blocking=True)
        except RuntimeError as exc:
            bad.append((i, f"RuntimeError: {exc}"))
    return [im for im in out if im is not None], sorted(bad)
