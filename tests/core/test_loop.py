"""The loop's step functions, one at a time, in milliseconds: a run's spec resolved for real (the smoke
recipe on the embedded data, on CPU), a tiny linear model in the state, and fake inputs."""
from __future__ import annotations

import contextlib
import dataclasses
import re

import pytest
import torch
from timm.utils import ModelEmaV3

from rsbkit.core import distributed, train
from rsbkit.core.errors import DistributedError, NonFiniteLossError
from rsbkit.core.optim import create_optimizer, create_scheduler, lr_schedule
from rsbkit.core.recipes import A3, plan_batch, smoke


def resolve(tmp_path, recipe, **settings):
    settings = {"device": "cpu", "workers": 0, "limit_train": 256, "limit_val": 64, "progress": "none",
                "log": lambda line: None, **settings}
    with contextlib.ExitStack() as held:
        return train.resolve(recipe, "default", tmp_path / "run", distributed.launcher_env({}), train.Settings.of(settings),
                            train.Preemption(), held)


def tiny_state(spec, ema: bool = False) -> train.TrainState:
    """The recipe's optimizer and schedule on a 12-weight model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 3))
    optimizer = create_optimizer(model, spec.recipe, spec.plan.lr)
    return train.TrainState(model=model, ema=ModelEmaV3(model, decay=0.5) if ema else None, optimizer=optimizer,
                           scheduler=create_scheduler(optimizer, spec.recipe, spec.steps_per_epoch), scaler=None)


class FakeInput:
    """Stands for TrainInput: `n` micro-batches of 1x1 'images' per epoch, and the epochs' seeds it was given."""

    def __init__(self, n: int, batch: int = 4):
        self.n, self.batch, self.seeds = n, batch, []

    def epoch(self, seed, generator, size=None):
        self.seeds.append(seed)
        g = torch.Generator().manual_seed(seed % 2**31)
        for _ in range(self.n):
            yield torch.randn(self.batch, 3, 1, 1, generator=g), torch.randint(0, 3, (self.batch,), generator=g), []


def fake_step(model, poison_at=None) -> train.Step:
    calls = {"n": 0}

    def loss_fn(logits, target):
        calls["n"] += 1
        value = torch.nn.functional.cross_entropy(logits, target)
        return value * float("nan") if calls["n"] == poison_at else value

    return train.Step(model=model, ddp=None, mixup=None, loss_fn=loss_fn)


def test_sync_bn_on_cpu_processes_is_refused_before_training(tmp_path):
    """A run's spec placed in a 2-process job on CPU: the state's builder refuses SyncBatchNorm (on every rank, before
    training; the 3-process launch in test_distributed shows how such an error reaches the command line)."""
    spec = resolve(tmp_path, smoke(A3, batch_size=16).replace(sync_bn=True))
    message = "sync_bn needs CUDA devices (PyTorch's SyncBatchNorm), but this run is on cpu; set sync_bn: false"
    with pytest.raises(DistributedError, match=re.escape(message)):
        train.build_state(dataclasses.replace(spec, job=distributed.Dist(0, 2, 0, "gloo")))
    train.build_state(spec)  # one process: nothing to synchronise, no error


def test_spec_resolves_the_plan_and_steps(tmp_path):
    recipe = smoke(A3, batch_size=16, lr_base_size=64, grad_accum=True)
    spec = resolve(tmp_path, recipe)
    resolved = spec.resolved()
    assert (resolved["accum_steps"], resolved["steps_per_epoch"], resolved["effective_batch"]) == (4, 4, 64)
    assert resolved["lr"] == recipe.lr and resolved["device"] == "cpu" and resolved["input"] == "arrays"
    assert (tmp_path / "run" / "recipe.yaml").is_file()  # written before anything trains


def test_grad_accum_steps_the_optimizer_once_per_accumulated_batch(tmp_path):
    spec = resolve(tmp_path, smoke(A3, batch_size=16, lr_base_size=64, grad_accum=True))
    state = tiny_state(spec)
    trained = train.train_epoch(spec, state, fake_step(state.model), FakeInput(n=100, batch=16), epoch=0)
    assert state.updates == 4  # 16 micro-batches of 16 = 4 steps of 64; the rest of the input is not read
    assert trained["images"] == 16 * 16


def test_lr_of_each_step_follows_timm_schedule(tmp_path):
    recipe = smoke(A3, batch_size=16, epochs=3, warmup_epochs=1)
    spec = resolve(tmp_path, recipe)
    state, used = tiny_state(spec), []
    for epoch in range(3):
        trained = train.train_epoch(spec, state, fake_step(state.model), FakeInput(n=16, batch=16), epoch)
        used.append(trained["lr"])
    expected = lr_schedule(recipe, 16, plan_batch(recipe).lr)
    assert spec.steps_per_epoch == 16 and state.updates == 48
    assert used == pytest.approx([expected[16 * e - 1] for e in (1, 2, 3)], rel=1e-9)


def test_optimizer_step_clips_counts_schedules_and_updates_ema(tmp_path):
    recipe = smoke(A3, batch_size=16, epochs=2, warmup_epochs=1, sched_on_updates=True)
    spec = resolve(tmp_path, recipe)
    state = tiny_state(spec, ema=True)
    state.optimizer = torch.optim.SGD(state.model.parameters(), lr=0.5)  # plain SGD: the step is -lr x the gradient
    state.scheduler = create_scheduler(state.optimizer, recipe, spec.steps_per_epoch)
    before = [p.detach().clone() for p in state.model.parameters()]
    ema_before = [p.detach().clone() for p in state.ema.module.parameters()]
    for p in state.model.parameters():
        p.grad = torch.full_like(p, 3.0)  # norm 3 x sqrt(12) = 10.39
    schedule = lr_schedule(recipe, spec.steps_per_epoch, 0.5)  # warmup from timm's warmup_lr
    lr = train.optimizer_step(state, clip_grad=1.0)
    assert lr == pytest.approx(schedule[0]) and state.updates == 1
    norm = sum(((a - p.detach()) ** 2).sum() for a, p in zip(before, state.model.parameters())) ** 0.5
    assert float(norm) == pytest.approx(lr * 1.0, rel=1e-4)  # the gradient clipped to norm 1
    assert all(p.grad is None for p in state.model.parameters())
    # the per-update schedule was told of the step: the LR of update 1
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(schedule[1]) != pytest.approx(schedule[0])
    # timm's EMA: its first update copies the weights (ModelEmaV3, step 1), later ones average with the decay
    assert all(torch.equal(e, p) for e, p in zip(state.ema.module.parameters(), state.model.parameters()))
    ema_before = [p.detach().clone() for p in state.ema.module.parameters()]
    for p in state.model.parameters():
        p.grad = torch.full_like(p, 3.0)
    train.optimizer_step(state, clip_grad=1.0)
    assert state.updates == 2
    for e0, e1, p in zip(ema_before, state.ema.module.parameters(), state.model.parameters()):
        assert torch.allclose(e1, 0.5 * e0 + 0.5 * p.detach(), atol=1e-6) and not torch.equal(e0, p)


def test_non_finite_loss_names_its_window(tmp_path):
    spec = resolve(tmp_path, smoke(A3, batch_size=16), check_every=3)
    state = tiny_state(spec)
    state.updates = 16  # epoch 2 starts at step 17
    with pytest.raises(NonFiniteLossError, match=r"not finite within steps 20 to 22 \(epoch 2\); no checkpoint yet"):
        train.train_epoch(spec, state, fake_step(state.model, poison_at=4), FakeInput(n=16, batch=16), epoch=1)
    # by default the check waits for the device every 50 steps and at the epoch's end
    spec = resolve(tmp_path / "b", smoke(A3, batch_size=16))
    state = tiny_state(spec)
    state.updates = 16
    with pytest.raises(NonFiniteLossError, match=r"not finite within steps 17 to 32 \(epoch 2\)"):
        train.train_epoch(spec, state, fake_step(state.model, poison_at=4), FakeInput(n=16, batch=16), epoch=1)
    assert state.updates == 32  # it waited for the epoch's end


def test_epochs_are_seeded_by_seed_and_epoch_alone(tmp_path):
    spec = resolve(tmp_path, smoke(A3, batch_size=16))
    source = FakeInput(n=16, batch=16)
    train.train_epoch(spec, tiny_state(spec), fake_step(tiny_state(spec).model), source, epoch=3)
    assert source.seeds == [train.epoch_seed(spec.recipe.seed, 3)]


def test_out_of_memory_fit_halves_the_micro_batch_from_the_same_state(tmp_path):
    spec = resolve(tmp_path, smoke(A3, batch_size=16))
    state = tiny_state(spec)
    weights = {k: v.clone() for k, v in state.model.state_dict().items()}
    tried, lines = [], []
    spec = train.replace(spec, settings=train.replace(spec.settings, log=lines.append))

    def run_epoch(spec, source):
        tried.append((spec.plan.micro_batch, source))
        with torch.no_grad():
            state.model[1].weight.add_(1.0)  # a forward pass moved the state before the error
        if spec.plan.micro_batch > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 88.00 GiB (injected)")
        return {"lr": spec.plan.lr}

    before = state.model[1].weight.detach().clone()
    trained, fitted, source = train.fit_first_epoch(spec, state, "input@16", run_epoch, make=lambda s: f"input@{s.plan.micro_batch}")
    assert tried == [(16, "input@16"), (8, "input@8"), (4, "input@4")]
    assert (fitted.plan.micro_batch, fitted.plan.accum_steps, fitted.plan.effective_batch) == (4, 4, 16)
    assert trained["lr"] == spec.plan.lr == fitted.plan.lr and source == "input@4"
    assert torch.equal(state.model[1].weight, before + 1.0)  # restored before each try: one forward's change left
    assert set(weights) == set(state.model.state_dict())
    assert "out of memory at 16 images per forward pass: micro-batch 8" in lines[0]
    assert "micro_batch: 4" in (tmp_path / "run" / "recipe.yaml").read_text()


@pytest.mark.parametrize("why", ["given", "after a step", "not memory"])
def test_out_of_memory_fit_lets_other_errors_through(tmp_path, why):
    spec = resolve(tmp_path, smoke(A3, batch_size=16), **({"micro_batch": 8} if why == "given" else {}))
    state = tiny_state(spec)

    def run_epoch(spec, source):
        if why == "after a step":
            state.updates += 1
        raise (ValueError("bad") if why == "not memory" else torch.OutOfMemoryError("CUDA out of memory (injected)"))

    with pytest.raises((torch.OutOfMemoryError, ValueError)):
        train.fit_first_epoch(spec, state, None, run_epoch, make=lambda s: None)


def test_result_from_a_hand_built_state(tmp_path):
    spec = resolve(tmp_path, smoke(A3, batch_size=16, epochs=3))
    state = tiny_state(spec)
    rows = [train.epoch_row(e, 16 * (e + 1), {"lr": 0.1, "loss_sum": 8.0, "images": 256},
                           {"model": {"top1": t, "top5": 99.0, "loss": 0.5}}, train_s=2.0, epoch_s=2.5,
                           peak_mb=m, skipped=0) for e, t, m in ((0, 50.0, 10.0), (1, 70.0, 30.0))]
    state.history, state.best, state.epoch, state.updates = rows, rows[1], 2, 32
    state.skipped = {"a.jpg": "truncated"}
    state.wall_s = 100.0
    out = train.result(spec, state, "stopped")
    assert rows[0]["train_loss"] == 8.0 / 256 and rows[0]["imgs_per_s"] == 128.0 and rows[1]["epoch"] == 2
    assert (out["status"], out["epochs"], out["epochs_done"], out["final_top1"], out["best_top1"], out["best_epoch"]) == (
        "stopped", 3, 2, 70.0, 70.0, 2)
    assert out["imgs_per_s"] == 128.0 and out["peak_mem_mb"] == 30.0 and out["wall_s"] >= 100.0
    assert out["skipped_files"] == [{"path": "a.jpg", "reason": "truncated"}] and out["num_skipped"] == 1
    assert out["resolved"] == spec.resolved() and out["attempts"][-1]["resume"] is False
    ckpt = train.checkpoint(spec, state, optimizer=False)
    assert (ckpt["epoch"], ckpt["updates"], ckpt["optimizer"], ckpt["best"]["val_top1"]) == (2, 32, None, 70.0)
    assert "scaler" not in ckpt and "scaler" in train.checkpoint(spec, state, optimizer=True)


def test_preemption_holds_a_signal_until_the_write_is_whole():
    import os
    import signal

    with train.Preemption() as preemption:
        with pytest.raises(train.Terminated, match="SIGTERM"):
            with preemption.writes_whole():
                os.kill(os.getpid(), signal.SIGTERM)
                done = True  # reached: the signal waits for the block's end
        assert done
        with pytest.raises(train.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None
    assert signal.getsignal(signal.SIGTERM) is not preemption._handler
