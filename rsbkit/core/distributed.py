"""Data-parallel training under PyTorch's own launcher, ``torchrun``.

rsbkit starts nothing itself: ``torchrun --nproc_per_node=N -m rsbkit train ...``
starts the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables; :func:`setup` reads them, checks they make sense, picks
the device and backend (NCCL on CUDA, gloo on CPU) and joins the process group.
The training loop wraps the model in DistributedDataParallel, shards the data
with DistributedSampler (timm's RepeatAugSampler when the recipe repeats
augmentations), sums its metrics over ranks with :func:`all_sum`, and writes
files on rank 0 only.

:func:`torchrun_command` and :func:`stream` are what the train notebook uses to
launch torchrun and show its log as it comes.
"""
from __future__ import annotations

import os
import select
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.distributed as dist
from timm.utils import distribute_bn

from .devices import pick_device
from .errors import DistributedError, RsbkitError, RunError
from .processes import die_with_parent

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
BACKENDS = ("nccl", "gloo")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``Dist()`` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes the run folder."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launcher_env(environ: Optional[dict[str, str]] = None) -> Dist:
    """The job as torchrun describes it in the environment; ``Dist()`` when not launched by it.

    Inconsistent values (a rank outside the world, a missing variable, no
    rendezvous address) raise DistributedError naming them.
    """
    env = os.environ if environ is None else environ
    present = {k: env[k] for k in LAUNCHER_VARIABLES if k in env}
    if not present:
        return Dist()
    missing = [k for k in LAUNCHER_VARIABLES if k not in present]
    if missing:
        raise DistributedError(
            f"{', '.join(f'{k}={v}' for k, v in present.items())} is set but {', '.join(missing)} is not; "
            "start multi-process training with torchrun (it sets all of them), or unset these variables"
        )
    try:
        rank, world, local = (int(present[k]) for k in LAUNCHER_VARIABLES)
    except ValueError:
        raise DistributedError(f"launcher variables must be integers, got {present}") from None
    if world < 1 or not 0 <= rank < world or not 0 <= local <= rank:
        raise DistributedError(
            f"RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world} are inconsistent: need 0 <= LOCAL_RANK <= RANK < WORLD_SIZE"
        )
    if world > 1:
        absent = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if absent:
            raise DistributedError(
                f"WORLD_SIZE={world} but {', '.join(absent)} is not set: no rendezvous endpoint; "
                "launch with torchrun (--standalone on one machine, --rdzv-endpoint HOST:PORT across machines)"
            )
    return Dist(rank, world, local)


def pick_backend(device: torch.device, backend: Optional[str] = None) -> str:
    """NCCL for CUDA, gloo for CPU unless `backend` says otherwise; an unusable one raises."""
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend not in BACKENDS:
        raise DistributedError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; install the standard torch wheel")
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    if not available:
        other = "gloo" if backend == "nccl" else "nccl"
        raise DistributedError(f"backend {backend!r} is not available in this PyTorch build; use backend {other!r}")
    if backend == "nccl" and device.type != "cuda":
        raise DistributedError(f"backend 'nccl' needs CUDA devices, but this run's device is {device}; use backend 'gloo' or device cuda")
    return backend


def setup(device: Union[str, torch.device, None], backend: Optional[str] = None,
          job: Optional[Dist] = None) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (if any) and return (this process, its device).

    Under torchrun each process takes GPU ``LOCAL_RANK``; a single process uses
    `device` as given (``auto``: CUDA when present). `job`: :func:`launcher_env`'s
    answer when the caller already has it.
    """
    job = launcher_env() if job is None else job
    device = pick_device(device)
    if not job.enabled:
        return job, device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if job.local_rank >= count:
            raise DistributedError(
                f"LOCAL_RANK={job.local_rank} but this machine has {count} CUDA device(s): "
                f"--nproc_per_node must not exceed {count}"
            )
        device = torch.device("cuda", job.local_rank)
        torch.cuda.set_device(device)
    backend = pick_backend(device, backend)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=job.rank, world_size=job.world_size,
                                device_id=device if device.type == "cuda" else None)
    return Dist(job.rank, job.world_size, job.local_rank, backend), device


# what gloo and NCCL say when a collective's peer is gone (its process died, its node was lost)
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
             "Socket Timeout", "remote process exited")


def lost_peer(job: Dist, exc: BaseException, epoch: int) -> Optional[DistributedError]:
    """A collective failed because another process of the job stopped: the error to raise instead of the
    backend's traceback, or None. Gloo notices a process that died (its sockets close) within about a
    second; one that hangs alive is noticed at the process group's timeout (torch's default)."""
    text = str(exc)
    dist_error = getattr(dist, "DistError", ())
    if not job.enabled or not (isinstance(exc, dist_error) or (isinstance(exc, RuntimeError) and any(m in text for m in PEER_GONE))):
        return None
    said = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    said = said.split("] ", 1)[-1].split(". This is typically", 1)[0][:200]  # without gloo's source file and advice
    return DistributedError(
        f"another process of this {job.world_size}-process run stopped ({job.backend}: {said}), so rank {job.rank} "
        f"stops too. Its log says why (a node lost, out of memory, killed). last.pt (epoch {epoch}) is kept: "
        "start the run again on every node with --resume")


def teardown(job: Dist) -> None:
    if job.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(job: Dist, values: Sequence[float], device: torch.device) -> list[float]:
    """`values` summed over every rank (unchanged in a single process)."""
    if not job.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(job: Dist, flag: torch.Tensor) -> bool:
    """Whether `flag` (a bool tensor on the training device) is true on any rank: every rank gets the
    same answer, so all of them stop together (one rank raising alone leaves the others to be killed
    by torchrun and recorded as interrupted). Waits for the device, and for every rank."""
    if not job.enabled:
        return bool(flag)
    t = flag.to(torch.int32).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def on_main(job: Dist, action: Callable[[], object]) -> None:
    """Run `action` on rank 0 only; if it fails with an rsbkit error, every rank raises one with the
    same message, so no rank is left waiting for a rank 0 that stopped (e.g. on a locked run folder)."""

    if not job.enabled:
        action()
        return
    error = None
    if job.main:
        try:
            action()
        except RsbkitError as exc:
            error = exc
    box = [None if error is None else str(error)]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] is not None:
        raise RunError(f"rank 0 stopped: {box[0]}")


def sync_bn_buffers(job: Dist, model: torch.nn.Module, recipe) -> None:
    """BatchNorm running statistics made equal on every rank before evaluating and saving,
    with timm's ``distribute_bn`` as its train.py does (``--dist-bn``, default ``reduce``):
    ``reduce`` averages them over ranks, ``broadcast`` takes rank 0's. Each rank's
    buffers otherwise follow only its own share of the batches. Nothing to do in one
    process, with ``dist_bn: none``, or with SyncBatchNorm (already global)."""
    if not job.enabled or recipe.dist_bn == "none" or recipe.sync_bn:
        return

    distribute_bn(model, job.world_size, reduce=recipe.dist_bn == "reduce")


# ---------------------------------------------------------------- launching from Python and notebooks


def torchrun_command(
    nproc: int,
    train_args: Sequence[str],
    *,
    nnodes: Union[int, str] = 1,
    rdzv_endpoint: Optional[str] = None,
    rdzv_id: Optional[str] = None,
    python: str = sys.executable,
) -> list[str]:
    """``python -m torch.distributed.run ... -m rsbkit train ARGS``: torchrun, with this interpreter.

    One machine: ``--standalone`` (a free local port). Several: the same
    command on each node with ``nnodes`` and a rendezvous ``HOST:PORT``.
    """
    if nproc < 1:
        raise DistributedError(f"nproc={nproc}: the number of processes per node must be >= 1")
    cmd = [python, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if str(nnodes) == "1" and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise DistributedError(f"nnodes={nnodes} needs rdzv_endpoint HOST:PORT (a node every node can reach)")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                f"--rdzv-id={rdzv_id or 'rsbkit'}"]
    return cmd + ["-m", "rsbkit", "train", *train_args]


def stream(cmd: Sequence[str], *, log: Callable[[str], None] = print, env: Optional[dict[str, str]] = None,
           cwd: Optional[str] = None, every: Optional[Callable[[], None]] = None, interval: float = 1.0) -> int:
    """Run `cmd`, passing each line of its output (stdout and stderr together) to `log` as it comes, and
    calling `every` at least every `interval` seconds while it runs (and once after), whether or not
    it prints: a quiet process (``--progress none``) is followed all the same."""

    log("$ " + shlex.join(cmd))
    with subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                          preexec_fn=die_with_parent()) as proc:  # torchrun ends with the kernel that started it
        assert proc.stdout is not None
        fd, pending = proc.stdout.fileno(), b""
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], interval)
                if ready:
                    chunk = os.read(fd, 1 << 16)  # unbuffered: a line never waits in Python's buffer for the next one
                    if not chunk:
                        break
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        log(line.decode(errors="replace").rstrip("\r"))
                if every is not None:
                    every()
            if pending:
                log(pending.decode(errors="replace"))
            code = proc.wait()
        except BaseException:  # an interrupted notebook cell stops the whole job, not just the reader
            proc.terminate()
            proc.wait(timeout=60)
            raise
    if every is not None:
        every()
    return code
