"""One step of the GPU check (scripts/gpu_check.sh runs them all, each under `timeout`).

    python scripts/gpu_check.py STEP --out DIR [--quick] [--dry-run]
    python scripts/gpu_check.py collect --out DIR [--to OUT]   # summary.md, results.json, logs.tar.gz (and in OUT)
    python scripts/gpu_check.py summary --out DIR
    python scripts/gpu_check.py timm-floor          # exit 0 when this timm is at or above rsbkit's floor

Each step writes DIR/STEP.json ({"status": ok | failed | skipped | inconclusive, "why": ..., figures}); a
step can fail on what it measured, not only on an error, and says why. `collect` writes DIR/summary.md (one
table of the steps, their notes, bench's entries, each step's per-site tables), DIR/results.json (all of it)
and DIR/logs.tar.gz (the logs and run records, no checkpoints, under 16 MiB), and copies those three into
OUT: what comes back from a lent GPU machine. It needs only what the GPU
machine's image holds (torch, torchvision, timm, numpy, pillow, pyyaml, pandas, tqdm, scikit-image,
pytest): no step imports the notebook stack. `--dry-run` runs every step at tiny sizes on the CPU
under an import guard that refuses the packages the GPU image lacks (:data:`IMAGE_LACKS`, or the
comma-separated list in GPU_CHECK_REFUSE) and writes each refused import, with where it came
from, to DIR/refused-imports.txt (what the test suite runs and checks is empty).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOTE_KEYS = ("note", "blind_to")  # a step's words on what it cannot show: listed under the summary's table
STEPS = ("env", "data", "cuda_tests", "race", "census", "threads", "bench", "demo", "a1_free", "a1_capped", "a3_jpeg")
JPEGS = 4096  # the generated folder every step shares, written once by the data step
TIMM_FLOOR = (1, 0, 31)  # older Lamb: host syncs (1.0.9-1.0.11) or ~2,500 launches a step (1.0.12-1.0.30)
# What the GPU machine's image does not hold (the device tool's package list of 2026-11-17): a step that imports
# one fails there. The dry run refuses them.
IMAGE_LACKS = ("plotly", "papermill", "jupyter", "jupyterlab", "jupyter_client", "jupyter_core", "jupyter_server",
               "ipykernel", "IPython", "ipywidgets", "anywidget", "kaleido", "nbformat", "nbconvert", "submitit",
               "playwright")


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.0.31' -> (1, 0, 31); '1.1.0.dev0' -> (1, 1, 0); '1.0.9+local' -> (1, 0, 9)."""
    parts = []
    for part in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def timm_ok(version: str) -> bool:
    return version_tuple(version) >= TIMM_FLOOR


class ImportGuard:
    """A meta-path finder that refuses `names` (top-level packages) and logs each refusal with its importer."""

    def __init__(self, names, log: Path, step: str):
        self.names, self.log, self.step = set(names), log, step

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.names:
            return None
        frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-4:][::-1])
        with open(self.log, "a") as fh:
            fh.write(f"{self.step}: import {name} ({where})\n")
        raise ImportError(f"{name} is not on the GPU machine's image (gpu_check's import guard)")


def _guard_imports(out: Path, step: str) -> None:
    refuse = os.environ.get("GPU_CHECK_REFUSE")
    names = [n for n in refuse.split(",") if n] if refuse is not None else IMAGE_LACKS
    for name in names:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, ImportGuard(names, out / "refused-imports.txt", step))


def _device(args):
    import torch

    if args.dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run on a CPU")
    return torch.device("cuda")


def _jpegs(args) -> Path:
    from rsbkit.workbook.bench import write_jpegs

    n = 96 if args.dry_run else JPEGS
    return write_jpegs(Path(args.out) / "data" / f"jpegs-{n}", n)  # the folder rsbkit bench --cache out/data uses


def _train(args, recipe, data, name: str, **settings) -> dict:
    from rsbkit.core.train import train

    device = _device(args)
    lines: list[str] = []
    t0 = time.perf_counter()
    result = train(recipe, data, Path(args.out) / "runs" / name, device=device, progress="none", log=lines.append,
                   **settings)
    (Path(args.out) / f"{name}.train.log").write_text("\n".join(lines) + "\n")
    res = result["resolved"]
    return dict(top1=result["final_top1"], imgs_per_s=result["imgs_per_s"], peak_mem_mb=result["peak_mem_mb"],
                wall_s=round(time.perf_counter() - t0, 1), micro_batch=res["micro_batch"], accum_steps=res["accum_steps"],
                input=res["input"], workers=res["workers"], precision=res["precision"],
                fallback=[line for line in lines if "out of memory" in line])


# ---------------------------------------------------------------- the steps


def step_env(args) -> dict:
    import resource

    import timm
    import torch
    import torchvision

    out = dict(python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
               timm=timm.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               cpus=len(os.sched_getaffinity(0)), ulimit_n=resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    out["dev_shm_free_gb"] = round(shm.f_bavail * shm.f_frsize / 2**30, 1) if shm else None
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["nvidia_smi"] = f"not run: {exc}"
    out["timm_ok"] = timm_ok(timm.__version__)  # gpu_check.sh stops before the steps when it is not
    out["timm_from"] = str(Path(timm.__file__).parent)
    return out


def step_data(args) -> dict:
    """The JPEG folder the other steps share: written once (scikit-image's photos, else the embedded images)."""
    folder = _jpegs(args)
    return dict(folder=str(folder), source=(folder / "SOURCE").read_text().strip())


def step_cuda_tests(args) -> dict:
    """The CUDA-only tests of the input path (they skip without CUDA; the dry run still collects and runs the file, with
    pytest's xdist plugin off, as an image without it would)."""
    import torch

    try:
        import pytest  # noqa: F401
    except ImportError:
        return dict(status="skipped", why="pytest is not installed here; the race, census and ordering steps check the same on CUDA")
    cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-p", "no:xdist",
           "tests/core/test_input.py", "tests/core/test_input_faults.py", "-k", "cuda or wait or ahead or thread or stream"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    (Path(args.out) / "cuda_tests.pytest.log").write_text(res.stdout + res.stderr)
    last = (res.stdout.strip().splitlines() or [""])[-1]
    status = "ok" if res.returncode == 0 else "failed"
    if status == "ok" and not torch.cuda.is_available():
        return dict(status="ok", summary=last, note="no CUDA device: the CUDA-only tests skipped, the rest ran")
    return dict(status=status, summary=last)


def _race(fill_and_read, write, trials: int) -> int:
    """How many of `trials` reads saw bytes they did not write: each time a block is filled (`fill_and_read` returns
    it and the sum it must have), a ~10 ms kernel queued before a sum of it, the block freed, then `write` run at
    once (it may take the freed block)."""
    import torch

    bad = 0
    for _ in range(trials):
        x, expected = fill_and_read()
        torch.cuda._sleep(20_000_000)  # the sum runs after this: the block stays in use on the GPU for ~10 ms
        total = x.sum(dtype=torch.int64)
        del x  # the allocator may hand the block out again at once, to work on the same stream
        write()
        bad += int(total.item()) != expected
    return bad


def step_race(args) -> dict:
    """pytorch/vision#9606: nvJPEG writes its outputs, allocated on the current stream, without waiting for it. The
    probe frees a block that queued work still reads and decodes at once; a read that saw other bytes is a race.
    The block is sized like the first decoded image, so it sits in the caching allocator's small pool with the
    decoded images (a block of another pool is never reused by them, and every count would read 0). Four
    counts: a positive control (the same block reused by an allocation on this stream and written from another
    stream without waiting: must be caught, or the probe can show nothing), torchvision's decode_jpeg as it is,
    and rsbkit's decode_images twice. rsbkit decodes on a stream of its own, whose pool never holds the caller's
    freed block, so its first count (the caller's block) reads 0 by construction; the second is the one that can
    fail: a decoded image itself, read by queued work on the caller's stream, freed, and the next batch decoded
    at once (its record_stream must keep the block from the decode). Status ok only when the control was caught
    and both of rsbkit's counts are 0."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from rsbkit.core.augment import decode_images

    if not torch.cuda.is_available():
        return dict(status="skipped", why="no CUDA device")
    folder = _jpegs(args)
    files = sorted((folder / "train").rglob("*.JPEG"))[:64]
    encoded = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    cuda = torch.device("cuda")
    first = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=cuda)[0].numel()  # bytes of the first output
    torch.cuda.synchronize()
    small_pool = first <= 2**20
    other = torch.cuda.Stream()
    trials = 10 if args.quick else 40

    def block():
        return torch.full((first,), 7, dtype=torch.uint8, device=cuda), 7 * first

    def decoded():  # an image rsbkit decoded, and its sum once the decode has landed
        x = decode_images(encoded, cuda)[0][0]
        return x, int(x.sum(dtype=torch.int64).item())

    def control():
        y = torch.empty(first, dtype=torch.uint8, device=cuda)  # the freed block, handed out on this stream
        with torch.cuda.stream(other):
            y.fill_(3)  # ... written from another stream that does not wait: what nvJPEG does

    out = dict(block_bytes=first, small_pool=small_pool, trials=trials)
    out["control_corrupted"] = f"{_race(block, control, trials)}/{trials}"
    out["torchvision_corrupted"] = f"{_race(block, lambda: decode_jpeg(encoded, mode=ImageReadMode.RGB, device=cuda), trials)}/{trials}"
    out["rsbkit_corrupted"] = f"{_race(block, lambda: decode_images(encoded, cuda), trials)}/{trials}"
    out["rsbkit_outputs_corrupted"] = f"{_race(decoded, lambda: decode_images(encoded, cuda), trials)}/{trials}"
    torch.cuda.synchronize()
    caught = not out["control_corrupted"].startswith("0/")
    out["control_caught"] = caught
    if not caught:
        out["status"] = "inconclusive"
        out["why"] = "the positive control was not caught: this probe cannot show the race here, so rsbkit's 0 proves nothing"
    else:
        clean = out["rsbkit_corrupted"].startswith("0/") and out["rsbkit_outputs_corrupted"].startswith("0/")
        out["status"] = "ok" if clean else "failed"
    return out


# The census's threshold: the training thread may sync at most this often per optimizer step (syncs that grow with the
# steps, over the extra steps of the longer run). rsbkit's step has none inside the loop (the loss is checked every
# `check_every` steps, which the census sets beyond its runs); 0.5 fails a sync in every step or every other one,
# and lets the counts' rounding (1 sync over 8 extra steps reads 0.125) pass.
SYNCS_PER_STEP_LIMIT = 0.5
CENSUS_BLIND_TO = ("it counts only syncs that pass through c10 (`.item()`, `.cpu()`, `.tolist()`, `nonzero`, a copy to the "
                   "host, `Stream.synchronize()`): not `torch.cuda.synchronize()`, `Event.synchronize()`, a non_blocking "
                   "copy from pageable memory, NCCL's waits, nor what an extension calls in CUDA directly: torchvision's "
                   "decode_jpegs_cuda runs cudaStreamSynchronize on its own stream before and after each batch, under one "
                   "process-wide mutex, unseen here")


class SyncCensus:
    """Counts CUDA's sync debug warnings ('called a synchronizing CUDA operation', torch.cuda.set_sync_debug_mode('warn'))
    by (thread, call site) while in use as a context manager. :meth:`control` makes one deliberate sync in this thread
    and one in a thread of its own and returns how many the census saw: fewer than two and every count it made reads
    0 whatever ran (the mode was off, or another handler took the warnings): the census is blind. `sync` makes the
    control's sync (default: a CUDA tensor read back to the host; a test passes its own)."""

    def __init__(self, device, sync=None):
        self.device, self.seen, self.lock = device, Counter(), threading.Lock()
        self.sync = sync or self._read_back

    def _read_back(self):
        import torch

        torch.ones(1, device=self.device).item()  # a copy to the host: c10 reports it

    def record(self, message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return self.real(message, category, filename, lineno, file, line)
        frames = [f for f in traceback.extract_stack()[:-1] if "/rsbkit/" in f.filename or "/timm/" in f.filename]
        site = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else f"{Path(filename).name}:{lineno}"
        with self.lock:
            self.seen[(threading.current_thread().name, site)] += 1

    def __enter__(self):
        import torch

        self.real, self.filters = warnings.showwarning, warnings.filters[:]
        warnings.showwarning = self.record
        warnings.simplefilter("always")
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning, warnings.filters[:] = self.real, self.filters

    def control(self) -> int:
        """Syncs seen of the two made: one here, one in a thread named census-control (not kept in the counts)."""
        with self.lock:
            before = Counter(self.seen)
        self.sync()
        other = threading.Thread(target=self.sync, name="census-control")
        other.start()
        other.join()
        with self.lock:
            seen = sum((self.seen - before).values())
            self.seen = before
        return seen


def census_table(short: Counter, long: Counter, steps: tuple[int, int]) -> dict:
    """Per (thread, site): syncs per step (the growth from the short run to the long one, over the extra steps) and
    one-off syncs (the rest of the short run)."""
    a, b = steps
    table = {}
    for key in sorted(set(short) | set(long)):
        per_step = (long[key] - short[key]) / (b - a)
        table[f"{key[0]} {key[1]}"] = dict(per_step=round(per_step, 3), one_off=round(short[key] - a * per_step, 2))
    return table


def census_verdict(controls: list[int], per_step: dict[str, float]) -> dict:
    """ok, or failed with why: a control the census did not see (each run's two), or a training thread syncing
    per step at or above :data:`SYNCS_PER_STEP_LIMIT`."""
    if any(c < 2 for c in controls):
        return dict(status="failed", why=f"census blind: of the control's 2 deliberate syncs per run it counted {controls}, "
                                         "so its 0s prove nothing")
    over = {k: v for k, v in per_step.items() if v >= SYNCS_PER_STEP_LIMIT}
    if over:
        return dict(status="failed", why="the training thread syncs per step: " + ", ".join(f"{k} {v}" for k, v in over.items())
                    + f" (limit {SYNCS_PER_STEP_LIMIT}); the sites are in the table")
    return dict(status="ok")


def step_census(args) -> dict:
    """Every host-device sync of training, by thread and call site (CUDA's sync debug mode 'warn'), split into
    per-step syncs (those that grow with the steps: two runs of `short` and `long` steps, the difference over
    the extra steps) and one-off ones (model.to, checkpoints, evaluation: the rest of the short run). A control
    before and after each run (two deliberate syncs, :meth:`SyncCensus.control`) must be counted, or the step fails
    as blind; it fails too when the training thread (MainThread) syncs :data:`SYNCS_PER_STEP_LIMIT` times a step or
    more. What it cannot see: :data:`CENSUS_BLIND_TO`. On a CPU there is no sync to count: the control is a stand-in
    warning, so the dry run checks the counting and the verdict, not CUDA."""
    from rsbkit.core.recipes import A3, smoke

    device = _device(args)
    folder = _jpegs(args)
    res, batch = (32, 16) if args.dry_run else (160, 256)
    recipe = smoke(A3, batch_size=batch).replace(model="resnet10t" if args.dry_run else "resnet50", train_res=res,
                                                 test_res=res, epochs=1)
    short, long = (2, 4) if args.dry_run else (2, 6) if args.quick else (4, 12)
    stand_in = None if device.type == "cuda" else lambda: warnings.warn("called a synchronizing CUDA operation (a stand-in)",
                                                                        stacklevel=2)
    census = SyncCensus(device, stand_in)
    out = dict(steps=f"{short} and {long}", limit_per_step=SYNCS_PER_STEP_LIMIT, blind_to=CENSUS_BLIND_TO)
    controls, training = [], {}
    for data, name in ((folder, "jpeg folder"), ("default", "arrays")):
        counts = {}
        for steps in (short, long):
            census.seen.clear()
            with census:
                controls.append(census.control())
                _train(args, recipe, data, f"census-{name.replace(' ', '-')}-{steps}", workers=None,
                       limit_train=steps * batch, limit_val=batch, check_every=10**6)
                controls.append(census.control())
            counts[steps] = Counter(census.seen)
        table = census_table(counts[short], counts[long], (short, long))
        out[f"{name}: sites"] = table
        main = [v for k, v in table.items() if k.startswith("MainThread ")]
        training[name] = out[f"{name}: training thread syncs per step"] = round(sum(v["per_step"] for v in main), 3)
        out[f"{name}: one-off syncs"] = round(sum(v["one_off"] for v in table.values()), 2)
    out["control_seen"] = controls
    out.update(census_verdict(controls, training))
    if device.type != "cuda":
        out["note"] = "CPU: no sync to count; the control was a stand-in warning (the counting and the verdict ran)"
    return out


def step_threads(args) -> dict:
    """The device input path alone (JPEG folder: nvJPEG decode, crops, A3's RandAugment, normalisation) with 1, 2 and
    4 input threads (`input_threads`), images/s in a steady state: one epoch over the file list repeated
    (rsbkit.workbook.bench.at_least), the batches made before the clock starts taken first (2 of warm-up, the
    input threads' queue of 2 per thread, the loader's workers x prefetch), then at least 40 batches timed
    (rsbkit.workbook.bench.steady_rate). benchmarks/input_thread_estimate.py estimated 7,000 to 9,000 images/s of
    augmentation for one thread from a CPU profile, decoding aside; A3's model step at 10,000 images/s needs 1.1 to
    1.4 threads' work before decoding. torchvision's decode_jpegs_cuda holds one process-wide mutex and synchronizes
    its stream around each batch, so decoding is serial whatever the threads: more threads overlap the rest."""
    import torch

    from rsbkit.core.data import TrainInput, load_data
    from rsbkit.core.devices import default_workers
    from rsbkit.core.recipes import A3, plan_batch
    from rsbkit.workbook.bench import at_least, steady_rate

    device = _device(args)
    res, batch, measured = (32, 16, 6) if args.dry_run else (160, 256, 40)
    recipe = A3.replace(train_res=res, batch_size=batch, lr_base_size=batch)
    workers = 1 if args.dry_run else default_workers(device)
    prefetch = 4  # TrainInput's default
    data = load_data(_jpegs(args))
    out = dict(res=res, batch=batch, workers=workers, batches_timed=measured,
               note="decode_jpegs_cuda decodes one batch at a time in the process (a mutex, a stream sync around each): "
                    "more threads overlap augmentation, not decoding")
    for threads in (1, 2) if args.dry_run else (1, 2, 4):
        skip = 2 + 2 * threads + workers * prefetch
        source = TrainInput(at_least(data, (skip + measured + 1) * batch), recipe, plan_batch(recipe),
                            augment_on="device", decode_on="device", device=device, workers=workers,
                            pin_memory=device.type == "cuda", prefetch=prefetch, threaded=True, threads=threads)
        images, seconds = steady_rate(source.epoch(threads, torch.Generator(device).manual_seed(0)), skip, measured, device)
        out[f"threads_{threads}_images_per_s"] = round(images / seconds, 1)
        out[f"threads_{threads}_batches_skipped"] = skip
        del source
    return out


def _bench_record(out: Path):
    """rsbkit bench's JSON under DIR/bench (written after each entry: a killed bench leaves what it measured), or None."""
    files = sorted((out / "bench").glob("*.json"))
    return json.loads(files[-1].read_text()) if files else None


def step_bench(args) -> dict:
    import contextlib
    import io

    from rsbkit.__main__ import main as rsbkit_main

    argv = ["bench", *(["--quick", "--device", "cpu"] if args.dry_run else ["--steps", "10"] if args.quick else []),
            "--out", str(Path(args.out) / "bench"), "--cache", str(Path(args.out) / "data")]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            rc = rsbkit_main(argv)
    finally:
        (Path(args.out) / "bench.log").write_text(printed.getvalue())
    record = _bench_record(Path(args.out))
    if rc != 0 or record is None or not record.get("complete"):
        measured = ", ".join(e["name"] for e in record["entries"]) if record else "none"
        return dict(status="failed", why=f"rsbkit bench exited {rc}; entries measured: {measured}")
    return dict({e["name"]: e["images_per_s"] for e in record["entries"]}, **record["ratios"])


def step_demo(args) -> dict:
    from rsbkit.core.recipes import load_recipe

    recipe = load_recipe(ROOT / "params" / "demo.yaml").replace(epochs=1 if args.quick or args.dry_run else 2)
    limits = dict(limit_train=512, limit_val=256) if args.dry_run else {}
    return _train(args, recipe, "default", "demo", **limits)


def _a1_recipe(args):
    from rsbkit.core.recipes import A1

    if args.dry_run:
        return A1.replace(model="resnet10t", train_res=32, test_res=32, batch_size=64, lr_base_size=64, epochs=1,
                          warmup_epochs=0), "default"
    return A1.replace(epochs=1, warmup_epochs=0), _jpegs(args)


def _a1(args, name: str, cap_bytes: int | None = None) -> dict:
    import torch

    recipe, data = _a1_recipe(args)
    if cap_bytes is not None and torch.cuda.is_available() and not args.dry_run:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(cap_bytes / total)  # before any allocation of this process
    steps = 2
    return _train(args, recipe, data, name, limit_train=steps * recipe.batch_size, limit_val=256, stop_after=1)


def step_a1_free(args) -> dict:
    """A1 at 224 px as it plans itself: its batch of 2048 in 4 forward passes of 512 (3 repeats of each image need at
    least 3 passes, so that no two copies share a BatchNorm batch: rsbkit.core.recipes.split_batch); its peak memory
    sets a1_capped's cap."""
    from rsbkit.core.recipes import plan_batch

    out = _a1(args, "a1-free")
    out["planned_micro_batch"] = plan_batch(_a1_recipe(args)[0]).micro_batch
    return out


def memory_cap(free: dict, planned_micro_batch: int) -> int:
    """The bytes a1_capped may allocate: half of the peak that a1_free measured at its micro-batch (A1's planned 512,
    or less if a1_free itself fell back). The planned micro-batch cannot fit under it, so the out-of-memory fallback
    must act; half the micro-batch needs about half the activations, and a quarter fits with room for the weights,
    LAMB's state and the batches in flight. A fraction of the GPU would not do: 20% of an H200 is 28 GiB, more than
    A1's 512 at 224 px takes."""
    if free.get("status") not in ("ok", None) or not free.get("peak_mem_mb") or not free.get("micro_batch"):
        raise RuntimeError(f"a1_free gave no peak memory to set the cap from (status {free.get('status')}, "
                           f"{free.get('why', 'no peak_mem_mb')}): run a1_free first")
    if free["micro_batch"] > planned_micro_batch:
        raise RuntimeError(f"a1_free ran micro-batch {free['micro_batch']}, more than the {planned_micro_batch} planned")
    return int(free["peak_mem_mb"] * 2**20 / 2)


def step_a1_capped(args) -> dict:
    """A1 (4 forward passes of 512 per step of 2048) under a memory cap in bytes (:func:`memory_cap`: half of
    a1_free's measured peak at 512): the out-of-memory fallback must halve the micro-batch until a step fits; the
    step fails unless it did, and states what it settled on. On a CPU the cap is computed, not applied."""
    import torch

    from rsbkit.core.recipes import plan_batch

    path = Path(args.out) / "a1_free.json"
    free = json.loads(path.read_text()) if path.is_file() else dict(status="not run", why="no a1_free.json")
    planned = plan_batch(_a1_recipe(args)[0]).micro_batch
    cap = memory_cap(free, planned)
    applied = torch.cuda.is_available() and not args.dry_run
    out = _a1(args, "a1-capped", cap)
    out.update(planned_micro_batch=planned, cap_mb=round(cap / 2**20, 1), cap_applied=applied,
               free_peak_mb=free["peak_mem_mb"], settled_micro_batch=out["micro_batch"])
    if applied and not (out["fallback"] and out["micro_batch"] < planned):
        out.update(status="failed", why=f"the cap of {out['cap_mb']} MB did not force the out-of-memory fallback "
                                        f"(micro-batch {out['micro_batch']} of {planned} planned): nothing was shown")
    return out


def step_a3_jpeg(args) -> dict:
    from rsbkit.core.recipes import A3

    if args.dry_run:
        recipe = A3.replace(model="resnet10t", train_res=32, test_res=32, batch_size=32, lr_base_size=32, epochs=1,
                            warmup_epochs=0, eval_on="device")
        return _train(args, recipe, _jpegs(args), "a3-jpeg", limit_val=32)
    # batch 2048 at 160 px on the JPEG folder: 2 steps, nvJPEG; validation decoded and resized on the GPU too
    recipe = A3.replace(epochs=1, warmup_epochs=0, eval_on="device")
    return _train(args, recipe, _jpegs(args), "a3-jpeg", limit_val=512)


# ---------------------------------------------------------------- summary


def _step_results(out: Path) -> dict:
    return {name: json.loads((out / f"{name}.json").read_text()) if (out / f"{name}.json").is_file()
            else dict(status="not run") for name in STEPS}


def summary(out: Path, results: dict | None = None) -> str:
    """The steps as one table, then the notes of the steps (what a probe cannot see), bench's entries (those
    measured, when it was killed part way), each table a step returned (the census's per-site syncs), then the imports
    the dry run's guard refused (none, or a step reached a package the GPU image lacks)."""
    results = results or _step_results(out)
    rows = ["| step | status | s | limit s | figures |", "|---|---|---:|---:|---|"]
    notes, tables = [], []
    for name, r in results.items():
        if r["status"] == "not run":
            rows.append(f"| {name} | not run | | | |")
            continue
        figures = {k: v for k, v in r.items() if k not in ("status", "seconds", "why", "limit_s", *NOTE_KEYS)
                   and not isinstance(v, dict)}
        text = r.get("why") or ", ".join(f"{k} {v}" for k, v in figures.items())
        rows.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | {r.get('limit_s', '')} | {text[:400]} |")
        notes += [f"- {name}, {key}: {r[key]}" for key in NOTE_KEYS if r.get(key)]
        for key, value in r.items():
            if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                columns = list(dict.fromkeys(c for v in value.values() for c in v))
                tables += ["", f"**{name}: {key}**", "", "| site | " + " | ".join(columns) + " |",
                           "|---|" + "---:|" * len(columns)]
                tables += [f"| {site} | " + " | ".join(str(v.get(c, "")) for c in columns) + " |" for site, v in value.items()]
    counts = Counter(r["status"] for r in results.values())
    order = ("ok", "failed", "inconclusive", "skipped", "not run")
    head = ["", ", ".join(f"{counts[k]} {k}" for k in sorted(counts, key=lambda k: order.index(k) if k in order else 9))]
    if notes:
        head += ["", "**notes**", "", *notes]
    record = _bench_record(out)
    if record:
        head += ["", f"**bench: {record['device']}, {'complete' if record.get('complete') else 'stopped part way'}**", "",
                 "| entry | images/s | precision | input | workers |", "|---|---:|---|---|---:|"]
        head += [f"| {e['name']} | {e['images_per_s']} | {e['precision']} | {e.get('input', '')} | {e['workers']} |"
                 for e in record["entries"]]
    refused = out / "refused-imports.txt"
    if refused.is_file():
        tables += ["", "**imports refused by the dry run's guard** (packages the GPU image lacks)", "", "```",
                   refused.read_text().rstrip(), "```"]
    return "\n".join(rows + head + tables)


# ---------------------------------------------------------------- what comes back

# Only what a command writes under $OUT comes back from a lent GPU machine: at most 8 files of 16 MiB, 2 folders
# down. The check leaves these three in DIR (and in $OUT, where set), rewritten after every step.
RESULTS = ("summary.md", "results.json", "logs.tar.gz")
LOGS_LIMIT = 15 * 2**20  # bytes of logs.tar.gz: under the 16 MiB a file may take
LOGS_SKIP_DIRS = {"data", "site", "__pycache__"}  # the generated JPEGs, the timm installed from .gpu-wheels/
LOGS_SKIP_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".safetensors", ".bin", ".part", ".JPEG", ".jpg")


def write_logs(out: Path, path: Path, limit: int = LOGS_LIMIT) -> list[str]:
    """DIR's logs, JSONs, run records and summaries as a gzipped tar at `path`, under `limit` bytes: checkpoints, the
    generated JPEGs, the timm installed from .gpu-wheels/ and the three results left out; if the archive is still
    over `limit`, its largest files are left out one by one. Returns what was left out for size (also listed in
    the archive's LEFT-OUT.txt)."""
    import io
    import tarfile

    files = sorted(f for f in out.rglob("*") if f.is_file() and not f.is_symlink()
                   and not LOGS_SKIP_DIRS & set(f.relative_to(out).parts[:-1])
                   and not f.name.endswith(LOGS_SKIP_SUFFIXES) and f.relative_to(out).as_posix() not in RESULTS)
    left: list[str] = []
    part = path.with_name(path.name + ".part")
    while True:
        with tarfile.open(part, "w:gz") as tar:
            for f in files:
                tar.add(f, arcname=f"{out.name}/{f.relative_to(out).as_posix()}")
            if left:
                text = ("left out to keep the archive under its limit:\n" + "\n".join(left) + "\n").encode()
                info = tarfile.TarInfo(f"{out.name}/LEFT-OUT.txt")
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text))
        if part.stat().st_size < limit or not files:
            break
        largest = max(files, key=lambda f: f.stat().st_size)
        files.remove(largest)
        left.append(f"{largest.relative_to(out).as_posix()} ({largest.stat().st_size:,} bytes)")
    part.replace(path)
    return left


def collect(out: Path, to: Path | None = None, mode: str = "") -> tuple[str, dict]:
    """Write DIR/summary.md, DIR/results.json (every step's JSON, bench's record, what was refused or left out) and
    DIR/logs.tar.gz; copy the three into `to` (the device tool's $OUT), nothing else. Returns (the summary, the
    results)."""
    import shutil

    steps = _step_results(out)
    text = summary(out, steps) + "\n"
    left = write_logs(out, out / "logs.tar.gz")
    stopped = out / "check-stopped.txt"
    refused = out / "refused-imports.txt"
    results = dict(check=dict(out=str(out), mode=mode, written=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              stopped=stopped.read_text().strip() if stopped.is_file() else None,
                              statuses=dict(Counter(r["status"] for r in steps.values()))),
                   steps=steps, bench=_bench_record(out),
                   refused_imports=refused.read_text().splitlines() if refused.is_file() else [],
                   left_out_of_logs=left)
    for name, content in (("summary.md", text), ("results.json", json.dumps(results, indent=1, default=str) + "\n")):
        (out / f"{name}.part").write_text(content)
        (out / f"{name}.part").replace(out / name)
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        for name in RESULTS:
            shutil.copyfile(out / name, to / f".{name}.part")
            (to / f".{name}.part").replace(to / name)
    return text, results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=(*STEPS, "summary", "collect", "timm-floor"))
    p.add_argument("--out")
    p.add_argument("--to", help="collect: also copy summary.md, results.json and logs.tar.gz here (the device tool's $OUT)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="this step's time limit, seconds (recorded in its JSON)")
    args = p.parse_args(argv)
    if args.step == "timm-floor":
        import timm

        print(f"timm {timm.__version__} at {Path(timm.__file__).parent}; rsbkit's floor {'.'.join(map(str, TIMM_FLOOR))}")
        return 0 if timm_ok(timm.__version__) else 1
    if args.out is None:
        p.error("--out DIR is needed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "summary":
        print(summary(out))
        return 0
    if args.step == "collect":
        text, results = collect(out, Path(args.to) if args.to else None,
                                " ".join(m for m, on in (("quick", args.quick), ("dry-run", args.dry_run)) if on))
        print(text, end="")
        return 1 if results["check"]["stopped"] or any(r["status"] == "failed" for r in results["steps"].values()) else 0
    if args.dry_run:
        _guard_imports(out, args.step)
    t0 = time.perf_counter()
    try:
        result = globals()[f"step_{args.step}"](args)
        result.setdefault("status", "ok")
    except Exception as exc:  # a failed step is a row of the summary; the next step still runs
        traceback.print_exc()
        result = dict(status="failed", why=f"{type(exc).__name__}: {exc}"[:400])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["limit_s"] = args.limit
    (out / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, default=str)[:2000])
    return 0 if result["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
