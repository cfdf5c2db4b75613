"""Sweeps as cluster jobs, through submitit: one Slurm job per point, or the same jobs on this machine.

``python -m rsbkit sweep FILE --executor slurm --partition gpu --gpus 8 --time 600``
submits every point not yet completed as one job of a Slurm array; ``--executor
local`` runs the very same job objects as local processes (submitit's
LocalExecutor), which is how the path is tested without a cluster.

Each job calls :func:`rsbkit.sweep.run_point`, exactly as the local runner does.
Jobs are checkpointable: when Slurm preempts one or its time runs out, submitit
signals it (USR2), :meth:`PointJob.checkpoint` stops the notebook cleanly (the
training records 'interrupted' and keeps ``last.pt``) and the job is requeued;
the new attempt finds ``last.pt`` and resumes. A failed point is resubmitted by
running the sweep again: completed points are skipped, the others resume.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.runs import atomic_write_text
from .sweep import Point, PointResult, Sweep, SweepError, notebook_parameters, pending, run_point, stop_point, summarize

EXECUTORS = ("pool", "local", "slurm")


@dataclass
class ClusterOptions:
    """What each point's job asks for. `gpus` also becomes the train notebook's ``nproc``
    (one torchrun process per GPU) unless the point sets it."""

    partition: Optional[str] = None
    gpus: int = 0  # per job (one node)
    cpus: Optional[int] = None  # per job
    time_min: int = 60 * 24  # wall-clock limit per attempt; a timed-out job is requeued and resumes
    mem_gb: Optional[float] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    max_requeues: int = 3  # submitit's max_num_timeout: how many time-outs a job may resume from
    extra: dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {"exclusive": True}

    def __post_init__(self) -> None:
        for name, value, ok, need in (
            ("gpus (--gpus)", self.gpus, self.gpus >= 0, ">= 0"),
            ("cpus (--cpus)", self.cpus, self.cpus is None or self.cpus >= 1, ">= 1"),
            ("time_min (--time)", self.time_min, self.time_min >= 1, ">= 1 minute"),
            ("mem_gb (--mem)", self.mem_gb, self.mem_gb is None or self.mem_gb > 0, "> 0 GB"),
            ("max_requeues (--max-requeues)", self.max_requeues, self.max_requeues >= 0, ">= 0"),
        ):
            if not ok:
                raise SweepError(f"cluster option {name}={value}: give a value {need}")

    def parameters(self, executor: str, jobs: int) -> dict[str, Any]:
        """submitit's AutoExecutor parameters for `executor`."""
        params: dict[str, Any] = dict(timeout_min=self.time_min, gpus_per_node=self.gpus, tasks_per_node=1, nodes=1)
        if executor == "slurm":
            params.update(slurm_array_parallelism=jobs)
            if self.cpus:
                params["cpus_per_task"] = self.cpus
            if self.mem_gb:
                params["mem_gb"] = self.mem_gb
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(self, key):
                    params[f"slurm_{key}"] = getattr(self, key)
            if self.extra:
                params["slurm_additional_parameters"] = dict(self.extra)
        return params


REQUEUE_LOCK_WAIT_S = 600.0  # how long a job waits for an earlier attempt of its point to let go of the folder


class PointJob:
    """One sweep point as a submitit job: picklable, callable, checkpointable."""

    def __init__(self, notebook: Path, point: Point, kernel: str = "python3", cwd: Optional[Path] = None,
                 lock_wait: float = REQUEUE_LOCK_WAIT_S):
        self.notebook, self.point, self.kernel, self.lock_wait = Path(notebook), point, kernel, lock_wait
        self.cwd = Path(cwd or Path.cwd()).resolve()  # relative paths in the sweep mean the submitting directory
        self._proc = None

    def __call__(self) -> PointResult:
        os.chdir(self.cwd)
        # a requeued attempt may start while the preempted one is still saving: wait for its lock, a bounded time
        return run_point(self.notebook, self.point, kernel=self.kernel, started=self._started, lock_wait=self.lock_wait,
                         skip_completed=True)

    def _started(self, proc) -> None:
        self._proc = proc

    def checkpoint(self):
        """Preempted or timed out: stop the notebook so its run keeps last.pt, then requeue this job."""
        import submitit

        if self._proc is not None and self._proc.poll() is None:
            stop_point(self._proc, timeout=60)
        return submitit.helpers.DelayedSubmission(PointJob(self.notebook, self.point, self.kernel, self.cwd, self.lock_wait))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}


def _submitit():
    try:
        import submitit
    except ImportError:
        raise SweepError("executors 'local' and 'slurm' need submitit: pip install 'rsbkit[cluster]'") from None
    return submitit


def submit_points(sweep: Sweep, points: list[Point], *, executor: str = "local", options: Optional[ClusterOptions] = None,
                  jobs: int = 1, log: Callable[[str], None] = print) -> list:
    """Submit `points` of `sweep` as submitit jobs (Slurm: one array, `jobs` running at once); return the jobs."""
    if executor not in ("local", "slurm"):
        raise SweepError(f"executor {executor!r}: use 'local' or 'slurm' here (the pool runner is rsbkit.sweep.run_sweep)")
    submitit = _submitit()
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise SweepError("executor 'slurm': sbatch is not on this machine's PATH; run the sweep from a Slurm login node, "
                         "or use --executor local to run the same jobs here")
    options = options or ClusterOptions()
    folder = sweep.out / "submitit"
    extra = {"slurm_max_num_timeout": options.max_requeues} if executor == "slurm" else {}
    auto = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=executor, **extra)
    auto.update_parameters(name=f"rsbkit-{sweep.out.name}", **options.parameters(executor, jobs))
    calls = [PointJob(sweep.notebook, _with_nproc(sweep.notebook, p, options.gpus), sweep.kernel) for p in points]
    if executor == "slurm":
        with auto.batch():
            submitted = [auto.submit(c) for c in calls]
    else:
        submitted = [auto.submit(c) for c in calls]
    sweep.out.mkdir(parents=True, exist_ok=True)
    record_file = sweep.out / "submitted.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    record.update(executor=executor, options=asdict(options), logs=str(folder))
    record.setdefault("jobs", {}).update({p.name: j.job_id for p, j in zip(points, submitted)})
    atomic_write_text(record_file, json.dumps(record, indent=2, default=str) + "\n")
    log(f"sweep {sweep.out}: submitted {len(submitted)} point(s) to {executor} "
        f"(jobs {', '.join(j.job_id for j in submitted[:5])}{' ...' if len(submitted) > 5 else ''}); logs in {folder}")
    return submitted


def _with_nproc(notebook: Path, point: Point, gpus: int) -> Point:
    if gpus > 1 and "nproc" in notebook_parameters(notebook) and "nproc" not in point.parameters:
        return Point(point.name, {**point.parameters, "nproc": gpus}, point.run_dir)
    return point


def wait(points: list[Point], submitted: list, *, log: Callable[[str], None] = print) -> dict[str, PointResult]:
    """Wait for the jobs; a job that died outside its notebook is a failed point naming its log."""
    ran = {}
    for point, job in zip(points, submitted):
        try:
            res = job.result()
        except Exception as exc:
            last = (str(exc).strip().splitlines() or [""])[-1][:300]
            notebook = Path(job.submission().function.notebook).name
            res = PointResult(point.name, "failed", f"{type(exc).__name__}: {last} (job log {job.paths.stderr})", 0.0,
                              point.run_dir, point.run_dir / notebook)
        log(f"  {res.status} {res.name} in {res.wall_s:.0f} s" + (f": {res.error}" if res.error else ""))
        ran[point.name] = res
    return ran


def run_cluster_sweep(sweep: Sweep, *, executor: str, options: Optional[ClusterOptions] = None, jobs: int = 1,
                      block: bool = True, log: Callable[[str], None] = print):
    """``rsbkit sweep --executor local|slurm``: submit the points not yet completed; wait and return
    the sweep table when `block` (always for local, where `jobs` points run at a time)."""
    if jobs < 1:
        raise SweepError(f"jobs={jobs}: give 1 or more")
    todo = pending(sweep)
    log(f"sweep {sweep.out}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} already completed, "
        f"submitting {len(todo)} to {executor}")
    if executor == "slurm":
        submitted = submit_points(sweep, todo, executor="slurm", options=options, jobs=jobs, log=log)
        return summarize(sweep, wait(todo, submitted, log=log), log=log) if block else None
    ran: dict[str, PointResult] = {}
    for i in range(0, len(todo), jobs):  # this machine: `jobs` points at a time
        wave = todo[i:i + jobs]
        ran.update(wait(wave, submit_points(sweep, wave, executor="local", options=options, jobs=jobs, log=log), log=log))
    return summarize(sweep, ran, log=log)
