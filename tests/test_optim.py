"""The LR schedule per step and the optimizer's parameter groups."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.scheduler import CosineLRScheduler

from rsbkit.optim import create_optimizer, lr_schedule
from rsbkit.recipes import A1, A3, TORCHVISION

STEPS = 7  # optimizer steps per epoch


def test_cosine_schedule_per_step():
    recipe = A3.replace(epochs=10, warmup_epochs=2)
    peak = 8e-3
    lrs = lr_schedule(recipe, STEPS, peak)
    total, warmup = 10 * STEPS, 2 * STEPS
    assert len(lrs) == total
    # warmup: linear from warmup_lr (1e-4) at step 0 towards the peak
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[warmup - 1] == pytest.approx(1e-4 + (warmup - 1) / warmup * (peak - 1e-4))
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    # then the cosine, counted from step 0 (timm's warmup_prefix=False), ending at min_lr
    for t in (warmup, 40, total - 1):
        assert lrs[t] == pytest.approx(1e-6 + 0.5 * (peak - 1e-6) * (1 + math.cos(math.pi * t / total)))
    assert lrs[-1] == pytest.approx(1e-6, abs=5e-6)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))


def test_schedule_equals_timm_cosine_scheduler():
    recipe = A1.replace(epochs=12, warmup_epochs=3)
    peak = 5e-3 * 256 / 2048
    ours = lr_schedule(recipe, STEPS, peak)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = CosineLRScheduler(opt, t_initial=12 * STEPS, lr_min=1e-6, warmup_t=3 * STEPS, warmup_lr_init=1e-4, t_in_epochs=False)
    theirs = []
    for t in range(12 * STEPS):
        sched.step_update(t)
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs, rel=1e-12)
    sched.step_update(12 * STEPS)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)  # the cosine ends exactly at min_lr


def test_torchvision_step_schedule():
    lrs = lr_schedule(TORCHVISION, STEPS, 0.1)
    for epoch, expected in ((0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 1e-3), (80, 1e-4), (89, 1e-4)):
        assert lrs[epoch * STEPS] == pytest.approx(expected), epoch


def test_no_weight_decay_on_norm_and_bias():
    model = timm.create_model("resnet18", num_classes=10)
    opt = create_optimizer(model, A1, lr=1e-3)
    by_decay = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    assert set(by_decay) == {0.0, 0.01}
    assert all(p.ndim <= 1 for p in by_decay[0.0])  # BN weights and biases
    assert all(p.ndim > 1 for p in by_decay[0.01])  # conv and linear weights
    assert type(opt).__name__ == "Lamb" and opt.defaults["max_grad_norm"] == 1.0
    assert create_optimizer(model, A1.replace(lamb_clip=None), lr=1e-3).defaults["max_grad_norm"] is None


def test_torchvision_decays_everything_with_momentum():
    model = timm.create_model("resnet18", num_classes=10)
    opt = create_optimizer(model, TORCHVISION, lr=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4]
    assert opt.defaults["momentum"] == 0.9 and type(opt).__name__ == "SGD"
