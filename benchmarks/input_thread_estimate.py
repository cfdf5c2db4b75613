"""How many images/s one input thread can feed on a GPU, estimated from a CPU profile of the device augmentation.

    python benchmarks/input_thread_estimate.py [--batch 256] [--res 160] [--launch-us 5]

Runs rsbkit's DeviceAugment with A3's ingredients (RandomResizedCrop from a list of decoded images, flip,
RandAugment rand-m6-mstd0.5-inc1, normalisation) on tiny images on the CPU, so that the kernels cost next to
nothing and what is timed is the host's work per batch: Python, torch's dispatcher, the per-image crop loop.
It counts the tensor operations with a TorchDispatchMode: views launch nothing, each other one about one
kernel on CUDA. The estimate for a
GPU adds `--launch-us` per operation (cudaLaunchKernel's host cost, a few microseconds) and assumes the GPU
machine's host runs Python about as fast as this one. It is an estimate, not a measurement: the GPU check's
bench step (`input_device`, `end_to_end_device`) measures the real figure.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rsbkit.core.augment import DeviceAugment
from rsbkit.core.recipes import A3


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops, self.views = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        (self.views if getattr(func, "is_view", False) else self.ops)[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--res", type=int, default=160)
    p.add_argument("--launch-us", type=float, default=5.0)
    p.add_argument("--step-ms", type=float, default=25.6, help="the model step to feed: 256 images at 10,000 images/s")
    args = p.parse_args()
    torch.set_num_threads(1)
    recipe = A3.replace(batch_size=args.batch)
    augment = DeviceAugment(recipe.replace(train_res=8), channels_last=True)  # tiny output: kernels cost ~nothing
    images = [torch.randint(0, 255, (3, 12, 10), dtype=torch.uint8) for _ in range(args.batch)]
    generator, draws = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(3):
        augment(images, generator, draws)
    with Count() as counted:
        augment(images, generator, draws)
    ops, views = sum(counted.ops.values()), sum(counted.views.values())
    runs = 20
    t0 = time.perf_counter()
    for _ in range(runs):
        augment(images, generator, draws)
    host_ms = (time.perf_counter() - t0) / runs * 1e3
    gpu_ms = host_ms + ops * args.launch_us / 1e3
    print(f"device augmentation, A3 ({recipe.aa}), batch {args.batch} from a list of decoded images:")
    print(f"  tensor operations per batch that launch a kernel on CUDA: {ops} ({ops / args.batch:.1f} per image), "
          f"and {views} views (no launch); most frequent: " + ", ".join(f"{k} {v}" for k, v in counted.ops.most_common(6)))
    print(f"  host time per batch on this CPU, kernels negligible: {host_ms:.1f} ms")
    print(f"  estimate on a GPU: {host_ms:.1f} + {ops} x {args.launch_us:g} us = {gpu_ms:.1f} ms per batch, "
          f"{args.batch / gpu_ms * 1e3:,.0f} images/s from one input thread")
    threads = gpu_ms / args.step_ms
    print(f"  a model step of {args.step_ms} ms per {args.batch} images needs {threads:.1f} such threads' work "
          f"(the GIL serialises their Python: threads add only what the dispatcher and kernels run without it)")


if __name__ == "__main__":
    main()
