"""Datasets by name or folder, clear errors, corrupt images, timm transforms and samplers."""
from __future__ import annotations

import collections
import gzip
import shutil
from pathlib import Path

import pytest
import torch
from timm.data.auto_augment import RandAugment
from torchvision import transforms as T

from rsbkit.core.data import SkippedImage, TrainInput, collate, eval_transform, load_data, train_transform
from rsbkit.core.data import datasets as rdata
from rsbkit.core.errors import DataError
from rsbkit.core.recipes import A1, A3, TORCHVISION, plan_batch, smoke

EMBEDDED = Path(rdata.__file__).parents[2] / "embedded" / "fashion_mnist_subset"


def train_loader(data, recipe, plan, *, workers: int, seed: int, rank: int = 0):
    """One epoch's loader on the loader path (timm's per-image transform in the workers) for process `rank`,
    set to the epoch drawn from `seed`: what TrainInput iterates, one epoch at a time."""
    source = TrainInput(data, recipe, plan, augment_on="loader", workers=workers, rank=rank)
    source.sampler.set_epoch(seed)
    return source.loader


def torchvision_raw_files(raw: Path) -> None:
    """The embedded subset laid out as torchvision's FashionMNIST expects its downloaded files."""
    raw.mkdir(parents=True)
    for ours, theirs in (("train", "train"), ("test", "t10k")):
        for kind, n in (("images", 3), ("labels", 1)):
            with gzip.open(EMBEDDED / f"{ours}-{kind}-idx{n}-ubyte.gz") as src, open(raw / f"{theirs}-{kind}-idx{n}-ubyte", "wb") as dst:
                shutil.copyfileobj(src, dst)


def test_embedded_default_is_balanced_real_data(embedded):
    assert (len(embedded.train), len(embedded.val), embedded.num_classes) == (12000, 2000, 10)
    assert torch.bincount(torch.from_numpy(embedded.train.labels)).tolist() == [1200] * 10
    assert torch.bincount(torch.from_numpy(embedded.val.labels)).tolist() == [200] * 10
    img, label = embedded.train[0]
    assert img.size == (28, 28) and 0 <= label < 10
    assert embedded.classes[9] == "Ankle boot"
    notice = (EMBEDDED / "README.md").read_text()
    assert "Zalando SE" in notice and "Permission is hereby granted" in notice  # the MIT attribution ships with it


def test_images_become_three_channel_tensors(embedded):
    ds = rdata.Transformed(embedded.train, train_transform(A3.replace(train_res=32)))
    x, _ = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


@pytest.mark.skipif(not (rdata.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (scripts/system-packages.sh installs it)")
def test_embedded_images_are_taken_from_the_originals(embedded):
    full = load_data("fashion-mnist")
    assert (len(full.train), len(full.val)) == (60000, 10000) and "Debian" in full.source
    originals = {full.val.images[i].tobytes() for i in range(len(full.val))}
    assert all(embedded.val.images[i].tobytes() in originals for i in range(0, 2000, 97))


def test_fashion_mnist_falls_back_to_torchvision_files(tmp_path, monkeypatch):
    monkeypatch.setattr(rdata, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    torchvision_raw_files(tmp_path / "FashionMNIST" / "raw")
    data = load_data("fashion-mnist", root=tmp_path, download=False)
    assert (len(data.train), len(data.val)) == (12000, 2000) and "torchvision" in data.source
    x, _ = rdata.Transformed(data.train, eval_transform(32, 1.0))[0]
    assert x.shape == (3, 32, 32)  # grey PIL images are made RGB


def test_fashion_mnist_without_files_or_network(tmp_path, monkeypatch):
    monkeypatch.setattr(rdata, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(DataError, match=r"fashion-mnist: not in .*absent.*dataset-fashion-mnist"):
        load_data("fashion-mnist", root=tmp_path, download=False)


def test_timm_dataset_name_with_local_files(tmp_path):
    torchvision_raw_files(tmp_path / "fashion_mnist" / "FashionMNIST" / "raw")
    data = load_data("torch/fashion_mnist", root=tmp_path, download=False)
    assert (len(data.train), len(data.val), data.num_classes) == (12000, 2000, 10)


def test_timm_dataset_missing_offline(tmp_path):
    with pytest.raises(DataError, match=r"torch/cifar10: timm's create_dataset failed .*" + str(tmp_path)):
        load_data("torch/cifar10", root=tmp_path, download=False)


def test_folder_dataset(image_folder):
    data = load_data(image_folder)
    assert data.classes == ["class0", "class1", "class2"]
    assert (len(data.train), len(data.val)) == (72, 18)
    img, label = data.train[0]
    assert img.mode == "RGB" and label == 0
    assert data.val_files[0].endswith(".jpg")


def test_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DataError, match=rf"dataset folder {tmp_path}/nope does not exist; .*PATH/train/<class>"):
        load_data(tmp_path / "nope")


def test_folder_without_val_split(image_folder):
    shutil.rmtree(image_folder / "val")
    with pytest.raises(DataError, match=r"not in ImageNet layout: expected .*/train/<class>/\*.jpg and .*/val/<class>"):
        load_data(image_folder)


def test_folder_without_images(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "d" / split / "cat").mkdir(parents=True)
        (tmp_path / "d" / split / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"d/train holds no images \(looked for .jpg"):
        load_data(tmp_path / "d")


def test_corrupt_and_truncated_images_are_skipped(image_folder):
    bad = image_folder / "train" / "class0" / "zz_garbage.jpg"
    bad.write_bytes(b"this is not a jpeg")
    good = next((image_folder / "train" / "class1").glob("*.jpg"))
    truncated = image_folder / "train" / "class1" / "zz_truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    data = load_data(image_folder)
    items = [data.train[i] for i in range(len(data.train))]
    skipped = {Path(s.path).name for s in items if isinstance(s, SkippedImage)}
    assert skipped == {"zz_garbage.jpg", "zz_truncated.jpg"}
    images, labels, dropped = collate([rdata.Transformed(data.train, eval_transform(32, 1.0))[i] for i in range(len(data.train))])
    assert len(images) == len(data.train) - 2 and len(dropped) == 2
    assert "UnidentifiedImageError" in next(s.reason for s in dropped if s.path.endswith("zz_garbage.jpg"))


def test_train_transform_follows_the_recipe():
    tf = train_transform(A3)
    steps = tf.transforms
    rrc = steps[0]
    assert rrc.size == (160, 160) and rrc.scale == (0.08, 1.0)
    assert steps[1].p == 0.5  # horizontal flip
    ra = next(t for t in steps if isinstance(t, RandAugment))
    assert ra.num_layers == 2
    names = {op.name for op in ra.ops}
    assert {"PosterizeIncreasing", "SolarizeIncreasing", "SharpnessIncreasing"} <= names  # the inc1 variants
    assert all(op.magnitude == 6 and op.magnitude_std == 0.5 and op.prob == 0.5 for op in ra.ops)
    assert not any(type(t).__name__ == "ColorJitter" for t in steps)
    assert not any(type(t).__name__ == "RandomErasing" for t in steps)
    plain = train_transform(TORCHVISION).transforms
    assert not any(isinstance(t, RandAugment) for t in plain)


def test_eval_transform_resizes_by_crop_pct():
    tf = eval_transform(224, 0.95).transforms
    resize, crop = tf[0], tf[1]
    assert isinstance(resize, T.Resize) and resize.size == 235  # floor(224 / 0.95)
    assert isinstance(crop, T.CenterCrop) and crop.size == (224, 224)
    assert eval_transform(224, 0.875).transforms[0].size == 256


def test_repeated_augmentation_in_one_process(embedded):
    """aug_repeats 3 in one process: each forward batch holds distinct images, each image drawn comes 3 times
    in the epoch (but the one whose copies the epoch's end cuts), and a step holds the copies together."""
    data = load_data(embedded, limit_train=300)
    recipe = smoke(A1, batch_size=32)
    plan = plan_batch(recipe)
    assert (plan.accum_steps, plan.micro_batch) == (4, 8)  # 3 copies need >= 3 forward batches: 4 of 8
    loader = train_loader(data, recipe, plan, workers=0, seed=5)
    order = [index for index, _ in loader.sampler]  # keys: (index, the sample's seed)
    assert len(order) == 256  # timm keeps len(dataset) rounded down to 256 per epoch: 8 steps of 32
    micro = [order[i:i + 8] for i in range(0, 256, 8)]
    assert all(len(set(m)) == 8 for m in micro)  # no image twice in a BatchNorm batch
    counts = collections.Counter(order)
    assert sorted(counts.values())[1:] == [3] * (len(counts) - 1) and min(counts.values()) >= 1
    # the copies of an image sit in one optimizer step (or two neighbours, where a step ends), as on the paper's 4 GPUs
    # the sampler yields micro-batch by micro-batch; position i belongs to step i // 32
    steps_of = collections.defaultdict(set)
    for i, index in enumerate(order):
        steps_of[index].add(i // 32)
    assert all(max(s) - min(s) <= 1 for s in steps_of.values())
    assert sum(len(s) == 1 for s in steps_of.values()) > 0.8 * len(steps_of)
    assert order != [index for index, _ in train_loader(data, recipe, plan, workers=0, seed=6).sampler]


@pytest.mark.parametrize("workers", [0, 1])
def test_same_seed_same_batches(embedded, workers):
    from rsbkit.core.train import seed_everything

    data = load_data(embedded, limit_train=64)
    recipe = smoke(A3)

    def first_batch(seed):
        seed_everything(seed)  # as train() does each epoch; in-process transforms use the global RNGs
        return next(iter(train_loader(data, recipe, plan_batch(recipe.replace(batch_size=16)), workers=workers, seed=seed)))[0]

    a, b, c = first_batch(3), first_batch(3), first_batch(4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_limits_keep_a_fixed_subset(embedded):
    a, b = load_data(embedded, limit_train=100, limit_val=50), load_data(embedded, limit_train=100, limit_val=50)
    assert (len(a.train), len(a.val)) == (100, 50) and a.train.indices == b.train.indices
