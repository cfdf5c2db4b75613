"""The suite's limits follow the host's clock (tests/clock.py): a host measured slower widens every limit by as
much, a faster one never narrows them, and the factor reaches pytest-timeout's limit of each test and the scripts'."""
from __future__ import annotations

import os
import subprocess

import clock
import pytest
from conftest import ROOT

pytestmark = pytest.mark.cost(2)


def test_a_slow_calibration_widens_the_limits_and_a_fast_one_keeps_them(monkeypatch):
    slow = {k: v * 2.6 for k, v in clock.REFERENCE.items()}  # the AVX2 host: the demo trains 2.6x slower there
    assert clock.scale_from(slow) == pytest.approx(2.6)
    assert clock.scale_from({**clock.REFERENCE, "python_ms": clock.REFERENCE["python_ms"] * 1.3}) == pytest.approx(1.3)
    assert clock.scale_from({k: v / 2 for k, v in clock.REFERENCE.items()}) == 1.0  # never tighter than written
    monkeypatch.setenv(clock.SCALE_ENV, f"{clock.scale_from(slow):.2f}")
    assert clock.limit(60) == pytest.approx(156)
    monkeypatch.delenv(clock.SCALE_ENV)
    assert clock.limit(60) == 60  # outside the suite


@pytest.mark.parametrize("value", ["fast", "0.5", "nan"])
def test_a_bad_scale_is_named_with_the_fix(monkeypatch, value):
    monkeypatch.setenv(clock.SCALE_ENV, value)
    with pytest.raises(ValueError, match=rf"RSBKIT_TIME_SCALE='{value}': give a number >= 1"):
        clock.time_scale()


def test_the_suite_runs_on_a_measured_scale_and_every_test_timeout_follows_it(request):
    scale = clock.time_scale()  # set by conftest's calibration (or by the environment) before the workers started
    assert scale >= 1 and clock.SCALE_ENV in os.environ
    marker = request.node.get_closest_marker("timeout")
    assert (marker.args[0] if marker else float(request.config.getini("timeout"))) == pytest.approx(900 * scale)


def test_the_scripts_scale_their_limits_by_the_same_factor(tmp_path):
    """slurm-local.sh's waits and gpu_check.sh's dry-run limits, read from their own arithmetic."""
    script = (ROOT / "scripts" / "slurm-local.sh").read_text()
    prelude = script[script.index("scale=$(awk"):script.index("wait_for() {")]
    out = subprocess.run(["bash", "-c", prelude + "scaled 30"], capture_output=True, text=True, env={"RSBKIT_TIME_SCALE": "2.6", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "78", out
    out = subprocess.run(["bash", "-c", prelude + "scaled 30"], capture_output=True, text=True, env={"RSBKIT_TIME_SCALE": "0.5", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "30", out  # never below the written wait
    gpu = (ROOT / "scripts" / "gpu_check.sh").read_text()
    [line] = [x for x in gpu.splitlines() if x.startswith("scale=1; [ -n \"$dry\" ]")]
    out = subprocess.run(["bash", "-c", f'dry=1\n{line}\necho "$scale"'], capture_output=True, text=True,
                         env={"RSBKIT_TIME_SCALE": "2.5", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "10", out  # 4x for a dry run, times the host's factor
