"""BCE and CE on mixup/cutmix targets, against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
from timm.data.mixup import mixup_target

from rsbkit.core.data import create_mixup
from rsbkit.core.losses import create_loss
from rsbkit.core.recipes import A1, A2, A3

LOGITS = [[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]]
LABELS = [0, 2]
LAM = 0.7


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def bce(logits, targets):
    terms = [-(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))
             for row, trow in zip(logits, targets) for x, t in zip(row, trow)]
    return sum(terms) / len(terms)  # mean over images and classes


def soft_ce(logits, targets):
    rows = []
    for row, trow in zip(logits, targets):
        log_z = math.log(sum(math.exp(x) for x in row))
        rows.append(-sum(t * (x - log_z) for x, t in zip(row, trow)))
    return sum(rows) / len(rows)


def targets(smoothing=0.0):
    return mixup_target(torch.tensor(LABELS), 3, lam=LAM, smoothing=smoothing)


def test_mixup_target_by_hand():
    # image 0 (class 0) mixed with the flipped batch's image (class 2) at lambda 0.7
    assert targets().flatten().tolist() == pytest.approx([0.7, 0.0, 0.3, 0.3, 0.0, 0.7])
    off, on = 0.1 / 3, 1 - 0.1 + 0.1 / 3
    assert targets(0.1)[0].tolist() == pytest.approx([0.7 * on + 0.3 * off, off, 0.7 * off + 0.3 * on])


def test_bce_on_mixup_targets():
    loss = create_loss(A2, mixing=True)(torch.tensor(LOGITS), targets())
    expected = bce(LOGITS, [[0.7, 0.0, 0.3], [0.3, 0.0, 0.7]])
    # by hand, per element: 0.726928 0.313262 0.824077 / 0.693147 1.313262 1.526928, mean 0.899601
    assert expected == pytest.approx(0.899601, abs=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ce_on_mixup_targets():
    loss = create_loss(A2.replace(loss="ce"), mixing=True)(torch.tensor(LOGITS), targets())
    assert loss.item() == pytest.approx(soft_ce(LOGITS, [[0.7, 0.0, 0.3], [0.3, 0.0, 0.7]]), rel=1e-6)


def test_bce_with_smoothing_is_not_smoothed_twice():
    # A1: Mixup already folds smoothing 0.1 into the targets; the loss must take them as they are
    smoothed = targets(0.1)
    loss = create_loss(A1, mixing=True)(torch.tensor(LOGITS), smoothed)
    assert loss.item() == pytest.approx(bce(LOGITS, smoothed.tolist()), rel=1e-6)


def test_bce_target_threshold_turns_mixed_targets_into_ones():
    loss = create_loss(A2.replace(bce_target_thresh=0.2), mixing=True)(torch.tensor(LOGITS), targets())
    assert loss.item() == pytest.approx(bce(LOGITS, [[1, 0, 1], [1, 0, 1]]), rel=1e-6)


def test_bce_target_threshold_cancels_a1s_label_smoothing():
    # the 0.2 of third-party A1/A2 commands (issue 24): A1's smoothed targets, mixed or not, become 0 and 1
    thresholded = A1.replace(bce_target_thresh=0.2)
    mixed = create_loss(thresholded, mixing=True)(torch.tensor(LOGITS), targets(0.1))
    assert mixed.item() == pytest.approx(bce(LOGITS, [[1, 0, 1], [1, 0, 1]]), rel=1e-6)
    assert mixed.item() != pytest.approx(create_loss(A1, mixing=True)(torch.tensor(LOGITS), targets(0.1)).item(), rel=1e-3)
    plain = create_loss(thresholded, mixing=False)(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert plain.item() == pytest.approx(bce(LOGITS, [[1, 0, 0], [0, 0, 1]]), rel=1e-6)  # no smoothing left


def test_hard_label_losses_without_mixing():
    x, y = torch.tensor(LOGITS), torch.tensor(LABELS)
    assert create_loss(A3.replace(loss="ce"), mixing=False)(x, y).item() == pytest.approx(
        soft_ce(LOGITS, [[1, 0, 0], [0, 0, 1]]), rel=1e-6)
    smooth = create_loss(A3.replace(loss="ce", smoothing=0.1), mixing=False)(x, y).item()
    off = 0.1 / 3
    assert smooth == pytest.approx(soft_ce(LOGITS, [[1 - 0.1 + off, off, off], [off, off, 1 - 0.1 + off]]), rel=1e-5)
    assert create_loss(A3, mixing=False)(x, y).item() == pytest.approx(bce(LOGITS, [[1, 0, 0], [0, 0, 1]]), rel=1e-6)


def test_mixup_from_recipe():
    mix = create_mixup(A1, num_classes=10)
    assert (mix.mixup_alpha, mix.cutmix_alpha, mix.mix_prob, mix.switch_prob, mix.label_smoothing) == (0.2, 1.0, 1.0, 0.5, 0.1)
    assert create_mixup(A3.replace(mixup=0, cutmix=0), 10) is None
    torch.manual_seed(0)
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, soft = mix(images.clone(), labels)
    assert soft.shape == (4, 10) and torch.allclose(soft.sum(1), torch.ones(4))
    assert not torch.equal(mixed, images)
