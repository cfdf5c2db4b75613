"""One writer per run folder: a second `train` into a folder in use fails at once naming the holder, a killed
holder leaves no lock behind, torchrun ranks all stop, two sweeps over one folder share the points, and a write
the disk refuses stops the run with the file and the free space named, keeping what was there for --resume."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from clock import limit
from conftest import ROOT, run_cli, run_whole

from rsbkit.core.checkpoint import load_checkpoint
from rsbkit.core.distributed import torchrun_command
from rsbkit.core.errors import RunLockedError, RunWriteError
from rsbkit.core.runs import LOCK_FILE, POINT_LOCK_FILE, RunLock, read_metrics
from rsbkit.core.train import train
from rsbkit.workbook.sweep import expand, point_status, run_point

pytestmark = pytest.mark.cost(95)  # seconds in the suite on 2 cores: files start costliest first (conftest)

DATA = ["--limit-train", "128", "--limit-val", "32", "--device", "cpu", "--workers", "0", "--progress", "line"]
TRAIN = "notebooks/procedures/train.ipynb"
SMOKE = dict(recipe="params/smoke.yaml", limit_train=64, limit_val=32, device="cpu", workers=0)


def start_training(out, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rsbkit", "train", "params/smoke.yaml", "--out", str(out), *DATA, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"{what}: the process ended first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.05)


def holds_lock(out, pid: int) -> bool:
    try:
        return json.loads((out / LOCK_FILE).read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


def test_a_second_writer_fails_at_once_and_a_killed_holder_leaves_no_lock(tmp_path, cli):
    out = tmp_path / "run"
    first = start_training(out, "--set", "epochs=200")
    wait_for(lambda: holds_lock(out, first.pid), first, "the first run's lock")
    t0 = time.monotonic()
    second = cli("train", "params/smoke.yaml", "--out", str(out), *DATA)  # in this process: another writer
    assert second.returncode == 2 and time.monotonic() - t0 < 60
    [line] = second.stderr.strip().splitlines()  # one line: the folder and who holds it
    assert f"run folder {out} is in use by another writer: host " in line and f"PID {first.pid}, since " in line
    assert "command: python -m rsbkit train params/smoke.yaml" in line and "choose another out_dir" in line
    second = cli("train", "params/smoke.yaml", "--out", str(out), "--resume", *DATA)  # a resume is refused the same way
    assert second.returncode == 2 and f"PID {first.pid}" in second.stderr
    wait_for(lambda: (out / "metrics.csv").exists(), first, "the first run's epoch")
    assert first.poll() is None  # still training, alone: its records are its own and whole
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "running" and [a["pid"] for a in result["attempts"]] == [first.pid]
    # kill -9: the lock goes with the process (the file stays), and the next launch proceeds
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=limit(60))
    assert (out / LOCK_FILE).exists()
    done = run_cli("train", "params/smoke.yaml", "--out", str(out), "--resume", "--stop-after", "2", *DATA,
                   "--set", "epochs=200")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout
    attempts = json.loads((out / "result.json").read_text())["attempts"]
    assert [a["pid"] for a in attempts][0] == first.pid and len(attempts) == 2
    assert attempts[1]["resume"] is True and "--resume" in attempts[1]["command"]
    state = load_checkpoint(out / "last.pt")
    assert [r["epoch"] for r in read_metrics(out / "metrics.csv")] == list(range(1, state["epoch"] + 1))


def test_torchrun_ranks_all_stop_when_the_folder_is_in_use(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):  # this test process holds the folder
        cmd = torchrun_command(2, ["params/smoke.yaml", "--out", str(out), *DATA])
        res = run_whole(cmd, timeout=300, cwd=ROOT)
    assert res.returncode != 0
    assert f"rsbkit train: error: run folder {out} is in use by another writer: host" in res.stderr
    assert f"PID {os.getpid()}" in res.stderr
    assert not (out / "recipe.yaml").exists() and not (out / "last.pt").exists()


def test_a_requeued_point_waits_a_bounded_time_for_the_earlier_attempt(tmp_path):
    sweep = expand(TRAIN, tmp_path / "out", SMOKE, {"lr": [0.001]})
    [point] = sweep.points
    with RunLock(point.run_dir, POINT_LOCK_FILE):
        t0 = time.monotonic()
        with pytest.raises(RunLockedError, match=r"sweep point .* is in use by another writer \(waited 1 s\)"):
            run_point(sweep.notebook, point, lock_wait=1.0)
        assert time.monotonic() - t0 >= 1.0
    assert not (point.run_dir / "sweep_point.json").exists()


def test_two_sweeps_over_one_folder_run_each_point_once(tmp_path):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"notebook: {TRAIN}\nout: {tmp_path / 'out'}\nparameters: {json.dumps(SMOKE)}\n"
                          "grid: {lr: [0.001, 0.002]}\n")
    cmd = [sys.executable, "-m", "rsbkit", "sweep", str(sweep_file)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=limit(600)) for p in procs]
    assert all(p.returncode == 0 for p in procs), [(p.returncode, o[0][-2000:], o[1][-2000:]) for p, o in zip(procs, outs)]
    logs = "".join(o[0] for o in outs)
    for name in ("lr=0.001", "lr=0.002"):
        assert logs.count(f"  start {name}") == 1, logs
        record = json.loads((tmp_path / "out" / name / "sweep_point.json").read_text())
        assert record["status"] == "completed" and record["attempt"] == 1
        assert len(json.loads((tmp_path / "out" / name / "result.json").read_text())["attempts"]) == 1
    # each sweep says what it ran and what it left to the other
    ran_here = [int(n) for n in re.findall(r"completed \((\d) run here\)", logs)]
    assert len(ran_here) == 2 and sum(ran_here) == 2, logs


# ---------------------------------------------------------------- writes the disk refuses


def refuse(monkeypatch, name: str, nth: int) -> None:
    """The nth rename onto a file called `name` fails with ENOSPC (the last step of every atomic write)."""
    real, calls = os.replace, {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name:
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("name, nth", [("last.pt", 2), ("metrics.csv", 2), ("result.json", 3)])
def test_a_full_disk_stops_the_run_naming_the_file_and_resume_continues(tmp_path, monkeypatch, smoke_recipe, name, nth):
    out = tmp_path / "run"
    recipe = smoke_recipe.replace(epochs=2, warmup_epochs=0)
    kwargs = dict(device="cpu", workers=0, limit_train=64, limit_val=32, progress="none", log=lambda s: None)
    refuse(monkeypatch, name, nth)  # epoch 2's write of `name`
    with pytest.raises(RunWriteError) as info:
        train(recipe, "default", out, **kwargs)
    message = str(info.value)
    assert message.startswith(f"could not write {out / name}: No space left on device (ENOSPC); ")
    assert " free of " in message and f"the previous {name} is unchanged" in message and "--resume" in message
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    state = load_checkpoint(out / "last.pt")  # the previous checkpoint is whole
    assert state["epoch"] == (1 if name == "last.pt" else 2)  # written before the records
    assert len(read_metrics(out / "metrics.csv")) in (1, 2)
    json.loads((out / "result.json").read_text())  # whole JSON
    monkeypatch.undo()
    done = train(recipe, "default", out, resume=True, **kwargs)
    assert done["status"] == "completed" and done["epochs_done"] == 2
    assert [r["epoch"] for r in read_metrics(out / "metrics.csv")] == [1, 2]
    straight = train(recipe, "default", tmp_path / "straight", **kwargs)["run_dir"]  # the run no disk trouble touched
    a, b = load_checkpoint(out / "last.pt")["model"], load_checkpoint(f"{straight}/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_at_the_executed_notebook_is_named_and_the_point_reruns(tmp_path, monkeypatch):
    sweep = expand(TRAIN, tmp_path / "out", SMOKE, {"lr": [0.001]})
    [point] = sweep.points
    refuse(monkeypatch, "train.ipynb", 1)
    res = run_point(sweep.notebook, point)
    assert res.status == "failed" and res.error.startswith(f"could not write {point.run_dir / 'train.ipynb'}: No space left")
    assert point_status(point.run_dir) == "failed"
    assert load_checkpoint(point.run_dir / "last.pt")["epoch"] == 1  # the run itself finished
    monkeypatch.undo()
    again = run_point(sweep.notebook, point)  # resumes from last.pt: nothing left to train, the notebook is kept
    assert again.status == "completed", again.error
    assert (point.run_dir / "train.ipynb").is_file() and not list(point.run_dir.glob(".*.partial"))
