"""Training recipes as data: the RSB procedures A1/A2/A3, torchvision's original
recipe and ResNet-RS, with validation and YAML loading.

Field names follow timm's ``train.py`` flags where one exists (``--drop-path`` is
``drop_path``), so a timm user can read a recipe at a glance. Values come from
``shared/REFERENCE.md`` sections 1 and 2; where the sources disagree the
recipe's docstring says which one it follows.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .errors import DistributedError, RecipeError


@dataclass(frozen=True)
class Reported:
    """What a paper reports for a recipe, so a run can be put beside it."""

    top1: float  # ImageNet-1k val top-1, %
    real: Optional[float] = None  # ImageNet ReaL top-1, %
    v2: Optional[float] = None  # ImageNet-V2 matched-frequency top-1, %
    train_hours: Optional[float] = None  # wall-clock hours on `gpus` x `gpu`
    gpus: Optional[int] = None
    gpu: Optional[str] = None
    peak_mem_gb: Optional[float] = None  # per GPU
    source: str = ""


@dataclass(frozen=True)
class Recipe:
    """One training procedure. Build variants with ``recipe.replace(**overrides)``."""

    name: str = "custom"  # label for run folders and reports
    # model (timm)
    model: str = "resnet50"  # any name timm.create_model knows
    drop_path: float = 0.0  # stochastic depth rate, scaled linearly over blocks by timm
    drop: float = 0.0  # dropout before the classifier
    width: float = 1.0  # channel multiplier of a timm ResNet's stages (ResNet-RS width scaling)
    init: Optional[str] = None  # starting weights: a run folder, a checkpoint, or a timm pretrained name (fine-tuning)
    # batch and length
    epochs: int = 100
    batch_size: int = 2048  # global batch of this run (images per optimizer step, over all processes)
    lr_base_size: int = 2048  # the global batch that `lr` is defined for
    lr_scale: str = "auto"  # batch != lr_base_size: sqrt | linear | none; auto = timm train.py's rule (sqrt for lamb/ada*, else linear)
    grad_accum: bool = False  # batch < lr_base_size: accumulate to lr_base_size instead of scaling lr
    # optimizer (timm.optim)
    opt: str = "lamb"
    lr: float = 5e-3  # at lr_base_size
    weight_decay: float = 0.02
    momentum: float = 0.9  # SGD only
    decay_norm_bias: bool = False  # False: no weight decay on norm and bias parameters (timm default)
    lamb_clip: Optional[float] = 1.0  # timm Lamb's built-in global grad-norm clip (max_grad_norm)
    clip_grad: Optional[float] = None  # extra global grad-norm clip before the step; None = off
    # schedule (timm.scheduler)
    sched: str = "cosine"  # cosine | multistep
    sched_on_updates: bool = False  # False: LR set once per epoch (timm train.py's default, 2021 and now); True: every step
    cooldown_epochs: int = 0  # extra epochs at min_lr after `epochs` (timm's --cooldown-epochs; 10 in 2021's train.py)
    warmup_epochs: int = 5
    warmup_lr: float = 1e-4  # LR at step 0 of the linear warmup
    min_lr: float = 1e-6  # LR at the end of the cosine
    decay_milestones: tuple[int, ...] = ()  # multistep (timm's --decay-milestones): milestone m multiplies the LR
    # by decay_rate from epoch m - 1 on (counting from 0; timm's convention, one epoch before PyTorch's MultiStepLR)
    decay_rate: float = 0.1
    # loss
    loss: str = "bce"  # bce | ce
    smoothing: float = 0.0  # label smoothing
    bce_target_thresh: Optional[float] = None  # BCE: targets above it become 1; None = off
    # augmentation (timm.data.create_transform, Mixup, RepeatAugSampler)
    train_res: int = 224  # RandomResizedCrop output size, px
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    ratio: tuple[float, float] = (0.75, 4 / 3)  # RandomResizedCrop aspect range
    hflip: float = 0.5  # horizontal flip probability
    color_jitter: float = 0.0
    aa: Optional[str] = "rand-m7-mstd0.5-inc1"  # timm RandAugment string; None = off
    reprob: float = 0.0  # random erasing probability
    mixup: float = 0.0  # mixup alpha; 0 = off
    cutmix: float = 0.0  # cutmix alpha; 0 = off
    mixup_prob: float = 1.0  # probability of mixing a batch at all
    mixup_switch_prob: float = 0.5  # probability of cutmix instead of mixup when both are on
    aug_repeats: int = 0  # repeated augmentation (timm's RepeatAugSampler): an epoch keeps about len(dataset) samples,
    # about 1/aug_repeats of the images, each this many times, the copies in different forward batches; 0 = off
    train_interpolation: str = "random"  # crop and RandAugment resampling: random = bilinear or bicubic per image (timm's default)
    interpolation: str = "bicubic"  # test resize (timm's --interpolation)
    # evaluation
    test_res: int = 224  # centre-crop size, px
    crop_pct: float = 0.95  # resize to test_res / crop_pct, then centre-crop test_res
    # weight averaging
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    # input path (rsbkit.data.TrainInput): where augmentation and decoding run; the semantics are timm's either way
    augment_on: str = "auto"  # loader (timm's per-image PIL transform) | device (uint8 batches, augmented on the
    # training device: rsbkit.augment) | auto (device on CUDA; on CPU too, measured faster for the demo)
    decode_on: str = "auto"  # folders of image files with augment_on device: loader (PIL decodes and crops) | device
    # (decode_jpeg: nvJPEG on CUDA) | auto (device on CUDA, loader on CPU)
    eval_on: str = "loader"  # validation images: loader (timm's PIL eval transform in the workers, as its train.py) |
    # device (a folder's JPEGs decoded by decode_jpeg, nvJPEG on CUDA, resized and centre-cropped by torchvision's
    # antialiased tensor functions on the device: the same sizes, pixels within a few grey levels of PIL's)
    eval_every: int = 1  # evaluate every N epochs (the last always), as timm's train.py evaluates every epoch
    # numerics and speed (amp on CUDA only: CPU runs float32)
    amp: bool = True  # mixed precision autocast
    amp_dtype: str = "bfloat16"  # bfloat16 | float16 (float16 adds a grad scaler)
    channels_last: bool = True  # also on CPU, where it measured faster for the demo's step
    torchcompile: bool = False
    sync_bn: bool = False  # several processes: BatchNorm statistics over the global batch (SyncBatchNorm, CUDA)
    dist_bn: str = "reduce"  # several processes: BN running stats averaged (reduce) or rank 0's (broadcast) before eval; none
    ddp_broadcast_buffers: bool = False  # several processes: DDP sends rank 0's BN buffers at every forward pass (timm's
    # default; its --no-ddp-bb turns it off). Off here: a collective per forward, no_sync micro-batches included, for
    # running stats that only evaluation reads, and dist_bn averages them before each evaluation
    seed: int = 0
    # what the paper reports for this recipe; not a training setting
    reported: Optional[Reported] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for f in _fields().values():
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), _hints()[f.name]))
        _check(self)

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with `overrides` applied and validated."""
        for key in overrides:
            if key not in _fields() and key != "reported":
                raise RecipeError(_unknown("recipe field", key, _fields()))
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The flat dict of training fields (lists for tuples, ready for YAML or JSON)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name in _fields()
            for value in [getattr(self, name)]
        }

    @property
    def total_epochs(self) -> int:
        """Epochs trained: the schedule's `epochs` plus `cooldown_epochs` at min_lr (timm's num_epochs)."""
        return self.epochs + self.cooldown_epochs

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- validation


@functools.cache
def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Recipe) if f.name != "reported"}


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Recipe)


def _unknown(kind: str, name: Any, valid) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    listing = ", ".join(valid) if len(valid) <= 60 else f"{len(valid)} names"
    return f"unknown {kind} {name!r}; {hint}valid: {listing}"


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field's type; accept what YAML and the CLI produce."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and args[-1] is Ellipsis:
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{name}={value!r}: expected a list, e.g. {name}: [1, 2]")
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise RecipeError(f"{name}={list(value)}: expected {len(args)} values, got {len(value)}")
        inner = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return tuple(_coerce(name, v, h) for v, h in zip(value, inner))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{name}={value!r}: expected true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RecipeError(f"{name}={value!r}: expected a whole number")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{name}={value!r}: expected a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{name}={value!r}: expected a string")
    return value


def _in_range(r: Recipe, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise RecipeError(f"{name}={getattr(r, name)!r} is out of range: allowed {allowed}")


def _choice(r: Recipe, name: str, valid, kind: str) -> None:
    if getattr(r, name) not in valid:
        raise RecipeError(_unknown(f"{kind} ({name})", getattr(r, name), valid))


LOSSES = ("bce", "ce")
LR_SCALES = ("auto", "sqrt", "linear", "none")
DIST_BN = ("reduce", "broadcast", "none")
SCHEDULES = ("cosine", "multistep")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "random")
AMP_DTYPES = ("bfloat16", "float16")
# How a run executes, not what it trains: resuming may change these (the loop says which changed); any other
# field changed refuses the resume. The augmentation's semantics are timm's on either path, precision and memory
# layout change rounding, not the procedure.
EXECUTION_FIELDS = frozenset({"augment_on", "decode_on", "eval_on", "eval_every", "amp", "amp_dtype", "channels_last",
                              "torchcompile", "ddp_broadcast_buffers"})
AUGMENT_ON = ("auto", "loader", "device")
DECODE_ON = ("auto", "loader", "device")
EVAL_ON = ("loader", "device")


def split_fields(values: Union[Recipe, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A recipe's fields (a Recipe or its ``to_dict()``) as (what is trained, how it runs: EXECUTION_FIELDS)."""
    values = values.to_dict() if isinstance(values, Recipe) else values
    return ({k: v for k, v in values.items() if k not in EXECUTION_FIELDS},
            {k: v for k, v in values.items() if k in EXECUTION_FIELDS})


def _check(r: Recipe) -> None:
    prob, unit_open = "[0, 1]", "[0, 1)"
    _in_range(r, "epochs", r.epochs >= 1, ">= 1")
    _in_range(r, "batch_size", r.batch_size >= 1, ">= 1")
    _in_range(r, "lr_base_size", r.lr_base_size >= 1, ">= 1")
    _in_range(r, "lr", r.lr > 0, "> 0")
    _in_range(r, "weight_decay", r.weight_decay >= 0, ">= 0")
    _in_range(r, "momentum", 0 <= r.momentum < 1, unit_open)
    _in_range(r, "warmup_epochs", 0 <= r.warmup_epochs <= r.epochs, f"0 .. epochs ({r.epochs})")
    _in_range(r, "cooldown_epochs", r.cooldown_epochs >= 0, ">= 0")
    _in_range(r, "warmup_lr", r.warmup_lr >= 0, ">= 0")
    _in_range(r, "min_lr", r.min_lr >= 0, ">= 0")
    _in_range(r, "decay_rate", 0 < r.decay_rate <= 1, "(0, 1]")
    _in_range(
        r, "decay_milestones",
        all(0 < m < r.epochs for m in r.decay_milestones) and list(r.decay_milestones) == sorted(set(r.decay_milestones)),
        f"increasing epochs between 1 and epochs-1 ({r.epochs - 1})",
    )
    _in_range(r, "smoothing", 0 <= r.smoothing < 1, unit_open)
    _in_range(r, "bce_target_thresh", r.bce_target_thresh is None or 0 < r.bce_target_thresh < 1, "(0, 1) or none")
    _in_range(r, "drop_path", 0 <= r.drop_path < 1, unit_open)
    _in_range(r, "drop", 0 <= r.drop < 1, unit_open)
    _in_range(r, "width", 0 < r.width <= 8, "in (0, 8]; 1.0 is the model as defined")
    _in_range(r, "train_res", r.train_res >= 8, ">= 8 px")
    _in_range(r, "test_res", r.test_res >= 8, ">= 8 px")
    _in_range(r, "crop_pct", 0 < r.crop_pct <= 1, "(0, 1]")
    _in_range(r, "scale", 0 < r.scale[0] <= r.scale[1] <= 1, "0 < min <= max <= 1")
    _in_range(r, "ratio", 0 < r.ratio[0] <= r.ratio[1], "0 < min <= max")
    for name in ("hflip", "reprob", "mixup_prob", "mixup_switch_prob"):
        _in_range(r, name, 0 <= getattr(r, name) <= 1, prob)
    for name in ("color_jitter", "mixup", "cutmix"):
        _in_range(r, name, getattr(r, name) >= 0, ">= 0")
    _in_range(r, "aug_repeats", r.aug_repeats >= 0, ">= 0 (0 = off)")
    _in_range(r, "model_ema_decay", 0 < r.model_ema_decay < 1, "(0, 1)")
    _in_range(r, "clip_grad", r.clip_grad is None or r.clip_grad > 0, "> 0 or none")
    _in_range(r, "lamb_clip", r.lamb_clip is None or r.lamb_clip > 0, "> 0 or none")
    _in_range(r, "seed", r.seed >= 0, ">= 0")
    _choice(r, "loss", LOSSES, "loss")
    _choice(r, "sched", SCHEDULES, "schedule")
    _choice(r, "interpolation", INTERPOLATIONS[:-1], "test interpolation")
    _choice(r, "train_interpolation", INTERPOLATIONS, "train interpolation")
    _choice(r, "lr_scale", LR_SCALES, "LR scaling rule")
    _choice(r, "dist_bn", DIST_BN, "BatchNorm sync mode")
    _choice(r, "amp_dtype", AMP_DTYPES, "autocast dtype")
    _choice(r, "augment_on", AUGMENT_ON, "augmentation place")
    _choice(r, "decode_on", DECODE_ON, "decoding place")
    _choice(r, "eval_on", EVAL_ON, "evaluation input place")
    _in_range(r, "eval_every", r.eval_every >= 1, ">= 1 (the last epoch is always evaluated)")
    if r.augment_on == "device":
        from .augment import _check_device_recipe

        _check_device_recipe(r)
    _choice(r, "opt", _timm_optimizers(), "optimizer")
    if not _is_timm_model(r.model):
        raise RecipeError(_unknown("model", r.model, _timm_models()))
    if r.aa:
        _check_magnitude(r.aa, _check_aa(r.aa))


@functools.cache
def _timm_optimizers() -> tuple[str, ...]:
    from timm.optim import list_optimizers

    return tuple(list_optimizers())


@functools.cache
def _timm_models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


@functools.cache
def _is_timm_model(name: str) -> bool:
    import timm
    from timm.models import split_model_name_tag

    return timm.is_model(split_model_name_tag(name)[0])


@functools.cache
def _check_aa(aa: str):
    """Parse the string with the timm function that will apply it; return what timm built."""
    from timm.data import auto_augment as taa

    hparams = dict(translate_const=100, img_mean=(124, 116, 104))
    try:
        if aa.startswith("rand"):
            return taa.rand_augment_transform(aa, hparams)
        if aa.startswith("augmix"):
            return taa.augment_and_mix_transform(aa, hparams)
        return taa.auto_augment_transform(aa, hparams)
    except Exception as exc:  # timm raises AssertionError, KeyError or ValueError here
        raise RecipeError(
            f"aa={aa!r} is not a timm augmentation string ({type(exc).__name__}: {exc}); "
            "examples: rand-m7-mstd0.5-inc1, rand-m9-n2, augmix-m5-w4-d2, original; none = off"
        ) from None


def _check_magnitude(aa: str, built) -> None:
    """timm clips RandAugment magnitudes at 10 unless the string sets mmax: refuse a magnitude that would not act.
    `built` is timm's transform for `aa` (its RandAugment ops carry the parsed magnitude and mmax)."""
    from timm.data.auto_augment import RandAugment

    if not isinstance(built, RandAugment):
        return
    m, mmax = built.ops[0].magnitude, built.ops[0].magnitude_max
    if m > 10 and mmax is None:
        raise RecipeError(
            f"aa={aa!r}: timm clips RandAugment magnitudes at 10 unless mmax is given, so m{m:g} would act as m10; "
            f"write {aa}-mmax{m:g} for the magnitude at its value (TF's RandAugment, as ResNet-RS), or m10"
        )


# ---------------------------------------------------------------- the recipes

def _doc(recipe: Recipe, text: str) -> None:
    """Give a recipe instance its own docstring (frozen dataclasses refuse plain assignment)."""
    object.__setattr__(recipe, "__doc__", text)


_RSB = "Wightman, Touvron, Jegou, ResNet strikes back (NeurIPS-W 2021), Table 1; REFERENCE.md section 1"

A1 = Recipe(
    name="a1",
    model="resnet50",
    drop_path=0.05,
    epochs=600,
    batch_size=2048,
    lr_base_size=2048,
    opt="lamb",
    lr=5e-3,
    weight_decay=0.01,
    sched="cosine",
    warmup_epochs=5,
    loss="bce",
    smoothing=0.1,
    train_res=224,
    aa="rand-m7-mstd0.5-inc1",
    mixup=0.2,
    cutmix=1.0,
    aug_repeats=3,
    test_res=224,
    crop_pct=0.95,
    reported=Reported(80.4, 85.7, 68.7, train_hours=110, gpus=4, gpu="V100 32GB", peak_mem_gb=22.1, source=_RSB),
)
_doc(A1, """RSB A1: the best ResNet-50, 600 epochs at 224 px; 80.4% top-1 (110 h on 4 V100).

BCE with label smoothing 0.1, LAMB 5e-3 at batch 2048, WD 0.01, 3 repeated
augmentations, RandAugment m7, mixup 0.2 / cutmix 1.0, stochastic depth 0.05.

What the paper does not list is timm train.py's 2021 default (REFERENCE.md section 3):
`warmup_lr` 1e-4 and `min_lr` 1e-6; the cosine set once per epoch
(`sched_on_updates: false`, so epoch 0 runs at warmup_lr); `train_interpolation:
random` (bilinear or bicubic per image, in the crop and in RandAugment); test
resize bicubic; BatchNorm statistics averaged over processes before each
evaluation (`dist_bn: reduce`). timm's Lamb clips the global gradient norm at 1.0
by default (`lamb_clip`); the paper lists no clipping; set `lamb_clip: none` to drop it.

Departures and open choices, each a field: `cooldown_epochs: 0` (2021's train.py
added 10 epochs at min_lr by default; the paper's 600 epochs say nothing of them).
`lr_scale: auto` scales the LR by the square root of batch / 2048 for LAMB, as
today's train.py does (2021's used --lr as given: `lr_scale: none`). With 3
repeats the copies of an image never share a forward batch: one process
accumulates 4 forward batches of 512, as the paper's 4 GPUs each took 512.
`bce_target_thresh` stays off: no primary source gives the 0.2 seen in
third-party commands, and a threshold would cancel the label smoothing.
Under several processes `ddp_broadcast_buffers: false` (train.py's
`--no-ddp-bb`): BatchNorm buffers are not sent at every forward pass; what is
trained is the same (training normalises with batch statistics), and the
running statistics are averaged before each evaluation as above.""")

A2 = A1.replace(
    name="a2",
    epochs=300,
    weight_decay=0.02,
    smoothing=0.0,
    mixup=0.1,
    reported=Reported(79.8, 85.4, 67.9, train_hours=55, gpus=4, gpu="V100 32GB", peak_mem_gb=22.1, source=_RSB),
)
_doc(A2, """RSB A2: 300 epochs at 224 px; 79.8% top-1 (55 h on 4 V100). As A1 but WD 0.02,
no label smoothing, mixup 0.1. The reference row of the paper's ablation (Table 6).
Everything the paper leaves open is as in A1 (see its docstring).""")

A3 = A2.replace(
    name="a3",
    epochs=100,
    lr=8e-3,
    drop_path=0.0,
    aug_repeats=0,
    aa="rand-m6-mstd0.5-inc1",
    train_res=160,
    test_res=224,
    reported=Reported(78.1, 84.5, 66.1, train_hours=15, gpus=4, gpu="V100 16GB", peak_mem_gb=11.4, source=_RSB),
)
_doc(A3, """RSB A3: 100 epochs, train at 160 px, test at 224; 78.1% top-1 (15 h on 4 V100).
LAMB 8e-3, WD 0.02, no repeated augmentation, no stochastic depth, RandAugment m6.
Everything the paper leaves open is as in A1 (see its docstring): per-epoch cosine
from warmup_lr 1e-4 (epoch 0) to min_lr 1e-6, random train interpolation, no
cooldown, sqrt LR scaling for another batch size.""")

TORCHVISION = Recipe(
    name="torchvision",
    model="resnet50",
    epochs=90,
    batch_size=256,
    lr_base_size=256,
    opt="momentum",  # plain momentum; timm's "sgd" is Nesterov
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    decay_norm_bias=True,
    lamb_clip=None,
    sched="multistep",
    decay_milestones=(31, 61, 81),  # timm's milestone m lowers the LR from epoch m - 1: drops at epochs 30, 60, 80
    decay_rate=0.1,
    warmup_epochs=0,
    warmup_lr=0.0,
    min_lr=0.0,
    loss="ce",
    smoothing=0.0,
    train_res=224,
    aa=None,
    train_interpolation="bilinear",
    interpolation="bilinear",
    test_res=224,
    crop_pct=0.875,
    reported=Reported(76.1, source="torchvision ResNet-50 (He et al. 2015 recipe); RSB Table 1 note; REFERENCE.md section 1"),
)
_doc(TORCHVISION, """torchvision's original ResNet-50 recipe: the 76.1% baseline RSB compares against.

90 epochs, SGD with plain (not Nesterov) momentum 0.9 (timm's `momentum`),
LR 0.1 per 256 images, scaled linearly with the batch, divided by 10 at epochs
30/60/80 (set once per epoch, as torchvision's StepLR; timm's multistep milestones
31/61/81 give exactly that, since timm applies milestone m from epoch m - 1), WD 1e-4 on every
parameter, cross-entropy, RandomResizedCrop + flip only, bilinear resize, test
crop 0.875. Mixed precision is not part of the 2015 recipe; it stays on here for
speed: set `amp: false` for the original float32.""")


# ResNet-RS (Bello et al., Revisiting ResNets, NeurIPS 2021), REFERENCE.md section 2.
# One row per (depth, train resolution): RandAugment magnitude, dropout, stochastic depth, reported top-1.
RESNET_RS_TABLE: dict[int, dict[int, tuple[int, float, float, float]]] = {
    50: {160: (10, 0.25, 0.0, 78.8)},
    101: {160: (10, 0.25, 0.0, 80.3), 192: (15, 0.25, 0.0, 81.2)},
    152: {192: (15, 0.25, 0.0, 82.0), 224: (15, 0.25, 0.0, 82.2), 256: (15, 0.25, 0.0, 83.0)},
    200: {256: (15, 0.25, 0.1, 83.4)},
    270: {256: (15, 0.25, 0.1, 83.8)},
    350: {256: (15, 0.25, 0.1, 84.0), 320: (15, 0.4, 0.1, 84.2)},
    420: {320: (15, 0.4, 0.1, 84.4)},
}

_RS_BASE = Recipe(
    name="resnet_rs",
    epochs=350,
    batch_size=4096,  # the paper trains on TPU at 4096; the LR rule below holds at any batch
    lr_base_size=256,
    lr_scale="linear",
    opt="momentum",  # TF's momentum optimizer: plain momentum (timm's "sgd" is Nesterov)
    lr=0.1,  # 0.1 x batch / 256
    momentum=0.9,
    weight_decay=4e-5,  # lowered because dropout, stochastic depth, smoothing and RA already regularise
    lamb_clip=None,
    sched="cosine",
    sched_on_updates=True,  # the TF code computes the LR from the global step
    warmup_epochs=5,
    warmup_lr=0.0,
    min_lr=0.0,
    loss="ce",
    smoothing=0.1,
    train_interpolation="bicubic",  # NOTE: not given in REFERENCE.md; timm's resnetrs configs use bicubic
    interpolation="bicubic",
    crop_pct=0.875,  # NOTE: not given in REFERENCE.md; the common ImageNet value
    model_ema=True,
    model_ema_decay=0.9999,
)


def resnet_rs(depth: int = 50, train_res: Optional[int] = None) -> Recipe:
    """The ResNet-RS recipe for timm's `resnetrs{depth}` (SE 0.25 and ResNet-D built in).

    350 epochs, SGD with plain momentum 0.9 (the TF momentum optimizer; timm's
    `momentum`, not its Nesterov `sgd`) at 0.1 x batch/256, cosine with 5 warmup
    epochs updated every step, WD 4e-5 not on BN, label smoothing 0.1, EMA 0.9999,
    and per model the resolution, RandAugment magnitude, dropout and stochastic
    depth of the paper. TF's RandAugment scales a magnitude by level/10 with no
    clip, so m15 rotates up to 45 degrees: the string carries `mmax15`, without
    which timm would clip it to m10 (30 degrees). Where the
    paper lists several resolutions for one depth, `train_res` picks one (default:
    the smallest). Tested at the training resolution; override `test_res` to
    study the FixRes effect.
    """
    if depth not in RESNET_RS_TABLE:
        raise RecipeError(_unknown("ResNet-RS depth", depth, [str(d) for d in RESNET_RS_TABLE]).replace("'", ""))
    rows = RESNET_RS_TABLE[depth]
    res = min(rows) if train_res is None else train_res
    if res not in rows:
        raise RecipeError(f"ResNet-RS-{depth} has no recipe at train_res={res}; the paper lists {sorted(rows)}")
    magnitude, dropout, stoch_depth, top1 = rows[res]
    return _RS_BASE.replace(
        name=f"resnet_rs{depth}" + ("" if res == min(rows) else f"_{res}"),
        model=f"resnetrs{depth}",
        train_res=res,
        test_res=res,
        aa=f"rand-m{magnitude}-n2" + (f"-mmax{magnitude}" if magnitude > 10 else ""),
        drop=dropout,
        drop_path=stoch_depth,
        reported=Reported(top1, source=f"Bello et al., Revisiting ResNets (2021), ResNet-RS-{depth} at {res} px; REFERENCE.md section 2"),
    )


RECIPES: dict[str, Recipe] = {"a1": A1, "a2": A2, "a3": A3, "torchvision": TORCHVISION}
RECIPES.update({f"resnet_rs{d}": resnet_rs(d) for d in RESNET_RS_TABLE})


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A named recipe (a1, a2, a3, torchvision, resnet_rs50 ...), with overrides applied."""
    key = name.lower().replace("-", "_")
    if key not in RECIPES:
        raise RecipeError(_unknown("recipe", name, RECIPES))
    return RECIPES[key].replace(**overrides) if overrides else RECIPES[key]


def smoke(recipe: Recipe, **overrides: Any) -> Recipe:
    """`recipe` shrunk to seconds on a CPU: same ingredients, tiny model, images and length."""
    small = dict(
        name=f"{recipe.name}-smoke",
        model="resnet10t",
        epochs=1,
        warmup_epochs=0,
        batch_size=32,
        train_res=32,
        test_res=32,
        decay_milestones=(),
        sched="cosine" if recipe.sched == "multistep" else recipe.sched,
    )
    return recipe.replace(**{**small, **overrides})


# ---------------------------------------------------------------- derived values


@dataclass(frozen=True)
class BatchPlan:
    """How a run's batch relates to the batch the recipe's LR is defined for, and how it is split."""

    lr: float  # the peak LR the optimizer gets
    accum_steps: int  # micro-batches per optimizer step, in each process
    effective_batch: int  # images per optimizer step, over all processes
    rule: str  # one line saying what was done, printed at the start of a run
    world_size: int = 1  # processes (ranks) sharing each step
    micro_batch: int = 0  # images per forward pass in each process

    @property
    def per_rank(self) -> int:
        """Images each process contributes to one optimizer step."""
        return self.micro_batch * self.accum_steps


def lr_scaling(recipe: Recipe) -> str:
    """The rule that maps `lr` at lr_base_size to another batch: the recipe's `lr_scale`, or for
    ``auto`` timm train.py's: square root for LAMB and the Adam family (names with "lamb" or "ada"), else linear."""
    if recipe.lr_scale != "auto":
        return recipe.lr_scale
    return "sqrt" if any(k in recipe.opt.lower() for k in ("ada", "lamb")) else "linear"


def plan_batch(recipe: Recipe, world_size: int = 1, micro_batch: Optional[int] = None) -> BatchPlan:
    """The LR for the run's batch and the batch's split over processes and forward passes.

    The LR: unchanged when batch_size == lr_base_size or with `grad_accum`
    (accumulate to lr_base_size); otherwise scaled by `lr_scale` (see
    :func:`lr_scaling`): sqrt ``lr x (batch / base) ** 0.5``, linear ``lr x batch / base``
    (Goyal et al. 2017), or none (``lr`` as given, as 2021's train.py did with --lr).
    Then the step's images split over `world_size` ranks in forward passes of
    `micro_batch` (default ``batch_size / world_size``), accumulating the rest.
    With repeated augmentation the default makes at least `aug_repeats` forward
    passes per step over all processes, so an image's copies (consecutive in timm's
    order) never share a BatchNorm batch: one process takes 4 x 512 for A1's 2048,
    as each of the paper's 4 GPUs took 512.

    The optimizer step, and so the LR, depends only on the global batch: the
    same recipe on 1 or 8 processes makes the same updates.
    """
    b, base = recipe.batch_size, recipe.lr_base_size
    if b == base:
        lr, batch, rule = recipe.lr, b, f"batch {b}: lr {recipe.lr:g} as defined by the recipe"
    elif recipe.grad_accum:
        if base % b:
            raise RecipeError(
                f"grad_accum needs lr_base_size ({base}) to be a multiple of batch_size ({b}); "
                f"use a batch_size that divides {base}, or grad_accum: false to scale the LR"
            )
        lr, batch, rule = recipe.lr, base, f"batch {b} x {base // b} accumulation steps = {base}: lr {recipe.lr:g} unchanged"
    else:
        how = lr_scaling(recipe)
        batch = b
        why = " (timm's rule for " + recipe.opt + ")" if recipe.lr_scale == "auto" else ""
        if how == "none":
            lr = recipe.lr
            rule = f"batch {b} (the recipe's LR is for {base}): lr {lr:g} used as given (lr_scale: none)"
        else:
            lr = recipe.lr * (b / base) ** (0.5 if how == "sqrt" else 1.0)
            formula = f"sqrt({b}/{base})" if how == "sqrt" else f"{b}/{base}"
            rule = (f"batch {b} (the recipe's LR is for {base}): lr {recipe.lr:g} x {formula} = {lr:.4g} ({how} scaling{why}; "
                    f"grad_accum: true accumulates to {base} instead)")
    if world_size < 1:
        raise DistributedError(f"world_size={world_size}: need at least one process")
    if batch % world_size:
        raise DistributedError(
            f"the global batch of {batch} images cannot be split over {world_size} processes (not divisible); "
            f"use a number of processes that divides {batch}, or a batch_size that {world_size} divides"
        )
    per_rank = batch // world_size
    repeats = recipe.aug_repeats if recipe.aug_repeats > 1 else 1
    given = micro_batch is not None
    if micro_batch is None:
        if b % world_size:
            raise DistributedError(
                f"batch_size {b} cannot be split over {world_size} processes; set micro_batch (images per forward "
                f"pass per process, dividing {per_rank}) or use a number of processes that divides {b}"
            )
        micro_batch = b // world_size
        if world_size * (per_rank // micro_batch) < repeats:  # copies of an image would share a forward pass
            accum = next((a for a in range(-(-repeats // world_size), per_rank + 1) if per_rank % a == 0), None)
            micro_batch = per_rank // accum if accum else micro_batch
    if micro_batch < 1 or per_rank % micro_batch:
        raise DistributedError(
            f"micro_batch {micro_batch} does not divide the {per_rank} images each of {world_size} process(es) takes per "
            f"step, so no whole number of accumulation steps gives the global batch {batch}; use a micro_batch dividing {per_rank}"
        )
    accum = per_rank // micro_batch
    if world_size * accum < repeats:
        raise DistributedError(
            f"aug_repeats {repeats} puts {repeats} copies of an image next to each other in a step; "
            f"{world_size} process(es) x {accum} forward pass(es) of {micro_batch} images would put copies in one BatchNorm "
            f"batch. Use at least {repeats} forward passes per step: " + (
                f"a micro_batch of at most {per_rank * world_size // repeats} dividing {per_rank}" if given else
                f"a batch that splits into {repeats} or more parts") + ", or aug_repeats: 0"
        )
    if world_size > 1 or micro_batch != b:
        rule += f"; {world_size} process(es) x {micro_batch} images x {accum} accumulation step(s) per update"
        if repeats > 1:
            rule += f" (aug_repeats {repeats}: an image's copies in different forward passes)"
    return BatchPlan(lr, accum, batch, rule, world_size, micro_batch)


# ---------------------------------------------------------------- YAML


def load_recipe(source: Union[str, Path], **overrides: Any) -> Recipe:
    """A recipe from a name (``a3``) or a YAML file (``base:`` plus overrides)."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        recipe = recipe_from_yaml(path)
    else:
        recipe = get_recipe(str(source))
    return recipe.replace(**overrides) if overrides else recipe


def recipe_from_yaml(path: Union[str, Path]) -> Recipe:
    """Read ``base: NAME`` plus field overrides; an unknown key fails with its line.

    A run folder's ``recipe.yaml`` also loads: its ``execution:`` block holds
    fields too (how the run executed, EXECUTION_FIELDS), its ``resolved:`` block is
    informational and ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; give a YAML path or a recipe name ({', '.join(RECIPES)})")
    text = path.read_text()
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if node is None:
        raise RecipeError(f"{path} is empty; it needs at least 'base: a3' (or another recipe name)")
    if not isinstance(node, yaml.MappingNode):
        raise RecipeError(f"{path}: expected 'key: value' lines, got a {node.tag.rsplit(':', 1)[-1]}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    values = yaml.safe_load(text)
    base = values.pop("base", None)
    values.pop("resolved", None)
    execution = values.pop("execution", None) or {}
    if not isinstance(execution, dict):
        raise RecipeError(f"{path}, line {lines['execution']}: execution: holds 'field: value' lines "
                          f"({', '.join(sorted(EXECUTION_FIELDS))})")
    for key in execution:
        if key not in EXECUTION_FIELDS:
            raise RecipeError(f"{path}, line {lines['execution']}: {key!r} is not a way of running "
                              f"({', '.join(sorted(EXECUTION_FIELDS))}); put training fields at the top level")
        if key in values:
            raise RecipeError(f"{path}: {key} is given twice, at the top level and under execution:; keep one")
    values.update(execution)
    for key in values:
        if key not in _fields():
            raise RecipeError(f"{path}, line {lines[key]}: " + _unknown("recipe field", key, _fields()))
    recipe = get_recipe(str(base)) if base is not None else Recipe()
    values.setdefault("name", path.stem)
    try:
        return recipe.replace(**values)
    except RecipeError as exc:
        bad = next((k for k in values if str(exc).startswith(f"{k}=")), None)
        where = f"{path}, line {lines[bad]}" if bad else str(path)
        raise RecipeError(f"{where}: {exc}") from None


def base_recipe(source: Union[str, Path, Recipe]) -> Recipe:
    """The named recipe `source` builds on: the ``base:`` of a YAML file, the recipe itself for a
    name (``a3``), the named recipe of that name for a Recipe object, and rsbkit's field defaults
    (``Recipe()``) when there is none (a YAML file without ``base:``, a run folder's recipe.yaml)."""
    if isinstance(source, Recipe):
        return RECIPES.get(source.name.lower().replace("-", "_"), Recipe())
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        recipe_from_yaml(path)  # the file's own errors first, with their line numbers
        base = (yaml.safe_load(path.read_text()) or {}).get("base")
        return get_recipe(str(base)) if base is not None else Recipe()
    return get_recipe(str(source))


def changes(recipe: Recipe, base: Recipe):
    """What `recipe` changes from `base`: one row per field that differs (name aside), with the base's
    value and this recipe's, in the recipe's field order. ``attrs['base']`` names the base."""
    import pandas as pd

    mine, theirs = recipe.to_dict(), base.to_dict()
    rows = [(k, _show(theirs[k]), _show(v)) for k, v in mine.items() if k != "name" and v != theirs[k]]
    table = pd.DataFrame(rows, columns=["field", f"{base.name} (base)", f"{recipe.name} (this run)"]).set_index("field")
    table.attrs["base"] = base.name
    return table


def _show(value: Any) -> str:
    """A field value as it reads in YAML: lists in brackets, None as null."""
    return "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "aa=none"]`` -> ``{"lr": "1e-3", "aa": None}``, values read as YAML scalars."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {pair!r} is not key=value, e.g. --set lr=1e-3")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def compare(*recipes: Recipe, all_fields: bool = False):
    """The fields where `recipes` differ (or every field), one column per recipe: a pandas DataFrame."""
    import pandas as pd

    table = pd.DataFrame({r.name: {k: v for k, v in r.to_dict().items() if k != "name"} for r in recipes})
    if all_fields:
        return table
    differs = table.astype(str).nunique(axis=1) > 1
    return table[differs]
