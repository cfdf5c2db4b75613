"""Sweeps on a real Slurm: a one-node cluster (slurmctld, slurmd, slurmdbd with MariaDB, munged) that
scripts/slurm-local.sh starts for this file and stops after it. The points run the train notebook on the
smoke recipe as jobs of a Slurm array; Slurm itself preempts, times out and cancels them.

About 3 minutes on 2 cores (170 s measured; the cluster starts in 3 s and stops in 3 s), mostly waiting: the time-limit
test alone takes about a minute, two attempts that each wait for Slurm's 30-second time-limit check."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from clock import limit
from conftest import free_port

from rsbkit.core.checkpoint import load_checkpoint

pytestmark = pytest.mark.cost(170)  # seconds in the suite on 2 cores (measured); conftest runs costly files first

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "notebooks/procedures/train.ipynb")
SMOKE = dict(recipe=str(ROOT / "params/smoke.yaml"), limit_train=128, limit_val=64, device="cpu", workers=0)
SLURM = str(ROOT / "scripts/slurm-local.sh")
NODES: list[str] = []  # the local cluster's node names, once it is up


def sweep(*args: str):
    """``python -m rsbkit sweep ARGS`` in this process; (returncode, stdout, stderr) like subprocess.run."""
    from rsbkit.workbook.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["sweep", *args])
        except SystemExit as exc:  # argparse's errors
            code = exc.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def sweep_file(folder: Path, grid: dict, **parameters) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(json.dumps(dict(notebook=TRAIN, out=str(folder / "out"), parameters={**SMOKE, **parameters},
                                    grid=grid)) + "\n")
    return path


def slurm_cmd(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=limit(60), check=True).stdout


def job_ids(out: Path) -> dict[str, str]:
    return json.loads((out / "submitted.json").read_text())["jobs"]


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds:.0f} s"
        time.sleep(0.2)


def down_when_gone(pid: int, folder: Path) -> subprocess.Popen:
    """A watcher in a session of its own that stops the cluster in `folder` once process `pid` has ended: a suite
    killed mid-file (a timeout, Ctrl-C, a CI job cancelled) runs no teardown, and the daemons would stay up."""
    watch = f"while kill -0 {pid} 2>/dev/null; do sleep 1; done; exec bash {shlex.quote(SLURM)} down {shlex.quote(str(folder))}"
    return subprocess.Popen(["bash", "-c", watch], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The local cluster, up for this file; SLURM_CONF points at it."""
    folder = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(["bash", SLURM, "up", str(folder)], capture_output=True, text=True, timeout=limit(300))
    if up.returncode != 0 and "is not installed" in up.stderr and os.geteuid() != 0:
        pytest.skip(f"no Slurm here and no root to install it: {up.stderr.strip()}")
    logs = "".join(f"\n--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted((folder / "log").glob("*.log")))
    assert up.returncode == 0, up.stdout + up.stderr + logs
    NODES[:] = (folder / "etc/nodes").read_text().split()
    guard = down_when_gone(os.getpid(), folder)
    patch = pytest.MonkeyPatch()
    patch.setenv("SLURM_CONF", str(folder / "etc/slurm.conf"))
    try:
        yield folder
    finally:
        patch.undo()
        guard.kill()  # this teardown brings the cluster down itself
        guard.wait()
        down = subprocess.run(["bash", SLURM, "down", str(folder)], capture_output=True, text=True, timeout=limit(120))
        assert down.returncode == 0, down.stdout + down.stderr
        assert "jobs still listed" not in down.stdout, down.stdout


@pytest.fixture(scope="module")
def array_sweep(slurm, tmp_path_factory):
    """Two points that train alike (they differ only in how the notebook prints progress), submitted with
    --no-wait as one array; one of them is preempted mid-run by a job of the `urgent` partition; a second
    `rsbkit sweep` collects both."""
    folder = tmp_path_factory.mktemp("array")
    file = sweep_file(folder, {"progress": ["line", "none"]}, overrides={"epochs": 3})
    first = sweep(str(file), "--executor", "slurm", "--jobs", "2", "--time", "60", "--no-wait")
    assert first.returncode == 0, first.stdout + first.stderr
    queued = slurm_cmd("squeue", "-h", "-r", "-o", "%i %P %T")
    out = folder / "out"
    preempted = out / "progress=line"
    wait_for(lambda: (preempted / "last.pt").exists(), 120, "the point's first checkpoint")
    epoch = load_checkpoint(preempted / "last.pt")["epoch"]
    # a job of the higher-priority partition that needs that point's whole node: Slurm preempts it (USR2, requeue)
    node = slurm_cmd("squeue", "-h", "-j", job_ids(out)["progress=line"], "-o", "%N").strip()
    slurm_cmd("sbatch", "-p", "urgent", "-w", node, "--exclusive", "-o", str(folder / "urgent.out"), "--wrap", "sleep 1")
    second = sweep(str(file), "--executor", "slurm", "--time", "60")
    return types.SimpleNamespace(file=file, out=out, first=first, queued=queued, second=second, epoch=epoch)


def test_a_sweep_runs_as_one_slurm_array_and_a_second_sweep_collects_it(array_sweep):
    first, second, out = array_sweep.first, array_sweep.second, array_sweep.out
    assert "submitting 2" in first.stdout and "submitted 2 point(s) to slurm" in first.stdout
    jobs = job_ids(out)
    assert set(jobs) == {"progress=line", "progress=none"}
    array = {j.split("_")[0] for j in jobs.values()}
    assert len(array) == 1 and sorted(j.split("_")[1] for j in jobs.values()) == ["0", "1"], jobs  # one array
    assert all(j in array_sweep.queued for j in jobs.values()), array_sweep.queued  # Slurm had them
    # the second sweep found both still queued or running: it waited for them instead of submitting again
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 queued or running on slurm, submitting 0" in second.stdout and "2/2 completed" in second.stdout
    assert job_ids(out) == jobs
    for name in jobs:
        result = json.loads((out / name / "result.json").read_text())
        assert result["status"] == "completed" and result["epochs_done"] == 3
        assert (out / name / "train.html").is_file()
    # Slurm's accounting (slurmdbd) agrees, once the jobs' steps have ended (the result is written just before)
    def accounted() -> bool:
        states = slurm_cmd("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(jobs.values()))
        return sorted(states.split()) == sorted(f"{j}|COMPLETED" for j in jobs.values())

    wait_for(accounted, 30, "sacct showing both jobs COMPLETED")
    again = sweep(str(array_sweep.file), "--executor", "slurm")
    assert again.returncode == 0 and "2 already completed, 0 queued or running on slurm, submitting 0" in again.stdout


def test_a_preempted_point_is_requeued_and_resumes_to_the_same_weights(array_sweep):
    out = array_sweep.out
    assert array_sweep.epoch < 3  # preempted mid-run
    run, straight = out / "progress=line", out / "progress=none"
    record = json.loads((run / "sweep_point.json").read_text())
    assert record["attempt"] == 2 and record["resumed"] is True, record
    assert json.loads((straight / "sweep_point.json").read_text())["attempt"] == 1
    job = job_ids(out)["progress=line"]
    log = "".join(p.read_text() for p in (out / "submitit" / job).glob("*_log.err"))
    assert "this job is preempted" in log, log[-3000:]
    assert "===== attempt 2 (resumes from last.pt) =====" in (run / "papermill.log").read_text()
    a, b = load_checkpoint(run / "last.pt")["model"], load_checkpoint(straight / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # as if never interrupted


def test_a_point_out_of_time_is_requeued_then_recorded_as_failed(slurm, tmp_path):
    file = sweep_file(tmp_path, {"lr": [0.001]}, limit_train=64, overrides={"epochs": 500})
    res = sweep(str(file), "--executor", "slurm", "--time", "1", "--max-requeues", "1")
    assert res.returncode == 1, res.stdout + res.stderr
    run = tmp_path / "out" / "lr=0.001"
    # Slurm's signal comes 15 to 45 s into each attempt (it checks every 30 s): on a loaded machine the notebook may
    # still be starting then, and no epoch has ended. The reason says which, and attempt 2 resumes when attempt 1 ended one.
    reason = "the time limit of 1 min ran out on every attempt, more than --max-requeues 1 allows" + (
        "; last.pt is kept" if (run / "last.pt").exists() else ", each before its first epoch ended (no last.pt)")
    assert "failed lr=0.001 in 0 s: job " in res.stdout and reason in res.stdout, res.stdout
    record = json.loads((run / "sweep_point.json").read_text())
    assert record["status"] == "failed" and reason in record["error"] and record["attempt"] == 2, record
    first, second = (run / "papermill.log").read_text().split("===== attempt 2", 1)
    if re.search(r"^epoch +\d+/500 ", first, re.M):  # attempt 1 ended an epoch (its checkpoint is written before the line)
        assert second.startswith(" (resumes from last.pt) ====="), second[:200]
    table = json.loads((tmp_path / "out" / "sweep.json").read_text())["points"]
    assert table[0]["status"] == "failed" and reason in table[0]["error"]


def test_a_cancelled_job_is_reported_not_waited_on(slurm, tmp_path):
    file = sweep_file(tmp_path, {"lr": [0.001]})
    assert sweep(str(file), "--executor", "slurm", "--no-wait").returncode == 0
    [job] = job_ids(tmp_path / "out").values()
    slurm_cmd("scancel", job)
    t0 = time.monotonic()
    res = sweep(str(file), "--executor", "slurm", "--collect")
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(rf"failed lr=0.001 in 0 s: job {job} was cancelled \(Slurm state CANCELLED", res.stdout), res.stdout
    assert time.monotonic() - t0 < 60


def test_one_run_on_two_nodes_through_srun_and_torchrun(slurm, tmp_path):
    """scripts/slurm-train.sbatch (the README's srun + torchrun line) on the local cluster's two nodes."""
    if len(NODES) < 2:
        pytest.skip("the local cluster has one node (a 1-CPU machine)")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "RDZV_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    job = subprocess.run(["sbatch", "--wait", "--nodes=2", "-o", str(tmp_path / "job.out"), str(ROOT / "scripts/slurm-train.sbatch"),
                          str(ROOT / "params/smoke.yaml"), "--out", str(out), "--limit-train", "64", "--limit-val", "32",
                          "--device", "cpu", "--workers", "0", "--progress", "line"],
                         capture_output=True, text=True, timeout=limit(300), cwd=ROOT, env=env)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert job.returncode == 0, job.stdout + job.stderr + log[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2, result
    assert log.count("done: top-1") == 1, log[-3000:]  # rank 0 alone
    [job_id] = re.findall(r"Submitted batch job (\d+)", job.stdout)
    nodes = slurm_cmd("sacct", "-n", "-X", "-P", "-o", "NodeList,State", "-j", job_id).split()
    assert nodes == [f"{','.join(sorted(NODES))}|COMPLETED"] or nodes == [f"{','.join(NODES)}|COMPLETED"], nodes


def test_no_reachable_controller_stops_before_submitting(tmp_path, monkeypatch):
    """Slurm's commands are here (the suite installs them), but no cluster answers."""
    from rsbkit.workbook.cluster import check_slurm
    from rsbkit.workbook.sweep import SweepError

    if shutil.which("scontrol") is None:
        pytest.skip("Slurm's commands are not installed (scripts/system-packages.sh installs them)")
    conf = tmp_path / "slurm.conf"  # a cluster whose controller is not running
    conf.write_text("ClusterName=gone\nSlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=9\nNodeName=n1 CPUs=1\n"
                    "PartitionName=p Nodes=n1 Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    with pytest.raises(SweepError, match=r"no Slurm controller answers here \(scontrol ping: Slurmctld\(primary\) at "
                                         r"nowhere is DOWN\); run the sweep on a login node"):
        check_slurm()
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(SweepError, match="SLURM_CONF=.*missing.conf is not a file"):
        check_slurm()
    if not Path("/etc/slurm/slurm.conf").exists():
        monkeypatch.delenv("SLURM_CONF")
        with pytest.raises(SweepError, match=r"\(scontrol ping: Could not establish a configuration source\)"):
            check_slurm()
    file = sweep_file(tmp_path, {"lr": [0.001]})
    monkeypatch.setenv("SLURM_CONF", str(conf))
    res = sweep(str(file), "--executor", "slurm")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "rsbkit sweep: error: executor 'slurm': no Slurm controller answers here" in res.stderr
    assert not (tmp_path / "out" / "submitted.json").exists()


def test_a_killed_suite_leaves_no_cluster_running(tmp_path):
    """The fixture's guard: once the process it watches is gone (here a stand-in that dies at once; in the suite,
    the test process, killed before its teardown), it runs `slurm-local.sh down` on the cluster's folder, and ends."""
    owner = subprocess.Popen(["sleep", "0.2"])
    guard = down_when_gone(owner.pid, tmp_path)
    assert guard.poll() is None  # waiting while its owner lives
    owner.wait()
    assert guard.wait(timeout=limit(60)) == 0
