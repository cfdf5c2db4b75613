"""Pseudo-labels for unlabelled images (Noisy Student: Xie et al., CVPR 2020; ResNet-RS's semi-supervised
result, Bello et al. 2021, section 3.2): a teacher labels the images once, without noise (its evaluation
transform, eval mode); the student trains with noise (the recipe's RandAugment, stochastic depth, dropout)
on the labelled and pseudo-labelled images together.

- The unlabelled source (recipe field ``unlabelled``): a folder of images without class folders (every image
  file under it), or ``fashion-mnist-unused``: the 48,000 Fashion-MNIST training images not in the embedded
  subset (Debian's ``dataset-fashion-mnist``), their labels dropped.
- The labels are stored once in the run folder (``pseudo_labels.pt``, written atomically, with their provenance:
  the teacher's checkpoint and its SHA-256, the source, the transform, the date) and reused on resume, so a
  resumed run trains on the same targets; a copy keyed by the checkpoint's hash (:func:`cache_file`) spares the
  next student of the same teacher the labelling.
- Each epoch holds the labelled images and ``pseudo_ratio`` times as many pseudo-labelled ones, drawn once (seeded
  by the recipe's seed) from those whose top probability reaches ``pseudo_threshold`` (Noisy Student filters
  out images its teacher is not confident on; its threshold is not in docs/sources.md, so none is the default).
- ``kd_target`` chooses the targets: ``soft``, the teacher's probabilities (temperature 1);
  ``hard``, its argmax.

The training set keeps integer labels, so every input path and sampler works unchanged: a pseudo-labelled
image's label is ``num_classes + j``, a row of :attr:`PseudoLabelled.targets`, the table of soft targets that
the loop looks the labels up in before mixing (:func:`mix_soft`).
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from . import distributed
from .checkpoint import read_checkpoint, save_checkpoint
from .data import ArrayImages, Data, ImageFiles
from .data.datasets import DEBIAN_FASHION_MNIST, embedded_train_indices, read_idx
from .data.eval_input import eval_loader, eval_transform
from .data.train_input import GLOBAL_RNG
from .errors import DataError
from .paths import find_path
from .teacher import Teacher, load_teacher

PSEUDO_LABELS = "pseudo_labels.pt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
FASHION_MNIST_UNUSED = "fashion-mnist-unused"


def unlabelled_images(source: str, folder: Path = DEBIAN_FASHION_MNIST) -> tuple[Dataset, str]:
    """The unlabelled images a recipe names, with label -1, and where they came from. ``fashion-mnist-unused:N``
    keeps the first N of the 48,000 (a quick look, a smoke test)."""
    name, _, count = source.partition(":")
    if name == FASHION_MNIST_UNUSED:
        if count and not count.isdigit():
            raise DataError(f"unlabelled: {source}: after {FASHION_MNIST_UNUSED}: give a number of images, e.g. "
                            f"{FASHION_MNIST_UNUSED}:2000")
        images, _, unused = unused_pool(folder, int(count) if count else None)
        return (ArrayImages(images[unused], np.full(len(unused), -1)),
                f"{folder}: {'the' if not count else 'the first'} {len(unused):,} Fashion-MNIST training images not in "
                "the embedded subset")
    path = find_path(source)
    if not path.is_dir():
        raise DataError(f"unlabelled: {source} is neither {FASHION_MNIST_UNUSED} nor a folder of images")
    files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"unlabelled: {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return ImageFiles([(f, -1) for f in files]), f"{path}: {len(files):,} image files"


def unused_pool(folder: Path = DEBIAN_FASHION_MNIST, count: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full Fashion-MNIST training images and labels, and the indices of those outside the embedded subset (the
    first `count` of them): ``fashion-mnist-unused``'s images, whose true labels the students never see."""
    files = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    if not all(f.is_file() for f in files):
        raise DataError(f"unlabelled: {FASHION_MNIST_UNUSED} reads the full Fashion-MNIST from {folder} (Debian's "
                        "dataset-fashion-mnist), which is not there; install it, or give a folder of images")
    images, labels = read_idx(files[0]), read_idx(files[1])
    unused = np.setdiff1d(np.arange(len(images)), embedded_train_indices(labels))
    return images, labels, unused[:count] if count else unused


CONFIDENCE_BINS = (0.0, 0.5, 0.7, 0.9, 0.99, 1.0)


def pseudo_label_quality(probs: torch.Tensor, truth: np.ndarray, bins: Sequence[float] = CONFIDENCE_BINS) -> dict[str, Any]:
    """How right a teacher's pseudo-labels are where the true labels exist (``fashion-mnist-unused``: the pool's own
    labels): overall accuracy of the argmax, per true class, and per band of confidence (the top probability, in
    `bins`, each band's share of the pool and accuracy): what a confidence threshold would keep and how clean."""
    truth = torch.as_tensor(np.asarray(truth), dtype=torch.long)
    if len(truth) != len(probs):
        raise DataError(f"{len(probs):,} pseudo-labels against {len(truth):,} true labels: they must be the same images")
    confidence, guess = probs.max(dim=1)
    right = (guess == truth).float()
    per_class = {int(c): round(float(right[truth == c].mean()) * 100, 2) for c in truth.unique()}
    bands = []
    for low, high in zip(bins[:-1], bins[1:]):
        inside = (confidence >= low) & ((confidence < high) if high < 1.0 else (confidence <= high))
        n = int(inside.sum())
        bands.append(dict(confidence=f"{low:g}-{high:g}", images=n, share=round(n / len(probs) * 100, 2),
                          accuracy=round(float(right[inside].mean()) * 100, 2) if n else None))
    return dict(images=len(probs), accuracy=round(float(right.mean()) * 100, 2), per_class=per_class, by_confidence=bands)


@torch.no_grad()
def label_images(teacher: Teacher, images: Dataset, *, device: Union[torch.device, str] = "cpu",
                 batch_size: int = 256) -> torch.Tensor:
    """The teacher's probabilities (float32, N x classes) for every image, through its evaluation transform, in
    float32 and eval mode: the same teacher and images give the same labels, bit for bit, on a CPU."""
    transform = eval_transform(teacher.input_size or 224, teacher.crop_pct, teacher.interpolation, teacher.mean, teacher.std)
    teacher.model.eval()
    out = []
    for batch, _, skipped in eval_loader(images, transform, batch_size=batch_size, workers=0):
        if skipped:
            raise DataError(f"unlabelled image {skipped[0].path} is unreadable ({skipped[0].reason}); remove it")
        out.append(torch.softmax(teacher.model(batch.to(device)).float(), dim=-1).cpu())
    return torch.cat(out)


def pseudo_label_file(run_path: Path, teacher: Teacher, images: Dataset, source: str, where: str, *,
                      device: Union[torch.device, str] = "cpu", log: Callable[[str], None] = print) -> dict[str, Any]:
    """The run's pseudo-labels: read from ``pseudo_labels.pt`` when it was made by this teacher from this
    source, else made now and written atomically. Returns {'probs', 'provenance'}."""
    path = run_path / PSEUDO_LABELS
    if path.is_file():
        saved = read_checkpoint(path)
        same = (saved["provenance"]["teacher_sha256"], saved["provenance"]["source"], saved["probs"].shape[0])
        if same == (teacher.sha256, source, len(images)):
            log(f"pseudo-labels: {len(images):,} from {path} (made {saved['provenance']['date']})")
            return saved
        raise DataError(f"{path} was made by teacher {saved['provenance']['teacher']} from {saved['provenance']['source']}, "
                        f"not by {teacher.source} from {source}; start a new run folder")
    cached = cache_file(teacher, source)
    if cached is not None and cached.is_file():  # the same teacher checkpoint on the same source, labelled before
        saved = read_checkpoint(cached)
        if saved["probs"].shape[0] == len(images) and saved["provenance"]["teacher_sha256"] == teacher.sha256:
            log(f"pseudo-labels: {len(images):,} as this teacher labelled them before ({cached})")
            record = dict(probs=saved["probs"], provenance=dict(saved["provenance"], teacher=teacher.source,
                                                                teacher_checkpoint=teacher.checkpoint))
            run_path.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, record)
            return record
    log(f"pseudo-labels: the teacher labels {len(images):,} unlabelled images ({where}) ...")
    probs = label_images(teacher, images, device=device)
    provenance = dict(teacher=teacher.source, teacher_checkpoint=teacher.checkpoint, teacher_sha256=teacher.sha256,
                      teacher_model=teacher.model_name, source=source, images=where,
                      transform=dict(size=teacher.input_size, crop_pct=teacher.crop_pct, interpolation=teacher.interpolation,
                                     mean=list(teacher.mean), std=list(teacher.std)),
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    record = dict(probs=probs, provenance=provenance)
    run_path.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, record)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(cached, record)
    return record


def cache_file(teacher: Teacher, source: str) -> Optional[Path]:
    """Where labels of `source` by this teacher checkpoint are kept for the next run with them (the students of a study
    share a teacher): ``$RSBKIT_CACHE`` or ``~/.cache/rsbkit``, ``pseudo_labels/<sha256>-<source>.pt``; None for a
    teacher without a checkpoint file (a timm name)."""
    if teacher.sha256 is None:
        return None
    root = Path(os.environ.get("RSBKIT_CACHE", Path.home() / ".cache" / "rsbkit"))
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in source)[-80:]
    return root / "pseudo_labels" / f"{teacher.sha256[:24]}-{slug}.pt"


@dataclass
class PseudoLabelled:
    """The training set with pseudo-labelled images added, and the table its labels index."""

    train: Dataset
    targets: torch.Tensor  # (num_classes + picked) x num_classes: one-hot rows for the classes, then each image's target
    summary: dict[str, Any]


def _arrays(dataset: Dataset) -> Optional[tuple[np.ndarray, np.ndarray]]:
    if isinstance(dataset, ArrayImages):
        return dataset.images, dataset.labels
    if isinstance(dataset, Subset) and (inner := _arrays(dataset.dataset)) is not None:
        keep = np.asarray(dataset.indices)
        return inner[0][keep], inner[1][keep]
    return None


def _samples(dataset: Dataset) -> Optional[list]:
    if isinstance(dataset, ImageFiles):
        return list(dataset.samples)
    if isinstance(dataset, Subset) and (inner := _samples(dataset.dataset)) is not None:
        return [inner[i] for i in dataset.indices]
    return None


def with_pseudo_labels(labelled: Dataset, unlabelled: Dataset, probs: torch.Tensor, *, num_classes: int, ratio: float,
                       threshold: Optional[float], target: str, seed: int) -> PseudoLabelled:
    """The labelled images plus ``round(ratio x len(labelled))`` pseudo-labelled ones (drawn with `seed` from those
    whose top probability reaches `threshold`), labels ``num_classes + j`` for the j-th, and the target table."""
    if probs.shape[1] != num_classes:
        raise DataError(f"the pseudo-labels have {probs.shape[1]} classes, the data {num_classes}")
    confidence = probs.max(dim=1).values
    eligible = torch.arange(len(probs)) if threshold is None else torch.nonzero(confidence >= threshold).flatten()
    wanted = int(round(ratio * len(labelled)))
    order = torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))
    picked = eligible[order[:wanted]].sort().values
    rows = probs[picked] if target == "soft" else torch.nn.functional.one_hot(probs[picked].argmax(1), num_classes).float()
    targets = torch.cat([torch.eye(num_classes), rows])
    ids = num_classes + np.arange(len(picked))
    own, theirs = _arrays(labelled), _arrays(unlabelled)
    if own is not None and theirs is not None:
        if own[0].shape[1:] != theirs[0].shape[1:]:
            raise DataError(f"the unlabelled images are {theirs[0].shape[1:]}, the labelled {own[0].shape[1:]}: they must match")
        train: Dataset = ArrayImages(np.concatenate([own[0], theirs[0][picked.numpy()]]), np.concatenate([own[1], ids]))
    elif (a := _samples(labelled)) is not None and (b := _samples(unlabelled)) is not None:
        train = ImageFiles(a + [(b[int(i)][0], int(j)) for i, j in zip(picked, ids)])
    else:
        raise DataError(f"unlabelled images of type {type(unlabelled).__name__} cannot join a training set of "
                        f"{type(labelled).__name__}: give arrays with an array dataset (fashion-mnist-unused with "
                        "default) or a folder of images with a folder dataset")
    summary = dict(labelled=len(labelled), unlabelled=len(probs), eligible=len(eligible), used=len(picked), ratio=ratio,
                   threshold=threshold, target=target, mean_confidence=round(float(confidence[picked].mean()), 4)
                   if len(picked) else None)
    return PseudoLabelled(train, targets, summary)


def soft_targets(targets: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Each label's row of the target table, smoothed as timm's Mixup smooths one-hot targets."""
    rows = targets[labels]
    return rows * (1.0 - smoothing) + smoothing / targets.shape[1] if smoothing else rows


def mix_soft(mixup, images: torch.Tensor, targets: torch.Tensor):
    """timm's Mixup/CutMix of a batch (its batch mode: one lambda and box, the batch flipped for partners) with
    soft targets: the images mixed by timm's own draw, the targets ``lam * t + (1 - lam) * t.flip(0)``, as
    timm's ``mixup_target`` mixes one-hot ones."""
    if mixup.mode != "batch":
        raise DataError(f"pseudo-labels mix soft targets in timm's batch mode, not {mixup.mode!r}")
    with GLOBAL_RNG:
        lam = mixup._mix_batch(images)
    return images, targets * lam + targets.flip(0) * (1.0 - lam)


def pseudo_labelled_data(recipe, data, run_path: Path, job, device, log: Callable[[str], None] = print):
    """The run's training data with its pseudo-labelled images (rank 0 labels them or reads its earlier labels; every
    rank then reads the same file): (Data, target table, what result.json records)."""
    teacher = load_teacher(recipe.teacher, num_classes=data.num_classes, classes=data.classes, device=device)
    images, where = unlabelled_images(recipe.unlabelled)
    distributed.on_main(job, lambda: pseudo_label_file(run_path, teacher, images, recipe.unlabelled, where, device=device,
                                                       log=log))
    record = read_checkpoint(run_path / PSEUDO_LABELS)
    made = with_pseudo_labels(data.train, images, record["probs"], num_classes=data.num_classes, ratio=recipe.pseudo_ratio,
                              threshold=recipe.pseudo_threshold, target=recipe.kd_target, seed=recipe.seed)
    log(f"pseudo-labels: {made.summary['used']:,} of {made.summary['eligible']:,} eligible ({recipe.kd_target} targets, "
        f"mean confidence {made.summary['mean_confidence']}) beside {made.summary['labelled']:,} labelled images")
    new = Data(data.name, made.train, data.val, data.classes,
               f"{data.source} + {made.summary['used']:,} pseudo-labelled ({where})", data.val_files, data.title)
    return new, made.targets, dict(record["provenance"], **made.summary, file=str(run_path / PSEUDO_LABELS))
