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

import gzip
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from PIL import Image
from timm.data import create_dataset
from torch.utils.data import Dataset, Subset
from torchvision.datasets.folder import find_classes, make_dataset

from ..errors import DataError
from ..paths import find_path

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


EMBEDDED_SEED, EMBEDDED_TRAIN_PER_CLASS, EMBEDDED_TEST_PER_CLASS = 0, 1200, 200  # scripts/make_default_data.py's draw


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of each class, drawn without replacement, sorted (the embedded subset's draw)."""
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate(picks))


def embedded_train_indices(labels: np.ndarray) -> np.ndarray:
    """The indices into Fashion-MNIST's 60,000 training images of the embedded subset's 12,000 (the draw that
    scripts/make_default_data.py makes first)."""
    return balanced_subset(labels, EMBEDDED_TRAIN_PER_CLASS, np.random.default_rng(EMBEDDED_SEED))


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
        if name == "train":
            _no_empty_class(split_dir, samples, class_to_idx)
        splits[name] = samples
    return Data(path.name, ImageFiles(splits["train"]), ImageFiles(splits["val"]), classes, source=str(path.resolve()),
                val_files=[os.path.basename(p) for p, _ in splits["val"]])


def _no_empty_class(folder: Path, samples: list[tuple[str, int]], to_idx: dict[str, int]) -> None:
    """Name the class folders of `folder` that gave no image to `samples`."""
    seen = {label for _, label in samples}
    empty = [c for c, i in to_idx.items() if i not in seen]
    if empty:
        raise DataError(f"{folder}: the class folder(s) {', '.join(empty[:5])} hold no images "
                        f"({' '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s)")


def class_folders(path: Union[str, Path], classes: Optional[Sequence[str]] = None,
                  num_classes: Optional[int] = None) -> Data:
    """A folder of class folders without ``train/`` (ImageNet-V2, a held-out validation split) as the
    validation split of a model with `classes` (its run's names) or `num_classes`. Folders named by the
    model's classes take those labels; otherwise folders named by integers are class indices
    (ImageNet-V2's ``0`` .. ``999``: by number, not by string order, which would put 10 before 2).
    Anything else is refused, naming the folders."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset folder {path} does not exist; {HELP}")
    names = sorted(d.name for d in path.iterdir() if d.is_dir())
    if not names:
        raise DataError(f"{path} holds no class folders; expected {path}/<class>/*.jpg")
    n = len(classes) if classes else num_classes
    if classes and set(names) <= set(classes):
        to_idx, how = {c: list(classes).index(c) for c in names}, "the run's class names"
    elif n and all(c.isdigit() and int(c) < n for c in names):
        to_idx, how = {c: int(c) for c in names}, f"class indices 0..{n - 1}"
    else:
        bad = [c for c in names if not (classes and c in classes) and not (c.isdigit() and n and int(c) < n)]
        theirs = f"the run's classes ({', '.join(list(classes)[:3])}, ...)" if classes else "its classes"
        raise DataError(f"{path}: class folders {', '.join(bad[:5])} are neither {theirs} nor class indices "
                        f"0..{(n or 1) - 1}; name each folder by its class")
    samples = make_dataset(str(path), to_idx, IMAGE_EXTENSIONS, allow_empty=True)
    _no_empty_class(path, samples, to_idx)
    labels = list(classes) if classes else [str(i) for i in range(n)]
    return Data(path.name, ImageFiles([]), ImageFiles(samples), labels, source=f"{path.resolve()} (labelled by {how})",
                val_files=[os.path.basename(p) for p, _ in samples])


def _timm_dataset(name: str, root: Path, download: bool) -> Data:
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


def fixed_subset(dataset: Dataset, n: Optional[int], seed: int = 0) -> Dataset:
    """`n` images of `dataset` drawn once by `seed` (the whole set when it holds no more); the same `n` gives
    the same images, and a smaller `n` a subset of a larger one's (the first `n` of one permutation)."""
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
    classes: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
) -> Data:
    """Resolve a dataset name or folder (see the module docstring); fail early with what was expected.

    `limit_train` / `limit_val` keep a fixed random subset (for smoke runs). Given a model's `classes` or
    `num_classes` (evaluation), a folder of class folders without ``train/`` is read as a validation
    split (:func:`class_folders`).
    """
    needs_train = not isinstance(spec, Data)  # a Data was checked when it was made
    if isinstance(spec, Data):
        data = spec
    elif (classes or num_classes) and (folder := find_path(str(spec))).is_dir() and not (folder / "train").is_dir():
        data, needs_train = class_folders(folder, classes, num_classes), False  # a validation split only
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
            data = _folder(find_path(text))  # from a kernel in notebooks/, a folder named from the checkout's root
    if len(data.val) == 0 or (len(data.train) == 0 and needs_train):
        raise DataError(f"{data.name}: empty split (train {len(data.train)}, val {len(data.val)} images); {HELP}")
    if limit_train is not None or limit_val is not None:
        val = fixed_subset(data.val, limit_val)
        files = data.val_files if val is data.val else None
        data = Data(data.name, fixed_subset(data.train, limit_train), val, data.classes, data.source, files, data.title)
    return data


def collate(batch: list) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], list[SkippedImage]]:
    """Stack the readable samples; return the skipped ones beside them."""
    skipped = [b for b in batch if isinstance(b, SkippedImage)]
    good = [b for b in batch if not isinstance(b, SkippedImage)]
    if not good:
        return None, None, skipped
    images, labels = torch.utils.data.default_collate(good)
    return images, labels, skipped
