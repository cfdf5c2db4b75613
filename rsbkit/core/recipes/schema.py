"""The recipe schema: :class:`Recipe` (one field per training choice, named after timm's
``train.py`` flag where one exists: ``--drop-path`` is ``drop_path``), :class:`Reported` (what a
paper reports), the checks every recipe passes when it is made or changed, and which fields say how a
run executes rather than what it trains (EXECUTION_FIELDS)."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import timm
import yaml
from timm.data import auto_augment as taa
from timm.data.auto_augment import RandAugment
from timm.models import split_model_name_tag
from timm.optim import list_optimizers

from ..augment import check_device_recipe
from ..errors import RecipeError


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
    """One training procedure. Build variants with ``recipe.replace(**overrides)``.

    Progressive resizing (``train_res_start``, ``train_res_ramp``, ``train_res_step``) comes from FFCV
    (Leclerc et al. 2023; its ResNet-50 configs grow from 160 to 192 px between epochs 65 and 76 of 88,
    in steps of 32, with FFCV's ``get_resolution`` rule, :meth:`train_res_at`), not from RSB: no RSB
    recipe turns it on. Each epoch's size is a function of the epoch, so a resumed run trains every
    epoch at the size the uninterrupted run did; metrics.csv records it (``train_res``). The batch and
    LR stay the same at every size, so memory peaks at the last, largest size: the out-of-memory
    fallback (one process, no micro_batch given) fits the micro-batch again in the first step of each
    epoch that trains at a larger size than the one before, keeping the global batch and LR.
    ``torchcompile`` recompiles once per size.
    """

    name: str = "custom"  # label for run folders and reports
    # model (timm)
    model: str = "resnet50"  # any name timm.create_model knows
    drop_path: float = 0.0  # stochastic depth rate, scaled linearly over blocks by timm
    drop: float = 0.0  # dropout before the classifier
    width: float = 1.0  # channel multiplier of a timm ResNet's stages (ResNet-RS width scaling)
    attn_layer: Optional[str] = None  # attention in every block of a timm ResNet (its block_args attn_layer): se is
    # squeeze-and-excitation as in timm's seresnet* (reduction 1/16); none keeps the model's own
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
    # a teacher (knowledge distillation on each training batch; timm train.py's --kd-* flags, rsbkit.core.teacher)
    teacher: Optional[str] = None  # a run folder, an rsbkit checkpoint or a timm pretrained name (--kd-model-name)
    kd_target: str = "soft"  # soft: its probabilities at kd_temperature (KL x T^2); hard: its argmax (cross-entropy)
    kd_temperature: float = 4.0  # --kd-temperature (timm's default)
    distill_loss_weight: Optional[float] = None  # --distill-loss-weight; with task_loss_weight, timm's three modes
    task_loss_weight: Optional[float] = None  # --task-loss-weight (rsbkit.core.teacher.loss_weights)
    # pseudo-labels (Noisy Student; rsbkit.core.pseudo_labels): the teacher labels these images once, offline
    unlabelled: Optional[str] = None  # a folder of images, or fashion-mnist-unused; the teacher then trains nothing online
    pseudo_ratio: float = 1.0  # pseudo-labelled images per labelled image in each epoch
    pseudo_threshold: Optional[float] = None  # keep images whose top teacher probability reaches it; none: all
    # augmentation (timm.data.create_transform, Mixup, RepeatAugSampler)
    train_res: int = 224  # RandomResizedCrop output size, px (with progressive resizing: the size it ends at)
    train_res_start: Optional[int] = None  # progressive resizing (FFCV's ResNet-50 recipes, 160 -> 192 px; not in RSB): the
    # train size up to epoch train_res_ramp[0], growing linearly to train_res by epoch train_res_ramp[1] (0-based, as
    # FFCV's get_resolution), in steps of train_res_step px; None = off (every RSB recipe). Batch size and LR stay the same
    train_res_ramp: tuple[int, int] = (0, 0)  # progressive resizing: the (first, last) epoch of the growth
    train_res_step: int = 32  # progressive resizing: sizes are multiples of this (FFCV: 32), between start and train_res
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
    # input path (rsbkit.core.data.TrainInput): where augmentation and decoding run; the semantics are timm's either way
    augment_on: str = "auto"  # loader (timm's per-image PIL transform) | device (uint8 batches, augmented on the
    # training device: rsbkit.core.augment) | auto (device on CUDA; on CPU too, measured faster for the demo)
    decode_on: str = "auto"  # folders of image files with augment_on device: loader (PIL decodes and crops) | device
    # (decode_jpeg: nvJPEG on CUDA) | auto (device on CUDA, loader on CPU)
    input_threads: int = 1  # CUDA: threads that decode and augment batches ahead of the step, each on its own stream
    # (rsbkit.core.data.ahead_parallel; more than 1 seeds each batch's draws from its index, so any number gives the
    # same epoch). One thread's Python and launches feed an estimated 7,000 to 9,000 images/s of A3's augmentation at
    # 160 px, decoding aside (benchmarks/input_thread_estimate.py); the GPU check's `threads` step measures 1, 2, 4
    eval_on: str = "auto"  # validation images: loader (timm's PIL eval transform in the workers, as its train.py) |
    # device (a folder's JPEGs decoded by decode_jpeg, nvJPEG on CUDA, resized and centre-cropped by torchvision's
    # antialiased tensor functions on the device: the same sizes, pixels within a few grey levels of PIL's) | auto
    # (device on CUDA for a folder of mostly JPEGs: PIL in the workers decodes ImageNet's 50,000 validation images at
    # every evaluation, estimated, not measured, at about an A3 epoch on 8 GPUs; loader otherwise, so every CPU run
    # evaluates as timm's train.py)
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
        for f in recipe_fields().values():
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), _hints()[f.name]))
        _check(self)

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with `overrides` applied and validated."""
        for key in overrides:
            if key not in recipe_fields() and key != "reported":
                raise RecipeError(did_you_mean("recipe field", key, recipe_fields()))
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The flat dict of training fields (lists for tuples, ready for YAML or JSON)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name in recipe_fields()
            for value in [getattr(self, name)]
        }

    @property
    def total_epochs(self) -> int:
        """Epochs trained: the schedule's `epochs` plus `cooldown_epochs` at min_lr (timm's num_epochs)."""
        return self.epochs + self.cooldown_epochs

    def train_res_at(self, epoch: int) -> int:
        """The train size of `epoch` (0-based): `train_res`, or with progressive resizing FFCV's
        ``get_resolution``: `train_res_start` up to ``train_res_ramp[0]``, `train_res` from
        ``train_res_ramp[1]``, between them the linear interpolation rounded to a multiple of
        `train_res_step` (and kept between the two sizes)."""
        if self.train_res_start is None:
            return self.train_res
        (first, last), lo, hi = self.train_res_ramp, self.train_res_start, self.train_res
        if epoch <= first:
            return lo
        if epoch >= last:
            return hi
        size = lo + (hi - lo) * (epoch - first) / (last - first)
        return min(max(int(round(size / self.train_res_step)) * self.train_res_step, min(lo, hi)), max(lo, hi))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- validation


@functools.cache
def recipe_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Recipe) if f.name != "reported"}


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Recipe)


def did_you_mean(kind: str, name: Any, valid) -> str:
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
        raise RecipeError(did_you_mean(f"{kind} ({name})", getattr(r, name), valid))


LOSSES = ("bce", "ce")
LR_SCALES = ("auto", "sqrt", "linear", "none")
DIST_BN = ("reduce", "broadcast", "none")
SCHEDULES = ("cosine", "multistep")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "random")
AMP_DTYPES = ("bfloat16", "float16")
# How a run executes, not what it trains: resuming may change these (the loop says which changed); any other
# field changed refuses the resume. The augmentation's semantics are timm's on either path, precision and memory
# layout change rounding, not the procedure.
EXECUTION_FIELDS = frozenset({"augment_on", "decode_on", "input_threads", "eval_on", "eval_every", "amp", "amp_dtype", "channels_last",
                              "torchcompile", "ddp_broadcast_buffers"})
AUGMENT_ON = ("auto", "loader", "device")
DECODE_ON = ("auto", "loader", "device")
EVAL_ON = ("auto", "loader", "device")


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
    if r.attn_layer is not None and r.attn_layer not in ATTN_LAYERS:
        raise RecipeError(did_you_mean("attn_layer (attention in every ResNet block)", r.attn_layer, ATTN_LAYERS)
                          + "; or none for the model's own")
    _in_range(r, "train_res", r.train_res >= 8, ">= 8 px")
    _in_range(r, "test_res", r.test_res >= 8, ">= 8 px")
    _in_range(r, "train_res_start", r.train_res_start is None or r.train_res_start >= 8, ">= 8 px or none (off)")
    _in_range(r, "train_res_step", r.train_res_step >= 1, ">= 1 px")
    if r.train_res_start is not None:
        first, last = r.train_res_ramp
        _in_range(r, "train_res_ramp", 0 <= first < last <= r.total_epochs,
                  f"[first, last] epochs of the growth, 0 <= first < last <= {r.total_epochs} (0-based; the size is "
                  "train_res from epoch `last` on), e.g. [2, 8]")
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
    _check_teacher(r)
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
    _in_range(r, "input_threads", 1 <= r.input_threads <= 16, "1 .. 16")
    if r.augment_on == "device":

        check_device_recipe(r)
    _choice(r, "opt", _timm_optimizers(), "optimizer")
    if not _is_timm_model(r.model):
        raise RecipeError(did_you_mean("model", r.model, _timm_models()))
    if r.aa:
        _check_magnitude(r.aa, _check_aa(r.aa))


def _check_teacher(r: Recipe) -> None:
    """The distillation and pseudo-label fields: in range, and none set without what it needs."""
    _choice(r, "kd_target", ("soft", "hard"), "distillation target")
    _in_range(r, "kd_temperature", r.kd_temperature > 0, "> 0")
    for name in ("distill_loss_weight", "task_loss_weight"):
        _in_range(r, name, getattr(r, name) is None or getattr(r, name) >= 0, ">= 0 or none")
    _in_range(r, "pseudo_ratio", r.pseudo_ratio > 0, "> 0")
    _in_range(r, "pseudo_threshold", r.pseudo_threshold is None or 0 <= r.pseudo_threshold < 1, "[0, 1) or none")
    if r.unlabelled is None:
        stray = [f for f in ("pseudo_ratio", "pseudo_threshold") if getattr(r, f) != Recipe.__dataclass_fields__[f].default]
        if stray:
            raise RecipeError(f"{', '.join(stray)} set without unlabelled images; give unlabelled: (a folder of images, "
                              "or fashion-mnist-unused) or leave them at their defaults")
    elif r.teacher is None:
        raise RecipeError(f"unlabelled: {r.unlabelled} needs a teacher to label it; give teacher: (a run folder, a "
                          "checkpoint or a timm model name)")
    if r.teacher is None:
        stray = [f for f in ("kd_target", "kd_temperature", "distill_loss_weight", "task_loss_weight")
                 if getattr(r, f) != Recipe.__dataclass_fields__[f].default]
        if stray:
            raise RecipeError(f"{', '.join(stray)} set without a teacher; give teacher: (a run folder, a checkpoint or "
                              "a timm model name) or leave them at their defaults")


ATTN_LAYERS = ("se", "ese", "eca", "ecam", "ge", "gc", "cbam", "lcbam")  # timm.layers.get_attn names a block takes


@functools.cache
def _timm_optimizers() -> tuple[str, ...]:
    return tuple(list_optimizers())


@functools.cache
def _timm_models() -> tuple[str, ...]:
    return tuple(timm.list_models())


@functools.cache
def _is_timm_model(name: str) -> bool:
    return timm.is_model(split_model_name_tag(name)[0])


@functools.cache
def _check_aa(aa: str):
    """Parse the string with the timm function that will apply it; return what timm built."""

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

    if not isinstance(built, RandAugment):
        return
    m, mmax = built.ops[0].magnitude, built.ops[0].magnitude_max
    if m > 10 and mmax is None:
        raise RecipeError(
            f"aa={aa!r}: timm clips RandAugment magnitudes at 10 unless mmax is given, so m{m:g} would act as m10; "
            f"write {aa}-mmax{m:g} for the magnitude at its value (TF's RandAugment, as ResNet-RS), or m10"
        )
