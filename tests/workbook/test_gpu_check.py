"""The GPU check's probes can fail, and its figures are fair, shown on the CPU in milliseconds to seconds: the sync
census fed a known sync as its control, a1_capped's cap in bytes below what the planned micro-batch took, the
input rates of `threads` and `bench` against a fake prepare of fixed cost, bench's JSON written entry by entry, and
the three results that come back from a lent machine (the dry run itself is in test_bench.py)."""
from __future__ import annotations

import json
import tarfile
import time
import warnings
from collections import Counter
from dataclasses import replace

import pytest
import torch
from conftest import ROOT
from PIL import Image
from torch.utils.data import Dataset

from rsbkit.core.data import Data, ahead_parallel
from rsbkit.core.recipes import A1, plan_batch
from rsbkit.workbook import bench

pytestmark = pytest.mark.cost(15)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- census


def torch_like_sync():
    warnings.warn("called a synchronizing CUDA operation", stacklevel=2)  # what CUDA's sync debug mode 'warn' raises


def test_the_census_counts_its_control_in_both_threads(gpu_check):
    census = gpu_check.SyncCensus(CPU, torch_like_sync)
    with census:
        assert census.control() == 2  # one in this thread, one in a thread of its own
        torch_like_sync()
    [(thread, site)] = census.seen
    assert thread == "MainThread" and census.seen[(thread, site)] == 1 and "test_gpu_check.py" in site
    assert gpu_check.census_verdict([2, 2], {"jpeg folder": 0.0}) == dict(status="ok")


def test_a_census_that_sees_nothing_fails_as_blind(gpu_check):
    """A debug mode that saw nothing read '0 syncs, ok': now the control, which it must count, fails it."""
    census = gpu_check.SyncCensus(CPU, lambda: None)  # a sync the census cannot see
    with census:
        seen = census.control()
    verdict = gpu_check.census_verdict([seen, 2], {"jpeg folder": 0.0})
    assert seen == 0 and verdict["status"] == "failed" and verdict["why"].startswith("census blind")


def test_a_training_thread_syncing_per_step_fails(gpu_check):
    key = ("MainThread", "train.py:618 run_epoch")
    table = gpu_check.census_table(Counter({key: 5}), Counter({key: 13}), (4, 12))  # one sync per step, one one-off
    assert table["MainThread train.py:618 run_epoch"] == dict(per_step=1.0, one_off=1.0)
    verdict = gpu_check.census_verdict([2, 2, 2, 2], {"arrays": 1.0})
    assert verdict["status"] == "failed" and "syncs per step" in verdict["why"] and "limit 0.5" in verdict["why"]
    assert gpu_check.census_verdict([2, 2], {"arrays": 0.125})["status"] == "ok"  # 1 sync over 8 extra steps
    assert "cudaStreamSynchronize" in gpu_check.CENSUS_BLIND_TO  # what it cannot see is said


# ---------------------------------------------------------------- a1_capped


def test_a1_plans_four_passes_of_512():
    plan = plan_batch(A1)
    assert (A1.batch_size, plan.micro_batch, plan.accum_steps) == (2048, 512, 4)


def test_the_cap_is_bytes_below_what_the_planned_micro_batch_took(gpu_check):
    """20% of an H200 (28 GiB) held A1's 512 at 224 px: the cap is now half of a1_free's measured peak at 512."""
    free = dict(status="ok", peak_mem_mb=24_000.0, micro_batch=512)
    cap = gpu_check.memory_cap(free, 512)
    assert cap == 12_000 * 2**20 and cap < free["peak_mem_mb"] * 2**20
    with pytest.raises(RuntimeError, match="a1_free gave no peak memory"):
        gpu_check.memory_cap(dict(status="failed", why="killed"), 512)
    with pytest.raises(RuntimeError, match="more than the 512 planned"):
        gpu_check.memory_cap(dict(status="ok", peak_mem_mb=1.0, micro_batch=2048), 512)


# ---------------------------------------------------------------- input rates


def test_threads_rate_skips_the_batches_made_ahead():
    """A prepare of fixed cost (50 ms, sleeping: outside the GIL, as nvJPEG is) behind 4 input threads makes 4 batches
    per 50 ms; the first batch pays 200 ms of start-up, while the other threads fill the queue (2 per thread). The
    check's window (skip 2 + 2 per thread, time 40) reads the true rate; the old one (skip 2, time 12) read the
    queued batches as free, about twice the rate."""
    threads, cost, size = 4, 0.05, 4

    def prepare(index, item):
        time.sleep(0.2 if index == 0 else cost)
        return torch.zeros(size, 1), torch.zeros(size), []

    true = threads / cost * size  # images/s
    images, seconds = bench.steady_rate(ahead_parallel(range(200), prepare, CPU, [None] * threads), 2 + 2 * threads, 40, CPU)
    # below the true rate only by the host's own delays (a loaded 2-core host wakes threads late); never above it
    assert images == 40 * size and 0.7 < images / seconds / true < 1.12, images / seconds / true
    images, seconds = bench.steady_rate(ahead_parallel(range(200), prepare, CPU, [None] * threads), 2, 12, CPU)
    assert images / seconds / true > 1.4  # the old window


def test_a_short_input_is_named_not_timed():
    with pytest.raises(Exception, match="the input ended after 5 batches: 4 untimed and 3 timed"):
        bench.steady_rate(iter([(torch.zeros(1), None, [])] * 5), 4, 3, CPU)


class Slow(Dataset):
    """Tiny pictures, each costing `cost` seconds in the loader worker that reads it (sleeping)."""

    def __init__(self, n: int, cost: float):
        self.n, self.cost = n, cost

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        time.sleep(self.cost)
        return Image.new("RGB", (16, 16), (i * 40 % 256, 90, 160)), i % 2


def test_bench_input_rate_keeps_its_workers_busy():
    """bench's loader entry on a dataset of one batch, with 2 workers of fixed cost per image: one long epoch over the
    list repeated reads the workers' true rate (2 workers / 50 ms an image). Timed over epochs of the dataset, as the
    entry did before, the pipeline drained and refilled at every end of epoch: one worker of two busy, half the rate
    (the generated folder's 16 batches for 12 workers: 2 rounds of work where 1.33 would do)."""
    cost, workers, batch, steps = 0.05, 2, 4, 24
    data = Data("slow", Slow(batch, cost), Slow(2, 0), ["a", "b"], "test")
    cfg = bench.default_config(CPU, quick=True)
    cfg = replace(cfg, recipe=cfg.recipe.replace(train_res=16, test_res=16, batch_size=batch, lr_base_size=batch),
                  steps=steps, warmup=1, workers=workers)
    entry = bench.input_path(cfg, CPU, data, "loader")
    true = workers / cost
    assert entry["images"] == steps * batch and entry["batches_skipped"] == 1 + workers * 4
    # the old way read 0.44 of it; a loaded host's late wakeups cost a little, never half
    assert 0.7 < entry["images_per_s"] / true < 1.1, (entry, true)


def test_at_least_repeats_the_list_without_nesting(tmp_path):
    from torch.utils.data import Subset

    from rsbkit.core.data import ArrayImages, ImageFiles

    arrays = ArrayImages(torch.zeros(5, 4, 4, dtype=torch.uint8).numpy(), torch.arange(5).numpy())
    data = Data("a", Subset(arrays, [1, 3]), arrays, ["x"], "test")
    longer = bench.at_least(data, 5)
    assert isinstance(longer.train, Subset) and longer.train.dataset is arrays and longer.train.indices == [1, 3, 1, 3, 1]
    files = Data("f", ImageFiles([("a", 0), ("b", 1)]), arrays, ["x"], "test")
    assert [p for p, _ in bench.at_least(files, 3).train.samples] == ["a", "b", "a"]
    assert bench.at_least(files, 2) is files


def test_float32_is_named_with_tf32():
    """torch's default runs cuDNN's convolutions in TF32: the plain step's precision says what ran."""
    assert bench.float32_label(CPU) == "float32"
    cuda = torch.device("cuda")
    was = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults
        assert bench.float32_label(cuda) == "float32, TF32 convolutions"
        torch.backends.cudnn.allow_tf32 = False
        assert bench.float32_label(cuda) == "float32"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = was


def test_bench_writes_each_entry_as_it_finishes(tmp_path, monkeypatch):
    """A bench killed part way (here: its end-to-end entries fail) leaves the entries it measured."""
    def entry(name):
        return dict(name=name, images_per_s=1.0, precision="float32", workers=0)

    monkeypatch.setattr(bench, "model_step", lambda cfg, device, plain: entry("model_step_plain" if plain else "model_step"))
    monkeypatch.setattr(bench, "_data", lambda cfg, cache: Data("d", [], [], [], "fake"))
    monkeypatch.setattr(bench, "input_path", lambda cfg, device, data, where: entry(f"input_{where}"))

    def killed(*args):
        raise RuntimeError("killed")

    monkeypatch.setattr(bench, "end_to_end", killed)
    with pytest.raises(RuntimeError, match="killed"):
        bench.run_bench(bench.default_config(CPU, quick=True), tmp_path, log=lambda line: None)
    [path] = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    assert record["complete"] is False and record["data"] == "fake"
    assert [e["name"] for e in record["entries"]] == ["model_step_plain", "model_step", "input_loader", "input_device"]


# ---------------------------------------------------------------- what comes back


def test_the_logs_leave_out_checkpoints_and_stay_under_the_limit(gpu_check, tmp_path):
    out = tmp_path / "check"
    (out / "runs" / "a1").mkdir(parents=True)
    (out / "data" / "jpegs").mkdir(parents=True)
    (out / "env.json").write_text('{"status": "ok"}')
    (out / "runs" / "a1" / "metrics.csv").write_text("epoch\n1\n")
    (out / "runs" / "a1" / "last.pt").write_bytes(b"0" * 1000)
    (out / "data" / "jpegs" / "a.JPEG").write_bytes(b"0" * 1000)
    (out / "big.log").write_bytes(torch.randint(0, 256, (300_000,), dtype=torch.uint8).numpy().tobytes())  # incompressible
    left = gpu_check.write_logs(out, out / "logs.tar.gz", limit=200_000)
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == ["check/LEFT-OUT.txt", "check/env.json", "check/runs/a1/metrics.csv"], names
    assert left == ["big.log (300,000 bytes)"] and (out / "logs.tar.gz").stat().st_size < 200_000


def test_collect_leaves_exactly_three_files_where_they_come_back(gpu_check, tmp_path):
    out, back = tmp_path / "check", tmp_path / "OUT"
    out.mkdir()
    (out / "env.json").write_text(json.dumps(dict(status="ok", python="3.12.3", seconds=1.0, limit_s=10)))
    (out / "census.json").write_text(json.dumps(dict(status="failed", why="census blind: ...", blind_to="nvJPEG")))
    text, results = gpu_check.collect(out, back, "dry-run")
    assert sorted(p.name for p in back.iterdir()) == ["logs.tar.gz", "results.json", "summary.md"]
    assert json.loads((back / "results.json").read_text()) == json.loads(json.dumps(results, default=str))
    assert results["steps"]["env"]["python"] == "3.12.3" and results["steps"]["race"] == {"status": "not run"}
    assert "| census | failed |" in text and "census, blind_to: nvJPEG" in text and "1 ok, 1 failed, 9 not run" in text
    assert gpu_check.main(["collect", "--out", str(out)]) == 1  # a failed step fails the check
