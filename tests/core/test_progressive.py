"""Progressive resizing (FFCV's train-size schedule): the size each epoch trains at, on every input
path, and exact resume across a change of size."""
from __future__ import annotations

import csv

import pytest
import torch

import rsbkit.core.train as rtrain
from rsbkit.core.checkpoint import load_checkpoint, save_checkpoint
from rsbkit.core.data import TrainInput, load_data
from rsbkit.core.errors import RecipeError
from rsbkit.core.recipes import A1, A2, A3, plan_batch, smoke
from rsbkit.core.train import train

pytestmark = pytest.mark.cost(10)  # seconds in the suite on 2 cores: files start costliest first (conftest)

SMALL = dict(limit_train=128, limit_val=64, workers=0, progress="none", device="cpu")  # bit equality: CPU


def quiet(*_):
    pass


def test_each_epoch_trains_at_ffcvs_size():
    # FFCV's rn50_88_epochs config: 160 -> 192 px, growing from epoch 65 to 76 in steps of 32
    ffcv = A3.replace(train_res_start=160, train_res=192, train_res_ramp=[65, 76], train_res_step=32, epochs=88)
    assert [ffcv.train_res_at(e) for e in (0, 65, 66, 70, 71, 75, 76, 87)] == [160, 160, 160, 160, 192, 192, 192, 192]
    # the demo's variant: 24 -> 32 px over epochs 2 to 8 of 10, in steps of 4 px
    demo = A3.replace(train_res_start=24, train_res=32, train_res_ramp=[2, 8], train_res_step=4, epochs=10)
    assert [demo.train_res_at(e) for e in range(10)] == [24, 24, 24, 24, 28, 28, 28, 32, 32, 32]
    # off (every RSB recipe): train_res at every epoch; the ends need not be multiples of the step
    assert all(r.train_res_start is None for r in (A1, A2, A3))
    assert {A3.train_res_at(e) for e in range(A3.total_epochs)} == {A3.train_res}
    odd = A3.replace(train_res_start=30, train_res=34, train_res_ramp=[0, 4], train_res_step=32, epochs=5)
    assert [odd.train_res_at(e) for e in range(5)] == [30, 32, 32, 32, 34]  # 31, 32, 33 round to 32
    # smoke() keeps it on, shrunk to its own length
    assert [smoke(demo, epochs=2).train_res_at(e) for e in range(2)] == [16, 24]


@pytest.mark.parametrize("change, message", [
    (dict(train_res_start=24, train_res_ramp=[5, 5]), r"train_res_ramp=\(5, 5\) is out of range: allowed \[first, last\]"),
    (dict(train_res_start=24, train_res_ramp=[2, 200]), r"train_res_ramp.*last <= 100"),
    (dict(train_res_start=4), r"train_res_start=4 is out of range: allowed >= 8 px"),
    (dict(train_res_step=0), r"train_res_step=0 is out of range"),
])
def test_bad_schedule_names_the_field(change, message):
    with pytest.raises(RecipeError, match=message):
        A3.replace(**change)


def _sizes(source: TrainInput, size):
    images = [b[0] for b in source.epoch(7, torch.Generator().manual_seed(7), size)]
    return {tuple(x.shape[2:]) for x in images}


@pytest.mark.parametrize("augment_on, workers", [("loader", 1), ("device", 0)])
def test_the_input_crops_each_epoch_to_its_size(embedded, augment_on, workers):
    recipe = smoke(A3, batch_size=32, epochs=3).replace(train_res_start=16, train_res_ramp=[0, 2], train_res_step=8)
    source = TrainInput(load_data(embedded, limit_train=64), recipe, plan_batch(recipe), augment_on=augment_on,
                        workers=workers)
    assert source.kind == ("loader" if augment_on == "loader" else "arrays")
    # a persistent worker builds its transform per size and keeps it; back to the first size works as well
    assert [_sizes(source, s) for s in (16, 24, 32, 16)] == [{(16, 16)}, {(24, 24)}, {(32, 32)}, {(16, 16)}]


def test_crops_from_the_loader_follow_the_size(image_folder):
    recipe = smoke(A3, batch_size=24, epochs=3).replace(train_res_start=16, train_res_ramp=[0, 2], train_res_step=8)
    source = TrainInput(load_data(image_folder), recipe, plan_batch(recipe), augment_on="device", decode_on="loader")
    assert source.kind == "crops"
    assert [_sizes(source, s) for s in (16, 32)] == [{(16, 16)}, {(32, 32)}]


def test_resume_across_a_size_change_gives_identical_weights(tmp_path, smoke_recipe):
    """Epoch 1 trains at 16 px, epoch 2 at 32: a run stopped after epoch 1 and resumed ends where the
    uninterrupted run ends, and metrics.csv says which size each epoch trained at."""
    recipe = smoke_recipe.replace(epochs=2, warmup_epochs=1, train_res_start=16, train_res_ramp=[0, 1], train_res_step=16)
    train(recipe, "default", tmp_path / "straight", log=quiet, **SMALL)
    train(recipe.replace(epochs=1), "default", tmp_path / "tmp", log=quiet, **SMALL)
    state = load_checkpoint(tmp_path / "tmp" / "last.pt")
    state["recipe"] = recipe.to_dict()
    (tmp_path / "resumed").mkdir()
    save_checkpoint(tmp_path / "resumed" / "last.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    train(recipe, "default", tmp_path / "resumed", resume=True, log=quiet, **SMALL)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for run in ("straight", "resumed"):
        rows = list(csv.DictReader(open(tmp_path / run / "metrics.csv")))
        assert [r["train_res"] for r in rows] == ["16", "32"]


def test_out_of_memory_at_a_larger_size_halves_the_micro_batch(tmp_path, smoke_recipe, monkeypatch):
    """Epoch 1 fits 16 images of 16 px; epoch 2's 32 px do not (injected: more than 4 of them): the
    fallback fits the micro-batch again in the first step at the new size, global batch and LR kept."""
    real_create_model = rtrain.create_model

    class Tight(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training and len(x) > 4 and x.shape[-1] > 16:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 88.00 GiB (injected)")
            return self.inner(x)

    monkeypatch.setattr(rtrain, "create_model", lambda recipe, n: Tight(real_create_model(recipe, n)))
    recipe = smoke_recipe.replace(epochs=2, warmup_epochs=1, train_res_start=16, train_res_ramp=[0, 1], train_res_step=16)
    lines = []
    result = train(recipe, "default", tmp_path / "run", log=lines.append, **SMALL)
    assert result["status"] == "completed" and result["resolved"]["micro_batch"] == 4
    assert [line for line in lines if "out of memory" in line][0].startswith("out of memory at 16 images per forward pass")
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [(r["train_res"], r["step"]) for r in rows] == [("16", "8"), ("32", "16")]  # 8 steps of 16 images each epoch
