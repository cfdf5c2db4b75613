"""The training loop: a state going through module-level step functions.

:func:`train` reads top to bottom: :func:`resolve` fixes what this call trains and how
(a frozen :class:`Spec`: recipe, data, batch plan, processes, device, precision, run
folder) -> :func:`build_state` makes the :class:`TrainState`, which is exactly what
``last.pt`` holds (model, EMA, optimizer, scheduler, scaler, counters, history) ->
:func:`build_step` the step's parts (the wrapped model, Mixup, the loss) ->
:func:`resume` -> epochs. An epoch (:func:`train_epoch`) is micro-steps
(:func:`micro_step`) with an :func:`optimizer_step` (unscale, clip, step, schedule,
EMA) after each step's last micro-batch; :func:`end_epoch` evaluates (every
``eval_every`` epochs), checkpoints and records. Each function takes what it reads
and changes only the state it is given; none keeps state of its own.

The input (``rsbkit.core.data.TrainInput``) lives for the whole run: persistent loader
workers, each sample's augmentation seeded from (seed, epoch, position), and on
the device path (``augment_on``) uint8 batches augmented on the training device.
Every epoch reseeds the process's RNGs (mixup, drop path) and the device's
generator from (seed, epoch), so an epoch depends only on the state it starts
from: resuming from ``last.pt`` gives the same weights as a run that never
stopped (on CPU, bit for bit, with any number of loader workers).

Nothing waits for the device inside an epoch but the loss check every
``check_every`` optimizer steps: losses are summed on the device, and an inf or
NaN stops the run naming the window of steps, before the epoch's checkpoint.
An out-of-memory error in the first step of a one-process run whose micro-batch
was not given halves the micro-batch and starts the epoch again (same global
batch, same LR, same images), recording the choice in recipe.yaml
(:func:`fit_first_epoch`).

Under ``torchrun`` the same function runs in every process: the model is
wrapped in DistributedDataParallel, each process takes its share of every
global batch (see ``rsbkit.core.distributed``), metrics are summed over processes,
and only rank 0 writes the run folder. Checkpoints hold no trace of the number
of processes, so a run resumes on any number of them.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from timm.utils import ModelEmaV3

from . import distributed
from .augment import supports_device
from .checkpoint import load_checkpoint, save_checkpoint
from .data import (
    Data,
    EvalInput,
    TrainInput,
    create_mixup,
    epoch_images,
    eval_kind,
    eval_loader,
    eval_shard,
    eval_transform,
    fixed_subset,
    in_flight_note,
    input_kind,
    load_data,
    mix,
)
from .devices import autocast, default_workers, device_name, free_memory, is_out_of_memory, peak_mem_mb
from .errors import CheckpointError, DistributedError, NonFiniteLossError, RunError, RunWriteError
from .evaluate import evaluate_models
from .losses import create_loss
from .models import create_model
from .optim import create_optimizer, create_scheduler, schedule_warning
from .pseudo_labels import mix_soft, pseudo_labelled_data, soft_targets
from .recipes import BatchPlan, Recipe, load_recipe, lr_scaling, plan_batch, split_fields
from .run_options import check_names, options_for, settings_fields
from .runs import (
    RunFolder,
    RunLock,
    check_resume,
    default_run_dir,
    environment,
    write_metrics,
    write_recipe,
    write_result,
    writer_record,
)
from .teacher import Teacher, distill_loss, load_teacher, loss_weights


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm preemption, ``kill``, torchrun stopping its workers): the run is recorded as interrupted."""


class Preemption:
    """SIGTERM as :class:`Terminated` while installed (``with preemption:``), held back inside
    :meth:`writes_whole`: an exception raised inside torch.save leaves its zip writer broken
    (RuntimeError), which would record a preempted run as failed and lose the checkpoint being
    written. A signal that arrives there stops the run right after the block."""

    def __init__(self) -> None:
        self.depth, self.pending, self.previous = 0, None, None

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def _handler(self, signum, frame) -> None:
        name = f"signal {signal.Signals(signum).name}"
        if self.depth:
            self.pending = name
            return
        raise Terminated(name)

    @contextlib.contextmanager
    def writes_whole(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            pending = self.pending if not self.depth else None
            if pending:
                self.pending = None
                raise Terminated(pending)


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for one epoch of one run."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # timm's Mixup draws lambda from numpy's global RNG
    torch.manual_seed(seed)  # drop path, and CUDA's generators too


def _check_settings(self) -> None:
    for option in options_for("train"):
        option.check(getattr(self, option.name))


def _settings_of(cls, settings: dict[str, Any]) -> Settings:
    check_names(settings, "train")  # an unknown keyword named, with the closest; the values checked by __post_init__
    return cls(**settings)


# How `train` runs a recipe (not what it trains): the arguments of :func:`train` besides the recipe, the data and
# the run folder, checked once. Its fields are the ``train`` options of rsbkit.core.run_options, declared there.
Settings = make_dataclass(
    "Settings", [(name, annotation, field(default=default)) for name, annotation, default in settings_fields()],
    frozen=True, namespace=dict(__post_init__=_check_settings, of=classmethod(_settings_of), __module__=__name__,
                                __doc__="How `train` runs a recipe: the train options of rsbkit.core.run_options."))


@dataclass(frozen=True)
class Spec:
    """What one call of :func:`train` trains and how, resolved once. Only the out-of-memory fit makes
    another (``replace(spec, plan=...)``)."""

    recipe: Recipe
    data: Data
    run: RunFolder
    job: distributed.Dist
    device: torch.device
    plan: BatchPlan
    steps_per_epoch: int
    augment_on: str  # "loader" or "device"
    input: str  # the input path (rsbkit.core.data.input_kind)
    eval_input: str  # where validation images are decoded: "loader" or "device" (rsbkit.core.data.eval_kind)
    workers: int
    amp_dtype: Optional[torch.dtype]
    progress: str  # "bar", "line" or "none"
    settings: Settings
    preemption: Preemption
    started: float  # time.perf_counter() at the call's start
    attempts: tuple[dict[str, Any], ...] = ()  # who wrote the run folder: each call's host, PID, command
    warnings: tuple[str, ...] = ()  # what the run's start said about it (a schedule that never reaches its LR)
    teacher: Optional[dict[str, Any]] = None  # the distillation teacher as loaded: source, checkpoint and its hash
    targets: Optional[torch.Tensor] = None  # pseudo-labels: the soft targets a label >= num_classes indexes
    pseudo: Optional[dict[str, Any]] = None  # their provenance and counts, for result.json

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def log(self) -> Callable[[str], None]:
        return self.settings.log

    @property
    def last_epoch(self) -> int:
        """The epoch this call ends after (`stop_after`, else the recipe's last)."""
        stop = self.settings.stop_after
        return self.recipe.total_epochs if stop is None else min(self.recipe.total_epochs, stop)

    def resolved(self) -> dict[str, Any]:
        """The values the run settled on, written to recipe.yaml and result.json."""
        plan, recipe = self.plan, self.recipe
        return dict(
            lr=plan.lr, accum_steps=plan.accum_steps, effective_batch=plan.effective_batch, batch_rule=plan.rule,
            world_size=self.job.world_size, micro_batch=plan.micro_batch, backend=self.job.backend,
            steps_per_epoch=self.steps_per_epoch, total_steps=self.steps_per_epoch * recipe.total_epochs,
            lr_scale=lr_scaling(recipe), device=str(self.device),
            precision=recipe.amp_dtype if self.amp_dtype else "float32", channels_last=recipe.channels_last,
            augment_on=self.augment_on, input=self.input, eval_on=self.eval_input,
            workers=self.workers, data=self.data.describe(),
        )


@dataclass
class TrainState:
    """Exactly what ``last.pt`` holds: the trained objects and the run's counters and records."""

    model: torch.nn.Module
    ema: Optional[ModelEmaV3]
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a timm scheduler (step(epoch), step_update(updates))
    scaler: Optional[torch.amp.GradScaler]
    epoch: int = 0  # epochs done
    updates: int = 0  # optimizer steps done
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics row per epoch
    best: Optional[dict[str, Any]] = None  # the row with the best val_top1
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable file -> reason
    wall_s: float = 0.0  # seconds spent by earlier calls (a resumed run's)


@dataclass(frozen=True)
class Step:
    """What a micro-step calls: the model as stepped (DDP-wrapped, compiled), Mixup and the loss."""

    model: torch.nn.Module
    ddp: Optional[torch.nn.parallel.DistributedDataParallel]
    mixup: Any
    loss_fn: torch.nn.Module
    teacher: Optional[Teacher] = None  # knowledge distillation: its outputs on the same batch are a second target
    weights: tuple[float, float] = (1.0, 0.0)  # (task, distill) loss weights
    targets: Optional[torch.Tensor] = None  # pseudo-labels' target table, on the device


def train(
    recipe: Union[Recipe, str, Path],
    data: Union[Data, str, Path, None] = "default",
    out_dir: Union[str, Path, None] = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train `recipe` on `data`, writing a run folder to `out_dir`; return the run's result.

    The keyword arguments (:class:`Settings`: device, workers, resume, progress, limit_train, ...) are the
    ``train`` options of :data:`rsbkit.core.run_options.RUN_OPTIONS`, each declared there with its default
    and help line; an unknown or invalid one fails before anything starts.
    """
    s = Settings.of(settings)
    job = distributed.launcher_env()
    if not job.main:
        s = replace(s, log=lambda line: None)
    with Preemption() as preemption, contextlib.ExitStack() as held:  # `held`: the run folder's lock, for the run's life
        try:
            spec = resolve(recipe, data, out_dir, job, s, preemption, held)
            state = build_state(spec)
            step = build_step(spec, state)
            if step.teacher is not None:
                spec = replace(spec, teacher=step.teacher.describe())
                spec.log(f"teacher: {step.teacher.model_name} from {step.teacher.checkpoint or 'timm'} "
                         f"({spec.recipe.kd_target} targets, T={spec.recipe.kd_temperature:g}, task x distill weights "
                         f"{step.weights[0]:g} x {step.weights[1]:g})")
            source, val_input = make_input(spec), make_eval_input(spec)  # loader workers live for the whole run
            if s.resume:
                resume(spec, state)
            record(spec, state, "running")
            first = state.epoch
            try:
                for epoch in range(first, spec.last_epoch):
                    t0 = time.perf_counter()
                    grows = epoch > 0 and spec.recipe.train_res_at(epoch) > spec.recipe.train_res_at(epoch - 1)
                    if epoch == first or grows:  # an out-of-memory error in its first step may shrink the micro-batch
                        run_epoch = functools.partial(train_epoch, state=state, step=step, epoch=epoch)
                        trained, spec, source = fit_first_epoch(spec, state, source, run_epoch)
                    else:
                        trained = train_epoch(spec, state, step, source, epoch)
                    end_epoch(spec, state, val_input, epoch, t0, trained)
            except BaseException as exc:
                gone = distributed.lost_peer(spec.job, exc, state.epoch)
                record_failure(spec, state, gone or exc)
                if gone is not None:
                    raise gone from exc
                raise
            return finish(spec, state)
        finally:
            distributed.teardown(job)


# ---------------------------------------------------------------- setup


def resolve_augment_on(recipe: Recipe, device: torch.device) -> str:
    """The recipe's `augment_on`, with ``auto`` made concrete: ``device`` when every ingredient has
    its device implementation (on CUDA, and on CPU, where the device path measured faster for the
    demo: see benchmarks/README.md), else ``loader``."""
    if recipe.augment_on != "auto":
        return recipe.augment_on
    return "device" if supports_device(recipe) else "loader"


def resolve(recipe: Union[Recipe, str, Path], data: Union[Data, str, Path, None], out_dir: Union[str, Path, None],
            job: distributed.Dist, s: Settings, preemption: Preemption, held: contextlib.ExitStack) -> Spec:
    """Check and settle everything the call needs before anything trains: the recipe, the data, the batch
    plan (checked before any process waits for the others), the process group and device, the run folder
    (rank 0 takes its writer lock into `held`), and the input path. Writes recipe.yaml."""
    started = time.perf_counter()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    run = RunFolder(Path(out_dir) if out_dir is not None else default_run_dir(recipe))
    data = load_data(data, root=s.data_root, limit_train=s.limit_train, limit_val=s.limit_val)
    plan = plan_batch(recipe, job.world_size, s.micro_batch)
    job, device = distributed.setup(s.device, s.backend, job)
    # one writer per run folder: rank 0 takes the folder's lock before anything is written; every rank stops if it cannot
    distributed.on_main(job, lambda: held.enter_context(RunLock(run.path)))
    check_resume(run.path, s.resume)
    attempts = [*(_earlier_attempts(run) if s.resume else []),
                {**writer_record(), "resume": s.resume, "world_size": job.world_size}]
    targets = pseudo = None
    if recipe.unlabelled:  # Noisy Student: the teacher labels the unlabelled images once, into the run folder
        data, targets, pseudo = pseudo_labelled_data(recipe, data, run.path, job, device, s.log)
    augment_on = resolve_augment_on(recipe, device)
    kind = input_kind(data, recipe, augment_on, recipe.decode_on, device)
    cuda = device.type == "cuda"
    steps_per_epoch = epoch_images(data, recipe) // plan.effective_batch  # whole steps; every rank takes a share of each
    if steps_per_epoch < 1:
        raise RunError(f"a global batch of {plan.effective_batch} images needs more than the "
                       f"{len(data.train)} training images of {data.name}; lower batch_size")
    spec = Spec(
        recipe=recipe, data=data, run=run, job=job, device=device, plan=plan, steps_per_epoch=steps_per_epoch,
        augment_on=augment_on, input=kind, eval_input=eval_kind(data.val, recipe.eval_on, device),
        workers=default_workers(device, decoding=kind != "arrays") if s.workers is None else s.workers,
        amp_dtype=getattr(torch, recipe.amp_dtype) if (cuda and recipe.amp) else None,
        progress=("bar" if sys.stderr.isatty() else "line") if s.progress == "auto" else s.progress,
        settings=s, preemption=preemption, started=started, attempts=tuple(attempts), targets=targets, pseudo=pseudo,
    )
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed-size training batches: cuDNN picks its fastest kernels once
    if job.main:
        run.path.mkdir(parents=True, exist_ok=True)
        write_recipe(run, recipe, spec.resolved())
    where = f"{job.world_size} processes ({job.backend}), rank 0 on {device}" if job.enabled else str(device)
    s.log(f"run {run.path}: {recipe.name} ({recipe.model}) on {data.name}, {len(data.train)} train / {len(data.val)} val "
          f"images, {data.num_classes} classes, {where}, {spec.resolved()['precision']}, augmented on the {augment_on} ({kind})")
    s.log(plan.rule)
    warning = schedule_warning(recipe, steps_per_epoch, plan.lr)
    if warning:
        s.log(f"note: {warning}")
        spec = replace(spec, warnings=(warning,))
    s.log(in_flight_note(kind, data, plan.micro_batch, recipe.train_res, spec.workers, pinned=cuda))
    if cuda and kind in ("loader", "crops") and spec.workers < 4:
        s.log(f"note: {spec.workers} loader worker(s) decode with PIL for this GPU: a few hundred images/s, a few % of what "
              "an H100 trains at; a folder of JPEGs decodes on the GPU (decode_on: auto or device)")
    return spec


def build_state(spec: Spec) -> TrainState:
    """A new run's state: the model (its width and init weights from the recipe's seed), EMA, optimizer,
    schedule and (float16 only) the gradient scaler."""
    recipe, device = spec.recipe, spec.device
    torch.manual_seed(recipe.seed)
    model = create_model(recipe, spec.data.num_classes)
    if recipe.sync_bn and spec.job.enabled:
        if not spec.cuda:
            raise DistributedError(f"sync_bn needs CUDA devices (PyTorch's SyncBatchNorm), but this run is on {device}; "
                                   "set sync_bn: false")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, recipe, spec.plan.lr)
    return TrainState(
        model=model, ema=ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None,
        optimizer=optimizer, scheduler=create_scheduler(optimizer, recipe, spec.steps_per_epoch),
        scaler=torch.amp.GradScaler("cuda") if spec.amp_dtype == torch.float16 else None,
    )


def _buffer_sync(every_forward: bool) -> dict[str, bool]:
    """DDP's "copy rank 0's buffers (BatchNorm statistics) before every forward": ``forward_sync_buffers``
    from torch 2.14, which deprecates ``broadcast_buffers``. The new flag still syncs once at the start,
    where every rank holds the same buffers anyway (the same seed, or the same checkpoint)."""
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": every_forward}


def build_step(spec: Spec, state: TrainState) -> Step:
    """The model as stepped (DDP broadcasts rank 0's weights, then averages gradients over processes;
    ``torchcompile``), Mixup/CutMix and the loss."""
    ddp = None
    if spec.job.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(
            state.model, device_ids=[spec.device] if spec.cuda else None,
            gradient_as_bucket_view=True,  # gradients are views into the all-reduce buckets: no copy in or out
            **_buffer_sync(spec.recipe.ddp_broadcast_buffers),
        )
    stepped = ddp if ddp is not None else state.model
    mixup = create_mixup(spec.recipe, spec.data.num_classes)
    r = spec.recipe
    online = r.teacher and not r.unlabelled  # with unlabelled images the teacher labelled them offline (resolve)
    teacher = (load_teacher(r.teacher, num_classes=spec.data.num_classes, classes=spec.data.classes, device=spec.device)
               if online else None)
    soft = spec.targets is not None  # pseudo-labels: every label becomes a row of soft targets
    return Step(model=torch.compile(stepped) if r.torchcompile else stepped, ddp=ddp, mixup=mixup,
                loss_fn=create_loss(r, mixing=mixup is not None or soft).to(spec.device), teacher=teacher,
                weights=loss_weights(r.distill_loss_weight, r.task_loss_weight) if teacher else (1.0, 0.0),
                targets=spec.targets.to(spec.device) if soft else None)


def make_input(spec: Spec) -> TrainInput:
    return TrainInput(spec.data, spec.recipe, spec.plan, augment_on=spec.augment_on, decode_on=spec.recipe.decode_on,
                      device=spec.device, workers=spec.workers, pin_memory=spec.cuda, rank=spec.job.rank,
                      channels_last=spec.recipe.channels_last, threads=spec.recipe.input_threads)


def make_eval_input(spec: Spec):
    """This process's share of the validation set, through the loader or (``eval_on: device``) the device."""
    r, cuda = spec.recipe, spec.cuda
    shard = eval_shard(spec.data.val, spec.job.rank, spec.job.world_size)
    batch = spec.settings.eval_batch_size or min(256, 2 * r.batch_size)
    if spec.eval_input == "device":
        return EvalInput(shard, r.test_res, r.crop_pct, r.interpolation, device=spec.device, batch_size=batch,
                         workers=spec.workers, pin_memory=cuda)
    return eval_loader(shard, eval_transform(r.test_res, r.crop_pct, r.interpolation), batch_size=batch,
                       workers=spec.workers, pin_memory=cuda)


# ---------------------------------------------------------------- checkpoints


def resume(spec: Spec, state: TrainState) -> None:
    """Load ``last.pt`` into `state`. Only the recipe's training fields must match; a changed way of running
    (rsbkit.core.recipes.EXECUTION_FIELDS) is logged."""
    saved = load_checkpoint(spec.run.last, map_location=spec.device)  # every process reads it: a shared file system
    was_training, was_execution = split_fields(saved["recipe"])
    training, execution = split_fields(spec.recipe.to_dict())
    # a field missing from the checkpoint is newer than it: its default trained it
    changed = sorted(k for k, v in training.items() if was_training.get(k, v) != v and k != "name")
    executed = sorted(k for k, v in execution.items() if was_execution.get(k, v) != v)
    if executed:
        spec.log("resuming with a different way of running: "
                 + ", ".join(f"{k} {was_execution[k]!r} -> {execution[k]!r}" for k in executed))
    if changed:
        raise CheckpointError(f"{spec.run.last} was written by a different recipe (fields {', '.join(changed)} differ); "
                              "resume with the run's own recipe.yaml, or start a new out_dir")
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"])
    if state.scaler is not None and saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.updates, state.history = saved["epoch"], saved["updates"], saved["history"]
    state.best, state.skipped, state.wall_s = saved["best"], saved["skipped"], saved["wall_s"]
    state.scheduler.step_update(state.updates)  # per-update schedules; per-epoch ones are set at the epoch's start
    if spec.job.main:  # the records as of the checkpoint (a write the disk refused may have left them behind it)
        write_metrics(spec.run, state.history)
    spec.log(f"resumed from {spec.run.last} after epoch {state.epoch}/{spec.recipe.total_epochs}")


def checkpoint(spec: Spec, state: TrainState, *, optimizer: bool) -> dict[str, Any]:
    """What ``last.pt`` (``optimizer=True``) or ``best.pt`` holds."""
    return dict(
        epoch=state.epoch, updates=state.updates, recipe=spec.recipe.to_dict(), num_classes=spec.data.num_classes,
        classes=list(spec.data.classes), model=state.model.state_dict(),
        ema=state.ema.state_dict() if state.ema is not None else None,
        history=state.history, best=state.best, skipped=state.skipped, wall_s=wall_s(spec, state),
        optimizer=state.optimizer.state_dict() if optimizer else None,
        **({"scaler": state.scaler.state_dict() if state.scaler else None} if optimizer else {}),
    )


def wall_s(spec: Spec, state: TrainState) -> float:
    """The run's seconds so far, over every call."""
    return state.wall_s + time.perf_counter() - spec.started


# ---------------------------------------------------------------- steps and epochs


def micro_step(spec: Spec, step: Step, images: torch.Tensor, labels: torch.Tensor, scaler, syncing: bool) -> torch.Tensor:
    """Forward and backward of one micro-batch (its gradient divided by the accumulation steps); returns the
    loss, detached and float, still on the device. DDP all-reduces gradients only when `syncing` (a step's
    last micro-batch)."""
    accum = spec.plan.accum_steps
    with contextlib.nullcontext() if (syncing or step.ddp is None) else step.ddp.no_sync():
        with autocast(spec.device, spec.amp_dtype):
            output = step.model(images)
            loss = step.loss_fn(output, labels)
            if step.teacher is not None:  # the same augmented, mixed images (function matching), no gradient
                task, distill = step.weights
                loss = task * loss + distill * distill_loss(output, step.teacher.logits(images), spec.recipe.kd_target,
                                                            spec.recipe.kd_temperature)
        (scaler.scale(loss / accum) if scaler else loss / accum).backward()
    return loss.detach().float()


def empty_micro_step(spec: Spec, step: Step, size: int, scaler) -> None:
    """The backward of a micro-batch that had no readable image: a forward of one blank image with its loss times 0,
    so every parameter gets a zero gradient, DDP all-reduces as on the other ranks, and the step goes on. BatchNorm's
    momentum is 0 meanwhile: the blank image leaves the running statistics as they were."""
    norms = [m for m in step.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        blank = torch.zeros(2, 3, size, size, device=spec.device)  # 2: BatchNorm needs more than one value per channel
        if spec.recipe.channels_last:
            blank = blank.contiguous(memory_format=torch.channels_last)
        with autocast(spec.device, spec.amp_dtype):
            loss = step.model(blank).float().sum() * 0.0
        (scaler.scale(loss) if scaler else loss).backward()
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def optimizer_step(state: TrainState, clip_grad: Optional[float]) -> float:
    """After a step's last micro-batch: unscale, clip, step, zero, count, schedule, EMA. Returns the LR used."""
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), clip_grad)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    lr = state.optimizer.param_groups[0]["lr"]
    state.updates += 1
    state.scheduler.step_update(state.updates)
    if state.ema is not None:
        state.ema.update(state.model, step=state.updates)
    return lr


def check_loss(spec: Spec, state: TrainState, bad: torch.Tensor, first_step: int, epoch: int) -> None:
    """Wait for the device once: stop if any loss since `first_step` was inf or NaN on any process."""
    if distributed.any_rank(spec.job, bad):
        window = f"step {first_step}" if first_step == state.updates else f"steps {first_step} to {state.updates}"
        raise NonFiniteLossError(
            f"the loss was not finite within {window} (epoch {epoch + 1}); "
            f"{spec.run.last if spec.run.last.exists() else 'no checkpoint yet'} is kept. Lower lr or set clip_grad"
        )


def train_epoch(spec: Spec, state: TrainState, step: Step, source: TrainInput, epoch: int) -> dict[str, Any]:
    """One epoch's optimizer steps, on crops of the epoch's train size (``recipe.train_res_at``). The loss
    sum and the inf/NaN flag stay on the device between checks. Returns the last LR, the train size, the
    loss sum and the images seen (this process's)."""
    recipe, device, rank = spec.recipe, spec.device, spec.job.rank
    seed = epoch_seed(recipe.seed, epoch)
    seed_everything((seed + rank) % 2**32)  # mixup, drop path: processes draw independently
    generator = torch.Generator(device).manual_seed((seed + rank) % 2**63)  # the device path's draws
    state.scheduler.step(epoch)  # timm train.py's per-epoch LR (a no-op with sched_on_updates)
    if spec.cuda:
        torch.cuda.reset_peak_memory_stats(device)
    state.model.train()
    loss_sum = torch.zeros((), device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    accum = spec.plan.accum_steps
    images_seen, micro, lr_used, checked_from = 0, 0, state.optimizer.param_groups[0]["lr"], state.updates + 1
    total = spec.steps_per_epoch * accum
    size = recipe.train_res_at(epoch)
    epoch_batches = source.epoch(seed, generator, size)
    batches = _progress_bar(epoch_batches, total, f"epoch {epoch + 1}/{recipe.total_epochs}", spec.progress)
    try:
        for images, labels, skipped_batch in batches:
            for item in skipped_batch:
                if item.path not in state.skipped:
                    spec.log(f"skipped unreadable image {item.path}: {item.reason}")
                    state.skipped[item.path] = item.reason
            if micro == total:
                break
            micro += 1
            syncing = micro % accum == 0
            if images is not None and step.mixup is not None and len(images) < 2:
                images = None  # one readable image: timm's Mixup pairs images, so an even trim would leave none (NaN loss)
            if images is None:  # every image of the micro-batch was unreadable (or the only one left has no partner)
                if not syncing:
                    continue
                # a step's last micro-batch: its backward all-reduces under DDP (the other ranks wait for it) and the
                # optimizer steps; a forward of one blank image whose loss counts 0 does both, leaving BatchNorm alone
                empty_micro_step(spec, step, size, state.scaler)
            else:
                if step.targets is not None:  # pseudo-labels: soft targets looked up, then mixed as timm mixes
                    labels = soft_targets(step.targets, labels.to(step.targets.device), recipe.smoothing)
                if step.mixup is not None:
                    if len(images) % 2:  # timm's Mixup pairs images by flipping the batch
                        images, labels = images[:-1], labels[:-1]
                    mixer = mix_soft if step.targets is not None else mix
                    images, labels = mixer(step.mixup, images, labels)
                loss = micro_step(spec, step, images, labels, state.scaler, syncing=syncing)
                bad |= ~torch.isfinite(loss)
                loss_sum += loss * len(images)
                images_seen += len(images)
            if not syncing:
                continue
            lr_used = optimizer_step(state, recipe.clip_grad)
            if (state.updates - checked_from + 1) >= spec.settings.check_every:
                check_loss(spec, state, bad, checked_from, epoch)
                checked_from = state.updates + 1
                if hasattr(batches, "set_postfix") and images is not None:
                    batches.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_used:.3g}", refresh=False)
    finally:
        # stops the input thread now (on CUDA): after an error in the step, the traceback a notebook keeps would
        # otherwise hold the generator, and its thread would poll on with prepared GPU batches and the workers
        if hasattr(epoch_batches, "close"):
            epoch_batches.close()
    check_loss(spec, state, bad, checked_from, epoch)
    return dict(lr=lr_used, train_res=size, loss_sum=float(loss_sum), images=images_seen)


def fit_first_epoch(spec: Spec, state: TrainState, source: Any, run_epoch: Callable[[Spec, Any], dict[str, Any]],
                    make: Callable[[Spec], Any] = make_input) -> tuple[dict[str, Any], Spec, Any]:
    """The first epoch of a call, or the first at a larger train size (progressive resizing), as
    ``run_epoch(spec=, source=)``. On an out-of-memory error in its first step (one process, no
    micro_batch given) halve the micro-batch, accumulate twice as many, and start
    the epoch again from the same state: the same global batch and LR, the same images. Returns the
    epoch's result with the spec and input it fitted (``make(spec)`` builds a new plan's input)."""
    fallback = spec.settings.micro_batch is None and not spec.job.enabled
    saved = {k: v.detach().clone() for k, v in state.model.state_dict().items()} if fallback else None
    while True:
        first = state.updates
        try:
            return run_epoch(spec=spec, source=source), spec, source
        except BaseException as exc:
            if not (fallback and state.updates == first and is_out_of_memory(exc) and spec.plan.micro_batch > 1):
                raise
        state.optimizer.zero_grad(set_to_none=True)
        state.model.load_state_dict(saved)  # forward passes before the error moved BatchNorm's running stats
        free_memory(spec.device)
        was, smaller = spec.plan.micro_batch, spec.plan.micro_batch // 2
        spec = replace(spec, plan=plan_batch(spec.recipe, spec.job.world_size, smaller))
        spec.log(f"out of memory at {was} images per forward pass: micro-batch {smaller}, {spec.plan.accum_steps} "
                 f"accumulation steps (global batch {spec.plan.effective_batch}, lr {spec.plan.lr:.3g} unchanged)")
        source = make(spec)
        if spec.job.main:
            write_recipe(spec.run, spec.recipe, spec.resolved())


def evaluate_epoch(spec: Spec, state: TrainState, val_input, sync_bn: bool = True) -> dict[str, dict[str, Any]]:
    """Top-1/top-5/loss of the model and its EMA on the validation set, summed over processes; BatchNorm
    statistics made equal over processes first (timm's --dist-bn), unless `sync_bn` is False (they already are)."""
    models = {"model": state.model}
    if state.ema is not None:
        models["ema"] = state.ema.module
    if sync_bn:
        for model in models.values():
            distributed.sync_bn_buffers(spec.job, model, spec.recipe)
    reduce = functools.partial(distributed.all_sum, spec.job, device=spec.device)
    metrics = evaluate_models(models, val_input, spec.device, amp_dtype=spec.amp_dtype,
                              channels_last=spec.recipe.channels_last, reduce=reduce)
    for path in metrics["model"]["skipped"]:
        state.skipped.setdefault(path, "unreadable (validation)")
    return metrics


def epoch_row(epoch: int, updates: int, trained: dict[str, Any], metrics: dict[str, dict[str, Any]],
              train_s: float, epoch_s: float, peak_mb: Optional[float], skipped: int) -> dict[str, Any]:
    """One metrics.csv row; `trained` holds the (all-process) loss sum and images."""
    def rounded(value, digits):
        return None if value is None else round(value, digits)

    m = metrics.get("model", {})
    return dict(
        epoch=epoch + 1, step=updates, lr=trained["lr"], train_res=trained.get("train_res"), train_loss=round(trained["loss_sum"] / max(trained["images"], 1), 6),
        val_top1=rounded(m.get("top1"), 4), val_top5=rounded(m.get("top5"), 4), val_loss=rounded(m.get("loss"), 6),
        ema_top1=rounded(metrics.get("ema", {}).get("top1"), 4),
        imgs_per_s=round(trained["images"] / train_s, 1), epoch_s=round(epoch_s, 2), peak_mem_mb=peak_mb, skipped=skipped,
    )


def end_epoch(spec: Spec, state: TrainState, val_input, epoch: int, t0: float, trained: dict[str, Any]) -> dict[str, Any]:
    """Evaluate (every eval_every epochs, and the last of this call), then checkpoint and record; returns the row."""
    loss_sum, images = distributed.all_sum(spec.job, [trained["loss_sum"], trained["images"]], spec.device)
    train_s = time.perf_counter() - t0
    evaluate_now = (epoch + 1) % spec.recipe.eval_every == 0 or epoch + 1 == spec.last_epoch
    metrics = evaluate_epoch(spec, state, val_input) if evaluate_now else {"model": {}}
    row = epoch_row(epoch, state.updates, {**trained, "loss_sum": loss_sum, "images": images}, metrics, train_s,
                    time.perf_counter() - t0, peak_mem_mb(spec.device), len(state.skipped))
    state.history.append(row)
    state.epoch = epoch + 1
    new_best = evaluate_now and (state.best is None or row["val_top1"] > state.best["val_top1"])
    state.best = row if new_best else state.best
    with spec.preemption.writes_whole():
        if spec.job.main:  # the weights are the same in every process
            if new_best:
                save_checkpoint(spec.run.best, checkpoint(spec, state, optimizer=False))
            save_checkpoint(spec.run.last, checkpoint(spec, state, optimizer=True))
            write_metrics(spec.run, state.history)
        record(spec, state, "running")
    if spec.progress != "none":
        spec.log(_epoch_line(row, spec.recipe.total_epochs))
    if spec.settings.on_epoch is not None:
        spec.settings.on_epoch(row)
    return row


# ---------------------------------------------------------------- the record


def result(spec: Spec, state: TrainState, status: str, error: Optional[str] = None) -> dict[str, Any]:
    """The run's result.json: status, final and best figures, speed, environment, skipped files, provenance."""
    recipe, history, best = spec.recipe, state.history, state.best
    last = history[-1] if history else {}
    return dict(
        status=status, error=error, run_dir=str(spec.run.path), recipe=recipe.name, model=recipe.model,
        epochs=recipe.total_epochs, epochs_done=len(history),
        final_top1=last.get("val_top1"), final_top5=last.get("val_top5"), final_loss=last.get("val_loss"),
        final_ema_top1=last.get("ema_top1"),  # the EMA weights' top-1 at the end (model_ema), else None
        best_top1=best["val_top1"] if best else None, best_top5=best["val_top5"] if best else None,
        best_epoch=best["epoch"] if best else None,
        wall_s=round(wall_s(spec, state), 2),
        imgs_per_s=round(float(np.mean([r["imgs_per_s"] for r in history])), 1) if history else None,
        peak_mem_mb=max((r["peak_mem_mb"] for r in history), default=None),
        seed=recipe.seed, device=str(spec.device), world_size=spec.job.world_size,
        **environment(device_name(spec.device, spec.job.world_size)),
        skipped_files=[dict(path=p, reason=r) for p, r in state.skipped.items()], num_skipped=len(state.skipped),
        data={**spec.data.describe(), "limit_train": spec.settings.limit_train, "limit_val": spec.settings.limit_val},
        resolved=spec.resolved(),
        reported=asdict(recipe.reported) if recipe.reported else None,
        attempts=list(spec.attempts),
        teacher=spec.teacher, pseudo_labels=spec.pseudo,
        warnings=list(spec.warnings),  # e.g. a run that never left warmup  # who wrote this folder: host, PID, command of each attempt (resumes appended)
    )


def train_fit(spec: Spec, state: TrainState) -> dict[str, Any]:
    """The final weights' top-1 on ``eval_train`` of the training images (a fixed subset), read as the validation
    images are: the train side of the train-against-test gap, how much the run overfits. An augmented training
    loss cannot say that (mixup and RandAugment make it high on purpose). Pseudo-labelled images have no
    labels to score, so a Noisy Student run measures none."""
    n = spec.settings.eval_train
    if not n or spec.recipe.unlabelled:
        return {}
    images = fixed_subset(spec.data.train, n)
    on_train = replace(spec, data=replace(spec.data, val=images, val_files=None))
    # the last epoch's evaluation made the ranks' BatchNorm statistics equal, and nothing has trained since
    metrics = evaluate_epoch(on_train, state, make_eval_input(on_train), sync_bn=False)
    fit = dict(train_top1=round(metrics["model"]["top1"], 4), train_images_scored=len(images))
    if "ema" in metrics:
        fit["train_ema_top1"] = round(metrics["ema"]["top1"], 4)
    spec.log(f"top-1 on {len(images):,} training images {fit['train_top1']:.2f} (test {state.history[-1]['val_top1']:.2f})")
    return fit


def record(spec: Spec, state: TrainState, status: str, error: Optional[str] = None,
           fit: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The result, written to result.json by rank 0; `fit`: :func:`train_fit`'s figures, at the end."""
    out = {**result(spec, state, status, error), **(fit or {})}
    if spec.job.main:
        write_result(spec.run, out)
    return out


def record_failure(spec: Spec, state: TrainState, exc: BaseException) -> None:
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        record(spec, state, status, f"{type(exc).__name__}: {exc}")
    except RunWriteError:  # the disk that refused a checkpoint may refuse the record too; the first error is the one to see
        pass


def finish(spec: Spec, state: TrainState) -> dict[str, Any]:
    """The record of a call that trained to its last epoch: ``completed``, or ``stopped`` (stop_after)."""
    total = spec.recipe.total_epochs
    if spec.last_epoch < total:
        stopped = record(spec, state, "stopped")
        spec.log(f"stopped after epoch {spec.last_epoch}/{total} as asked (stop_after); resume continues from {spec.run.last}")
        return stopped
    final = record(spec, state, "completed", fit=train_fit(spec, state))
    spec.log(f"done: top-1 {final['final_top1']:.2f} (best {final['best_top1']:.2f} at epoch {final['best_epoch']}) "
             f"in {final['wall_s']:.0f} s; run folder {spec.run.path}")
    return final


def _earlier_attempts(run: RunFolder) -> list[dict[str, Any]]:
    try:
        return list(json.loads(run.result.read_text()).get("attempts") or [])
    except (OSError, ValueError):
        return []


def _progress_bar(loader, total: int, desc: str, progress: str):
    if progress != "bar":
        return loader
    from tqdm import tqdm  # deferred: only for progress="bar"; plain tqdm, as tqdm.auto prints a dead widget into papermill logs

    return tqdm(loader, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    ema = f"  ema {row['ema_top1']:.2f}" if row["ema_top1"] is not None else ""
    val = f"top1 {row['val_top1']:.2f}  top5 {row['val_top5']:.2f}{ema}" if row["val_top1"] is not None else "(not evaluated)"
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.3g}  loss {row['train_loss']:.4f}  {val}  "
            f"{row['imgs_per_s']:.0f} img/s  {row['epoch_s']:.1f} s")
