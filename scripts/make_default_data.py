"""Rebuild rsbkit's embedded default dataset from the Fashion-MNIST originals.

The subset is class-balanced (1,200 train and 200 test images per class, drawn
with a fixed seed) and kept in the original gzipped IDX format, so that the
files can be checked against the originals byte for byte per image.

    python scripts/make_default_data.py [--src /usr/share/datasets/fashion-mnist]

The source files come from Debian's `dataset-fashion-mnist` package or from
https://github.com/zalandoresearch/fashion-mnist (MIT licence).
"""
from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

from rsbkit.core.data.datasets import EMBEDDED_SEED as SEED
from rsbkit.core.data.datasets import EMBEDDED_TEST_PER_CLASS as TEST_PER_CLASS
from rsbkit.core.data.datasets import EMBEDDED_TRAIN_PER_CLASS as TRAIN_PER_CLASS
from rsbkit.core.data.datasets import balanced_subset, read_idx

OUT = Path(__file__).resolve().parents[1] / "rsbkit" / "embedded" / "fashion_mnist_subset"


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    # mtime=0 keeps the archive identical from one rebuild to the next
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
        f.write(header + array.astype(np.uint8).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, src_prefix, per_class in (("train", "train", TRAIN_PER_CLASS), ("test", "t10k", TEST_PER_CLASS)):
        images = read_idx(args.src / f"{src_prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.src / f"{src_prefix}-labels-idx1-ubyte.gz")
        keep = balanced_subset(labels, per_class, rng)
        write_idx(OUT / f"{split}-images-idx3-ubyte.gz", images[keep])
        write_idx(OUT / f"{split}-labels-idx1-ubyte.gz", labels[keep])
        print(f"{split}: {len(keep)} images from {src_prefix} ({per_class} per class)")


if __name__ == "__main__":
    main()
