"""A stopped `rsbkit run` stops whole: killed with SIGKILL (what subprocess.run's timeout sends) its papermill and
kernel end too (their parent-death signal, rsbkit.core.processes), and SIGTERM stops the notebook the way Ctrl-C
does, its kernel told first. Before, papermill was re-parented to PID 1 and its kernel went on training unseen."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import nbformat
import psutil
import pytest
from clock import limit
from conftest import ROOT

from rsbkit.core.processes import die_with_parent

pytestmark = pytest.mark.cost(15)


def notebook(path, flag) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("seconds = 600", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(f"import pathlib, time\npathlib.Path({str(flag)!r}).touch()\ntime.sleep(seconds)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def family(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def test_a_killed_or_terminated_run_leaves_no_papermill_or_kernel(tmp_path):
    runs = {}
    for how in ("SIGKILL", "SIGTERM"):  # both at once: one kernel start's wait for the two
        nb, flag = tmp_path / f"{how}.ipynb", tmp_path / f"{how}.started"
        notebook(nb, flag)
        runs[how] = (flag, subprocess.Popen([sys.executable, "-m", "rsbkit", "run", str(nb), "--out", str(tmp_path / how)],
                                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    left: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + limit(120)
        while not all(flag.exists() for flag, _ in runs.values()):  # the notebooks' cell is running in their kernels
            assert all(p.poll() is None for _, p in runs.values()), [p.communicate() for _, p in runs.values()]
            assert time.monotonic() < deadline, "the notebooks did not start"
            time.sleep(0.1)
        for how, (_, proc) in runs.items():
            children = family(proc)
            names = " ".join(" ".join(c.cmdline()) for c in children)
            assert "papermill" in names and "ipykernel" in names, names
            left += children
            proc.send_signal(getattr(signal, how))
        codes = {how: proc.wait(timeout=limit(60)) for how, (_, proc) in runs.items()}
        assert codes == {"SIGKILL": -9, "SIGTERM": 143}, codes
        assert "rsbkit run: terminated" in runs["SIGTERM"][1].stderr.read()
        gone, alive = psutil.wait_procs(left, timeout=limit(20))
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        # the terminated point's record says so; its notebook is kept with what ran
        record = json.loads((tmp_path / "SIGTERM" / "sweep_point.json").read_text())
        assert record["status"] == "interrupted" and record["error"] == "interrupted (signal SIGTERM)"
        assert (tmp_path / "SIGTERM" / "SIGTERM.ipynb").is_file()
    finally:
        for p in left + [psutil.Process(proc.pid) for _, proc in runs.values() if proc.poll() is None]:
            p.kill() if p.is_running() else None


def test_a_child_started_with_die_with_parent_ends_with_it(tmp_path):
    """The parent-death signal alone, in milliseconds of work: a Python parent starts `sleep` and is killed."""
    code = ("import subprocess, sys, time\nfrom rsbkit.core.processes import die_with_parent\n"
            "child = subprocess.Popen(['sleep', '600'], preexec_fn=die_with_parent())\n"
            "print(child.pid, flush=True)\ntime.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        parent.kill()
        parent.wait(timeout=limit(10))
        child.wait(timeout=limit(10))  # psutil.TimeoutExpired if it outlived its parent
    finally:
        if child.is_running():
            child.kill()
    assert die_with_parent() is not None  # Linux: the request exists here
