"""The training input of one process: timm's train transform in loader workers (``augment_on:
loader``), or uint8 arrays, encoded file bytes or crops sent to the device and augmented there
(rsbkit.core.augment); :class:`TrainInput` holds it for a whole run, :func:`ahead` makes batches in a
thread on its own CUDA stream."""
from __future__ import annotations

import contextlib
import functools
import os
import queue
import random
import threading
from collections.abc import Callable
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data import DataLoader, Dataset, Subset, get_worker_info

from ..augment import DeviceAugment, decode_images, is_jpeg, nvjpeg_can_batch
from ..devices import is_out_of_memory
from ..errors import DataError, RsbkitError
from ..recipes import BatchPlan, Recipe
from .datasets import ArrayImages, Data, ImageFiles, SkippedImage, Transformed, collate
from .sampling import EpochSampler, sample_seed


def train_transform(recipe: Recipe, size: Optional[int] = None) -> Callable:
    """RandomResizedCrop, flip, RandAugment string, random erasing: timm's ImageNet train transform,
    resampling with `train_interpolation` (timm's ``random``: bilinear or bicubic drawn per image);
    cropping to `size` px (default `train_res`; progressive resizing asks for each epoch's size)."""
    return create_transform(
        input_size=size or recipe.train_res,
        is_training=True,
        scale=recipe.scale,
        ratio=recipe.ratio,
        hflip=recipe.hflip,
        vflip=0.0,
        color_jitter=recipe.color_jitter or None,
        auto_augment=recipe.aa,
        interpolation=recipe.train_interpolation,  # random: per image, in the crop and RandAugment's geometric ops
        re_prob=recipe.reprob,
        re_mode="pixel",
        re_count=1,
    )


def train_crop(recipe: Recipe, size: Optional[int] = None) -> Callable:
    """timm's RandomResizedCrop alone, to `size` px (default `train_res`), as uint8 (3, H, W) tensors: the
    ``crops`` path's loader half (the device does the rest)."""
    return _CropToUint8(RandomResizedCropAndInterpolation(size or recipe.train_res, scale=tuple(recipe.scale),
                                                          ratio=tuple(recipe.ratio), interpolation=recipe.train_interpolation))


def create_mixup(recipe: Recipe, num_classes: int) -> Optional[Mixup]:
    """timm's Mixup/CutMix per batch, with label smoothing folded into the soft targets; None when off."""
    if (recipe.mixup <= 0 and recipe.cutmix <= 0) or recipe.mixup_prob <= 0:
        return None
    return Mixup(
        mixup_alpha=recipe.mixup,
        cutmix_alpha=recipe.cutmix,
        prob=recipe.mixup_prob,
        switch_prob=recipe.mixup_switch_prob,
        mode="batch",
        label_smoothing=recipe.smoothing,
        num_classes=num_classes,
    )


# Held while the training process's global RNGs are swapped for a sample's (``workers=0``) and while they are drawn
# from in the training thread (timm's Mixup draws lambda and boxes from numpy's): on CUDA the loader runs in the input
# thread (:func:`ahead`), and a draw between the swap and its undoing would take the sample's numbers, then be lost.
GLOBAL_RNG = threading.RLock()


def mix(mixup: Callable, images: torch.Tensor, labels: torch.Tensor):
    """timm's Mixup on a batch, its draws from numpy's global RNG taken apart from the input thread's seeding."""
    with GLOBAL_RNG:
        return mixup(images, labels)


class _Seeded:
    """Seeds the global RNGs that timm's transforms draw from (``random``, numpy, torch's CPU
    generator) from a sample's seed. In a loader worker the state is simply replaced; in the
    training process (``workers=0``) it is put back after, so mixup and drop path keep their own,
    under :data:`GLOBAL_RNG` (the input thread seeds while the training thread mixes)."""

    def __init__(self, seed: int, numpy_and_torch: bool = True):
        self.seed, self.all = seed, numpy_and_torch

    def __enter__(self):
        self.saved = None
        if get_worker_info() is None:
            GLOBAL_RNG.acquire()
            self.saved = (random.getstate(), np.random.get_state() if self.all else None,
                          torch.random.default_generator.get_state() if self.all else None)
        random.seed(self.seed)
        if self.all:
            np.random.seed(self.seed)
            torch.random.default_generator.manual_seed(self.seed)  # the CPU generator only: CUDA's stay as they are

    def __exit__(self, *exc):
        if self.saved is not None:
            try:
                random.setstate(self.saved[0])
                if self.all:
                    np.random.set_state(self.saved[1])
                    torch.random.default_generator.set_state(self.saved[2])
            finally:
                GLOBAL_RNG.release()


class SeededTransform(Dataset):
    """Items ``(index, seed)``: the image at `index`, through `transform` with every RNG seeded from
    `seed`. Items ``(index, seed, size)`` (progressive resizing) go through ``transform_at(size)``,
    built once per size in each worker: `transform_at` is a picklable function (a partial of
    :func:`train_transform` or :func:`train_crop`)."""

    def __init__(self, base: Dataset, transform: Callable, numpy_and_torch: bool = True,
                 transform_at: Optional[Callable[[int], Callable]] = None):
        self.inner, self.numpy_and_torch = Transformed(base, transform), numpy_and_torch
        self.transform_at, self.sized = transform_at, {}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: tuple[int, ...]):
        index, seed, *size = key
        inner = self.inner
        if size:
            if size[0] not in self.sized:
                self.sized[size[0]] = Transformed(self.inner.base, self.transform_at(size[0]))
            inner = self.sized[size[0]]
        with _Seeded(seed, self.numpy_and_torch):
            return inner[index]


class _CropToUint8:
    """timm's RandomResizedCrop, then the crop as a uint8 (3, H, W) tensor."""

    def __init__(self, crop: Callable):
        self.crop = crop

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.crop(img), dtype=np.uint8).copy()).permute(2, 0, 1)


def unwrap_subsets(dataset: Dataset) -> tuple[Dataset, Optional[np.ndarray]]:
    """The dataset under Subsets at any depth (a Subset of a Subset: a limit on a split, a share of a limit), and the
    indices into it that the Subsets compose to, in their order; None when `dataset` is no Subset."""
    indices = None
    while isinstance(dataset, Subset):
        inner = np.asarray(dataset.indices, dtype=np.int64)
        indices = inner if indices is None else inner[indices]
        dataset = dataset.dataset
    return dataset, indices


class ArrayBatches(Dataset):
    """Whole images of an :class:`ArrayImages` (or Subsets of one, at any depth) as uint8 ``(3, H, W)`` tensors,
    fetched a micro-batch at a time with one array index (``__getitems__``): no PIL, no per-image
    work; the device crops them."""

    def __init__(self, base: Dataset):
        base, indices = unwrap_subsets(base)
        self.images, self.labels, self.indices = base.images, base.labels, indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.images)

    def __getitems__(self, keys: list[tuple[int, int]]):
        rows = np.fromiter((k[0] for k in keys), dtype=np.int64, count=len(keys))
        if self.indices is not None:
            rows = self.indices[rows]
        images = torch.from_numpy(self.images[rows])
        images = images.unsqueeze(1).expand(-1, 3, -1, -1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return [(images.contiguous(), torch.from_numpy(self.labels[rows]))]

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]


def _collate_arrays(batch):
    images, labels = batch[0]
    return images, labels, []


class EncodedFiles(Dataset):
    """The bytes of image files, for decoding on the training device (numpy arrays: a worker sends
    them inside its batch's one buffer, see :func:`collate_encoded`). What the device's batched JPEG decode
    cannot take is decoded here, in the loader worker, with PIL as the loader path reads it: files that are not
    JPEGs (PNG, BMP, TIFF, PPM, WebP) and JPEGs of 4 components (CMYK, YCCK: ImageNet has about 22), which
    nvJPEG refuses, failing their whole batch."""

    def __init__(self, base: ImageFiles):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Union[int, tuple[int, int]]):
        index = key[0] if isinstance(key, tuple) else key  # (index, seed) in training
        path, label = self.base.samples[index]
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            return SkippedImage(path, f"{type(exc).__name__}: {exc}")
        if is_jpeg(data[:3].tobytes()) and nvjpeg_can_batch(data[:65536]):
            return data, label, path
        item = self.base[index]  # PIL, as the loader path reads it: an RGB image, or a SkippedImage naming why not
        return item if isinstance(item, SkippedImage) else (Decoded(np.asarray(item[0])), label, path)


class Decoded(NamedTuple):
    """An image the worker decoded itself: uint8 (H, W, 3)."""

    pixels: np.ndarray


class EncodedBatch(NamedTuple):
    """A micro-batch of files as one buffer: file k is ``data[offsets[k]:offsets[k + 1]]``; the images the
    workers decoded (:class:`EncodedFiles`) are in a second buffer, ``pixels``, with (position, height, width) in
    `shapes` (their slice of `data` is empty).

    One tensor, not one per file: each tensor a worker sends is a shared-memory segment and a passed
    file descriptor, so a batch of 2,048 files took 2,048 descriptors (``Too many open files`` under
    ``ulimit -n 1024``) and 130-170 ms to receive 256 of them, against about 6 ms for one buffer."""

    data: torch.Tensor  # uint8, every file's bytes one after another: JPEGs nvJPEG's batch takes (checked in the worker)
    offsets: torch.Tensor  # int64 (n + 1,)
    paths: list[str]
    pixels: Optional[torch.Tensor] = None  # uint8, the decoded images' (H, W, 3) pixels one after another
    shapes: tuple[tuple[int, int, int], ...] = ()  # (position, height, width) of each decoded image

    def files(self) -> list[torch.Tensor]:
        o = self.offsets.tolist()
        return [self.data[o[k] : o[k + 1]] for k in range(len(self.paths))]

    def decoded(self) -> dict[int, torch.Tensor]:
        """The worker-decoded images by position, as uint8 (3, H, W) views of `pixels`."""
        out, start = {}, 0
        for k, h, w in self.shapes:
            out[k] = self.pixels[start : start + h * w * 3].view(h, w, 3).permute(2, 0, 1)
            start += h * w * 3
        return out


def collate_encoded(batch):
    skipped = [b for b in batch if isinstance(b, SkippedImage)]
    good = [b for b in batch if not isinstance(b, SkippedImage)]
    if not good:
        return None, None, skipped
    sizes = [0 if isinstance(b[0], Decoded) else len(b[0]) for b in good]
    offsets = np.zeros(len(good) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = torch.from_numpy(np.concatenate([b[0] for b in good if not isinstance(b[0], Decoded)] or [np.zeros(0, np.uint8)]))
    decoded = [(k, b[0].pixels) for k, b in enumerate(good) if isinstance(b[0], Decoded)]
    pixels = torch.from_numpy(np.concatenate([p.reshape(-1) for _, p in decoded])) if decoded else None
    shapes = tuple((k, p.shape[0], p.shape[1]) for k, p in decoded)
    return (EncodedBatch(data, torch.from_numpy(offsets), [b[2] for b in good], pixels, shapes),
            torch.tensor([b[1] for b in good]), skipped)


def files_of(dataset: Dataset) -> Optional[ImageFiles]:
    """The image files of a folder dataset, or of Subsets of one at any depth (``--limit-val`` then a process's
    share of it under torchrun), in its order."""
    dataset, indices = unwrap_subsets(dataset)
    if not isinstance(dataset, ImageFiles):
        return None
    return dataset if indices is None else ImageFiles([dataset.samples[i] for i in indices.tolist()])


def _mostly_jpeg(files: ImageFiles, sample: int = 1000) -> bool:
    """Whether most files (by extension, of up to `sample` spread over the list) are JPEGs."""
    step = max(1, len(files.samples) // sample)
    names = [p for p, _ in files.samples[::step]]
    return sum(os.path.splitext(p)[1].lower() in (".jpg", ".jpeg") for p in names) * 2 > len(names)


def eval_kind(val: Dataset, eval_on: str, device: torch.device) -> str:
    """Where validation images are decoded and resized: the recipe's `eval_on`, with ``auto`` made concrete
    (``device`` on CUDA for a folder of mostly JPEGs, else ``loader``)."""
    if eval_on != "auto":
        return eval_on
    files = files_of(val)
    return "device" if device.type == "cuda" and files is not None and _mostly_jpeg(files) else "loader"


def batch_bytes(kind: str, data: Data, micro_batch: int, res: int, sample: int = 64) -> int:
    """About how many bytes one micro-batch of the training input takes in host memory as the loader hands it over:
    float32 crops (``loader``), uint8 crops (``crops``), whole uint8 images (``arrays``), or the files' bytes
    (``encoded``: their mean size over up to `sample` files spread over the list)."""
    if kind == "loader":
        return micro_batch * 3 * res * res * 4
    if kind == "crops":
        return micro_batch * 3 * res * res
    if kind == "arrays":
        base = unwrap_subsets(data.train)[0]
        return micro_batch * int(np.prod(base.images.shape[1:])) * (3 if base.images.ndim == 3 else 1)
    files = files_of(data.train)
    step = max(1, len(files.samples) // sample)
    sizes = [os.path.getsize(p) for p, _ in files.samples[::step][:sample] if os.path.exists(p)]
    return micro_batch * int(np.mean(sizes)) if sizes else 0


def in_flight_note(kind: str, data: Data, micro_batch: int, res: int, workers: int, prefetch: int = 4,
                   pinned: bool = False) -> str:
    """One line: the host memory the loader's prefetch holds (`prefetch` batches per worker), and whether it is pinned."""
    each = batch_bytes(kind, data, micro_batch, res)
    batches = prefetch * workers if workers > 0 else 1
    where = "shared memory, then page-locked (pinned) for the copy to the GPU" if pinned else "host memory"
    return (f"input in flight: up to {batches} micro-batches ({prefetch} prefetched x {workers} workers) of "
            f"{each / 2**20:,.0f} MB ({kind}) = {batches * each / 2**30:,.1f} GB of {where}"
            if workers > 0 else f"input in flight: 1 micro-batch of {each / 2**20:,.0f} MB ({kind}), read in this process")


def _arrays_of(dataset: Dataset) -> bool:
    base = unwrap_subsets(dataset)[0]
    return isinstance(base, ArrayImages) and base.images.ndim in (3, 4) and (base.images.ndim == 3 or base.images.shape[3] == 3)


def input_kind(data: Data, recipe: Recipe, augment_on: str, decode_on: str, device: torch.device) -> str:
    """What the loader hands the training process:

    - ``loader``: float images, timm's whole per-image transform done in the workers;
    - ``arrays``: whole same-size images as uint8 (in-memory arrays); the device crops them;
    - ``encoded``: file bytes; the device decodes (``decode_jpeg``, nvJPEG on CUDA) and crops
      (``auto`` on CUDA for a folder of mostly JPEGs: what a multi-GPU node needs, since its few
      cores per GPU cannot decode and crop with PIL at the GPU's rate);
    - ``crops``: uint8 crops at ``train_res`` (decoded and cropped with timm's RandomResizedCrop
      in the workers); the device flips, RandAugments and normalises.
    """
    if augment_on == "loader":
        return "loader"
    if _arrays_of(data.train):
        return "arrays"
    files = files_of(data.train)
    if files is not None and (decode_on == "device" or (decode_on == "auto" and device.type == "cuda" and _mostly_jpeg(files))):
        return "encoded"
    if decode_on == "device":
        raise DataError(f"decode_on: device needs a folder dataset of image files; {data.name} is not one. "
                        "Set decode_on: auto or loader")
    return "crops"


def side_stream(device: torch.device):
    """The CUDA stream an input object makes its batches on, made once for the object's life (None on a CPU).

    Not one per epoch or evaluation: the caching allocator keeps freed blocks per stream, so each new stream would
    strand the last one's working set (gigabytes at micro-batch 2048) until an allocation fails and forces a
    device-wide sync; and torch's pool of 32 streams per priority wraps, so a new one can be a stream that NCCL or
    nvJPEG already uses."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


class InputPathError(DataError):
    """An unexpected error inside the device input path, naming the path and the setting that avoids it."""


def _device_path_error(kind: str, exc: BaseException) -> InputPathError:
    avoid = "augment_on: loader" + (" (or decode_on: loader, to decode in the loader workers)" if kind == "encoded" else "")
    return InputPathError(f"the device input path ('{kind}': {'nvJPEG decode, ' if kind == 'encoded' else ''}crop and "
                          f"augment on the training device) failed: {type(exc).__name__}: {exc}. Set {avoid} to train "
                          "without it, and report the error with this line")


class TrainInput:
    """The training input of one process for a whole run: a persistent loader (workers live across
    epochs, prefetching) and, on the device path, the augmentation after it.

    ``for images, labels, skipped in source.epoch(seed, device, generator)`` yields micro-batches
    ready for the model (normalised floats on `device`, timm's Mixup not yet applied). Each
    sample's augmentation in the loader is seeded from (epoch seed, position in the epoch), and the
    device's from `generator`, which the caller seeds per epoch: an epoch is the same whether or
    not the run was resumed before it, with any number of workers.
    """

    def __init__(self, data: Data, recipe: Recipe, plan: BatchPlan, *, augment_on: str = "loader",
                 decode_on: str = "auto", device: Union[str, torch.device] = "cpu", workers: int = 0,
                 pin_memory: bool = False, rank: int = 0, channels_last: bool = False, prefetch: int = 4,
                 threaded: Optional[bool] = None, threads: int = 1):

        device = torch.device(device)
        self.threaded = device.type == "cuda" if threaded is None else threaded  # batches made ahead in a thread
        self.threads = max(1, threads) if self.threaded else 1
        self.streams = [side_stream(device) for _ in range(self.threads)]  # one per input thread, for the run's life
        self.stream = self.streams[0]
        self.kind = input_kind(data, recipe, augment_on, decode_on, device)
        self.device, self.channels_last, self.rank, self.prefetch = device, channels_last, rank, prefetch
        collate_fn = collate
        self.augment = None
        self.recipe = recipe
        if self.kind == "loader":
            dataset = SeededTransform(data.train, train_transform(recipe), transform_at=functools.partial(train_transform, recipe))
        elif self.kind == "arrays":
            dataset, collate_fn = ArrayBatches(data.train), _collate_arrays
        elif self.kind == "encoded":
            dataset, collate_fn = EncodedFiles(files_of(data.train)), collate_encoded
        else:
            dataset = SeededTransform(data.train, train_crop(recipe), numpy_and_torch=False,  # timm's crop draws from `random`
                                      transform_at=functools.partial(train_crop, recipe))
        if self.kind != "loader":
            # its constants copied here, once: not by whichever input thread comes first, on its own stream
            self.augment = DeviceAugment(recipe, crop=self.kind != "crops", channels_last=channels_last).to(device)
        self.sampler = EpochSampler(data.train, recipe, plan, rank)
        self.loader = DataLoader(
            dataset,
            batch_size=plan.micro_batch,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            drop_last=True,
            persistent_workers=workers > 0,  # each sample is seeded by its key: no RNG state carries over
            prefetch_factor=prefetch if workers > 0 else None,
            # the workers' base seed (unused: samples are seeded by their keys) is drawn from this generator when the
            # loader starts, not from torch's global one, which drop path draws from after a resume as without it
            generator=torch.Generator().manual_seed(rank),
        )

    def epoch(self, epoch_seed: int, generator: Optional[torch.Generator] = None, size: Optional[int] = None):
        """The epoch's micro-batches, cropped to `size` px (progressive resizing: the recipe's
        ``train_res_at(epoch)``; None: `train_res`). On CUDA they are made ready ahead, in a thread on
        a stream of its own (:func:`ahead`): decoding and augmenting batch i + 1 overlaps the step of
        batch i."""
        size = size or self.recipe.train_res
        # the loader's workers crop to the size a key carries; keys carry none at train_res
        self.sampler.set_epoch(epoch_seed, None if size == self.recipe.train_res else size)
        if self.augment is not None:
            self.augment.size = size
        draws = generator  # RandAugment's choices, the erasing boxes, a list's crops: on the CPU
        if generator is not None and generator.device.type != "cpu":
            draws = torch.Generator().manual_seed(sample_seed(epoch_seed, -1 - self.rank))  # per process, apart from samples
        if self.threads > 1:
            return ahead_parallel(self.loader, functools.partial(self._prepare_nth, epoch_seed), self.device, self.streams)
        batches = (self.prepare(batch, generator, draws) for batch in self.loader)
        return ahead(batches, self.device, stream=self.stream) if self.threaded else batches

    def _prepare_nth(self, epoch_seed: int, index: int, batch):
        """The epoch's batch `index` with its own generators, seeded from (epoch seed, rank, index): with several
        input threads the batches are made in any order, and each still gets the same draws."""
        seed = sample_seed(sample_seed(epoch_seed, -1 - self.rank), index)
        generator = torch.Generator(self.device).manual_seed(seed)
        return self.prepare(batch, generator, torch.Generator().manual_seed(seed ^ 0x5DEECE66D))

    def prepare(self, batch, generator: Optional[torch.Generator], draws: Optional[torch.Generator]):
        """One loader batch as (images ready for the model, labels, skipped) on the device. An out-of-memory error
        passes as it is (the fallback halves the micro-batch); any other unexpected error of the device path is
        raised as :class:`InputPathError`, naming the setting that avoids the path."""
        if self.kind == "loader":
            return self._prepare(batch, generator, draws)
        try:
            return self._prepare(batch, generator, draws)
        except (RsbkitError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            raise _device_path_error(self.kind, exc) from exc

    def _prepare(self, batch, generator, draws):
        images, labels, skipped = decode_batch(batch, self.device) if self.kind == "encoded" else batch
        if images is None:
            return None, None, skipped
        if self.kind != "encoded":
            images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.augment is not None:
            images = self.augment(images, generator, draws)
        elif self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels, skipped

    def __len__(self) -> int:
        return len(self.loader)


def _hand_over(batch, event, device: torch.device):
    """A batch made on an input thread's stream, for the caller's stream: that stream waits for the batch's event
    (recorded after its work), and its tensors are ``record_stream``-ed there, so the allocator does not hand their
    memory back to the input stream while the step still reads it."""
    if event is not None:
        current = torch.cuda.current_stream(device)
        current.wait_event(event)
        for t in batch[:2]:
            if isinstance(t, torch.Tensor):
                t.record_stream(current)
    return batch


def ahead_parallel(items, prepare: Callable, device: torch.device, streams: list, depth: Optional[int] = None):
    """:func:`ahead` with a thread per stream of `streams`: each takes the next item (under a lock), runs
    ``prepare(index, item)`` on its stream; the caller gets results in order, at most `depth` (default 2 per
    thread) ahead. Threads help where preparing waits outside the GIL (nvJPEG, the dispatcher, launches)."""
    cuda = device.type == "cuda"
    depth = depth or 2 * len(streams)
    source, lock, ready = iter(items), threading.Lock(), threading.Condition()
    results: dict[int, tuple] = {}
    state = dict(taken=0, end=None, yielded=0)
    stop = threading.Event()

    def take():
        with lock:
            if state["end"] is not None or stop.is_set():
                return None
            index = state["taken"]
            try:
                item = next(source)
            except StopIteration:
                state["end"] = index
                return None
            except BaseException as exc:  # the loader's error, raised in the caller at this batch
                state["end"] = index + 1
                return index, exc
            state["taken"] += 1
            return index, item

    def work(stream):
        if cuda and device.index is not None:
            torch.cuda.set_device(device)
        with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
            while (taken := take()) is not None:
                index, item = taken
                with ready:  # no further ahead of the caller than `depth`
                    while not stop.is_set() and index >= state["yielded"] + depth:
                        ready.wait(0.1)
                if stop.is_set():
                    break
                event = None
                try:
                    out = item if isinstance(item, BaseException) else prepare(index, item)
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                except BaseException as exc:
                    out = exc
                with ready:
                    results[index] = (out, event)
                    ready.notify_all()
        with ready:
            ready.notify_all()

    threads = [threading.Thread(target=work, args=(s,), name="rsbkit-input", daemon=True) for s in streams]
    for t in threads:
        t.start()
    try:
        index = 0
        while True:
            with ready:
                while index not in results and not (state["end"] is not None and index >= state["end"]):
                    if not any(t.is_alive() for t in threads):
                        break
                    ready.wait(0.1)
                if index not in results:
                    return
                out, event = results.pop(index)
                state["yielded"] = index + 1
                ready.notify_all()
            if isinstance(out, BaseException):
                raise out
            yield _hand_over(out, event, device)
            index += 1
    finally:
        stop.set()
        with ready:
            ready.notify_all()
        for t in threads:
            t.join()


def decode_batch(batch, device: torch.device):
    """An (EncodedBatch, labels, skipped) batch decoded on `device` (:func:`rsbkit.core.augment.decode_images`):
    (list of uint8 images, their labels, skipped) with the unreadable files moved to skipped; images
    None when none was readable."""

    encoded, labels, skipped = batch
    if encoded is None:
        return None, None, skipped
    ready = encoded.decoded()
    files = encoded.files()
    todo = [k for k in range(len(files)) if k not in ready]
    # every file left is a JPEG nvJPEG's batch takes: EncodedFiles read its header in the worker (batchable)
    decoded, bad = decode_images([files[k] for k in todo], device, batchable=True) if todo else ([], [])
    bad = [(todo[i], reason) for i, reason in bad]
    failed = {k for k, _ in bad}
    it = iter(decoded)
    images = [ready[k].to(device, non_blocking=True) if k in ready else next(it) for k in range(len(files)) if k not in failed]
    if bad:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[[i for i, _ in bad]] = False
        labels = labels[keep]
        skipped = skipped + [SkippedImage(encoded.paths[i], reason) for i, reason in bad]
    return (images or None), labels, skipped


def ahead(batches, device: torch.device, depth: int = 2, stream=None):
    """Run the iterator `batches` (loading, decoding, augmenting) in a thread, up to `depth` batches
    ahead of the caller; on CUDA on a stream of its own, each batch ordered after that stream's work.

    - Ordering: the caller's stream waits for an event recorded after each batch, and each tensor is
      ``record_stream``-ed on it, so the allocator does not hand its memory back to the thread's
      stream while the step still reads it.
    - nvJPEG: torchvision's ``decode_jpeg`` on CUDA allocates on the current stream and decodes on a
      private one without waiting for it (pytorch/vision#9606); :func:`rsbkit.core.augment.decode_images`
      therefore decodes on a stream of its own (one per input stream) that nothing else allocates on, and
      the thread's stream waits for it on the GPU: the next batch's decode overlaps this batch's
      augmentation, and the training thread keeps launching. torchvision holds one process-wide lock
      around each decode and waits on the host for nvJPEG's stream before and after it, so decodes are
      serial across input threads (docs/gpu.md).
    - An exception in the thread (an unreadable batch, an out-of-memory error) is raised in the
      caller at that batch; closing the generator stops the thread (the training loop closes it in
      a ``finally``, so an error in the step leaves no thread polling with prepared batches).
    - `stream`: the caller's side stream, kept for its life (:func:`side_stream`); None on CUDA makes one.

    Training uses it on CUDA only (on a CPU the thread would take cores from the step)."""

    cuda = device.type == "cuda"
    if cuda and stream is None:
        stream = side_stream(device)
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            if cuda and device.index is not None:  # under torchrun: this process's GPU (a thread starts on GPU 0)
                torch.cuda.set_device(device)
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                for batch in batches:
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                    if not put((batch, event)):
                        return
            put((end, None))
        except BaseException as exc:  # handed to the caller, which raises it
            put((exc, None))

    thread = threading.Thread(target=produce, name="rsbkit-input", daemon=True)
    thread.start()
    try:
        while True:
            batch, event = items.get()
            if batch is end:
                return
            if isinstance(batch, BaseException):
                raise batch
            yield _hand_over(batch, event, device)
    finally:
        stop.set()
        thread.join()
