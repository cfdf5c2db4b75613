"""The training loop: one function that reads top to bottom.

setup (processes, data, model, optimizer, schedule, loss, the input path) ->
derived quantities (LR for the batch, its split over processes, steps) -> resume
-> epochs. An epoch has two named parts besides its micro-batches:
``optimizer_step`` (unscale, clip, step, schedule, EMA) after a step's last
micro-batch, and ``end_epoch`` (evaluate every ``eval_every`` epochs, checkpoint,
record). The settings of a call are one :class:`Settings`.

The input (``rsbkit.data.TrainInput``) lives for the whole run: persistent loader
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
batch, same LR, same images), recording the choice in recipe.yaml.

Under ``torchrun`` the same function runs in every process: the model is
wrapped in DistributedDataParallel, each process takes its share of every
global batch (see ``rsbkit.distributed``), metrics are summed over processes,
and only rank 0 writes the run folder. Checkpoints hold no trace of the number
of processes, so a run resumes on any number of them.
"""
from __future__ import annotations

import contextlib
import functools
import json
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from timm.utils import ModelEmaV3

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .data import (
    Data,
    EvalInput,
    TrainInput,
    create_mixup,
    epoch_images,
    eval_loader,
    eval_shard,
    eval_transform,
    input_kind,
    load_data,
)
from .devices import autocast, default_workers, device_name, free_memory, is_out_of_memory, peak_mem_mb
from .errors import CheckpointError, DistributedError, NonFiniteLossError, RunError, RunWriteError
from .evaluate import evaluate_models
from .losses import create_loss
from .models import create_model
from .optim import create_optimizer, create_scheduler
from .recipes import EXECUTION_FIELDS, Recipe, load_recipe, lr_scaling, plan_batch
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

PROGRESS = ("auto", "bar", "line", "none")


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm preemption, ``kill``, torchrun stopping its workers): the run is recorded as interrupted."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """Turn SIGTERM into Terminated for the duration, so the run's result says 'interrupted'."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        name = f"signal {signal.Signals(signum).name}"
        if _held["depth"]:  # inside a checkpoint or record write: stop once it is whole
            _held["pending"] = name
            return
        raise Terminated(name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_held: dict[str, Any] = {"depth": 0, "pending": None}


@contextlib.contextmanager
def _writes_whole():
    """Hold a SIGTERM until the block ends: an exception raised inside torch.save leaves its zip
    writer broken (RuntimeError), which would record a preempted run as failed and lose the
    checkpoint being written. The signal then stops the run right after the block."""
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        pending = _held["pending"] if not _held["depth"] else None
        if pending:
            _held["pending"] = None
            raise Terminated(pending)


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for one epoch of one run."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # timm's Mixup draws lambda from numpy's global RNG
    torch.manual_seed(seed)  # drop path, and CUDA's generators too


@dataclass(frozen=True)
class Settings:
    """How `train` runs a recipe (not what it trains): the arguments of :func:`train` besides the recipe,
    the data and the run folder, checked once."""

    device: Union[str, torch.device, None] = None
    workers: Optional[int] = None
    resume: bool = False
    progress: str = "auto"
    on_epoch: Optional[Callable[[dict[str, Any]], None]] = None
    limit_train: Optional[int] = None
    limit_val: Optional[int] = None
    data_root: Union[str, Path, None] = None
    eval_batch_size: Optional[int] = None
    micro_batch: Optional[int] = None
    backend: Optional[str] = None
    stop_after: Optional[int] = None
    check_every: int = 50  # optimizer steps between checks of the loss for inf/NaN (each check waits for the device)
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.progress not in PROGRESS:
            raise RunError(f"progress={self.progress!r}: use one of {', '.join(PROGRESS)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise RunError(f"stop_after={self.stop_after}: give the epoch (1 or more) after which this call ends, "
                           "or None to train to the end")
        if self.check_every < 1:
            raise RunError(f"check_every={self.check_every}: give 1 or more optimizer steps")


def train(
    recipe: Union[Recipe, str, Path],
    data: Union[Data, str, Path, None] = "default",
    out_dir: Union[str, Path, None] = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train `recipe` on `data`, writing a run folder to `out_dir`; return the run's result.

    Keyword arguments (:class:`Settings`): `device` (``auto``: CUDA when present);
    `workers` (loader workers per process; default from the cores, the processes
    on this machine and the input path); `resume` continues from
    ``out_dir/last.pt``; `on_epoch` gets each metrics row (for live plots);
    `progress`: ``bar`` (a tqdm bar), ``line`` (one line per epoch), ``none``, or
    ``auto`` (bar in an interactive terminal, else line); `limit_train` /
    `limit_val`: fixed random subsets (smoke runs); `micro_batch`: images per
    forward pass in each process (the rest is accumulated; by default the recipe's
    plan, halved on an out-of-memory error in the first step of a one-process
    run); `backend`: the process group's (``nccl`` on CUDA, ``gloo`` on CPU);
    `stop_after`: end this call after that epoch with status ``stopped``
    (``resume`` continues it), e.g. to fit a cluster's time limit;
    `check_every`: optimizer steps between checks of the loss for inf/NaN.
    """
    unknown = set(settings) - {f.name for f in fields(Settings)}
    if unknown:
        raise RunError(f"train() got unknown settings {', '.join(sorted(unknown))}; "
                       f"known: {', '.join(f.name for f in fields(Settings))}")
    s = Settings(**settings)
    job = distributed.launcher_env()
    if not job.main:
        s = replace(s, log=lambda line: None)
    with _sigterm_interrupts(), contextlib.ExitStack() as held:  # `held`: the run folder's lock, for the run's life
        try:
            return _train(recipe, data, out_dir, job, held, s)
        finally:
            distributed.teardown(job)


def resolve_augment_on(recipe: Recipe, device: torch.device) -> str:
    """The recipe's `augment_on`, with ``auto`` made concrete: ``device`` when every ingredient has
    its device implementation (on CUDA, and on CPU, where the device path measured faster for the
    demo: see benchmarks/README.md), else ``loader``."""
    from .augment import supports_device

    if recipe.augment_on != "auto":
        return recipe.augment_on
    return "device" if supports_device(recipe) else "loader"


def _train(recipe, data, out_dir, job, held, s: Settings) -> dict[str, Any]:
    # ------------------------------------------------------------ setup
    started = time.perf_counter()
    log = s.log
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    progress = ("bar" if sys.stderr.isatty() else "line") if s.progress == "auto" else s.progress
    run = RunFolder(Path(out_dir) if out_dir is not None else default_run_dir(recipe))
    data = load_data(data, root=s.data_root, limit_train=s.limit_train, limit_val=s.limit_val)
    plan = plan_batch(recipe, job.world_size, s.micro_batch)  # checked before any process waits
    job, device = distributed.setup(s.device, s.backend, job)
    # one writer per run folder: rank 0 takes the folder's lock before anything is written; every rank stops if it cannot
    distributed.on_main(job, lambda: held.enter_context(RunLock(run.path)))
    check_resume(run.path, s.resume)
    attempts = _earlier_attempts(run) if s.resume else []
    attempts.append({**writer_record(), "resume": s.resume, "world_size": job.world_size})
    cuda = device.type == "cuda"
    augment_on = resolve_augment_on(recipe, device)
    kind = input_kind(data, recipe, augment_on, recipe.decode_on, device)
    workers = default_workers(device, decoding=kind != "arrays") if s.workers is None else s.workers
    amp_dtype = getattr(torch, recipe.amp_dtype) if (cuda and recipe.amp) else None
    channels_last = recipe.channels_last
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed-size training batches: cuDNN picks its fastest kernels once
    if job.main:
        run.path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ derived quantities
    steps_per_epoch = epoch_images(data, recipe) // plan.effective_batch  # whole steps; every rank takes a share of each
    if steps_per_epoch < 1:
        raise RunError(
            f"a global batch of {plan.effective_batch} images needs more than the "
            f"{len(data.train)} training images of {data.name}; lower batch_size"
        )

    def resolved() -> dict[str, Any]:
        return dict(
            lr=plan.lr, accum_steps=plan.accum_steps, effective_batch=plan.effective_batch, batch_rule=plan.rule,
            world_size=job.world_size, micro_batch=plan.micro_batch, backend=job.backend,
            steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * recipe.total_epochs, lr_scale=lr_scaling(recipe),
            device=str(device), precision=recipe.amp_dtype if amp_dtype else "float32", channels_last=channels_last,
            augment_on=augment_on, input=kind, workers=workers, data=data.describe(),
        )

    if job.main:
        write_recipe(run, recipe, resolved())
    where = f"{job.world_size} processes ({job.backend}), rank 0 on {device}" if job.enabled else str(device)
    log(f"run {run.path}: {recipe.name} ({recipe.model}) on {data.name}, {len(data.train)} train / {len(data.val)} val images, "
        f"{data.num_classes} classes, {where}, {resolved()['precision']}, augmented on the {augment_on} ({kind})")
    log(plan.rule)
    if cuda and kind in ("loader", "crops") and workers < 4:
        log(f"note: {workers} loader worker(s) decode with PIL for this GPU: a few hundred images/s, a few % of what an "
            "H100 trains at; a folder of JPEGs decodes on the GPU (decode_on: auto or device)")

    torch.manual_seed(recipe.seed)
    model = create_model(recipe, data.num_classes)  # with its width and init weights
    if recipe.sync_bn and job.enabled:
        if not cuda:
            raise DistributedError(f"sync_bn needs CUDA devices (PyTorch's SyncBatchNorm), but this run is on {device}; "
                                   "set sync_bn: false")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None
    optimizer = create_optimizer(model, recipe, plan.lr)
    scheduler = create_scheduler(optimizer, recipe, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ddp = None
    if job.enabled:  # DDP broadcasts rank 0's weights, then averages gradients over processes
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if cuda else None, broadcast_buffers=recipe.ddp_broadcast_buffers,
            gradient_as_bucket_view=True,  # gradients are views into the all-reduce buckets: no copy in or out
        )
    step_model = ddp if ddp is not None else model
    step_model = torch.compile(step_model) if recipe.torchcompile else step_model
    mixup = create_mixup(recipe, data.num_classes)
    loss_fn = create_loss(recipe, mixing=mixup is not None).to(device)

    def make_input() -> TrainInput:
        return TrainInput(data, recipe, plan, augment_on=augment_on, decode_on=recipe.decode_on, device=device,
                          workers=workers, pin_memory=cuda, rank=job.rank, channels_last=channels_last)

    source = make_input()  # loader workers live for the whole run
    val_shard, eval_batch = eval_shard(data.val, job.rank, job.world_size), s.eval_batch_size or min(256, 2 * recipe.batch_size)
    if recipe.eval_on == "device":
        val_loader = EvalInput(val_shard, recipe.test_res, recipe.crop_pct, recipe.interpolation, device=device,
                               batch_size=eval_batch, workers=workers, pin_memory=cuda)
    else:
        val_loader = eval_loader(val_shard, eval_transform(recipe.test_res, recipe.crop_pct, recipe.interpolation),
                                 batch_size=eval_batch, workers=workers, pin_memory=cuda)

    # ------------------------------------------------------------ resume
    start_epoch, updates, history, best, skipped, wall_before = 0, 0, [], None, {}, 0.0
    if s.resume:
        state = load_checkpoint(run.last, map_location=device)  # every process reads it: a shared file system
        differ = {k for k, v in recipe.to_dict().items() if state["recipe"].get(k, v) != v} - {"name"}  # missing: a newer field
        changed, executed = differ - EXECUTION_FIELDS, sorted(differ & EXECUTION_FIELDS)
        if executed:
            was = state["recipe"]
            log("resuming with a different way of running: " + ", ".join(f"{k} {was[k]!r} -> {getattr(recipe, k)!r}" for k in executed))
        if changed:
            raise CheckpointError(
                f"{run.last} was written by a different recipe (fields {', '.join(sorted(changed))} differ); "
                "resume with the run's own recipe.yaml, or start a new out_dir"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, updates, history = state["epoch"], state["updates"], state["history"]
        best, skipped, wall_before = state["best"], state["skipped"], state["wall_s"]
        scheduler.step_update(updates)  # per-update schedules; per-epoch ones are set at the epoch's start
        if job.main:  # the records as of the checkpoint (a write the disk refused may have left them behind it)
            write_metrics(run, history)
        log(f"resumed from {run.last} after epoch {start_epoch}/{recipe.total_epochs}")

    def result(status: str, error: Optional[str] = None) -> dict[str, Any]:
        last = history[-1] if history else {}
        return dict(
            status=status, error=error, run_dir=str(run.path), recipe=recipe.name, model=recipe.model,
            epochs=recipe.total_epochs, epochs_done=len(history),
            final_top1=last.get("val_top1"), final_top5=last.get("val_top5"), final_loss=last.get("val_loss"),
            best_top1=best["val_top1"] if best else None, best_top5=best["val_top5"] if best else None,
            best_epoch=best["epoch"] if best else None,
            wall_s=round(wall_before + time.perf_counter() - started, 2),
            imgs_per_s=round(float(np.mean([r["imgs_per_s"] for r in history])), 1) if history else None,
            peak_mem_mb=max((r["peak_mem_mb"] for r in history), default=None),
            seed=recipe.seed, device=str(device), world_size=job.world_size,
            **environment(device_name(device, job.world_size)),
            skipped_files=[dict(path=p, reason=r) for p, r in skipped.items()], num_skipped=len(skipped),
            data=data.describe(), resolved=resolved(),
            reported=asdict(recipe.reported) if recipe.reported else None,
            attempts=attempts,  # who wrote this folder: host, PID, command of each attempt (resumes appended)
        )

    def record(status: str, error: Optional[str] = None) -> dict[str, Any]:
        out = result(status, error)
        if job.main:
            write_result(run, out)
        return out

    def checkpoint(epoch: int) -> dict[str, Any]:
        return dict(
            epoch=epoch, updates=updates, recipe=recipe.to_dict(), num_classes=data.num_classes, classes=list(data.classes),
            model=model.state_dict(), ema=ema.state_dict() if ema is not None else None,
            history=history, best=best, skipped=skipped, wall_s=wall_before + time.perf_counter() - started,
        )

    def optimizer_step() -> float:
        """After a step's last micro-batch: unscale, clip, step, zero, schedule, EMA. Returns the LR used."""
        nonlocal updates
        if scaler is not None:
            scaler.unscale_(optimizer)
        if recipe.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        updates += 1
        scheduler.step_update(updates)
        if ema is not None:
            ema.update(model, step=updates)
        return lr

    def check_loss(bad: torch.Tensor, first_step: int, epoch: int) -> None:
        """Wait for the device once: stop if any loss since `first_step` was inf or NaN on any process."""
        if distributed.any_rank(job, bad):
            window = f"step {first_step}" if first_step == updates else f"steps {first_step} to {updates}"
            raise NonFiniteLossError(
                f"the loss was not finite within {window} (epoch {epoch + 1}); "
                f"{run.last if run.last.exists() else 'no checkpoint yet'} is kept. Lower lr or set clip_grad"
            )

    def train_epoch(epoch: int) -> dict[str, Any]:
        """One epoch's optimizer steps; the loss sum and the inf/NaN flag stay on the device between checks."""
        seed = epoch_seed(recipe.seed, epoch)
        seed_everything((seed + job.rank) % 2**32)  # mixup, drop path: processes draw independently
        generator = torch.Generator(device).manual_seed((seed + job.rank) % 2**63)  # the device path's draws
        scheduler.step(epoch)  # timm train.py's per-epoch LR (a no-op with sched_on_updates)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        model.train()
        loss_sum = torch.zeros((), device=device)
        bad = torch.zeros((), dtype=torch.bool, device=device)
        images_seen, micro, lr_used, checked_from = 0, 0, optimizer.param_groups[0]["lr"], updates + 1
        total = steps_per_epoch * plan.accum_steps
        batches = _progress_bar(source.epoch(seed, generator), total, f"epoch {epoch + 1}/{recipe.total_epochs}", progress)
        for images, labels, skipped_batch in batches:
            for item in skipped_batch:
                if item.path not in skipped:
                    log(f"skipped unreadable image {item.path}: {item.reason}")
                    skipped[item.path] = item.reason
            if micro == total:
                break
            micro += 1
            if images is None:
                continue
            if mixup is not None and len(images) % 2:  # timm's Mixup pairs images by flipping the batch
                images, labels = images[:-1], labels[:-1]
            if mixup is not None:
                images, labels = mixup(images, labels)
            # DDP averages gradients over processes on the last micro-batch of a step only
            syncing = ddp is None or micro % plan.accum_steps == 0
            with contextlib.nullcontext() if syncing else ddp.no_sync():
                with autocast(device, amp_dtype):
                    loss = loss_fn(step_model(images), labels)
                (scaler.scale(loss / plan.accum_steps) if scaler else loss / plan.accum_steps).backward()
            loss = loss.detach().float()
            bad |= ~torch.isfinite(loss)
            loss_sum += loss * len(images)
            images_seen += len(images)
            if micro % plan.accum_steps == 0:
                lr_used = optimizer_step()
                if (updates - checked_from + 1) >= s.check_every:
                    check_loss(bad, checked_from, epoch)
                    checked_from = updates + 1
                    if hasattr(batches, "set_postfix"):
                        batches.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_used:.3g}", refresh=False)
        check_loss(bad, checked_from, epoch)
        return dict(lr=lr_used, loss_sum=float(loss_sum), images=images_seen)

    def fit_first_step(epoch: int) -> dict[str, Any]:
        """The first epoch of this call; on an out-of-memory error in its first step (one process, no
        --micro-batch given) halve the micro-batch, accumulate twice as many, and start the epoch again
        from the same state: the same global batch and LR, the same images."""
        nonlocal plan, source
        fallback = s.micro_batch is None and not job.enabled
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()} if fallback else None
        while True:
            first = updates
            try:
                return train_epoch(epoch)
            except BaseException as exc:
                if not (fallback and updates == first and is_out_of_memory(exc) and plan.micro_batch > 1):
                    raise
            optimizer.zero_grad(set_to_none=True)
            model.load_state_dict(saved)  # forward passes before the error moved BatchNorm's running stats
            free_memory(device)
            smaller = plan.micro_batch // 2
            plan = plan_batch(recipe, job.world_size, smaller)
            log(f"out of memory at {plan.micro_batch * 2} images per forward pass: micro-batch {smaller}, "
                f"{plan.accum_steps} accumulation steps (global batch {plan.effective_batch}, lr {plan.lr:.3g} unchanged)")
            source = make_input()
            if job.main:
                write_recipe(run, recipe, resolved())

    def end_epoch(epoch: int, t0: float, trained: dict[str, Any], last_epoch: int) -> None:
        """Evaluate (every eval_every epochs, and the last of this call), checkpoint, record."""
        nonlocal best
        loss_sum, images_seen = distributed.all_sum(job, [trained["loss_sum"], trained["images"]], device)
        train_s = time.perf_counter() - t0
        evaluate_now = (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == last_epoch
        metrics = {"model": {}}
        if evaluate_now:
            distributed.sync_bn_buffers(job, model, recipe)  # before evaluating and saving, as timm's --dist-bn
            models = {"model": model}
            if ema is not None:
                distributed.sync_bn_buffers(job, ema.module, recipe)
                models["ema"] = ema.module
            reduce = functools.partial(distributed.all_sum, job, device=device)
            metrics = evaluate_models(models, val_loader, device, amp_dtype=amp_dtype, channels_last=channels_last,
                                      reduce=reduce)
            for path in metrics["model"]["skipped"]:
                skipped.setdefault(path, "unreadable (validation)")
        m = metrics["model"]

        def rounded(value, digits):
            return None if value is None else round(value, digits)

        row = dict(
            epoch=epoch + 1, step=updates, lr=trained["lr"], train_loss=round(loss_sum / max(images_seen, 1), 6),
            val_top1=rounded(m.get("top1"), 4), val_top5=rounded(m.get("top5"), 4), val_loss=rounded(m.get("loss"), 6),
            ema_top1=rounded(metrics.get("ema", {}).get("top1"), 4),
            imgs_per_s=round(images_seen / train_s, 1), epoch_s=round(time.perf_counter() - t0, 2),
            peak_mem_mb=peak_mem_mb(device), skipped=len(skipped),
        )
        history.append(row)
        new_best = evaluate_now and (best is None or row["val_top1"] > best["val_top1"])
        best = row if new_best else best
        with _writes_whole():
            if job.main:  # the weights are the same in every process
                if new_best:
                    save_checkpoint(run.best, {**checkpoint(epoch + 1), "optimizer": None})
                save_checkpoint(run.last, {**checkpoint(epoch + 1), "optimizer": optimizer.state_dict(),
                                           "scaler": scaler.state_dict() if scaler else None})
                write_metrics(run, history)
            record("running")
        if progress != "none":
            log(_epoch_line(row, recipe.total_epochs))
        if s.on_epoch is not None:
            s.on_epoch(row)

    # ------------------------------------------------------------ epochs
    record("running")
    try:
        last_epoch = recipe.total_epochs if s.stop_after is None else min(recipe.total_epochs, s.stop_after)
        for epoch in range(start_epoch, last_epoch):
            t0 = time.perf_counter()
            trained = fit_first_step(epoch) if epoch == start_epoch else train_epoch(epoch)
            end_epoch(epoch, t0, trained, last_epoch)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            record(status, f"{type(exc).__name__}: {exc}")
        except RunWriteError:  # the disk that refused a checkpoint may refuse the record too; the first error is the one to see
            pass
        raise
    if last_epoch < recipe.total_epochs:
        stopped = record("stopped")
        log(f"stopped after epoch {last_epoch}/{recipe.total_epochs} as asked (stop_after); resume continues from {run.last}")
        return stopped
    final = record("completed")
    log(f"done: top-1 {final['final_top1']:.2f} (best {final['best_top1']:.2f} at epoch {final['best_epoch']}) "
        f"in {final['wall_s']:.0f} s; run folder {run.path}")
    return final


def _earlier_attempts(run: RunFolder) -> list[dict[str, Any]]:
    try:
        return list(json.loads(run.result.read_text()).get("attempts") or [])
    except (OSError, ValueError):
        return []


def _progress_bar(loader, total: int, desc: str, progress: str):
    if progress != "bar":
        return loader
    from tqdm import tqdm  # plain tqdm: tqdm.auto prints a dead widget into papermill logs

    return tqdm(loader, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    ema = f"  ema {row['ema_top1']:.2f}" if row["ema_top1"] is not None else ""
    val = f"top1 {row['val_top1']:.2f}  top5 {row['val_top5']:.2f}{ema}" if row["val_top1"] is not None else "(not evaluated)"
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.3g}  loss {row['train_loss']:.4f}  {val}  "
            f"{row['imgs_per_s']:.0f} img/s  {row['epoch_s']:.1f} s")
