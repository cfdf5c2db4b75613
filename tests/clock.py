"""The suite's clock: every limit that exists to catch a hang scales with the host it runs on.

This project's machines are all "2 cores", but the processor behind them varies: an AVX2-only host trains the
demo about 2.6x slower than one with AVX-512, and the Python interpreter itself is slower there too. A limit
written on the fast host must not fail a test on the slow one. So the suite measures the host once at its start
(:func:`measure`, about a second, before its workers start and with nothing else running), compares it with the
same measurement on the reference host (:data:`REFERENCE`) and multiplies every limit by the ratio, never by
less than 1 (:func:`scale_from`). The factor goes to the workers and to every command the tests start through the
environment variable ``RSBKIT_TIME_SCALE``, which `scripts/gpu_check.sh` and `scripts/slurm-local.sh` read too, and
the suite's header prints it with what it was measured from. Setting ``RSBKIT_TIME_SCALE`` yourself (say to 4 on a
busy laptop) skips the measurement.

The written limits are set at about twice the time the step takes on the reference host beside the rest of the
suite (the suite runs three workers on two cores), so the factor adds to a margin rather than replacing it.
"""
from __future__ import annotations

import os
import time

SCALE_ENV = "RSBKIT_TIME_SCALE"

# :func:`measure` on the reference host, idle: 2 cores of an AMD EPYC with AVX-512 (2026-12-07; four runs gave
# 44 to 51 ms and 15 to 22 ms: the lowest of each, rounded up)
REFERENCE = {"torch_ms": 48.0, "python_ms": 16.0}
REFERENCE_HOST = "AMD EPYC with AVX-512, 2 cores"


def measure(repeats: int = 15) -> dict[str, float]:
    """Milliseconds, best of `repeats`, for one thread of the work the suite is made of: a training step of a
    small convolutional network on 32-px images (torch's CPU kernels, what the training tests spend their time
    in), and a loop of plain Python (imports, papermill, Jupyter, the test code itself)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, padding=1, stride=2), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
        x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))

        def step() -> None:
            net.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()

        step()  # the first call allocates and picks kernels
        torch_ms = _best(step, repeats)
    finally:
        torch.set_num_threads(threads)

    def python() -> None:
        total = 0
        for i in range(300_000):
            total += i * i % 7

    return {"torch_ms": torch_ms, "python_ms": _best(python, repeats)}


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def scale_from(measured: dict[str, float], reference: dict[str, float] = REFERENCE) -> float:
    """How many times slower this host is than the reference, by the slower of the two measurements; never
    below 1 (a faster host keeps the written limits)."""
    return max(1.0, *(measured[k] / reference[k] for k in reference))


def time_scale() -> float:
    """The factor the suite measured (or that ``RSBKIT_TIME_SCALE`` set); 1 outside the suite."""
    value = os.environ.get(SCALE_ENV, "1")
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"{SCALE_ENV}={value!r}: give a number >= 1 (how many times slower this host is)") from None
    if not scale >= 1:
        raise ValueError(f"{SCALE_ENV}={value!r}: give a number >= 1 (how many times slower this host is)")
    return scale


def limit(seconds: float) -> float:
    """A limit written for the reference host, on this one."""
    return seconds * time_scale()


def describe(measured: dict[str, float], scale: float) -> str:
    """The suite header's line: the factor and what it came from."""
    return (f"rsbkit time scale {scale:.2f} (limits x {scale:.2f}): training step {measured['torch_ms']:.1f} ms, "
            f"python loop {measured['python_ms']:.1f} ms, against {REFERENCE['torch_ms']:.1f} and "
            f"{REFERENCE['python_ms']:.1f} on the reference host ({REFERENCE_HOST}); set {SCALE_ENV} to override")
