"""Sweeps through submitit without a cluster: the options Slurm gets, the local executor (the same jobs as
processes here), and the errors before anything is submitted. A real Slurm runs in test_slurm.py
(arrays, preemption, time limits, cancellation)."""
from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from rsbkit.workbook.cluster import ClusterOptions, PointJob, job_failure
from rsbkit.workbook.sweep import expand, point_status

pytestmark = pytest.mark.cost(30)  # seconds in the suite on 2 cores: files start costliest first (conftest)

TRAIN = "notebooks/procedures/train.ipynb"
SMOKE = dict(recipe="params/smoke.yaml", limit_train=128, limit_val=64, device="cpu", workers=0)


def test_slurm_options_become_submitit_parameters():
    options = ClusterOptions(partition="gpu", gpus=8, cpus=64, time_min=600, mem_gb=400, account="vision",
                             constraint="h100", extra={"exclusive": True})
    params = options.parameters("slurm", jobs=4)
    assert params == dict(timeout_min=600, gpus_per_node=8, tasks_per_node=1, nodes=1, slurm_array_parallelism=4,
                          slurm_signal_delay_s=90, cpus_per_task=64, mem_gb=400, slurm_partition="gpu", slurm_account="vision",
                          slurm_constraint="h100", slurm_additional_parameters={"exclusive": True})
    # the local executor gets only what it understands
    assert options.parameters("local", jobs=4) == dict(timeout_min=600, gpus_per_node=8, tasks_per_node=1, nodes=1)


def test_gpus_become_the_notebooks_nproc(tmp_path):
    sweep = expand(TRAIN, tmp_path, SMOKE, {"lr": [0.001]})
    from rsbkit.workbook.cluster import _with_nproc

    assert _with_nproc(sweep.notebook, sweep.points[0], 4).parameters["nproc"] == 4
    assert "nproc" not in _with_nproc(sweep.notebook, sweep.points[0], 1).parameters


def test_local_executor_runs_the_sweep_and_skips_completed_points(tmp_path, cli):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"notebook: {TRAIN}\nout: {tmp_path / 'out'}\nparameters: {json.dumps(SMOKE)}\n"
                          "grid: {lr: [0.001, 0.002]}\n")
    res = cli("sweep", str(sweep_file), "--executor", "local", "--jobs", "2", "--time", "10")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "submitted 2 point(s) to local" in res.stdout and "2/2 completed" in res.stdout
    for name in ("lr=0.001", "lr=0.002"):
        run = tmp_path / "out" / name
        assert point_status(run) == "completed"
        assert json.loads((run / "result.json").read_text())["status"] == "completed"
        assert (run / "train.ipynb").is_file() and (run / "train.html").is_file()
    submitted = json.loads((tmp_path / "out" / "submitted.json").read_text())
    assert submitted["executor"] == "local" and set(submitted["jobs"]) == {"lr=0.001", "lr=0.002"}
    table = json.loads((tmp_path / "out" / "sweep.json").read_text())["points"]
    assert [p["status"] for p in table] == ["completed", "completed"]
    again = cli("sweep", str(sweep_file), "--executor", "local")
    assert again.returncode == 0 and "2 already completed, submitting 0 to local" in again.stdout


def test_job_pickles_without_its_process(tmp_path):
    import pickle

    sweep = expand(TRAIN, tmp_path, SMOKE, {"lr": [0.001]})
    job = PointJob(sweep.notebook, sweep.points[0])
    job._proc = object()  # a live Popen cannot be pickled; requeueing pickles the job
    clone = pickle.loads(pickle.dumps(job))
    assert clone._proc is None and clone.point == sweep.points[0] and clone.cwd == job.cwd


def test_signal_before_the_time_limit_leaves_the_job_time_to_start_and_to_save():
    # submitit's 90 s, unless the limit is so short that Slurm (which checks every 30 s) would signal at once
    assert [ClusterOptions(time_min=t).signal_s for t in (1, 2, 3, 600)] == [15, 75, 90, 90]
    assert ClusterOptions(time_min=1).parameters("slurm", jobs=1)["slurm_signal_delay_s"] == 15
    assert ClusterOptions(time_min=10, signal_s=300).signal_s == 300


def test_a_job_out_of_time_says_whether_last_pt_is_there_to_resume(tmp_path):
    """submitit's words for a job that timed out more than --max-requeues allows, with and without a checkpoint
    (a limit can run out before the first epoch ends: the notebook's start alone takes seconds)."""
    job = types.SimpleNamespace(job_id="42_0", state="TIMEOUT", paths=types.SimpleNamespace(stderr=tmp_path / "42_0_log.err"))
    exc = RuntimeError("Job 42_0 timed-out too many times.")
    options = ClusterOptions(time_min=1, max_requeues=1)
    none = job_failure(job, exc, options, tmp_path)
    assert none.startswith("job 42_0: the time limit of 1 min ran out on every attempt, more than --max-requeues 1 allows, "
                           "each before its first epoch ended (no last.pt): rerun the sweep with a longer --time"), none
    (tmp_path / "last.pt").write_bytes(b"")
    kept = job_failure(job, exc, options, tmp_path)
    assert "allows; last.pt is kept: rerun the sweep (with a longer --time or more --max-requeues) to resume" in kept, kept


def test_slurm_without_sbatch_fails_clearly(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no Slurm commands
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"notebook: {TRAIN}\nout: {tmp_path / 'out'}\nparameters: {json.dumps(SMOKE)}\nseeds: [0]\n")
    res = cli("sweep", str(sweep_file), "--executor", "slurm", "--partition", "gpu", "--gpus", "1", "--no-wait")
    assert res.returncode == 2
    assert "rsbkit sweep: error: executor 'slurm': sbatch is not on this machine's PATH; run the sweep on a login node" in res.stderr


def test_bad_cluster_options_are_named(tmp_path, cli):
    from rsbkit.workbook.sweep import SweepError

    for kwargs, message in ((dict(gpus=-1), "gpus (--gpus)=-1: give a value >= 0"),
                            (dict(time_min=0), "time_min (--time)=0: give a value >= 1 minute"),
                            (dict(mem_gb=0), "mem_gb (--mem)=0: give a value > 0 GB"),
                            (dict(time_min=1, signal_s=30), "signal_s (--signal-before)=30: give a value from 10 to 15 s")):
        with pytest.raises(SweepError, match=re.escape(message)):
            ClusterOptions(**kwargs)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"notebook: {TRAIN}\nout: {tmp_path / 'out'}\nparameters: {json.dumps(SMOKE)}\nseeds: [0]\n")
    res = cli("sweep", str(sweep_file), "--executor", "local", "--time", "0")
    assert res.returncode == 2 and "cluster option time_min (--time)=0" in res.stderr
