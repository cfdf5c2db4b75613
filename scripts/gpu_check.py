"""One step of the GPU check (scripts/gpu_check.sh runs them all, each under `timeout`).

    python scripts/gpu_check.py STEP --out DIR [--quick] [--dry-run]
    python scripts/gpu_check.py summary --out DIR
    python scripts/gpu_check.py timm-floor          # exit 0 when this timm is at or above rsbkit's floor

Each step writes DIR/STEP.json ({"status": ok | failed | skipped | inconclusive, "why": ..., figures});
`summary` prints one table of them, then each step's per-site tables. It needs only what the GPU
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
    """How many of `trials` reads saw bytes they did not write: each time a block is filled with 7s, a ~10 ms kernel
    queued before a sum of it, the block freed, then `write` run at once (it may take the freed block)."""
    import torch

    bad = 0
    for _ in range(trials):
        x, n = fill_and_read()
        torch.cuda._sleep(20_000_000)  # the sum runs after this: the block stays in use on the GPU for ~10 ms
        total = x.sum(dtype=torch.int64)
        del x  # the allocator may hand the block out again at once, to work on the same stream
        write()
        bad += int(total.item()) != 7 * n
    return bad


def step_race(args) -> dict:
    """pytorch/vision#9606: nvJPEG writes its outputs, allocated on the current stream, without waiting for it. The
    probe frees a block that queued work still reads and decodes at once; a read that saw other bytes is a race.
    The block is sized like the first decoded image, so it sits in the caching allocator's small pool with the
    decoded images (a block of another pool is never reused by them, and every count would read 0). Three
    counts: a positive control (the same block reused by an allocation on this stream and written from another
    stream without waiting: must be caught, or the probe can show nothing), torchvision's decode_jpeg as it is,
    and rsbkit's decode_images. Status ok only when the control was caught and rsbkit's count is 0."""
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
        return torch.full((first,), 7, dtype=torch.uint8, device=cuda), first

    def control():
        y = torch.empty(first, dtype=torch.uint8, device=cuda)  # the freed block, handed out on this stream
        with torch.cuda.stream(other):
            y.fill_(3)  # ... written from another stream that does not wait: what nvJPEG does

    out = dict(block_bytes=first, small_pool=small_pool, trials=trials)
    out["control_corrupted"] = f"{_race(block, control, trials)}/{trials}"
    out["torchvision_corrupted"] = f"{_race(block, lambda: decode_jpeg(encoded, mode=ImageReadMode.RGB, device=cuda), trials)}/{trials}"
    out["rsbkit_corrupted"] = f"{_race(block, lambda: decode_images(encoded, cuda), trials)}/{trials}"
    torch.cuda.synchronize()
    caught = not out["control_corrupted"].startswith("0/")
    out["control_caught"] = caught
    if not caught:
        out["status"] = "inconclusive"
        out["why"] = "the positive control was not caught: this probe cannot show the race here, so rsbkit's 0 proves nothing"
    else:
        out["status"] = "ok" if out["rsbkit_corrupted"].startswith("0/") else "failed"
    return out


def step_census(args) -> dict:
    """Every host-device sync of training, by thread and call site (CUDA's sync debug mode 'warn'), split into
    per-step syncs (those that grow with the steps: two runs of `short` and `long` steps, the difference over
    the extra steps) and one-off ones (model.to, checkpoints, evaluation: the rest of the short run)."""
    import torch

    from rsbkit.core.recipes import A3, smoke

    device = _device(args)
    seen: Counter = Counter()
    real = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return real(message, category, filename, lineno, file, line)
        frames = [f for f in traceback.extract_stack()[:-1] if "/rsbkit/" in f.filename or "/timm/" in f.filename]
        site = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else f"{filename}:{lineno}"
        seen[(threading.current_thread().name, site)] += 1

    folder = _jpegs(args)
    res, batch = (32, 16) if args.dry_run else (160, 256)
    recipe = smoke(A3, batch_size=batch).replace(model="resnet10t" if args.dry_run else "resnet50", train_res=res,
                                                 test_res=res, epochs=1)
    short, long = (2, 4) if args.dry_run else (2, 6) if args.quick else (4, 12)
    out = dict(steps=f"{short} and {long}")
    for data, name in ((folder, "jpeg folder"), ("default", "arrays")):
        counts = {}
        for steps in (short, long):
            seen.clear()
            warnings.showwarning = record
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                _train(args, recipe, data, f"census-{name.replace(' ', '-')}-{steps}", workers=None,
                       limit_train=steps * batch, limit_val=batch, check_every=10**6)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
                warnings.showwarning = real
            counts[steps] = Counter(seen)
        sites = sorted(set(counts[short]) | set(counts[long]))
        table = {}
        for key in sites:
            per_step = (counts[long][key] - counts[short][key]) / (long - short)
            table[f"{key[0]} {key[1]}"] = dict(per_step=round(per_step, 2), one_off=round(counts[short][key] - short * per_step, 2))
        out[f"{name}: sites"] = table
        main = [v for k, v in table.items() if k.startswith("MainThread ")]
        out[f"{name}: training thread syncs per step"] = round(sum(v["per_step"] for v in main), 2)
        out[f"{name}: one-off syncs"] = round(sum(v["one_off"] for v in table.values()), 2)
    if device.type != "cuda":
        out["note"] = "CPU: no sync to count (the steps ran)"
    return out


def step_threads(args) -> dict:
    """The device input path alone (JPEG folder: nvJPEG decode, crops, A3's RandAugment, normalisation) with 1, 2 and
    4 input threads (`input_threads`), images/s after a warm-up. benchmarks/input_thread_estimate.py estimated
    7,000 to 9,000 images/s of augmentation for one thread from a CPU profile, decoding aside; A3's model step at
    10,000 images/s needs 1.1 to 1.4 threads' work before decoding."""
    import torch

    from rsbkit.core.data import TrainInput, load_data
    from rsbkit.core.devices import default_workers
    from rsbkit.core.recipes import A3, plan_batch

    device = _device(args)
    res, batch, measured = (32, 16, 3) if args.dry_run else (160, 256, 12)  # within one epoch of the folder (96, 4096)
    recipe = A3.replace(train_res=res, batch_size=batch, lr_base_size=batch)
    data = load_data(_jpegs(args))
    workers = 1 if args.dry_run else default_workers(device)
    out = dict(res=res, batch=batch, workers=workers)
    for threads in (1, 2) if args.dry_run else (1, 2, 4):
        source = TrainInput(data, recipe, plan_batch(recipe), augment_on="device", decode_on="device", device=device,
                            workers=workers, pin_memory=device.type == "cuda", threaded=True, threads=threads)
        batches = source.epoch(threads, torch.Generator(device).manual_seed(0))
        for _ in range(2):  # warm-up: workers start, nvJPEG and the kernels initialise
            next(batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        images = sum(len(next(batches)[0]) for _ in range(measured))
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[f"threads_{threads}_images_per_s"] = round(images / (time.perf_counter() - t0), 1)
        batches.close()
        del source
    return out


def step_bench(args) -> dict:
    import contextlib
    import io

    from rsbkit.__main__ import main as rsbkit_main

    argv = ["bench", *(["--quick", "--device", "cpu"] if args.dry_run else ["--steps", "10"] if args.quick else []),
            "--out", str(Path(args.out) / "bench"), "--cache", str(Path(args.out) / "data")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = rsbkit_main(argv)
    (Path(args.out) / "bench.log").write_text(printed.getvalue())
    if rc != 0:
        return dict(status="failed", why=f"rsbkit bench exited {rc}")
    record = json.loads(next((Path(args.out) / "bench").glob("*.json")).read_text())
    return dict({e["name"]: e["images_per_s"] for e in record["entries"]}, **record["ratios"])


def step_demo(args) -> dict:
    from rsbkit.core.recipes import load_recipe

    recipe = load_recipe(ROOT / "params" / "demo.yaml").replace(epochs=1 if args.quick or args.dry_run else 2)
    limits = dict(limit_train=512, limit_val=256) if args.dry_run else {}
    return _train(args, recipe, "default", "demo", **limits)


def _a1(args, name: str, fraction: float | None) -> dict:
    import torch

    from rsbkit.core.recipes import A1

    if args.dry_run:
        recipe = A1.replace(model="resnet10t", train_res=32, test_res=32, batch_size=64, lr_base_size=64, epochs=1,
                            warmup_epochs=0)
        data = "default"
    else:
        recipe, data = A1.replace(epochs=1, warmup_epochs=0), _jpegs(args)
    if fraction is not None and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)  # the default micro-batch no longer fits: the fallback halves it
    steps = 2
    return _train(args, recipe, data, name, limit_train=steps * recipe.batch_size, limit_val=256, stop_after=1)


def step_a1_free(args) -> dict:
    return _a1(args, "a1-free", None)


def step_a1_capped(args) -> dict:
    """A1's micro-batch 2048 under a memory cap of 20% (28 GB of an H200's 141): the out-of-memory fallback must
    halve it until a step fits; the step states what it settled on."""
    import torch

    out = _a1(args, "a1-capped", 0.2)
    out["settled_micro_batch"] = out["micro_batch"]
    if torch.cuda.is_available() and not args.dry_run and not out["fallback"]:
        out.update(status="failed", why="the cap did not force the out-of-memory fallback: nothing was shown")
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


def summary(out: Path) -> str:
    """The steps as one table, then each table a step returned (the census's per-site syncs), then the imports the
    dry run's guard refused (none, or a step reached a package the GPU image lacks)."""
    rows = ["| step | status | s | limit s | figures |", "|---|---|---:|---:|---|"]
    tables = []
    for name in STEPS:
        path = out / f"{name}.json"
        if not path.is_file():
            rows.append(f"| {name} | not run | | | |")
            continue
        r = json.loads(path.read_text())
        figures = {k: v for k, v in r.items() if k not in ("status", "seconds", "why", "limit_s") and not isinstance(v, dict)}
        text = r.get("why") or ", ".join(f"{k} {v}" for k, v in figures.items())
        rows.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | {r.get('limit_s', '')} | {text[:400]} |")
        for key, value in r.items():
            if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                columns = list(dict.fromkeys(c for v in value.values() for c in v))
                tables += ["", f"**{name}: {key}**", "", "| site | " + " | ".join(columns) + " |",
                           "|---|" + "---:|" * len(columns)]
                tables += [f"| {site} | " + " | ".join(str(v.get(c, "")) for c in columns) + " |" for site, v in value.items()]
    refused = out / "refused-imports.txt"
    if refused.is_file():
        tables += ["", "**imports refused by the dry run's guard** (packages the GPU image lacks)", "", "```",
                   refused.read_text().rstrip(), "```"]
    return "\n".join(rows + tables)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=(*STEPS, "summary", "timm-floor"))
    p.add_argument("--out")
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
