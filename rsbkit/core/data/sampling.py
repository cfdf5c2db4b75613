"""The order of an epoch's images and each image's augmentation seed: timm's samplers (RepeatAugSampler
for aug_repeats, else a seeded shuffle) drawn from the epoch's seed, dealt into micro-batches and over
processes (:class:`StepSampler`), each sample seeded from (epoch seed, position) (:func:`sample_seeds`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ..recipes import BatchPlan, Recipe
from .datasets import Data


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


class EpochSampler(Sampler[tuple[int, ...]]):
    """Process `rank`'s keys for the epoch set with :meth:`set_epoch`: ``(index, sample seed)`` in
    :class:`StepSampler`'s order, or ``(index, sample seed, size)`` when the epoch is given a train
    size (progressive resizing: the loader's workers crop to it). One sampler serves every epoch of a persistent loader: the
    DataLoader reads it again at each epoch's start, in the main process."""

    def __init__(self, dataset: Dataset, recipe: Recipe, plan: BatchPlan, rank: int = 0):
        self.dataset, self.recipe, self.plan, self.rank = dataset, recipe, plan, rank
        self.keys: list[tuple[int, ...]] = []

    def set_epoch(self, epoch_seed: int, size: Optional[int] = None) -> None:
        steps = StepSampler(epoch_order(self.dataset, self.recipe, epoch_seed), self.plan, self.rank)
        seeds = sample_seeds(epoch_seed, np.asarray(steps.positions)).tolist()
        self.keys = list(zip(steps.indices, seeds) if size is None else zip(steps.indices, seeds, [size] * len(seeds)))

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


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


def epoch_images(data: Data, recipe: Recipe) -> int:
    """Samples in one epoch's order over all processes (RepeatAugSampler keeps a multiple of 256)."""
    return len(_order_sampler(data.train, recipe, seed=0))
