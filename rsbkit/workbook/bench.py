"""``python -m rsbkit bench``: how fast the model step, the input path and whole training steps run here.

Entries (images per second, each with its model, resolution, batch, precision,
memory layout, compile and workers):

- ``model_step_plain``: the first loop most people write: float32, NCHW, eager,
  ``loss.item()`` every step; the recipe's model, optimizer and loss on synthetic batches. torch's
  defaults stand, so on CUDA cuDNN runs its convolutions in TF32 (``torch.backends.cudnn.allow_tf32``):
  the entry's precision says so (:func:`float32_label`) rather than claiming float32;
- ``model_step``: rsbkit's step on the same batches: bf16 autocast on CUDA,
  channels_last, torch.compile when asked, no host sync inside the loop;
- ``input_loader`` / ``input_device``: the input path alone (``rsbkit.core.data.TrainInput``):
  timm's per-image transform in loader workers, or uint8 batches augmented on the device. One
  epoch over the file list repeated (:func:`at_least`), so the pipeline never drains at an
  epoch's end; the batches made before the clock starts (the workers' prefetch, the input
  thread's queue) are taken first (:func:`steady_rate`);
- ``end_to_end_loader`` / ``end_to_end_device``: ``rsbkit.train`` itself on real images
  (the second of two epochs, so loader workers are warm), evaluation excluded.

Defaults: on CUDA, A3's ingredients with ResNet-50 at 160 px, batch 256, on a folder of
JPEGs (``--data``: your ImageNet, or else a folder this command writes: scikit-image's
colour photos cropped at random and resized to ImageNet's typical 500x375, quality 90);
on CPU, the demo (``params/demo.yaml``: ResNet-18 at 32 px, batch 256, the embedded
data). ``--quick``: tiny sizes, seconds on a CPU (what the test runs).
The table is printed and written to ``benchmarks/results/<device>-<date>.json``, rewritten as each
entry finishes (``"complete": false`` until the last), so a run stopped part way keeps what it measured.
"""
from __future__ import annotations

import csv
import datetime
import json
import platform
import re
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import timm
import torch
from PIL import Image
from torch.utils.data import Subset

from ..core import __version__
from ..core.data import Data, ImageFiles, TrainInput, input_kind, load_data
from ..core.devices import autocast, cpu_cores, default_workers, device_name, peak_mem_mb, pick_device, synchronize
from ..core.errors import RunError
from ..core.losses import create_loss
from ..core.models import create_model
from ..core.optim import create_optimizer
from ..core.paths import checkout_path
from ..core.recipes import A3, Recipe, load_recipe, plan_batch
from ..core.teacher import distill_loss, load_teacher, loss_weights
from ..core.train import train
from .train_and_evaluate import DEMO_RECORD

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina", "immunohistochemistry")
IMAGENET_SIZE = (500, 375)  # the most common ImageNet image size (width, height)


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark measures: the recipe (model, resolution, batch, optimizer, loss, augmentation),
    the data for the input and end-to-end entries, and how long each measurement runs."""

    recipe: Recipe
    data: str  # a dataset spec (rsbkit.core.data.load_data), or "jpegs" for the generated folder
    steps: int = 30  # measured steps per entry
    warmup: int = 5  # steps run before the clock starts (cuDNN's search, torch.compile)
    jpegs: int = 4096  # files in the generated folder
    device: str = "auto"
    workers: Optional[int] = None
    quick: bool = False
    end_to_end_steps: Optional[int] = None  # optimizer steps per end-to-end epoch (default `steps`): enough that the
    # epoch's start (workers refilling their prefetch) weighs little; a folder with fewer files is listed again


def default_config(device: torch.device, quick: bool = False, data: Optional[str] = None) -> BenchConfig:
    if quick:
        recipe = A3.replace(model="resnet10t", train_res=32, test_res=32, batch_size=32, lr_base_size=32,
                            scale=(0.25, 1.0), epochs=2, warmup_epochs=0)
        return BenchConfig(recipe, data or "jpegs", steps=3, warmup=1, jpegs=96, device=str(device), quick=True)
    if device.type == "cuda":
        return BenchConfig(A3.replace(batch_size=256), data or "jpegs", device=str(device), end_to_end_steps=100)
    return BenchConfig(load_recipe(demo_recipe()), data or "default", steps=20, warmup=3, device=str(device))


def demo_recipe() -> Path:
    """The demo recipe's file: params/demo.yaml in a source checkout; in an installed rsbkit, whose wheel has no
    params/, the resolved recipe.yaml of the demo run the package ships (the same recipe, tests/workbook/test_bench.py
    checks it)."""
    return checkout_path("params", "demo.yaml") or DEMO_RECORD / "recipe.yaml"


# ---------------------------------------------------------------- ImageNet-like JPEGs


def source_photos():
    """The pictures the generated JPEGs are cut from, and what they are: scikit-image's colour photos
    (bundled with it: no download) when it is installed (the notebooks extra), else the embedded
    Fashion-MNIST images, tiled 8 x 8 into colour-tinted mosaics (real pictures, but with less detail
    than photos, so they decode somewhat faster)."""

    try:
        import skimage.data
    except ImportError:

        train = load_data("default").train
        rng = np.random.default_rng(0)
        photos = []
        for _ in PHOTOS:
            tiles = train.images[rng.integers(len(train.images), size=64)].reshape(8, 8, 28, 28)
            grey = tiles.transpose(0, 2, 1, 3).reshape(224, 224).astype(np.float32)
            tint = rng.uniform(0.4, 1.0, size=3).astype(np.float32)
            photos.append(Image.fromarray((grey[..., None] * tint).astype(np.uint8)).resize((640, 480), Image.BICUBIC))
        return photos, "the embedded Fashion-MNIST images as tinted 8x8 mosaics (scikit-image is not installed)"
    photos = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        photos.append(Image.fromarray(image[0] if isinstance(image, tuple) else image).convert("RGB"))
    return photos, "scikit-image's colour photos"


def write_jpegs(folder: Union[str, Path], n: int, *, classes: int = 10, seed: int = 0) -> Path:
    """A folder in ImageNet layout of `n` JPEGs (train, and a tenth as many in val): random crops of
    :func:`source_photos` resized to 500x375 (some portrait 375x500), quality 90. Reused when it is
    already there; ``SOURCE`` in it says what the pictures are."""

    folder = Path(folder)
    done = folder / ".complete"
    if done.is_file() and done.read_text() == f"{n} {classes} {seed}":
        return folder
    rng = np.random.default_rng(seed)
    photos, source = source_photos()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SOURCE").write_text(source + "\n")
    for split, count in (("train", n), ("val", max(classes, n // 10))):
        for c in range(classes):
            (folder / split / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = photos[rng.integers(len(photos))]
            w, h = img.size
            cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            size = IMAGENET_SIZE if rng.random() < 0.8 else IMAGENET_SIZE[::-1]
            crop = img.crop((left, top, left + cw, top + ch)).resize(size, Image.BILINEAR)
            crop.save(folder / split / f"class{i % classes:03d}" / f"{split}_{i:06d}.JPEG", quality=90)
    done.write_text(f"{n} {classes} {seed}")
    return folder


# ---------------------------------------------------------------- the entries


def _entry(name: str, cfg: BenchConfig, device: torch.device, images: int, seconds: float, **extra: Any) -> dict[str, Any]:
    r = cfg.recipe
    return dict(name=name, images_per_s=round(images / seconds, 1), model=r.model, res=r.train_res, batch=r.batch_size,
                **{"precision": "float32", "channels_last": False, "compile": False, "workers": 0, **extra},
                images=images, seconds=round(seconds, 3), device=str(device))


def float32_label(device: torch.device) -> str:
    """What a float32 step runs in on `device` as torch is set now. On CUDA, cuDNN's convolutions run in TF32 while
    ``torch.backends.cudnn.allow_tf32`` is on (torch's default) and matmuls while
    ``torch.backends.cuda.matmul.allow_tf32`` is (off by default): the entry names what ran."""
    if device.type != "cuda":
        return "float32"
    convs, matmuls = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if convs and matmuls:
        return "tf32"
    return "float32, TF32 convolutions" if convs else "float32, TF32 matmuls" if matmuls else "float32"


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def model_step(cfg: BenchConfig, device: torch.device, *, plain: bool) -> dict[str, Any]:
    """The recipe's model, optimizer and loss on synthetic batches (soft targets, as after mixup)."""

    r = cfg.recipe
    cuda = device.type == "cuda"
    amp_dtype = None if plain or not (cuda and r.amp) else getattr(torch, r.amp_dtype)
    channels_last = not plain and r.channels_last
    compiled = not plain and r.torchcompile
    if cuda:
        torch.backends.cudnn.benchmark = True  # as train() sets it: both entries time cuDNN's fastest kernels
    torch.manual_seed(0)
    # a teacher's classes set the student's (a teacher predicts what it was trained on); its forward is timed alone too
    teacher = load_teacher(r.teacher, num_classes=None, device=device) if r.teacher else None
    model = create_model(r, teacher.num_classes if teacher else 1000 if cuda and not cfg.quick else 10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compiled else model
    optimizer = create_optimizer(model, r, r.lr)
    loss_fn = create_loss(r, mixing=True).to(device)
    classes = model.num_classes
    x = torch.randn(r.batch_size, 3, r.train_res, r.train_res, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.softmax(torch.randn(r.batch_size, classes, device=device), dim=1)
    _reset_memory(device)
    model.train()
    for i in range(cfg.warmup + cfg.steps):
        if i == cfg.warmup:
            synchronize(device)
            t0 = time.perf_counter()
        with autocast(device, amp_dtype):
            out = step_model(x)
            loss = loss_fn(out, y)
            if teacher is not None:
                task, distill = loss_weights(r.distill_loss_weight, r.task_loss_weight)
                loss = task * loss + distill * distill_loss(out, teacher.logits(x), r.kd_target, r.kd_temperature)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if plain:
            loss.item()  # the running loss printed every step: a host-device sync
    synchronize(device)
    seconds = time.perf_counter() - t0
    extra = {}
    if teacher is not None:  # the teacher's forward alone, on the same batches, in the same precision
        synchronize(device)
        t1 = time.perf_counter()
        for _ in range(cfg.steps):
            with autocast(device, amp_dtype):
                teacher.logits(x)
        synchronize(device)
        extra = dict(teacher=teacher.model_name, teacher_share=round((time.perf_counter() - t1) / seconds, 3))
    return _entry("model_step_plain" if plain else "model_step", cfg, device, cfg.steps * r.batch_size, seconds,
                  precision=str(amp_dtype).replace("torch.", "") if amp_dtype else float32_label(device), channels_last=channels_last,
                  compile=compiled, peak_mem_mb=peak_mem_mb(device), **extra)


def _data(cfg: BenchConfig, cache: Path):
    if cfg.data == "jpegs":
        return load_data(write_jpegs(cache / f"jpegs-{cfg.jpegs}", cfg.jpegs))
    return load_data(cfg.data)


def input_path(cfg: BenchConfig, device: torch.device, data, augment_on: str) -> dict[str, Any]:
    """The training input alone (TrainInput): loader workers, transfer, and on the device path the augmentation.

    One epoch, the file list repeated to hold it (:func:`at_least`): the workers stay busy from the first timed
    batch to the last, as in a long training epoch. Epochs of the folder's 16 batches would drain and refill the
    workers' queues at every end of epoch and read the loader low."""

    r = cfg.recipe.replace(aug_repeats=0)
    kind = input_kind(data, r, augment_on, r.decode_on, device)
    workers = default_workers(device, decoding=kind != "arrays") if cfg.workers is None else cfg.workers
    plan = plan_batch(r, micro_batch=r.batch_size)
    prefetch, threaded = 4, device.type == "cuda"  # TrainInput's prefetch; on CUDA its input thread, 2 batches ahead
    # the batches ready before the clock starts: the workers' prefetch and the input thread's queue
    skip = cfg.warmup + workers * prefetch + (2 if threaded else 0)
    data = at_least(data, (skip + cfg.steps + 1) * plan.micro_batch)
    source = TrainInput(data, r, plan, augment_on=augment_on, decode_on=r.decode_on, device=device, workers=workers,
                        pin_memory=device.type == "cuda", channels_last=r.channels_last, prefetch=prefetch,
                        threaded=threaded)
    n, seconds = steady_rate(source.epoch(0, torch.Generator(device).manual_seed(0)), skip, cfg.steps, device)
    return _entry(f"input_{augment_on}", cfg, device, n, seconds, workers=workers, input=kind,
                  channels_last=r.channels_last, batches_skipped=skip)


def steady_rate(batches, skip: int, measured: int, device: torch.device) -> tuple[int, float]:
    """(images, seconds) of `measured` batches of the iterator `batches` (``(images, labels, skipped)``, images None
    when none was readable), after `skip` batches taken untimed. A pipeline keeps batches made ahead (a loader's
    workers x prefetch, an input thread's queue): skip at least those, or the first timed batches come free and the
    rate reads high. Closes `batches` (an input thread stops with it)."""
    taken = 0
    try:
        for _ in range(skip):
            next(batches)
            taken += 1
        synchronize(device)
        t0 = time.perf_counter()
        n = 0
        for _ in range(measured):
            images = next(batches)[0]
            taken += 1
            n += 0 if images is None else len(images)
        synchronize(device)
        return n, time.perf_counter() - t0
    except StopIteration:
        raise RunError(f"the input ended after {taken} batches: {skip} untimed and {measured} timed need a longer "
                       "epoch (rsbkit.workbook.bench.at_least repeats the list)") from None
    finally:
        if hasattr(batches, "close"):
            batches.close()


def end_to_end(cfg: BenchConfig, device: torch.device, data, augment_on: str, out: Path) -> dict[str, Any]:
    """rsbkit.train on the data for two epochs of `steps` optimizer steps each; the second epoch's speed."""

    r = cfg.recipe
    images = (cfg.end_to_end_steps or cfg.steps) * r.batch_size
    data = at_least(data, images)
    recipe = r.replace(epochs=2, warmup_epochs=0, augment_on=augment_on, aug_repeats=0, eval_every=2)
    result = train(recipe, data, out / f"end_to_end_{augment_on}", device=device, workers=cfg.workers,
                   limit_train=min(len(data.train), images), limit_val=min(len(data.val), r.batch_size), progress="none",
                   log=lambda line: None)
    second = json.loads((out / f"end_to_end_{augment_on}" / "result.json").read_text())
    rows = _metrics(out / f"end_to_end_{augment_on}")
    res = second["resolved"]
    return dict(name=f"end_to_end_{augment_on}", images_per_s=rows[-1]["imgs_per_s"], model=r.model, res=r.train_res,
                batch=r.batch_size, precision=res["precision"], channels_last=res["channels_last"], compile=r.torchcompile,
                workers=res["workers"], input=res["input"], images=res["steps_per_epoch"] * res["effective_batch"],
                seconds=None, device=str(device), peak_mem_mb=result["peak_mem_mb"])


def at_least(data: Data, images: int) -> Data:
    """`data` whose training list is repeated, cycling, to exactly `images` samples when it holds fewer (the
    generated folder has 4,096 files; an end-to-end epoch of 100 steps of 256 needs 25,600); unchanged otherwise.
    A folder stays a folder (ImageFiles); other datasets become one Subset of their base (never a Subset of a Subset)."""

    train = data.train
    if len(train) >= images:
        return data
    if isinstance(train, ImageFiles):
        train = ImageFiles([train.samples[i % len(train)] for i in range(images)])
    else:
        base, indices = (train.dataset, list(train.indices)) if isinstance(train, Subset) else (train, range(len(train)))
        train = Subset(base, [indices[i % len(indices)] for i in range(images)])
    return Data(data.name, train, data.val, data.classes, data.source, data.val_files, data.title)


def _metrics(run: Path) -> list[dict[str, Any]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(f)]


# ---------------------------------------------------------------- the command


def run_bench(cfg: BenchConfig, out_dir: Union[str, Path] = "benchmarks/results", *, cache: Union[str, Path, None] = None,
              command: Optional[str] = None, log=print) -> tuple[dict[str, Any], Path]:
    """Measure every entry, print the table, write the JSON; return (the record, its path). The JSON is written
    after each entry (``"complete": false`` until the last), so a run killed part way leaves the entries it measured."""

    device = pick_device(cfg.device)
    cache = Path(cache) if cache else Path.home() / ".cache" / "rsbkit" / "bench"
    entries: list[dict[str, Any]] = []
    record = dict(
        device=device_name(device), device_type=device.type, cpu_count=cpu_cores(),
        date=datetime.date.today().isoformat(), torch=torch.__version__, timm=timm.__version__, rsbkit=__version__,
        python=platform.python_version(), command=command or shlex.join([Path(sys.executable).name, "-m", "rsbkit", "bench"]),
        data=None, config=dict(asdict(cfg), recipe=cfg.recipe.to_dict()), entries=entries, ratios={}, complete=False,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{_slug(record['device'])}-{record['date']}{'-quick' if cfg.quick else ''}.json"

    def add(entry: dict[str, Any]) -> None:
        entries.append(entry)
        record["ratios"] = ratios(entries)
        _write_json(path, record)

    _write_json(path, record)
    log(f"rsbkit bench on {device_name(device)}: {cfg.recipe.model} at {cfg.recipe.train_res} px, batch {cfg.recipe.batch_size}")
    add(model_step(cfg, device, plain=True))
    add(model_step(cfg, device, plain=False))
    data = _data(cfg, cache)
    record["data"] = data.source
    for where in ("loader", "device"):
        add(input_path(cfg, device, data, where))
    with tempfile.TemporaryDirectory(prefix="rsbkit-bench-") as tmp:
        for where in ("loader", "device"):
            add(end_to_end(cfg, device, data, where, Path(tmp)))
    record["complete"] = True
    _write_json(path, record)
    log(format_table(record))
    log(f"written to {path}")
    return record, path


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Written whole then renamed: a reader (or a kill) never meets half a file."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(record, indent=1) + "\n")
    part.replace(path)


def ratios(entries: list[dict[str, Any]]) -> dict[str, float]:
    """The figures the targets are stated in: model_step over plain, end-to-end over model_step, device over loader."""
    by = {e["name"]: e["images_per_s"] for e in entries}
    out = {}
    for name, (a, b) in dict(model_step_vs_plain=("model_step", "model_step_plain"),
                             end_to_end_device_vs_model_step=("end_to_end_device", "model_step"),
                             end_to_end_loader_vs_model_step=("end_to_end_loader", "model_step"),
                             end_to_end_device_vs_loader=("end_to_end_device", "end_to_end_loader")).items():
        if by.get(a) and by.get(b):
            out[name] = round(by[a] / by[b], 3)
    return out


def format_table(record: dict[str, Any]) -> str:
    """The entries as a Markdown table, with the device and date above it."""
    lines = [f"{record['device']}, {record['cpu_count']} cores; torch {record['torch']}, timm {record['timm']}, "
             f"rsbkit {record['rsbkit']}; {record['date']}; `{record['command']}`", "",
             "| entry | images/s | model | px | batch | precision | channels_last | compile | workers | input | peak MB |",
             "|---|---:|---|---:|---:|---|---|---|---:|---|---:|"]
    for e in record["entries"]:
        lines.append(f"| {e['name']} | {e['images_per_s']:.0f} | {e['model']} | {e['res']} | {e['batch']} | {e['precision']} | "
                     f"{e['channels_last']} | {e['compile']} | {e['workers']} | {e.get('input', '')} | "
                     f"{e.get('peak_mem_mb') or ''} |")
    lines.append("")
    lines.append("; ".join(f"{k.replace('_', ' ')}: {v:.2f}" for k, v in record["ratios"].items()))
    lines += [f"teacher {e['teacher']}: {e['teacher_share']:.0%} of {e['name']}'s time" for e in record["entries"]
              if e.get("teacher")]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def config_from_args(args) -> BenchConfig:
    device = pick_device(args.device)
    cfg = default_config(device, args.quick, args.data)
    recipe = cfg.recipe
    if args.recipe:
        recipe = load_recipe(args.recipe)
    overrides = {k: v for k, v in dict(model=args.model, train_res=args.res, batch_size=args.batch).items() if v is not None}
    if args.compile:
        overrides["torchcompile"] = True
    recipe = recipe.replace(**overrides)
    if args.batch is not None:
        recipe = recipe.replace(lr_base_size=args.batch) if recipe.lr_base_size < args.batch else recipe
    changes = {k: v for k, v in dict(steps=args.steps, workers=args.workers, jpegs=args.jpegs).items() if v is not None}
    if cfg.steps < 1:
        raise RunError("--steps must be 1 or more")
    return replace(cfg, recipe=recipe, **changes)
