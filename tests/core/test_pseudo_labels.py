"""Pseudo-labels (Noisy Student; rsbkit.core.pseudo_labels): the unlabelled pool is disjoint from the embedded
subset, labels reproduce bit for bit and survive a resume, the ratio, threshold and target kind pick what they say,
soft targets mix as timm mixes one-hot ones, and the recipe fields are checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rsbkit.core.pseudo_labels as pl
from rsbkit.core.checkpoint import load_checkpoint
from rsbkit.core.data import ArrayImages, load_data
from rsbkit.core.data.datasets import DEBIAN_FASHION_MNIST, read_idx
from rsbkit.core.data.train_input import create_mixup
from rsbkit.core.errors import DataError, RecipeError
from rsbkit.core.recipes import Recipe
from rsbkit.core.runs import load_run
from rsbkit.core.teacher import load_teacher
from rsbkit.core.train import train

SMALL = dict(limit_train=128, limit_val=64, workers=0, progress="none", device="cpu")


def test_the_unused_pool_is_disjoint_from_the_embedded_subset():
    """By index, and the index is the right one: the embedded subset's images are those of Fashion-MNIST at the
    recomputed indices, byte for byte."""
    labels = read_idx(DEBIAN_FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    images = read_idx(DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz")
    subset = pl.embedded_train_indices(labels)
    embedded = load_data("default").train
    assert np.array_equal(images[subset], embedded.images) and np.array_equal(labels[subset], embedded.labels)
    pool, where = pl.unlabelled_images(pl.FASHION_MNIST_UNUSED)
    assert len(pool) == 48_000 and "48,000" in where and set(pool.labels) == {-1}
    unused = np.setdiff1d(np.arange(60_000), subset)
    assert np.array_equal(pool.images, images[unused]) and not np.intersect1d(unused, subset).size


def small_pool(n=200):
    pool, _ = pl.unlabelled_images(pl.FASHION_MNIST_UNUSED)
    return ArrayImages(pool.images[:n], pool.labels[:n]), f"the first {n} unused images"


def test_ratio_threshold_and_target_kind_choose_the_pseudo_labelled_images():
    labelled = ArrayImages(np.zeros((10, 28, 28), np.uint8), np.arange(10) % 3)
    unlabelled = ArrayImages(np.ones((6, 28, 28), np.uint8), np.full(6, -1))
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.34, 0.33, 0.33], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2],
                          [0.3, 0.3, 0.4]])
    made = pl.with_pseudo_labels(labelled, unlabelled, probs, num_classes=3, ratio=0.3, threshold=0.5, target="soft", seed=0)
    assert made.summary["eligible"] == 4 and made.summary["used"] == 3 and len(made.train) == 13
    picked = made.train.labels[10:] - 3
    rows = made.targets[3:]
    assert torch.equal(made.targets[:3], torch.eye(3)) and len(rows) == 3
    assert all(probs[i].max() >= 0.5 for i in [int(torch.nonzero((probs == r).all(1))[0]) for r in rows])
    assert list(picked) == [0, 1, 2] and np.all(made.train.images[10:] == 1)
    hard = pl.with_pseudo_labels(labelled, unlabelled, probs, num_classes=3, ratio=0.3, threshold=0.5, target="hard", seed=0)
    assert torch.equal(hard.targets[3:], torch.nn.functional.one_hot(rows.argmax(1), 3).float())


def test_soft_targets_mix_as_timm_mixes_one_hot_ones():
    from timm.data.mixup import mixup_target

    recipe = Recipe(mixup=0.8, cutmix=1.0, smoothing=0.1)
    labels = torch.tensor([0, 2, 1, 2])
    images = torch.randn(4, 3, 8, 8)
    np.random.seed(5)
    theirs_x, theirs_y = create_mixup(recipe, 3)(images.clone(), labels)
    np.random.seed(5)
    mine_x, mine_y = pl.mix_soft(create_mixup(recipe, 3), images.clone(), pl.soft_targets(torch.eye(3), labels, 0.1))
    assert torch.equal(mine_x, theirs_x) and torch.allclose(mine_y, theirs_y)
    assert torch.allclose(pl.soft_targets(torch.eye(3), labels, 0.1), mixup_target(labels, 3, 1.0, 0.1))


def test_pseudo_labels_reproduce_bit_for_bit_and_a_resumed_run_reuses_them(tmp_path, smoke_run, smoke_recipe, monkeypatch):
    pool, where = small_pool()
    teacher = load_teacher(str(smoke_run), num_classes=10)
    first, again = pl.label_images(teacher, pool), pl.label_images(load_teacher(str(smoke_run), num_classes=10), pool)
    assert torch.equal(first, again) and first.shape == (200, 10)
    monkeypatch.setattr(pl, "unlabelled_images", lambda source: (pool, where))
    monkeypatch.setenv("RSBKIT_CACHE", str(tmp_path / "cache"))
    recipe = smoke_recipe.replace(epochs=2, warmup_epochs=1, teacher=str(smoke_run), unlabelled=pl.FASHION_MNIST_UNUSED,
                                  pseudo_ratio=0.5, kd_target="soft")
    train(recipe, "default", tmp_path / "straight", log=lambda *_: None, **SMALL)
    train(recipe.replace(epochs=1), "default", tmp_path / "part", log=lambda *_: None, **SMALL)
    state = load_checkpoint(tmp_path / "part" / "last.pt")
    made = (tmp_path / "part" / pl.PSEUDO_LABELS).stat().st_mtime_ns
    state["recipe"] = recipe.to_dict()
    from rsbkit.core.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "part" / "last.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    train(recipe, "default", tmp_path / "part", resume=True, log=lambda *_: None, **SMALL)
    assert (tmp_path / "part" / pl.PSEUDO_LABELS).stat().st_mtime_ns == made  # read again, not made again
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    saved = load_checkpoint(tmp_path / "straight" / pl.PSEUDO_LABELS)
    assert torch.equal(saved["probs"], first)  # the labels the run stored are the teacher's, bit for bit
    cached = list((tmp_path / "cache" / "pseudo_labels").iterdir())  # the second run took the first's labels
    assert len(cached) == 1 and cached[0].name.startswith(teacher.sha256[:24])
    result = load_run(tmp_path / "straight")["result"]
    record = result["pseudo_labels"]
    assert (record["teacher"], record["used"], record["labelled"], record["target"]) == (str(smoke_run), 64, 128, "soft")
    assert record["teacher_sha256"] == teacher.sha256 and result["data"]["train_images"] == 128 + 64


def test_pseudo_label_fields_are_checked():
    with pytest.raises(RecipeError, match="needs a teacher to label it"):
        Recipe(unlabelled="fashion-mnist-unused")
    with pytest.raises(RecipeError, match="pseudo_ratio set without unlabelled images"):
        Recipe(pseudo_ratio=2.0)
    with pytest.raises(RecipeError, match="pseudo_threshold=1.5"):
        Recipe(teacher="t", unlabelled="u", pseudo_threshold=1.5)


def test_pseudo_label_quality_against_the_pools_true_labels():
    """Accuracy overall, per true class and per confidence band, on made-up teacher outputs with a known answer."""
    probs = torch.tensor([[0.95, 0.05, 0.0], [0.6, 0.4, 0.0], [0.2, 0.75, 0.05], [0.1, 0.3, 0.6], [0.45, 0.45, 0.1]])
    truth = np.array([0, 1, 1, 2, 0])  # right: rows 0, 2, 3, 4 (argmax picks class 0 on the tie); wrong: row 1
    q = pl.pseudo_label_quality(probs, truth, bins=(0.0, 0.5, 0.9, 1.0))
    assert q["images"] == 5 and q["accuracy"] == 80.0
    assert q["per_class"] == {0: 100.0, 1: 50.0, 2: 100.0}
    assert q["by_confidence"] == [dict(confidence="0-0.5", images=1, share=20.0, accuracy=100.0),
                                  dict(confidence="0.5-0.9", images=3, share=60.0, accuracy=pytest.approx(66.67, abs=0.01)),
                                  dict(confidence="0.9-1", images=1, share=20.0, accuracy=100.0)]
    with pytest.raises(DataError, match="5 pseudo-labels against 4 true labels"):
        pl.pseudo_label_quality(probs, truth[:4])


def test_the_unused_pools_true_labels_line_up_with_its_images():
    if not (pl.DEBIAN_FASHION_MNIST / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images, labels, unused = pl.unused_pool(count=100)
    pool, _ = pl.unlabelled_images("fashion-mnist-unused:100")
    assert len(unused) == 100 and np.array_equal(pool.images, images[unused]) and labels[unused].max() <= 9
