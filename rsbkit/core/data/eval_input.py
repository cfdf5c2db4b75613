"""The validation input: timm's eval transform in loader workers (:func:`eval_loader`), or file bytes
decoded and resized on the device (:class:`EvalInput`, ``eval_on: device``); :func:`eval_shard` splits
the set over processes."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..augment import Normalise
from ..errors import DataError
from .datasets import Transformed, collate
from .train_input import EncodedFiles, ahead, collate_encoded, decode_batch, files_of, side_stream


def eval_transform(test_res: int, crop_pct: float, interpolation: str = "bicubic",
                   mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD) -> Callable:
    """Resize to test_res / crop_pct, centre-crop test_res, normalise: timm's eval transform. rsbkit trains
    with ImageNet's mean and std; a timm model trained elsewhere gives its own (its pretrained_cfg)."""
    interpolation = "bicubic" if interpolation == "random" else interpolation
    return create_transform(input_size=test_res, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                            mean=tuple(mean), std=tuple(std))


def eval_shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Every `world_size`-th image from `rank`: ranks together cover the split exactly once."""
    return dataset if world_size == 1 else Subset(dataset, list(range(rank, len(dataset), world_size)))


class EvalInput:
    """Validation batches decoded and resized on the device (``eval_on: device``): a folder's file bytes
    from the workers (one buffer per batch), :func:`rsbkit.core.augment.decode_images`, then timm's eval
    geometry with torchvision's tensor functions: the shorter side resized to floor(test_res /
    crop_pct) (antialiased, `interpolation`), the centre test_res x test_res crop, ImageNet's
    normalisation. Iterates (images, labels, skipped) like :func:`eval_loader`'s loader; on CUDA
    through :func:`ahead`."""

    def __init__(self, dataset: Dataset, test_res: int, crop_pct: float, interpolation: str, *, device,
                 batch_size: int, workers: int, pin_memory: bool = False):

        files = files_of(dataset)
        if files is None:
            raise DataError("eval_on: device needs a folder dataset of image files for validation; set eval_on: loader")
        self.device = torch.device(device)
        self.stream = side_stream(self.device)  # one for the run: every evaluation reuses it and its cached blocks
        self.test_res, self.scale = test_res, math.floor(test_res / crop_pct)
        self.interpolation = "bicubic" if interpolation == "random" else interpolation
        self.normalise = Normalise().to(self.device)  # copied here, not on the input thread's stream
        self.loader = DataLoader(EncodedFiles(files), batch_size=batch_size, shuffle=False, num_workers=workers,
                                 collate_fn=collate_encoded,
                                 pin_memory=pin_memory, persistent_workers=workers > 0)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        batches = (self.prepare(b) for b in self.loader)
        return ahead(batches, self.device, stream=self.stream) if self.device.type == "cuda" else batches

    def prepare(self, batch):
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
