"""Datasets, transforms and loaders, built from timm's pieces.

A dataset is named by one string:

- ``default``: the embedded Fashion-MNIST subset (12,000 train / 2,000 test images,
  class-balanced, MIT licence; see ``rsbkit/embedded/fashion_mnist_subset/README.md``).
  It ships with the package and works offline.
- ``fashion-mnist``: the full 60k/10k set, from Debian's ``dataset-fashion-mnist``
  files when installed, otherwise torchvision's download.
- a folder in ImageNet layout: ``PATH/train/<class>/*.jpg`` and ``PATH/val/<class>/*.jpg``.
- a timm ``create_dataset`` name: ``torch/cifar10``, ``torch/cifar100``, ``hfds/...``;
  downloaded into ``root`` (default ``~/.cache/rsbkit/datasets``) when missing.

Grey images are turned into 3-channel images before any transform, so every
recipe ingredient (RandAugment's colour ops included) runs unchanged.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.distributed_sampler import RepeatAugSampler
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.data.distributed import DistributedSampler

from .errors import DataError
from .recipes import BatchPlan, Recipe

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_NAMES = ("default", "fashion-mnist-subset")
FASHION_MNIST_NAMES = ("fashion-mnist", "fashion_mnist", "fashionmnist")
TIMM_PREFIXES = ("torch/", "hfds/", "hfids/", "tfds/", "wds/")
VAL_SPLITS = ("val", "validation", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HELP = (
    "a dataset is 'default' (embedded Fashion-MNIST subset), 'fashion-mnist', a timm name such as "
    "'torch/cifar10', or a folder PATH with PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg"
)


class SkippedImage(NamedTuple):
    """Returned in place of a sample that could not be read; the loader drops and reports it."""

    path: str
    reason: str


@dataclass
class Data:
    """A train and a validation split with their class names."""

    name: str
    train: Dataset
    val: Dataset
    classes: Sequence[str]
    source: str  # where the images were read from
    val_files: Optional[list[str]] = field(default=None, repr=False)  # file names, for ReaL labels
    title: str = ""  # how a reader knows the dataset, for figures and tables (default: the name)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label(self) -> str:
        """The dataset as figures name it: its title with the split sizes, e.g. 'Fashion-MNIST (embedded
        subset, 12,000 train / 2,000 test images)'; a limited run shows its limited sizes."""
        return f"{self.title or self.name} ({len(self.train):,} train / {len(self.val):,} test images)"

    def describe(self) -> dict[str, Any]:
        return dict(name=self.name, title=self.title or self.name, source=self.source, num_classes=self.num_classes,
                    train_images=len(self.train), val_images=len(self.val))


# ---------------------------------------------------------------- datasets


class ArrayImages(Dataset):
    """Images held as a uint8 array (N, H, W) or (N, H, W, 3), with integer labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return Image.fromarray(self.images[i]), int(self.labels[i])


class ImageFiles(Dataset):
    """(path, label) pairs read with PIL; an unreadable file becomes a SkippedImage."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB"), label  # convert() decodes now, so truncation shows here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return SkippedImage(path, f"{type(exc).__name__}: {exc}")


class Transformed(Dataset):
    """Applies `transform` to a dataset of (PIL image, label), converting to RGB first."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self.base[i]
        if isinstance(item, SkippedImage):
            return item
        img, label = item
        if img.mode != "RGB":
            img = img.convert("RGB")
        return self.transform(img), label


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """A gzipped IDX file (the MNIST format) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_split(folder: Path, prefix: str) -> ArrayImages:
    return ArrayImages(read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz"))


def _embedded() -> Data:
    folder = Path(str(resources.files("rsbkit") / "embedded" / "fashion_mnist_subset"))
    return Data("default", _idx_split(folder, "train"), _idx_split(folder, "test"), FASHION_MNIST_CLASSES,
                source=f"{folder} (embedded Fashion-MNIST subset)", title="Fashion-MNIST, embedded subset")


def _fashion_mnist(root: Path, download: bool) -> Data:
    files = [f"{p}-{k}-idx{n}-ubyte.gz" for p in ("train", "t10k") for k, n in (("images", 3), ("labels", 1))]
    if all((DEBIAN_FASHION_MNIST / f).is_file() for f in files):
        return Data("fashion-mnist", _idx_split(DEBIAN_FASHION_MNIST, "train"), _idx_split(DEBIAN_FASHION_MNIST, "t10k"),
                    FASHION_MNIST_CLASSES, source=f"{DEBIAN_FASHION_MNIST} (Debian dataset-fashion-mnist)", title="Fashion-MNIST")
    from torchvision.datasets import FashionMNIST

    try:
        train = FashionMNIST(str(root), train=True, download=download)
        val = FashionMNIST(str(root), train=False, download=download)
    except Exception as exc:  # no network, or files missing with download=False
        raise DataError(
            f"fashion-mnist: not in {DEBIAN_FASHION_MNIST} and torchvision could not get it into {root} "
            f"({type(exc).__name__}: {exc}); install Debian's dataset-fashion-mnist or put the four .gz files "
            f"in {root}/FashionMNIST/raw"
        ) from None
    return Data("fashion-mnist", train, val, FASHION_MNIST_CLASSES, source=f"{root} (torchvision FashionMNIST)",
                title="Fashion-MNIST")


def _folder(path: Path) -> Data:
    from torchvision.datasets.folder import find_classes, make_dataset

    expected = f"expected {path}/train/<class>/*.jpg and {path}/val/<class>/*.jpg"
    if not path.is_dir():
        raise DataError(f"dataset folder {path} does not exist; {HELP}")
    train_dir = path / "train"
    val_dir = next((path / s for s in VAL_SPLITS if (path / s).is_dir()), None)
    if not train_dir.is_dir() or val_dir is None:
        raise DataError(f"{path} is not in ImageNet layout: {expected} (val may also be named validation or test)")
    try:
        classes, class_to_idx = find_classes(str(train_dir))
    except FileNotFoundError:
        raise DataError(f"{train_dir} holds no class folders; {expected}") from None
    val_classes = {d.name for d in val_dir.iterdir() if d.is_dir()}
    if not val_classes <= set(classes):
        raise DataError(f"{val_dir} has classes that {train_dir} lacks: {sorted(val_classes - set(classes))[:5]}")
    splits = {}
    for name, split_dir in (("train", train_dir), ("val", val_dir)):
        samples = make_dataset(str(split_dir), class_to_idx, IMAGE_EXTENSIONS, allow_empty=True)
        if not samples:
            raise DataError(f"{split_dir} holds no images (looked for {' '.join(IMAGE_EXTENSIONS)} in its class folders); {expected}")
        splits[name] = samples
    return Data(path.name, ImageFiles(splits["train"]), ImageFiles(splits["val"]), classes, source=str(path.resolve()),
                val_files=[os.path.basename(p) for p, _ in splits["val"]])


def _timm_dataset(name: str, root: Path, download: bool) -> Data:
    from timm.data import create_dataset

    splits = {}
    for split in ("train", "validation"):
        try:
            splits[split] = create_dataset(name, root=str(root), split=split, download=download, is_training=split == "train")
        except Exception as exc:  # timm and torchvision raise many kinds here
            raise DataError(
                f"{name}: timm's create_dataset failed for split {split!r} with root {root} "
                f"({type(exc).__name__}: {exc}); check the name, or put the files under {root}"
            ) from None
    train = splits["train"]
    classes = getattr(train, "classes", None)
    if classes is None:
        targets = getattr(train, "targets", None)
        if targets is None:
            raise DataError(f"{name}: cannot tell its classes (no 'classes' or 'targets'); use a folder dataset instead")
        classes = [str(c) for c in range(int(max(targets)) + 1)]
    return Data(name, train, splits["validation"], list(classes), source=f"{root} (timm {name})")


def _limit(dataset: Dataset, n: Optional[int], seed: int = 0) -> Dataset:
    if n is None or n >= len(dataset):
        return dataset
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Subset(dataset, keep.tolist())


def load_data(
    spec: Union[str, Path, Data, None] = "default",
    *,
    root: Union[str, Path, None] = None,
    download: bool = True,
    limit_train: Optional[int] = None,
    limit_val: Optional[int] = None,
) -> Data:
    """Resolve a dataset name or folder (see the module docstring); fail early with what was expected.

    `limit_train` / `limit_val` keep a fixed random subset (for smoke runs).
    """
    if isinstance(spec, Data):
        data = spec
    else:
        text = "default" if spec is None else str(spec)
        root = Path(root or os.environ.get("RSBKIT_DATA_ROOT", Path.home() / ".cache" / "rsbkit" / "datasets"))
        if text.lower() in DEFAULT_NAMES:
            data = _embedded()
        elif text.lower() in FASHION_MNIST_NAMES:
            data = _fashion_mnist(root, download)
        elif text.startswith(TIMM_PREFIXES) and not Path(text).exists():
            data = _timm_dataset(text, root / text.split("/", 1)[1], download)
        else:
            data = _folder(Path(text).expanduser())
    if len(data.train) == 0 or len(data.val) == 0:
        raise DataError(f"{data.name}: empty split (train {len(data.train)}, val {len(data.val)} images); {HELP}")
    if limit_train is not None or limit_val is not None:
        val = _limit(data.val, limit_val)
        files = data.val_files if val is data.val else None
        data = Data(data.name, _limit(data.train, limit_train), val, data.classes, data.source, files, data.title)
    return data


# ---------------------------------------------------------------- transforms and loaders


def train_transform(recipe: Recipe) -> Callable:
    """RandomResizedCrop, flip, RandAugment string, random erasing: timm's ImageNet train transform,
    resampling with `train_interpolation` (timm's ``random``: bilinear or bicubic drawn per image)."""
    return create_transform(
        input_size=recipe.train_res,
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


def eval_transform(test_res: int, crop_pct: float, interpolation: str = "bicubic") -> Callable:
    """Resize to test_res / crop_pct, centre-crop test_res, normalise: timm's eval transform."""
    interpolation = "bicubic" if interpolation == "random" else interpolation
    return create_transform(input_size=test_res, is_training=False, crop_pct=crop_pct, interpolation=interpolation)


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


def collate(batch: list) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], list[SkippedImage]]:
    """Stack the readable samples; return the skipped ones beside them."""
    skipped = [b for b in batch if isinstance(b, SkippedImage)]
    good = [b for b in batch if not isinstance(b, SkippedImage)]
    if not good:
        return None, None, skipped
    images, labels = torch.utils.data.default_collate(good)
    return images, labels, skipped


def train_loader(
    data: Data,
    recipe: Recipe,
    plan: BatchPlan,
    *,
    workers: int,
    seed: int,
    pin_memory: bool = False,
    rank: int = 0,
) -> DataLoader:
    """One epoch's loader on the loader path (timm's per-image transform in the workers) for process
    `rank` of ``plan.world_size``, yielding its micro-batches in order (see :class:`StepSampler`).
    Training keeps one :class:`TrainInput` for the whole run instead; this is the same loader,
    set to the epoch drawn from `seed`."""
    source = TrainInput(data, recipe, plan, augment_on="loader", workers=workers, pin_memory=pin_memory, rank=rank)
    source.sampler.set_epoch(seed)
    return source.loader


def sample_seed(epoch_seed: int, position: int) -> int:
    """The seed of one sample's augmentation: a 32-bit mix (splitmix64's finaliser) of the epoch's seed
    and the sample's position in the epoch's order. The position, not the image: the copies of a
    repeated image differ; and not the process: a sample is augmented alike on any number of them."""
    return int(sample_seeds(epoch_seed, np.array([position]))[0])


_M64 = 0xFFFFFFFFFFFFFFFF


def sample_seeds(epoch_seed: int, positions: np.ndarray) -> np.ndarray:
    """:func:`sample_seed` for many positions at once, in numpy's wrapping uint64 arithmetic (1.28 M
    ImageNet positions: milliseconds, where a Python loop over them took 1.9 s every epoch)."""
    u = np.uint64
    z = (np.asarray(positions).astype(np.int64) + 1).astype(u) + u((epoch_seed * 0x9E3779B97F4A7C15) & _M64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> u(30))) * u(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> u(27))) * u(0x94D049BB133111EB)
    return ((z ^ (z >> u(31))) & u(0xFFFFFFFF)).astype(np.int64)


class EpochSampler(Sampler[tuple[int, int]]):
    """Process `rank`'s keys for the epoch set with :meth:`set_epoch`: ``(index, sample seed)`` in
    :class:`StepSampler`'s order. One sampler serves every epoch of a persistent loader: the
    DataLoader reads it again at each epoch's start, in the main process."""

    def __init__(self, dataset: Dataset, recipe: Recipe, plan: BatchPlan, rank: int = 0):
        self.dataset, self.recipe, self.plan, self.rank = dataset, recipe, plan, rank
        self.keys: list[tuple[int, int]] = []

    def set_epoch(self, epoch_seed: int) -> None:
        steps = StepSampler(epoch_order(self.dataset, self.recipe, epoch_seed), self.plan, self.rank)
        self.keys = list(zip(steps.indices, sample_seeds(epoch_seed, np.asarray(steps.positions)).tolist()))

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _Seeded:
    """Seeds the global RNGs that timm's transforms draw from (``random``, numpy, torch's CPU
    generator) from a sample's seed. In a loader worker the state is simply replaced; in the
    training process (``workers=0``) it is put back after, so mixup and drop path keep their own."""

    def __init__(self, seed: int, numpy_and_torch: bool = True):
        self.seed, self.all = seed, numpy_and_torch

    def __enter__(self):
        import random

        from torch.utils.data import get_worker_info

        self.saved = None
        if get_worker_info() is None:
            self.saved = (random.getstate(), np.random.get_state() if self.all else None,
                          torch.random.default_generator.get_state() if self.all else None)
        random.seed(self.seed)
        if self.all:
            np.random.seed(self.seed)
            torch.random.default_generator.manual_seed(self.seed)  # the CPU generator only: CUDA's stay as they are

    def __exit__(self, *exc):
        import random

        if self.saved is not None:
            random.setstate(self.saved[0])
            if self.all:
                np.random.set_state(self.saved[1])
                torch.random.default_generator.set_state(self.saved[2])


class SeededTransform(Dataset):
    """Items ``(index, seed)``: the image at `index`, through `transform` with every RNG seeded from `seed`."""

    def __init__(self, base: Dataset, transform: Callable, numpy_and_torch: bool = True):
        self.inner, self.numpy_and_torch = Transformed(base, transform), numpy_and_torch

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with _Seeded(seed, self.numpy_and_torch):
            return self.inner[index]


class _CropToUint8:
    """timm's RandomResizedCrop, then the crop as a uint8 (3, H, W) tensor."""

    def __init__(self, crop: Callable):
        self.crop = crop

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.crop(img), dtype=np.uint8).copy()).permute(2, 0, 1)


class ArrayBatches(Dataset):
    """Whole images of an :class:`ArrayImages` (or a Subset of one) as uint8 ``(3, H, W)`` tensors,
    fetched a micro-batch at a time with one array index (``__getitems__``): no PIL, no per-image
    work; the device crops them."""

    def __init__(self, base: Dataset):
        indices = None
        if isinstance(base, Subset):
            base, indices = base.dataset, np.asarray(base.indices)
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
    them inside its batch's one buffer, see :func:`_collate_encoded`)."""

    def __init__(self, base: ImageFiles):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Union[int, tuple[int, int]]):
        path, label = self.base.samples[key[0] if isinstance(key, tuple) else key]  # (index, seed) in training
        try:
            return np.fromfile(path, dtype=np.uint8), label, path
        except OSError as exc:
            return SkippedImage(path, f"{type(exc).__name__}: {exc}")


class EncodedBatch(NamedTuple):
    """A micro-batch of files as one buffer: file k is ``data[offsets[k]:offsets[k + 1]]``.

    One tensor, not one per file: each tensor a worker sends is a shared-memory segment and a passed
    file descriptor, so a batch of 2,048 files took 2,048 descriptors (``Too many open files`` under
    ``ulimit -n 1024``) and 130-170 ms to receive 256 of them, against about 6 ms for one buffer."""

    data: torch.Tensor  # uint8, every file's bytes one after another
    offsets: torch.Tensor  # int64 (n + 1,)
    paths: list[str]

    def files(self) -> list[torch.Tensor]:
        o = self.offsets.tolist()
        return [self.data[o[k] : o[k + 1]] for k in range(len(self.paths))]


def _collate_encoded(batch):
    skipped = [b for b in batch if isinstance(b, SkippedImage)]
    good = [b for b in batch if not isinstance(b, SkippedImage)]
    if not good:
        return None, None, skipped
    offsets = np.zeros(len(good) + 1, dtype=np.int64)
    np.cumsum([len(b[0]) for b in good], out=offsets[1:])
    data = torch.from_numpy(np.concatenate([b[0] for b in good]))
    return EncodedBatch(data, torch.from_numpy(offsets), [b[2] for b in good]), torch.tensor([b[1] for b in good]), skipped


def _files_of(dataset: Dataset) -> Optional[ImageFiles]:
    """The image files of a folder dataset, or of a Subset of one (``--limit-train``), in its order."""
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, ImageFiles):
        return ImageFiles([dataset.dataset.samples[i] for i in dataset.indices])
    return dataset if isinstance(dataset, ImageFiles) else None


def _mostly_jpeg(files: ImageFiles, sample: int = 1000) -> bool:
    """Whether most files (by extension, of up to `sample` spread over the list) are JPEGs."""
    step = max(1, len(files.samples) // sample)
    names = [p for p, _ in files.samples[::step]]
    return sum(os.path.splitext(p)[1].lower() in (".jpg", ".jpeg") for p in names) * 2 > len(names)


def _arrays_of(dataset: Dataset) -> bool:
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
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
    files = _files_of(data.train)
    if files is not None and (decode_on == "device" or (decode_on == "auto" and device.type == "cuda" and _mostly_jpeg(files))):
        return "encoded"
    if decode_on == "device":
        raise DataError(f"decode_on: device needs a folder dataset of image files; {data.name} is not one. "
                        "Set decode_on: auto or loader")
    return "crops"


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
                 pin_memory: bool = False, rank: int = 0, channels_last: bool = False, prefetch: int = 4):
        from .augment import DeviceAugment

        device = torch.device(device)
        self.kind = input_kind(data, recipe, augment_on, decode_on, device)
        self.device, self.channels_last, self.rank, self.prefetch = device, channels_last, rank, prefetch
        collate_fn = collate
        self.augment = None
        if self.kind == "loader":
            dataset = SeededTransform(data.train, train_transform(recipe))
        elif self.kind == "arrays":
            dataset, collate_fn = ArrayBatches(data.train), _collate_arrays
        elif self.kind == "encoded":
            dataset, collate_fn = EncodedFiles(_files_of(data.train)), _collate_encoded
        else:
            crop = RandomResizedCropAndInterpolation(recipe.train_res, scale=tuple(recipe.scale), ratio=tuple(recipe.ratio),
                                                     interpolation=recipe.train_interpolation)
            dataset = SeededTransform(data.train, _CropToUint8(crop), numpy_and_torch=False)  # timm's crop draws from `random`
        if self.kind != "loader":
            self.augment = DeviceAugment(recipe, crop=self.kind != "crops", channels_last=channels_last)
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

    def epoch(self, epoch_seed: int, generator: Optional[torch.Generator] = None):
        """The epoch's micro-batches. On CUDA they are made ready ahead, in a thread on a stream of its
        own (:func:`ahead`): decoding and augmenting batch i + 1 overlaps the step of batch i."""
        self.sampler.set_epoch(epoch_seed)
        draws = generator  # RandAugment's choices, the erasing boxes, a list's crops: on the CPU
        if generator is not None and generator.device.type != "cpu":
            draws = torch.Generator().manual_seed(sample_seed(epoch_seed, -1 - self.rank))  # per process, apart from samples
        batches = (self.prepare(batch, generator, draws) for batch in self.loader)
        return ahead(batches, self.device) if self.device.type == "cuda" else batches

    def prepare(self, batch, generator: Optional[torch.Generator], draws: Optional[torch.Generator]):
        """One loader batch as (images ready for the model, labels, skipped) on the device."""
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


def decode_batch(batch, device: torch.device):
    """An (EncodedBatch, labels, skipped) batch decoded on `device` (:func:`rsbkit.augment.decode_images`):
    (list of uint8 images, their labels, skipped) with the unreadable files moved to skipped; images
    None when none was readable."""
    from .augment import decode_images

    encoded, labels, skipped = batch
    if encoded is None:
        return None, None, skipped
    images, bad = decode_images(encoded.files(), device)
    if bad:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[[i for i, _ in bad]] = False
        labels = labels[keep]
        skipped = skipped + [SkippedImage(encoded.paths[i], reason) for i, reason in bad]
    return (images or None), labels, skipped


def ahead(batches, device: torch.device, depth: int = 2):
    """Run the iterator `batches` (loading, decoding, augmenting) in a thread, up to `depth` batches
    ahead of the caller; on CUDA on a stream of its own, each batch ordered after that stream's work.

    - Ordering: the caller's stream waits for an event recorded after each batch, and each tensor is
      ``record_stream``-ed on it, so the allocator does not hand its memory back to the thread's
      stream while the step still reads it.
    - nvJPEG: torchvision's ``decode_jpeg`` on CUDA allocates on the current stream and decodes on a
      private one without waiting for it (pytorch/vision#9606), and the hardware decoder may ignore
      streams altogether; :func:`rsbkit.augment.decode_images` therefore synchronises the current
      stream first. Here that is the thread's own stream, so only the thread waits: the training
      thread keeps launching.
    - An exception in the thread (an unreadable batch, an out-of-memory error) is raised in the
      caller at that batch; closing the generator early stops the thread.

    Training uses it on CUDA only (on a CPU the thread would take cores from the step)."""
    import queue

    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None
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
            if cuda:
                current = torch.cuda.current_stream(device)
                current.wait_event(event)
                for t in batch[:2]:
                    if isinstance(t, torch.Tensor):
                        t.record_stream(current)
            yield batch
    finally:
        stop.set()
        thread.join()


def epoch_order(dataset: Dataset, recipe: Recipe, seed: int) -> list[int]:
    """The epoch's order of sample indices over all processes, drawn from `seed` by timm's
    RepeatAugSampler when the recipe repeats augmentations (each image `aug_repeats`
    times in a row, len(dataset) rounded down to a multiple of 256 samples in all),
    else by torch's DistributedSampler (a permutation); both with ``num_replicas=1``."""
    return list(_order_sampler(dataset, recipe, seed))


def _order_sampler(dataset: Dataset, recipe: Recipe, seed: int) -> Sampler[int]:
    if recipe.aug_repeats:
        sampler = RepeatAugSampler(dataset, num_replicas=1, rank=0, num_repeats=recipe.aug_repeats)
        sampler.set_epoch(seed)  # timm seeds its shuffle with the epoch alone
        return sampler
    return DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)


class StepSampler(Sampler[int]):
    """Process `rank`'s share of an epoch's order, dealt the way timm's samplers deal it to GPUs.

    The order is cut into optimizer steps of ``plan.effective_batch`` images. A step
    has ``world_size x accum_steps`` forward passes (slots); position p of the step goes
    to slot ``p mod slots``, and slot s runs on rank ``s mod world_size`` as its
    micro-batch ``s // world_size``. So:

    - step k holds the same images on any number of processes, and with the same
      number of slots each forward pass holds the same images (1 process x 4
      accumulation steps = 4 processes x 1);
    - with one slot per process this is timm's and torch's dealing (rank r takes
      positions r, r + world_size, ...);
    - consecutive positions go to different slots: the copies of a repeated image
      (consecutive in RepeatAugSampler's order) never share a BatchNorm batch when
      a step has at least `aug_repeats` slots (plan_batch makes sure of it).

    Only whole steps are kept.
    """

    def __init__(self, order: Sequence[int], plan: BatchPlan, rank: int = 0):
        step, micro, world = plan.effective_batch, plan.micro_batch, plan.world_size
        slots = world * plan.accum_steps
        # positions in the epoch's order, the same on any number of processes: k * step + s + slots * j for
        # step k, slot s of this rank and place j in its micro-batch, in that order
        k = np.arange(len(order) // step).reshape(-1, 1, 1) * step
        s = np.arange(rank, slots, world).reshape(1, -1, 1)
        j = np.arange(micro).reshape(1, 1, -1) * slots
        positions = (k + s + j).reshape(-1)
        self.positions = positions.tolist()
        self.indices = np.asarray(order, dtype=np.int64)[positions].tolist() if len(positions) else []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_sampler(dataset: Dataset, recipe: Recipe, plan: BatchPlan, *, seed: int, rank: int = 0) -> StepSampler:
    """Rank `rank`'s indices of the epoch drawn from `seed` (see :func:`epoch_order`, :class:`StepSampler`)."""
    return StepSampler(epoch_order(dataset, recipe, seed), plan, rank)


def epoch_images(data: Data, recipe: Recipe) -> int:
    """Samples in one epoch's order over all processes (RepeatAugSampler keeps a multiple of 256)."""
    return len(_order_sampler(data.train, recipe, seed=0))


def eval_shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Every `world_size`-th image from `rank`: ranks together cover the split exactly once."""
    return dataset if world_size == 1 else Subset(dataset, list(range(rank, len(dataset), world_size)))


class EvalInput:
    """Validation batches decoded and resized on the device (``eval_on: device``): a folder's file bytes
    from the workers (one buffer per batch), :func:`rsbkit.augment.decode_images`, then timm's eval
    geometry with torchvision's tensor functions: the shorter side resized to floor(test_res /
    crop_pct) (antialiased, `interpolation`), the centre test_res x test_res crop, ImageNet's
    normalisation. Iterates (images, labels, skipped) like :func:`eval_loader`'s loader; on CUDA
    through :func:`ahead`."""

    def __init__(self, dataset: Dataset, test_res: int, crop_pct: float, interpolation: str, *, device,
                 batch_size: int, workers: int, pin_memory: bool = False):
        import math

        from .augment import Normalise

        files = _files_of(dataset)
        if files is None:
            raise DataError("eval_on: device needs a folder dataset of image files for validation; set eval_on: loader")
        self.device = torch.device(device)
        self.test_res, self.scale = test_res, math.floor(test_res / crop_pct)
        self.interpolation = "bicubic" if interpolation == "random" else interpolation
        self.normalise = Normalise()
        self.loader = DataLoader(EncodedFiles(files), batch_size=batch_size, shuffle=False, num_workers=workers,
                                 collate_fn=_collate_encoded,
                                 pin_memory=pin_memory, persistent_workers=workers > 0)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        batches = (self.prepare(b) for b in self.loader)
        return ahead(batches, self.device) if self.device.type == "cuda" else batches

    def prepare(self, batch):
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        images, labels, skipped = decode_batch(batch, self.device)
        if images is None:
            return None, None, skipped
        mode = InterpolationMode(self.interpolation)
        crops = [TF.center_crop(TF.resize(im, self.scale, interpolation=mode, antialias=True), [self.test_res] * 2)
                 for im in images]
        return self.normalise(torch.stack(crops).float()), labels.to(self.device, non_blocking=True), skipped


def eval_loader(dataset: Dataset, transform: Callable, *, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(
        Transformed(dataset, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,  # training evaluates through the same loader every epoch
    )
