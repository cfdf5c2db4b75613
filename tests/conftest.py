"""Shared fixtures: real images in ImageNet folder layout, a smoke recipe, the repo root."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# OpenMP threads that spin while waiting steal the cores from the other test processes: on 2 cores two
# torch processes at once run 2x slower than with passive waiting (measured: 720 against 360 ms per
# step of resnet18). Every subprocess (papermill kernels, torchrun workers) inherits this.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One thread per process: the suite's parallelism is its workers, and the suite keeps every core busy (measured
# from /proc/stat on 2 cores: 100% for all but its last minute). A second thread bought the demo 1.4x alone
# (453 against 328 images/s) for 15% more CPU, which the other workers then lack.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every process the suite starts skips the interpreter's final garbage collections (rsbkit.workbook.fast_exit:
# about a second each, for about a hundred kernels, torchrun workers and Slurm jobs).
os.environ.setdefault("RSBKIT_FAST_EXIT", "1")


def pytest_configure(config):
    """Measure this host once, in the main process before the workers start (tests/clock.py): every limit in the
    suite is multiplied by how many times slower it is than the reference host. The workers and every command
    the tests start read the factor from the environment."""
    if hasattr(config, "workerinput"):  # a worker: the main process measured
        return
    import clock

    if clock.SCALE_ENV in os.environ:
        config.rsbkit_clock = f"rsbkit time scale {clock.time_scale():.2f} (limits x {clock.time_scale():.2f}): " \
                              f"set by {clock.SCALE_ENV} in the environment"
        return
    measured = clock.measure()
    scale = clock.scale_from(measured)
    os.environ[clock.SCALE_ENV] = f"{scale:.2f}"
    config.rsbkit_clock = clock.describe(measured, scale)


def pytest_report_header(config):
    return getattr(config, "rsbkit_clock", None)


def pytest_terminal_summary(terminalreporter, config):  # again at the end, where a failure's reader looks
    if getattr(config, "rsbkit_clock", None):
        terminalreporter.write_line(config.rsbkit_clock)


@pytest.hookimpl(optionalhook=True)  # pytest without the xdist plugin (-p no:xdist, or an image without it) still runs
def pytest_xdist_auto_num_workers(config):
    """One worker more than cores (`-n auto`): a worker spends part of its time waiting (on Slurm's scheduler,
    on JupyterLab pages, in polling loops), which the extra worker fills. Measured on 2 cores, one thread per
    process, in one warm checkout: pytest took 724 s with 3 workers (a run that skipped the 42 s two-node Slurm
    test), 768 s with 2; from fresh clones with 3 workers, 10 min 21 s to 11 min 18 s."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items):
    """The costliest files first (their ``cost`` marker: seconds in the suite on 2 cores, measured), the demo
    before all: pytest-xdist hands out whole files in this order (``--no-loadscope-reorder``), so the
    workers finish together instead of one starting a 3-minute file near the end. Stable: within a file,
    and among files without a cost, the collection order stays.

    xdist starts each of its N workers with two files: the first N in turn, then the next N. The demo's worker
    reaches its second file only after the demo (9 minutes), so file N+1 is the cheapest one, not the next
    costliest (the notebooks' 2 minutes were there, and the suite's last minute ran with cores partly idle)."""

    def cost(item) -> float:
        marker = item.get_closest_marker("cost")
        return marker.args[0] if marker else 0.0

    import clock

    scale = clock.time_scale()
    default = float(items[0].config.getini("timeout") or 0) if items else 0.0
    for item in items:  # pytest-timeout's limit (a hang's), per test, on this host's clock
        marker = item.get_closest_marker("timeout")
        written = float(marker.args[0]) if marker and marker.args else default
        if written and scale != 1:
            item.add_marker(pytest.mark.timeout(written * scale))

    items.sort(key=lambda item: -cost(item))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    files = list(dict.fromkeys(item.path for item in items))
    if workers > 1 and len(files) > workers + 1:
        cheapest = files.pop()
        files.insert(workers, cheapest)
        rank = {path: i for i, path in enumerate(files)}
        items.sort(key=lambda item: rank[item.path])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (JupyterLab, a torchrun rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def embedded():
    from rsbkit.core.data import load_data

    return load_data("default")


@pytest.fixture
def image_folder(tmp_path: Path, embedded) -> Path:
    """A folder dataset of real Fashion-MNIST JPEGs: 3 classes, 24 train / 6 val images each."""
    for split, source, per_class in (("train", embedded.train, 24), ("val", embedded.val, 6)):
        counts: dict[int, int] = {}
        for i in range(len(source)):
            img, label = source[i]
            if label > 2 or counts.get(label, 0) >= per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            folder = tmp_path / "imgs" / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(folder / f"{split}_{i}.jpg", quality=90)
            if all(counts.get(c, 0) >= per_class for c in range(3)):
                break
    return tmp_path / "imgs"


@pytest.fixture
def smoke_recipe():
    from rsbkit.core.recipes import A3, smoke

    return smoke(A3, batch_size=16)


def run_whole(cmd, *, timeout: float, **kwargs):
    """subprocess.run(cmd, capture_output=True, text=True) with `timeout` (seconds on the reference host, scaled
    by tests/clock.py) ending the command whole: it runs in a session of its own, and a timeout, or the test
    being stopped, kills that session, not only its first process."""
    import signal
    import subprocess

    import clock

    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=clock.limit(timeout))
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args: str, timeout: float = 600):
    return run_whole([sys.executable, "-m", "rsbkit", *args], timeout=timeout, cwd=ROOT)


@pytest.fixture
def cli(capsys, monkeypatch):
    """``python -m rsbkit ARGS`` in this process (no interpreter and torch import per call): a callable
    giving (returncode, stdout, stderr) like subprocess.run. The subprocess form (run_cli) stays for the
    commands that train or must run as their own process."""
    import types

    from rsbkit.workbook.cli import main

    monkeypatch.chdir(ROOT)

    def call(*args: str):
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's errors
            code = exc.code
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One finished smoke run folder (1 epoch of resnet10t on 128 images), shared read-only."""
    from rsbkit.core.recipes import A3, smoke
    from rsbkit.core.train import train

    out = tmp_path_factory.mktemp("smoke") / "run"
    train(smoke(A3, batch_size=16), "default", out, device="cpu", workers=0, limit_train=128, limit_val=64,
          progress="none", log=lambda s: None)
    return out


# an executed notebook's outputs, texts and static figures
def outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def texts(path) -> str:
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs(path))


def figures(path):
    return [o["data"] for o in outputs(path) if "image/png" in o.get("data", {})]
