"""Sweeps as cluster jobs, through submitit: one Slurm job per point, or the same jobs on this machine.

``python -m rsbkit sweep FILE --executor slurm --partition gpu --gpus 8 --time 600``
submits every point not yet completed as one job of a Slurm array; ``--executor
local`` runs the very same job objects as local processes (submitit's
LocalExecutor), which is how the path is tested without a cluster.

Each job calls :func:`rsbkit.workbook.sweep.run_point`, exactly as the local runner does.
Jobs are checkpointable: when Slurm preempts one or its time runs out, submitit
signals it (USR2), :meth:`PointJob.checkpoint` stops the notebook cleanly (the
training records 'interrupted' and keeps ``last.pt``) and the job is requeued;
the new attempt finds ``last.pt`` and resumes. A failed point is resubmitted by
running the sweep again: completed points are skipped, points whose job is still
queued or running are waited on (not submitted twice), the others resume.
``--no-wait`` submits and returns; ``--collect`` waits for what is queued and
submits nothing. Job states come from ``squeue`` (what is still queued) and, for
jobs that ended, from submitit, which reads ``sacct``: a cluster without Slurm
accounting cannot tell a job that died from one still running.

Tested against a real one-node Slurm 22.05 (``scripts/slurm-local.sh``): arrays,
preemption by a higher-priority partition, time limits, cancellation.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.errors import RunLockedError
from ..core.runs import POINT_LOCK_FILE, RunLock, atomic_write_text
from .sweep import (
    Point,
    PointResult,
    Sweep,
    SweepError,
    notebook_parameters,
    pending,
    run_point,
    stop_point,
    summarize,
    with_plan,
)
from .table import SWEEP_POINT

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
    # Slurm signals the job (USR2) this long before its time limit, to save and requeue: submitit's 90 s, less
    # under 3 minutes. Slurm checks every 30 s, so the signal may come up to 30 s earlier.
    signal_s: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {"exclusive": True}

    def __post_init__(self) -> None:
        if self.signal_s is None and self.time_min >= 1:
            self.signal_s = max(10, min(90, self.time_min * 60 - 45))
        for name, value, ok, need in (
            ("gpus (--gpus)", self.gpus, self.gpus >= 0, ">= 0"),
            ("cpus (--cpus)", self.cpus, self.cpus is None or self.cpus >= 1, ">= 1"),
            ("time_min (--time)", self.time_min, self.time_min >= 1, ">= 1 minute"),
            ("mem_gb (--mem)", self.mem_gb, self.mem_gb is None or self.mem_gb > 0, "> 0 GB"),
            ("max_requeues (--max-requeues)", self.max_requeues, self.max_requeues >= 0, ">= 0"),
            # a signal that can come in the job's first seconds kills it before submitit's handler is in place
            ("signal_s (--signal-before)", self.signal_s,
             self.signal_s is None or 10 <= self.signal_s <= self.time_min * 60 - 45,
             f"from 10 to {self.time_min * 60 - 45} s (45 s less than --time)"),
        ):
            if not ok:
                raise SweepError(f"cluster option {name}={value}: give a value {need}")

    def parameters(self, executor: str, jobs: int) -> dict[str, Any]:
        """submitit's AutoExecutor parameters for `executor`."""
        params: dict[str, Any] = dict(timeout_min=self.time_min, gpus_per_node=self.gpus, tasks_per_node=1, nodes=1)
        if executor == "slurm":
            params.update(slurm_array_parallelism=jobs, slurm_signal_delay_s=self.signal_s)
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
                  jobs: int = 1, log: Callable[[str], None] = print, checked: bool = False) -> list:
    """Submit `points` of `sweep` as submitit jobs (Slurm: one array, `jobs` running at once); return the jobs."""
    if executor not in ("local", "slurm"):
        raise SweepError(f"executor {executor!r}: use 'local' or 'slurm' here (the pool runner is rsbkit.workbook.sweep.run_sweep)")
    submitit = _submitit()
    if executor == "slurm" and not checked:  # `checked`: the caller ran check_slurm() already
        check_slurm()
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


NO_CLUSTER_HINT = ("run the sweep on a login node of a Slurm cluster, start a local one (bash scripts/slurm-local.sh up, "
                   "then source .slurm-local/env), or use --executor local to run the same jobs here")


def check_slurm(timeout: float = 30.0) -> None:
    """Stop before submitting when no Slurm controller answers here (one line: what is missing, what to do)."""
    if shutil.which("sbatch") is None:
        raise SweepError(f"executor 'slurm': sbatch is not on this machine's PATH; {NO_CLUSTER_HINT}")
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # Slurm's commands would retry for a minute, then fail
        raise SweepError(f"executor 'slurm': SLURM_CONF={conf} is not a file; point it at the cluster's slurm.conf "
                         f"or unset it; {NO_CLUSTER_HINT}")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SweepError(f"executor 'slurm': the Slurm controller did not answer `scontrol ping` in {timeout:.0f} s; "
                         f"{NO_CLUSTER_HINT}") from None
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        said = [ln.strip() for ln in (ping.stderr + "\n" + ping.stdout).splitlines() if ln.strip() and "*" not in ln]
        reason = (said[-1] if said else f"exit code {ping.returncode}").removeprefix("scontrol: ").removeprefix("fatal: ")
        raise SweepError(f"executor 'slurm': no Slurm controller answers here (scontrol ping: {reason}); {NO_CLUSTER_HINT}")


ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "PREEMPTED", "RESV_DEL_HOLD"}


def queued_jobs() -> set[str]:
    """The ids of this user's jobs that Slurm still lists as queued or running (array tasks one by one)."""
    out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise SweepError(f"squeue failed: {(out.stderr.strip().splitlines() or [''])[-1]}")
    return {job for job, _, state in (line.partition("|") for line in out.stdout.split()) if state in ACTIVE_STATES}


def recorded_jobs(sweep: Sweep, points: list[Point]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The submitit jobs last submitted for `points`: (still queued or running, ended), by point name."""
    record_file = sweep.out / "submitted.json"
    if not record_file.is_file():
        return {}, {}
    record = json.loads(record_file.read_text())
    if record.get("executor") != "slurm":
        return {}, {}
    ids = {p.name: record.get("jobs", {}).get(p.name) for p in points}
    ids = {name: job_id for name, job_id in ids.items() if job_id}
    queued = queued_jobs() if ids else set()
    submitit = _submitit()
    jobs = {name: submitit.SlurmJob(folder=str(Path(record["logs"]) / "%j"), job_id=job_id) for name, job_id in ids.items()}
    live = {name: job for name, job in jobs.items() if job.job_id in queued}
    return live, {name: job for name, job in jobs.items() if name not in live}


def _with_nproc(notebook: Path, point: Point, gpus: int) -> Point:
    if gpus > 1 and "nproc" in notebook_parameters(notebook) and "nproc" not in point.parameters:
        return Point(point.name, {**point.parameters, "nproc": gpus}, point.run_dir)
    return point


def wait(points: list[Point], submitted: list, *, options: Optional[ClusterOptions] = None,
         log: Callable[[str], None] = print) -> dict[str, PointResult]:
    """Wait for the jobs; a job that died outside its notebook (cancelled, out of time, a node lost)
    is a failed point: the reason goes into the table and into the point's own record."""
    ran = {}
    for point, job in zip(points, submitted):
        try:
            res = _result(job)
        except Exception as exc:
            res = PointResult(point.name, "failed", job_failure(job, exc, options, point.run_dir), 0.0, point.run_dir,
                              point.run_dir / _notebook_name(job))
            _record_failure(point, res.error)
        log(f"  {res.status} {res.name} in {res.wall_s:.0f} s" + (f": {res.error}" if res.error else ""))
        ran[point.name] = res
    return ran


def _result(job):
    """The job's result; a job Slurm cancelled before it wrote one fails at once (submitit would first give
    the result file 15 s to appear, for file systems that show it late)."""
    job.wait()
    if not job.paths.result_pickle.exists() and str(job.state).startswith("CANCELLED"):
        raise RuntimeError(f"job {job.job_id} ended {job.state} without a result")
    return job.result()


def job_failure(job, exc: Exception, options: Optional[ClusterOptions] = None, run_dir: Optional[Path] = None) -> str:
    """Why a job ended without a result, in words, with its log; `run_dir`: the point's run folder, to say
    whether a checkpoint is there to resume from."""
    text = str(exc)
    # submitit's FailedJobError carries the job's traceback, then the log paths: its last error line is the news
    errors = [ln.strip() for ln in text.splitlines() if re.match(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b.*", ln.strip())]
    said = (errors or text.strip().splitlines() or [""])[-1][:300]
    try:
        state = job.state  # from sacct; UNKNOWN without accounting
    except Exception:  # noqa: BLE001 (the state only improves the message)
        state = "UNKNOWN"
    log = f"job log {job.paths.stderr}"
    if "timed-out too many times" in text:
        limit = f" of {options.time_min} min" if options else ""
        allowed = f", more than --max-requeues {options.max_requeues} allows" if options else ""
        ran_out = f"job {job.job_id}: the time limit{limit} ran out on every attempt{allowed}"
        if run_dir is None or (run_dir / "last.pt").exists():
            return f"{ran_out}; last.pt is kept: rerun the sweep (with a longer --time or more --max-requeues) to resume ({log})"
        return f"{ran_out}, each before its first epoch ended (no last.pt): rerun the sweep with a longer --time ({log})"
    if state.startswith("CANCELLED"):
        return f"job {job.job_id} was cancelled (Slurm state {state}); rerun the sweep to submit it again ({log})"
    if state not in ("UNKNOWN", "COMPLETED", "FAILED", "RUNNING", "PENDING"):
        return f"job {job.job_id} ended {state} without a result: {type(exc).__name__}: {said} ({log})"
    return f"{type(exc).__name__}: {said} ({log})"


def _notebook_name(job) -> str:
    try:
        return Path(job.submission().function.notebook).name
    except Exception:  # noqa: BLE001 (the job's pickle is gone: the train notebook is the usual one)
        return "train.ipynb"


def _record_failure(point: Point, error: str) -> None:
    """A point whose job died mid-run still says 'running' (or 'interrupted', when its job was signalled): say
    'failed' and why (unless something runs it)."""
    record_file = point.run_dir / SWEEP_POINT
    if not record_file.is_file():
        return
    try:
        with RunLock(point.run_dir, POINT_LOCK_FILE, timeout=0, what="sweep point"):
            record = json.loads(record_file.read_text())
            if record.get("status") in ("running", "interrupted", None):
                record.update(status="failed", error=error, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
                atomic_write_text(record_file, json.dumps(record, indent=2, default=str) + "\n")
    except RunLockedError:  # a new attempt runs it now: its record is the true one
        pass


def run_cluster_sweep(sweep: Sweep, *, executor: str, options: Optional[ClusterOptions] = None, jobs: int = 1,
                      block: bool = True, collect: bool = False, log: Callable[[str], None] = print):
    """``rsbkit sweep --executor local|slurm``: submit the points not yet completed; wait and return
    the sweep table when `block` (always for local, where `jobs` points run at a time).

    Slurm: points whose job is still queued or running are waited on, not submitted again;
    with `collect`, nothing is submitted (``--no-wait`` earlier, ``--collect`` now).
    """
    if jobs < 1:
        raise SweepError(f"jobs={jobs}: give 1 or more")
    if collect and (executor != "slurm" or not block):
        raise SweepError("--collect waits for a Slurm sweep's jobs: use it with --executor slurm, without --no-wait")
    sweep = with_plan(sweep)
    todo = pending(sweep)
    if executor == "slurm":
        check_slurm()
        live, ended = recorded_jobs(sweep, todo)
        # --collect reports the jobs that ended unfinished; a plain rerun submits those points again
        waiting = [p for p in todo if p.name in live or (collect and p.name in ended)]
        submit = [] if collect else [p for p in todo if p.name not in live]
        log(f"sweep {sweep.out}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} already completed, "
            f"{len(live)} queued or running on slurm, submitting {len(submit)}")
        submitted = (submit_points(sweep, submit, executor="slurm", options=options, jobs=jobs, log=log, checked=True)
                     if submit else [])
        if not block:
            return None
        known = {**ended, **live}
        ran = wait(waiting + submit, [known[p.name] for p in waiting] + submitted, options=options, log=log)
        return summarize(sweep, ran, log=log)
    log(f"sweep {sweep.out}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} already completed, "
        f"submitting {len(todo)} to {executor}")
    ran: dict[str, PointResult] = {}
    for i in range(0, len(todo), jobs):  # this machine: `jobs` points at a time
        wave = todo[i:i + jobs]
        ran.update(wait(wave, submit_points(sweep, wave, executor="local", options=options, jobs=jobs, log=log),
                        options=options, log=log))
    return summarize(sweep, ran, log=log)
