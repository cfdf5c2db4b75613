"""The LR schedule and the optimizer, checked against what timm's train.py builds from the same flags."""
from __future__ import annotations

import argparse

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler

from rsbkit.core.optim import create_optimizer, lr_schedule
from rsbkit.core.recipes import A1, A3, TORCHVISION, lr_scaling, plan_batch, resnet_rs

STEPS = 7  # optimizer steps per epoch


def train_py_args(recipe, lr, **extra) -> argparse.Namespace:
    """The scheduler flags of timm's train.py as RSB ran it (timm 0.5.0, docs/sources.md, section 4): its 2021
    defaults, with the recipe's values where the recipe sets the flag."""
    defaults = dict(sched="cosine", epochs=300, lr_noise=None, lr_noise_pct=0.67, lr_noise_std=1.0, lr_cycle_mul=1.0,
                    lr_cycle_decay=0.1, lr_cycle_limit=1, lr_k_decay=1.0, warmup_lr=1e-4, min_lr=1e-6, decay_epochs=100,
                    warmup_epochs=3, cooldown_epochs=10, patience_epochs=10, decay_rate=0.1, seed=42)
    mine = dict(sched=recipe.sched, epochs=recipe.epochs, warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr,
                warmup_epochs=recipe.warmup_epochs, cooldown_epochs=recipe.cooldown_epochs,
                decay_milestones=list(recipe.decay_milestones), decay_rate=recipe.decay_rate, lr=lr)
    return argparse.Namespace(**{**defaults, **mine, **extra})


def timm_per_epoch(recipe, lr) -> list[float]:
    """train.py's loop: the LR the constructor sets for epoch 0, then ``step(epoch + 1)`` after each epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched, num_epochs = create_scheduler(train_py_args(recipe, lr), opt)
    out = []
    for epoch in range(num_epochs):
        out.append(opt.param_groups[0]["lr"])
        sched.step_update(num_updates=(epoch + 1) * STEPS)  # a no-op per epoch, called by train.py all the same
        sched.step(epoch + 1)
    return out


def timm_per_update(recipe, lr) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched, num_epochs = create_scheduler(train_py_args(recipe, lr, sched_on_updates=True), opt, updates_per_epoch=STEPS)
    out, updates = [], 0
    for epoch in range(num_epochs):
        for _ in range(STEPS):
            out.append(opt.param_groups[0]["lr"])
            updates += 1
            sched.step_update(num_updates=updates)
        sched.step(epoch + 1)
    return out


def per_epoch(lrs: list[float]) -> list[float]:
    epochs = [lrs[e * STEPS:(e + 1) * STEPS] for e in range(len(lrs) // STEPS)]
    assert all(len(set(e)) == 1 for e in epochs), "the LR changed within an epoch"
    return [e[0] for e in epochs]


def test_a3_lr_is_set_once_per_epoch_as_train_py_did():
    lrs = lr_schedule(A3, STEPS, 8e-3)
    assert len(lrs) == 100 * STEPS
    ours = per_epoch(lrs)
    assert ours == pytest.approx(timm_per_epoch(A3, 8e-3), rel=1e-12)
    # epoch 0 runs at warmup_lr, epoch 5 (the first after warmup) on the cosine, the last near min_lr
    assert ours[0] == 1e-4 and ours[1] == pytest.approx(1e-4 + (8e-3 - 1e-4) / 5)
    assert max(ours) == ours[5] < 8e-3 and ours[-1] == pytest.approx(1e-6, abs=3e-6)


def test_torchvision_lr_drops_at_epochs_30_60_80_as_train_py_builds_it():
    ours = per_epoch(lr_schedule(TORCHVISION, STEPS, 0.1))
    assert ours == pytest.approx(timm_per_epoch(TORCHVISION, 0.1), rel=1e-12)
    # torchvision's StepLR: epochs 0-29 at 0.1, 30-59 at 0.01, ... (timm's milestone m acts at epoch m - 1)
    for epoch, expected in ((0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 1e-3), (79, 1e-3), (80, 1e-4), (89, 1e-4)):
        assert ours[epoch] == pytest.approx(expected), epoch


@pytest.mark.parametrize("recipe", [A3.replace(sched_on_updates=True), A1.replace(epochs=12, warmup_epochs=3,
                                    sched_on_updates=True), resnet_rs(50).replace(epochs=20)], ids=["a3", "a1", "rs50"])
def test_sched_on_updates_changes_the_lr_every_step_as_train_py(recipe):
    lr = plan_batch(recipe).lr
    ours = lr_schedule(recipe, STEPS, lr)
    assert ours == pytest.approx(timm_per_update(recipe, lr), rel=1e-12)
    assert len(set(ours[:STEPS])) == STEPS  # the warmup ramps within epoch 0


def test_cooldown_epochs_add_epochs_at_min_lr():
    recipe = A3.replace(cooldown_epochs=10)  # what 2021's train.py did by default
    ours = per_epoch(lr_schedule(recipe, STEPS, 8e-3))
    assert len(ours) == 110 == recipe.total_epochs
    assert ours == pytest.approx(timm_per_epoch(recipe, 8e-3), rel=1e-12)
    assert ours[100:] == [1e-6] * 10 and ours[:100] == pytest.approx(per_epoch(lr_schedule(A3, STEPS, 8e-3)))


@pytest.mark.parametrize("opt, rule", [("lamb", "sqrt"), ("adamw", "sqrt"), ("momentum", "linear"), ("sgd", "linear")])
def test_lr_scaling_follows_timm_train_py(opt, rule):
    recipe = A3.replace(opt=opt, batch_size=512)
    # timm train.py: lr = lr_base * ratio, ratio ** 0.5 for optimizers named lamb or ada*
    ratio = 512 / 2048
    assert lr_scaling(recipe) == rule
    assert plan_batch(recipe).lr == pytest.approx(8e-3 * (ratio ** 0.5 if rule == "sqrt" else ratio))
    assert plan_batch(recipe.replace(lr_scale="none")).lr == 8e-3
    assert plan_batch(recipe.replace(lr_scale="linear")).lr == pytest.approx(8e-3 * ratio)
    assert plan_batch(recipe.replace(grad_accum=True)).lr == 8e-3


def test_no_weight_decay_on_norm_and_bias():
    model = timm.create_model("resnet18", num_classes=10)
    opt = create_optimizer(model, A1, lr=1e-3)
    by_decay = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    assert set(by_decay) == {0.0, 0.01}
    assert all(p.ndim <= 1 for p in by_decay[0.0])  # BN weights and biases
    assert all(p.ndim > 1 for p in by_decay[0.01])  # conv and linear weights
    assert type(opt).__name__ == "Lamb" and opt.defaults["max_grad_norm"] == 1.0
    assert create_optimizer(model, A1.replace(lamb_clip=None), lr=1e-3).defaults["max_grad_norm"] is None


@pytest.mark.parametrize("recipe", [TORCHVISION, resnet_rs(50), resnet_rs(200, 256)], ids=lambda r: r.name)
def test_torchvision_and_resnet_rs_use_plain_momentum(recipe):
    model = timm.create_model("resnet18", num_classes=10)
    opt = create_optimizer(model, recipe, lr=0.1)
    assert type(opt) is torch.optim.SGD
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is False
    decays = sorted({g["weight_decay"] for g in opt.param_groups})
    assert decays == ([recipe.weight_decay] if recipe.decay_norm_bias else [0.0, recipe.weight_decay])
    # the trap the recipes avoid: timm's "sgd" is Nesterov
    assert create_optimizer_v2(model, "sgd", lr=0.1, momentum=0.9).defaults["nesterov"] is True


def test_a_schedule_that_never_reaches_its_lr_is_named():
    """A 1-epoch run of the demo trains at warmup_lr throughout; 2 epochs peak at half the LR (timm's cosine decays from
    epoch 0); the demo's 10 epochs and the papers' recipes reach it."""
    from rsbkit.core.optim import schedule_warning
    from rsbkit.core.recipes import A1, A3, TORCHVISION, load_recipe

    demo = load_recipe("params/demo.yaml")
    one = schedule_warning(demo.replace(epochs=1), 47, 8e-3)
    assert one.startswith("every epoch of this run is warmup (1 epoch(s), warmup_epochs 1): the LR peaks at 0.0001,")
    two = schedule_warning(demo.replace(epochs=2), 47, 8e-3)
    assert two.startswith("the LR peaks at 0.004 (epoch 2), 50% of the recipe's 0.008")
    assert all(schedule_warning(r, 47, r.lr) is None for r in (demo, A1, A3, TORCHVISION))
    assert schedule_warning(A3.replace(epochs=6, sched_on_updates=True), 47, 8e-3) is None  # per update: reaches it
