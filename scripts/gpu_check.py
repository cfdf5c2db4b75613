"""One step of the GPU check (scripts/gpu_check.sh runs them all, each under `timeout`).

    python scripts/gpu_check.py STEP --out DIR [--quick] [--dry-run]
    python scripts/gpu_check.py summary --out DIR

Each step writes DIR/STEP.json ({"status": ok | failed | skipped, "why": ..., figures}); `summary`
prints one table of them. Only torch, torchvision and timm (with its own dependencies) are needed:
what needs more is skipped, saying so. `--dry-run` runs every step at tiny sizes on the CPU with
pandas, tqdm and scikit-image hidden, as on a bare GPU machine (what the test suite runs).
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

STEPS = ("env", "data", "cuda_tests", "race", "census", "bench", "demo", "a1_free", "a1_capped", "a3_jpeg")
JPEGS = 4096  # the generated folder every step shares, written once by the data step
BARE = ("pandas", "tqdm", "skimage")  # not on a GPU machine that has only torch, torchvision and timm


def _hide_extras() -> None:
    for name in BARE:
        sys.modules[name] = None  # import now raises ImportError


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
    major, minor, patch = (int(x) for x in timm.__version__.split(".")[:3])
    out["timm_ok"] = (major, minor, patch) >= (1, 0, 31)  # older Lamb: host syncs or ~2,500 launches per step
    return out


def step_data(args) -> dict:
    """The JPEG folder the other steps share: written once (scikit-image's photos, else the embedded images)."""
    folder = _jpegs(args)
    return dict(folder=str(folder), source=(folder / "SOURCE").read_text().strip())


def step_cuda_tests(args) -> dict:
    import torch

    if not torch.cuda.is_available():
        return dict(status="skipped", why="no CUDA device")
    try:
        import pytest  # noqa: F401
    except ImportError:
        return dict(status="skipped", why="pytest is not installed here; the race, census and ordering steps check the same on CUDA")
    # tests/core/test_input.py holds the CUDA-only tests (test_augment.py needs scikit-image's photos to import)
    cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "tests/core/test_input.py",
           "-k", "cuda or wait or ahead"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    (Path(args.out) / "cuda_tests.log").write_text(res.stdout + res.stderr)
    return dict(status="ok" if res.returncode == 0 else "failed", summary=(res.stdout.strip().splitlines() or [""])[-1])


def step_race(args) -> dict:
    """pytorch/vision#9606: free a tensor that a slow queued kernel still reads, decode at once; count the sums that
    saw other bytes. torchvision's decode_jpeg as it is, then rsbkit's decode_images (which waits for the stream)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from rsbkit.core.augment import decode_images

    if not torch.cuda.is_available():
        return dict(status="skipped", why="no CUDA device")
    folder = _jpegs(args)
    files = sorted((folder / "train").rglob("*.JPEG"))[:64]
    encoded = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    cuda = torch.device("cuda")
    n = sum(im.numel() for im in decode_jpeg(encoded, mode=ImageReadMode.RGB, device=cuda))
    trials = 10 if args.quick else 40
    out = {}
    for name, decode in (("torchvision", lambda: decode_jpeg(encoded, mode=ImageReadMode.RGB, device=cuda)),
                         ("rsbkit", lambda: decode_images(encoded, cuda))):
        bad = 0
        for _ in range(trials):
            x = torch.full((n,), 7, dtype=torch.uint8, device=cuda)
            torch.cuda._sleep(20_000_000)
            total = x.sum(dtype=torch.int64)
            del x
            decode()
            bad += int(total.item()) != 7 * n
        out[f"{name}_corrupted"] = f"{bad}/{trials}"
    out["status"] = "ok" if out["rsbkit_corrupted"].startswith("0/") else "failed"
    return out


def step_census(args) -> dict:
    """Every host-device sync of one training epoch, counted by thread and call site (CUDA's sync debug mode 'warn')."""
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
    out = {}
    for data, name in ((folder, "jpeg folder"), ("default", "arrays")):
        seen.clear()
        warnings.showwarning = record
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            _train(args, recipe, data, f"census-{name.replace(' ', '-')}", workers=None,
                   limit_train=8 * batch, limit_val=batch, check_every=10**6)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = real
        out[name] = {f"{thread} {site}": n for (thread, site), n in seen.most_common()}
        out[f"{name}: training thread syncs"] = sum(n for (thread, _), n in seen.items() if thread == "MainThread")
    if device.type != "cuda":
        out["note"] = "CPU: no sync to count (the steps ran)"
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
    return _a1(args, "a1-capped", 0.2)


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
    rows = ["| step | status | s | figures |", "|---|---|---:|---|"]
    for name in STEPS:
        path = out / f"{name}.json"
        if not path.is_file():
            rows.append(f"| {name} | not run (or killed by its timeout) | | |")
            continue
        r = json.loads(path.read_text())
        figures = {k: v for k, v in r.items() if k not in ("status", "seconds", "why") and not isinstance(v, dict)}
        text = r.get("why") or ", ".join(f"{k} {v}" for k, v in figures.items())
        rows.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | {text[:400]} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=(*STEPS, "summary"))
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "summary":
        print(summary(out))
        return 0
    if args.dry_run:
        _hide_extras()
    t0 = time.perf_counter()
    try:
        result = globals()[f"step_{args.step}"](args)
        result.setdefault("status", "ok")
    except Exception as exc:  # a failed step is a row of the summary; the next step still runs
        traceback.print_exc()
        result = dict(status="failed", why=f"{type(exc).__name__}: {exc}"[:400])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, default=str)[:2000])
    return 0 if result["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
