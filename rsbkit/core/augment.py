"""timm's train-time augmentation on batches of uint8 tensors, on the training device.

This is the device half of the input path (``augment_on: device``; see
``rsbkit.core.data`` for the loader half). ``DeviceAugment(recipe)`` takes a batch as
the loader delivers it (whole same-size images, crops already at ``train_res``,
or JPEG bytes decoded here with torchvision's ``decode_jpeg``: nvJPEG on CUDA)
and applies RandomResizedCrop (timm's box draws, one batched ``roi_align``),
flip, RandAugment, random erasing (timm's ``RandomErasing``, batched: :class:`BatchErasing`) and
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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.ops import roi_align

from .devices import is_out_of_memory
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
    return (sampled[:, :3] + (1 - inside) * _fill_tensor(fill, img.device, img.dtype)).round().clamp(0, 255)


_CONSTANTS: dict[tuple, torch.Tensor] = {}
_CONSTANTS_LOCK = threading.Lock()


def _device_constant(key: tuple, make: Callable[[], torch.Tensor], device: torch.device) -> torch.Tensor:
    """A small constant (the fill colour, the mean and std) on `device`, copied once per key and device for the
    process's life and read from every thread and stream. The copy is made under a lock and waited for (a blocking
    copy: one sync per constant, at setup when the input moves them first, :meth:`DeviceAugment.to`): a non-blocking
    copy queued on the stream of the input thread that came first could be read from another input thread's stream
    before it landed. Never freed, so no queued kernel can read a block handed out again."""
    key = (*key, str(device))
    found = _CONSTANTS.get(key)
    if found is None:
        with _CONSTANTS_LOCK:
            found = _CONSTANTS.get(key)
            if found is None:
                found = _CONSTANTS[key] = make().to(torch.device(device))  # blocking: landed before it is returned
    return found


def _fill_tensor(fill: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The fill colour as a (1, 3, 1, 1) tensor on `device`, made once per device and dtype (:func:`_device_constant`):
    building it per op call (``torch.tensor(fill, device=...)``) is a blocking host-to-device copy, 10-20 per batch."""
    return _device_constant(("fill", tuple(fill), dtype), lambda: torch.tensor(fill, dtype=dtype).view(1, 3, 1, 1), device)


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


def apply_op(img: torch.Tensor, name: str, arg: torch.Tensor, fill: Sequence[int] = FILL, bicubic: int = 0) -> torch.Tensor:
    """One op on a float batch holding uint8 values, with one argument per image (see :func:`op_argument`).
    `bicubic`: the geometric ops resample the first `bicubic` images bicubically, the rest bilinearly
    (:meth:`BatchRandAugment.apply` orders each op's images so)."""
    base = name[:-10] if name.endswith("Increasing") else name
    if name in GEOMETRIC:
        coeffs = _affine_coeffs(name, arg, img.shape[2], img.shape[3])
        if bicubic <= 0:
            return _pil_affine(img, coeffs, fill)
        if bicubic >= len(img):
            return _pil_affine(img, coeffs, fill, "bicubic")
        return torch.cat([_pil_affine(img[:bicubic], coeffs[:bicubic], fill, "bicubic"),
                          _pil_affine(img[bicubic:], coeffs[bicubic:], fill)])
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


# The train_interpolation values (rsbkit.core.recipes.INTERPOLATIONS) RandAugment's geometric ops resample with here:
# timm's, but for nearest, which only its loader path has (check_device_recipe sends such a recipe there).
DEVICE_INTERPOLATIONS = ("bilinear", "bicubic", "random")


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
    if interpolation not in DEVICE_INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r}: use one of {', '.join(DEVICE_INTERPOLATIONS)}")
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

        With the draws on the CPU and the images on a GPU nothing here waits for the GPU: which images
        take which op is worked out on the CPU (:meth:`schedule`), and one index and one argument
        tensor go over per batch, sliced per op on the device."""
        out = images.clone()
        steps, index, args = self.schedule(d)
        index, args = _to_device(index, images.device), _to_device(args, images.device)
        for name, start, stop, bicubic in steps:
            at = index[start:stop]
            out[at] = apply_op(out[at], name, args[start:stop], self.fill, bicubic)
        return out.round().clamp(0, 255)

    def schedule(self, d: Draws) -> tuple[list[tuple[str, int, int, int]], torch.Tensor, torch.Tensor]:
        """The batch's ops in order, from draws on the CPU: (op, start, stop, bicubic) per (layer, op) that
        some image takes, with the images' positions and arguments at ``start:stop`` of the index and
        argument tensors; within an op the bicubic images come first (`bicubic` of them)."""
        steps, indices, args = [], [], []
        start = 0
        for layer in range(self.policy.num_ops):
            for k, name in enumerate(self.policy.ops):
                chosen = (d.op[layer] == k) & d.applied[layer]
                cubic = chosen & d.bicubic[layer] if d.bicubic is not None and name in GEOMETRIC else torch.zeros_like(chosen)
                idx = torch.cat([torch.nonzero(cubic).squeeze(1), torch.nonzero(chosen & ~cubic).squeeze(1)])
                if idx.numel() == 0:
                    continue
                indices.append(idx)
                args.append(op_argument(name, d.magnitude[layer, idx], d.negate[layer, idx]))
                steps.append((name, start, start + len(idx), int(cubic.sum())))
                start += len(idx)
        if not steps:
            return [], torch.zeros(0, dtype=torch.long), torch.zeros(0)
        return steps, torch.cat(indices), torch.cat(args).float()


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
    top, left, h, w = boxes.unbind(1)
    index = torch.arange(len(images), device=images.device, dtype=images.dtype)
    rois = torch.stack([index, left, top, left + w, top + h], dim=1).to(images.dtype)
    out = _roi_resize(images, rois, size)
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def check_device_recipe(recipe) -> None:
    if recipe.color_jitter:
        raise RecipeError(f"{recipe.name}: color_jitter {recipe.color_jitter} has no device implementation here; "
                          "set augment_on: loader (timm's per-image transform) or color_jitter: 0")
    if recipe.aa and not str(recipe.aa).startswith("rand"):
        raise RecipeError(f"{recipe.name}: aa={recipe.aa!r} runs only in the loader (the device path has timm's RandAugment); "
                          "set augment_on: loader, or a rand-... string")
    if recipe.aa and recipe.train_interpolation not in DEVICE_INTERPOLATIONS:
        raise RecipeError(f"{recipe.name}: train_interpolation {recipe.train_interpolation!r} has no device RandAugment here "
                          f"({', '.join(DEVICE_INTERPOLATIONS)}); set augment_on: loader (timm's per-image transform)")


def supports_device(recipe) -> bool:
    """Whether every ingredient of the recipe's train transform has its device implementation here."""
    try:
        check_device_recipe(recipe)
    except RecipeError:
        return False
    return True


class BatchErasing:
    """timm's ``RandomErasing`` (mode ``pixel``, one box per image) on a whole batch at once.

    The parameters are read from the ``RandomErasing`` timm builds for the recipe; the draws follow its
    ``_erase`` per image (apply with probability p; up to 10 tries of area ~ U(min_area, max_area) x
    image area and log aspect ~ U(log 0.3, log 1/0.3), kept when smaller than the image, at a uniform
    position; per-pixel normal noise), but come from explicit generators, all images at once: timm's
    loops over the batch in Python and draws from Python's and torch's global RNGs, which a decode
    thread cannot share with the training thread reproducibly."""

    def __init__(self, probability: float):
        timm_erasing = RandomErasing(probability, mode="pixel", max_count=1, device="cpu")
        self.probability, self.min_area, self.max_area = timm_erasing.probability, timm_erasing.min_area, timm_erasing.max_area
        self.log_aspect_ratio = timm_erasing.log_aspect_ratio
        assert timm_erasing.per_pixel and timm_erasing.max_count == 1

    def boxes(self, batch: int, h: int, w: int, generator: Optional[torch.Generator] = None, attempts: int = 10) -> torch.Tensor:
        """(B, 4) long on the CPU: top, left, height, width of each image's box; height 0 where none is erased."""
        apply = torch.rand(batch, generator=generator) <= self.probability
        target = (self.min_area + (self.max_area - self.min_area) * torch.rand(batch, attempts, generator=generator)) * (h * w)
        lo, hi = self.log_aspect_ratio
        aspect = torch.exp(lo + (hi - lo) * torch.rand(batch, attempts, generator=generator))
        eh, ew = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
        fits = (ew < w) & (eh < h)
        first = torch.argmax(fits.int(), dim=1, keepdim=True)
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        u = torch.rand(batch, 2, generator=generator)
        top, left = torch.floor(u[:, 0] * (h - eh + 1)), torch.floor(u[:, 1] * (w - ew + 1))
        erase = apply & fits.any(dim=1)
        return torch.stack([top, left, torch.where(erase, eh, 0), torch.where(erase, ew, 0)], dim=1).long()

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                 draws: Optional[torch.Generator] = None) -> torch.Tensor:
        """Erase boxes drawn from `draws` (CPU) with noise from `generator` (on the images' device)."""
        b, _, h, w = images.shape
        dev = images.device
        top, left, eh, ew = _to_device(self.boxes(b, h, w, draws), dev).view(b, 4, 1, 1).unbind(1)
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        inside = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
        noise = torch.randn(images.shape, generator=generator, device=dev, dtype=images.dtype)
        return torch.where(inside.unsqueeze(1), noise, images)


class DeviceAugment:
    """The train transform after the loader: RandomResizedCrop (unless the loader cropped), flip,
    RandAugment, random erasing and normalisation on a uint8 batch on the training device.

    ``DeviceAugment(recipe, crop=True)(images, generator, draws)``: `images` is a uint8 batch
    ``(B, 3, H, W)`` of same-size whole images, or a list of uint8 ``(3, h, w)``
    images of any sizes (decoded JPEGs); with ``crop=False`` a batch already cropped
    to ``train_res`` by the loader. Returns float images normalised with the
    ImageNet mean and std (as timm's), channels_last when asked. Every draw comes
    from the two generators: `generator` on the images' device (crops of a same-size
    batch, flips, the erasing noise), `draws` on the CPU (RandAugment's choices, the
    crops of a list, the erasing boxes), so nothing waits for a GPU and a decode
    thread draws nothing from the global RNGs the training thread uses.
    """

    def __init__(self, recipe, *, crop: bool = True, channels_last: bool = False,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        check_device_recipe(recipe)
        self.size, self.scale, self.ratio, self.hflip = recipe.train_res, tuple(recipe.scale), tuple(recipe.ratio), recipe.hflip
        self.crop, self.channels_last = crop, channels_last
        self.randaugment = BatchRandAugment(recipe.aa, interpolation=recipe.train_interpolation) if recipe.aa else None
        self.erasing = BatchErasing(recipe.reprob) if recipe.reprob > 0 else None
        self.normalise = Normalise(mean, std)

    def __call__(self, images, generator: Optional[torch.Generator] = None,
                 draws: Optional[torch.Generator] = None) -> torch.Tensor:
        """`generator`: on the images' device; `draws`: a CPU generator (default `generator` when that
        is on the CPU, else a fresh one: pass one for reproducible runs)."""
        if draws is None:
            draws = generator if generator is None or generator.device.type == "cpu" else torch.Generator()
        if isinstance(images, (list, tuple)):
            if not self.crop:
                raise ValueError("a list of images of different sizes needs crop=True")
            dev, b = images[0].device, len(images)
            flip = torch.rand(b, device=dev, generator=generator) < self.hflip
            out = crop_each(images, self.scale, self.ratio, self.size, flip, draws)
        else:
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"DeviceAugment takes uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
            dev, b = images.device, len(images)
            if self.crop:
                heights = torch.full((b,), images.shape[2], device=dev)
                widths = torch.full((b,), images.shape[3], device=dev)
                boxes = crop_boxes(heights, widths, self.scale, self.ratio, generator=generator)
                flip = torch.rand(b, device=dev, generator=generator) < self.hflip
                out = resized_crop_flip(images.float(), boxes, self.size, flip)
            else:
                if images.shape[2:] != (self.size, self.size):
                    raise ValueError(f"crop=False expects crops of {self.size} px from the loader, got {tuple(images.shape[2:])}")
                flip = torch.rand(b, device=dev, generator=generator) < self.hflip
                out = images.float()
                out = torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)
        out = out.round().clamp(0, 255)
        if self.randaugment is not None:
            out = self.randaugment.apply(out, self.randaugment.draw(b, "cpu", draws))
        out = self.normalise(out)
        if self.erasing is not None:
            out = self.erasing(out, generator, draws)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def to(self, device) -> DeviceAugment:
        """Copy the constants (mean, std, RandAugment's fill colour) to `device` now, once, waiting for the copies:
        the input calls it when it is made, so no input thread copies them on its own stream (:func:`_device_constant`)."""
        device = torch.device(device)
        self.normalise.to(device)
        if self.randaugment is not None:
            _fill_tensor(self.randaugment.fill, device, torch.float32)
        return self

    @property
    def mean(self) -> torch.Tensor:
        return self.normalise.mean

    @property
    def std(self) -> torch.Tensor:
        return self.normalise.std


class Normalise:
    """ImageNet's normalisation (timm's mean and std) of floats holding uint8 values, its constants
    copied to the images' device once, waited for, and kept there (:func:`_device_constant`; no copy per batch).
    `mean` and `std` stay on the CPU."""

    def __init__(self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255

    def to(self, device) -> Normalise:
        """Copy the constants to `device` now (the inputs do when they are made, before any input thread runs)."""
        self.on(torch.device(device))
        return self

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std on `device`."""
        mean, std = self.mean, self.std
        return (_device_constant(("mean", tuple(mean.flatten().tolist())), lambda: mean, device),
                _device_constant(("std", tuple(std.flatten().tolist())), lambda: std, device))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.on(images.device)
        return (images - mean) / std


def crop_each(images: Sequence[torch.Tensor], scale: Sequence[float], ratio: Sequence[float], size: int,
              flip: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """RandomResizedCrop of images of different sizes (uint8 ``(3, h, w)`` on one device), each cropped
    from its own pixels: boxes drawn on the CPU from `generator` (timm's draws, :func:`crop_boxes`),
    then per image only the box and a one-pixel margin made float and resized by ``roi_align``, as
    :func:`resized_crop_flip` does for a same-size batch. Memory: the output and one box at a time
    (padding the batch to its largest image asks for B x the largest photo: 46 GB for one
    4000x3000 photo among 256)."""
    heights = torch.tensor([im.shape[1] for im in images])
    widths = torch.tensor([im.shape[2] for im in images])
    boxes = crop_boxes(heights, widths, scale, ratio, generator=generator).long()
    regions, rois = [], []
    for im, (top, left, h, w) in zip(images, boxes.tolist()):
        t0, l0 = max(top - 1, 0), max(left - 1, 0)  # roi_align's bilinear samples reach one pixel past the box
        regions.append(im[:, t0 : min(top + h + 1, im.shape[1]), l0 : min(left + w + 1, im.shape[2])])
        rois.append((0, left - l0, top - t0, left - l0 + w, top - t0 + h))
    rois_dev = _to_device(torch.tensor(rois, dtype=torch.float32), images[0].device)
    out = torch.cat([_roi_resize(region[None].float(), rois_dev[k : k + 1], size) for k, region in enumerate(regions)])
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def _roi_resize(images: torch.Tensor, rois: torch.Tensor, size: int) -> torch.Tensor:
    # adaptive sampling: ceil(box / size) bilinear samples per output pixel and side, averaged (an antialiased
    # downscale, and the identity when box and output sizes agree)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def is_jpeg(head: bytes) -> bool:
    """A JPEG's first bytes (SOI marker, then a marker byte)."""
    return len(head) > 2 and head[0] == 0xFF and head[1] == 0xD8


def jpeg_components(data) -> Optional[int]:
    """The number of colour components in a JPEG's frame header (1 grey, 3 YCbCr, 4 CMYK or YCCK), read by walking
    the marker segments to the first SOFn; None when the bytes end first or are not a JPEG. `data`: bytes or a
    uint8 array. Reads only the headers (typically under a few KB)."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        length = (int(data[i + 2]) << 8) | int(data[i + 3])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15 but DHT, JPG, DAC
            return int(data[i + 9]) if i + 9 < n else None
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def nvjpeg_can_batch(data) -> bool:
    """Whether a JPEG goes into nvJPEG's batched decode: not one with 4 components (CMYK, YCCK), which torchvision's
    CUDA decoder refuses, failing the whole batch of 256 or 2,048 files."""
    return jpeg_components(data) in (1, 3)


def _decode_jpegs(encoded: list, device: torch.device) -> list:
    """decode_jpeg on a list; when it fails (a file nvJPEG refuses), each half again, down to single files, which
    come back as an exception: about 2 log2(n) calls for one bad file in n, not n. Out of memory is raised."""
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise
        if len(encoded) == 1:
            return [exc]
    if device.type == "cuda":  # nothing of the failed call may still be writing where the halves' outputs go
        torch.cuda.current_stream(device).synchronize()
    half = len(encoded) // 2
    return _decode_jpegs(encoded[:half], device) + _decode_jpegs(encoded[half:], device)


_DECODE_STREAMS: dict[tuple, torch.cuda.Stream] = {}


def decode_stream(device: torch.device, reader: torch.cuda.Stream) -> torch.cuda.Stream:
    """The CUDA stream that the JPEGs read on `reader` (an input's stream, :func:`rsbkit.core.data.side_stream`) are
    decoded on: made once per reading stream, for the process's life (an input makes its streams once, so this is one
    more per input thread, not one per batch). Only decode_jpeg's outputs are allocated on it."""
    key = (str(device), reader.cuda_stream)
    with _CONSTANTS_LOCK:
        if key not in _DECODE_STREAMS:
            _DECODE_STREAMS[key] = torch.cuda.Stream(device)
        return _DECODE_STREAMS[key]


def decode_images(encoded: Sequence[torch.Tensor], device: torch.device, *,
                  batchable: bool = False) -> tuple[list[torch.Tensor], list[tuple[int, str]]]:
    """Decode file bytes (1-D uint8 CPU tensors) to RGB uint8 images on `device`: JPEGs in one batched
    torchvision ``decode_jpeg`` call (nvJPEG on CUDA); other formats, 4-component JPEGs (CMYK, YCCK: nvJPEG
    refuses them) and JPEGs the batch refuses (found by halving the batch) with ``decode_image`` on the CPU.
    (:class:`rsbkit.core.data.EncodedFiles` decodes the first two kinds in the loader workers already, and
    `batchable` says so: every file is a JPEG the batch takes, its header read in the worker, not again here.)

    On CUDA the JPEGs are decoded on a stream of their own (:func:`decode_stream`), not on the caller's (the input
    thread's, which holds the last batch's augmentation): nvJPEG writes its outputs, allocated on the current
    stream, without waiting for that stream (pytorch/vision#9606), so the outputs come from the decode stream's
    blocks, which hold nothing but earlier outputs; the caller's stream waits for the decode stream (no host sync)
    and each output is ``record_stream``-ed on it, so its block is not handed to the next decode while a kernel
    queued there still reads it. The decode of batch i + 1 no longer waits for batch i's augmentation.

    Returns the images and (position, reason) for each one that could not be decoded. An
    out-of-memory error is not a bad file: it is raised, for the out-of-memory fallback."""

    cuda = device.type == "cuda"
    if batchable:
        jpeg = list(range(len(encoded)))
    else:
        jpeg = [i for i, e in enumerate(encoded)
                if is_jpeg(bytes(e[:3].tolist())) and (not cuda or nvjpeg_can_batch(e[:65536].numpy()))]
    out: list[Optional[torch.Tensor]] = [None] * len(encoded)
    bad: list[tuple[int, str]] = []

    def on_cpu(i: int) -> None:
        try:
            out[i] = decode_image(encoded[i], mode=ImageReadMode.RGB).to(device, non_blocking=True)
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise
            bad.append((i, f"RuntimeError: {exc}"))

    if jpeg:  # decode_jpeg([]) raises: a batch of PNGs has none
        files = [encoded[i] for i in jpeg]
        if cuda:
            reader = torch.cuda.current_stream(device)
            side = decode_stream(device, reader)
            with torch.cuda.stream(side):
                decoded = _decode_jpegs(files, device)
            reader.wait_stream(side)
            for im in decoded:
                if isinstance(im, torch.Tensor):
                    im.record_stream(reader)
        else:
            decoded = _decode_jpegs(files, device)
        for i, im in zip(jpeg, decoded):
            if isinstance(im, Exception):
                on_cpu(i)  # what nvJPEG cannot read, libjpeg may
            else:
                out[i] = im
    for i in sorted(set(range(len(encoded))) - set(jpeg)):
        on_cpu(i)
    return [im for im in out if im is not None], sorted(bad)
