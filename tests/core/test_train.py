"""The training loop on real data: run records, exact resume, bad input, failures."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

import rsbkit.core.train as rtrain
from rsbkit.core.checkpoint import load_checkpoint, save_checkpoint
from rsbkit.core.errors import CheckpointError, NonFiniteLossError, RunError
from rsbkit.core.recipes import plan_batch
from rsbkit.core.runs import METRIC_COLUMNS, load_run
from rsbkit.core.train import train

pytestmark = pytest.mark.cost(70)  # seconds in the suite on 2 cores: files start costliest first (conftest)

TIMING = {"imgs_per_s", "epoch_s", "peak_mem_mb"}  # measured, so they differ between runs
SMALL = dict(limit_train=128, limit_val=64, workers=0, progress="none", device="cpu")  # 8 steps of 16 images; bit equality: CPU (cuDNN benchmark promises none)


def quiet(*_):
    pass


def test_run_folder_records(tmp_path, smoke_recipe):
    recipe = smoke_recipe.replace(epochs=2)
    result = train(recipe, "default", tmp_path / "run", log=quiet, **SMALL)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"recipe.yaml", "metrics.csv", "result.json", "last.pt", "best.pt",
                                               ".rsbkit-writer.lock"}  # the lock file stays; its lock went with the run
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert tuple(rows[0]) == METRIC_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    saved = json.loads((run / "result.json").read_text())
    assert saved["status"] == "completed" and saved == json.loads(json.dumps(result))
    for key in ("final_top1", "final_top5", "best_top1", "best_top5", "wall_s", "device_name", "torch", "timm",
                "code_version", "seed", "skipped_files", "num_skipped"):
        assert key in saved, key
    assert saved["reported"]["top1"] == 78.1  # the paper's A3 figure travels with the run
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert resolved["resolved"]["lr"] == pytest.approx(8e-3 * (16 / 2048) ** 0.5)  # LAMB: timm's sqrt rule
    assert resolved["resolved"]["steps_per_epoch"] == 128 // 16
    assert load_run(run)["metrics"][1]["epoch"] == 2


@pytest.mark.parametrize("augment_on, workers, distilled", [("device", 0, True), ("loader", 1, False)])
def test_resume_gives_identical_weights_and_metrics(tmp_path, smoke_recipe, smoke_run, augment_on, workers, distilled):
    # drop path: RNG inside the model too; 3 repeats: 4 accumulated forward passes per step, RepeatAugSampler's order;
    # the loader path with a persistent worker: its RNG state carries over epochs, the samples' seeds do not depend on it;
    # a teacher (knowledge distillation, soft targets at T=2): loaded again on resume, the same targets
    recipe = smoke_recipe.replace(epochs=2, warmup_epochs=1, drop_path=0.1, aug_repeats=3, augment_on=augment_on,
                                  **(dict(teacher=str(smoke_run), kd_temperature=2.0) if distilled else {}))
    settings = {**SMALL, "workers": workers}
    train(recipe, "default", tmp_path / "straight", log=quiet, **settings)
    train(recipe.replace(epochs=1), "default", tmp_path / "tmp", log=quiet, **settings)  # stops after epoch 1 ...
    # ... which is what a 2-epoch run interrupted after its first epoch leaves behind
    state = load_checkpoint(tmp_path / "tmp" / "last.pt")
    (tmp_path / "resumed").mkdir()
    state["recipe"] = recipe.to_dict()
    save_checkpoint(tmp_path / "resumed" / "last.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    train(recipe, "default", tmp_path / "resumed", resume=True, log=quiet, **settings)

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(load_run(tmp_path / "straight")["metrics"]) == strip(load_run(tmp_path / "resumed")["metrics"])
    teacher = load_run(tmp_path / "resumed")["result"]["teacher"]
    assert (teacher["source"] == str(smoke_run) and len(teacher["sha256"]) == 64) if distilled else teacher is None


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, smoke_recipe, monkeypatch):
    """A real interruption: the run dies in epoch 2; --resume finishes it."""
    recipe = smoke_recipe.replace(epochs=2)
    train(recipe, "default", tmp_path / "straight", log=quiet, **SMALL)

    calls = {"n": 0}
    real_epoch = rtrain.TrainInput.epoch

    def dying_epoch(self, *args, **kwargs):
        calls["n"] += 1
        for i, batch in enumerate(real_epoch(self, *args, **kwargs)):
            if calls["n"] == 2 and i == 3:  # epoch 2, its fourth micro-batch
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(rtrain.TrainInput, "epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, "default", tmp_path / "cut", log=quiet, **SMALL)
    assert json.loads((tmp_path / "cut" / "result.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(rtrain.TrainInput, "epoch", real_epoch)
    train(recipe, "default", tmp_path / "cut", resume=True, log=quiet, **SMALL)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path, smoke_recipe):
    train(smoke_recipe, "default", tmp_path / "run", log=quiet, **SMALL)
    with pytest.raises(RunError, match=r"already holds a run \(last.pt\); pass resume=True"):
        train(smoke_recipe, "default", tmp_path / "run", log=quiet, **SMALL)
    with pytest.raises(RunError, match=r"nothing to resume: .*other/last.pt does not exist"):
        train(smoke_recipe, "default", tmp_path / "other", resume=True, log=quiet, **SMALL)
    with pytest.raises(CheckpointError, match=r"different recipe \(fields lr differ\)"):  # what is trained: refused
        train(smoke_recipe.replace(lr=1e-3, eval_every=2), "default", tmp_path / "run", resume=True, log=quiet, **SMALL)
    # how it runs (rsbkit.core.recipes.EXECUTION_FIELDS) may change on resume, and the log says what changed
    lines = []
    how = smoke_recipe.replace(eval_every=2, augment_on="loader", channels_last=False)
    assert train(how, "default", tmp_path / "run", resume=True, log=lines.append, **SMALL)["status"] == "completed"
    assert "resuming with a different way of running: augment_on 'auto' -> 'loader', channels_last True -> False, " \
           "eval_every 1 -> 2" in lines


def test_truncated_checkpoint_gives_a_clear_error(tmp_path, smoke_recipe):
    train(smoke_recipe, "default", tmp_path / "run", log=quiet, **SMALL)
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint .*last.pt cannot be read .*truncated"):
        load_checkpoint(last)
    with pytest.raises(CheckpointError, match=r"last.pt cannot be read"):
        train(smoke_recipe.replace(epochs=2), "default", tmp_path / "run", resume=True, log=quiet, **SMALL)


def test_foreign_checkpoint_gives_a_clear_error(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "timm.pt")
    with pytest.raises(CheckpointError, match=r"timm.pt is not an rsbkit checkpoint \(found \['state_dict'\]\).*load_model\(PATH, model=NAME, num_classes=N\)"):
        load_checkpoint(tmp_path / "timm.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt cannot be read"):
        load_checkpoint(tmp_path / "text.pt")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and no temporary file is left


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, smoke_recipe, monkeypatch):
    real_create_loss = rtrain.create_loss

    def poisoned(recipe, mixing):
        loss = real_create_loss(recipe, mixing)
        calls = {"n": 0}

        def fn(logits, target):
            calls["n"] += 1
            value = loss(logits, target)
            return value * float("nan") if calls["n"] == 20 else value  # step 20: in epoch 2

        return fn

    monkeypatch.setattr(rtrain, "create_loss", lambda r, mixing: _Wrap(poisoned(r, mixing)))
    # checked every 3 optimizer steps (epoch 2 starts at step 17): the window 20 .. 22 holds step 20
    with pytest.raises(NonFiniteLossError, match=r"not finite within steps 20 to 22 \(epoch 2\); .*last.pt is kept"):
        train(smoke_recipe.replace(epochs=2), "default", tmp_path / "run", log=quiet, check_every=3,
              **{**SMALL, "limit_train": 256})  # 16 steps per epoch
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "steps 20 to 22" in result["error"]
    # the default window (every 50 steps and at the epoch's end): tests/core/test_loop.py


def test_out_of_memory_in_the_first_step_halves_the_micro_batch(tmp_path, smoke_recipe, monkeypatch):
    """An OOM (injected: a forward pass of more than 4 images) in the first step halves the micro-batch
    until it fits, accumulates, records the choice, and trains the same images to the same weights as a
    run given that micro-batch from the start."""
    real_create_model = rtrain.create_model
    big_passes = []

    class Tight(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training and len(x) > 4:  # evaluation, without activations kept for backward, fits
                big_passes.append(len(x))
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 88.00 GiB (injected)")
            return self.inner(x)

    monkeypatch.setattr(rtrain, "create_model", lambda recipe, n: Tight(real_create_model(recipe, n)))
    lines = []
    result = train(smoke_recipe, "default", tmp_path / "fallback", log=lines.append, **SMALL)
    assert big_passes == [16, 8]  # 16 fails, 8 fails, 4 fits
    assert any("out of memory at 16 images per forward pass: micro-batch 8" in line for line in lines)
    assert result["status"] == "completed"
    resolved = yaml.safe_load((tmp_path / "fallback" / "recipe.yaml").read_text())["resolved"]
    assert (resolved["micro_batch"], resolved["accum_steps"], resolved["effective_batch"]) == (4, 4, 16)
    assert resolved["lr"] == pytest.approx(plan_batch(smoke_recipe).lr)
    train(smoke_recipe, "default", tmp_path / "given", micro_batch=4, log=quiet, **SMALL)
    a, b = load_checkpoint(tmp_path / "fallback" / "last.pt"), load_checkpoint(tmp_path / "given" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # a micro-batch given by the user is theirs: the error goes through
    big_passes.clear()
    with pytest.raises(torch.OutOfMemoryError):
        train(smoke_recipe, "default", tmp_path / "mine", micro_batch=8, log=quiet, **SMALL)


def test_evaluates_every_n_epochs_and_the_last(tmp_path, smoke_recipe):
    result = train(smoke_recipe.replace(epochs=3, eval_every=2), "default", tmp_path / "run", log=quiet, **SMALL)
    rows = load_run(tmp_path / "run")["metrics"]
    assert [r["val_top1"] is not None for r in rows] == [False, True, True]
    assert result["best_epoch"] in (2, 3) and result["final_top1"] == rows[-1]["val_top1"]


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, logits, target):
        return self.fn(logits, target)


def test_corrupt_image_is_skipped_and_counted(tmp_path, image_folder, smoke_recipe):
    (image_folder / "train" / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    lines = []
    result = train(smoke_recipe.replace(batch_size=8), image_folder, tmp_path / "run", workers=0, progress="none", log=lines.append)
    assert result["status"] == "completed" and result["num_skipped"] == 1
    assert result["skipped_files"][0]["path"].endswith("broken.jpg")
    assert any("skipped unreadable image" in line and "broken.jpg" in line for line in lines)


def test_ema_is_evaluated_and_saved(tmp_path, smoke_recipe):
    lines = []
    recipe = smoke_recipe.replace(model_ema=True, model_ema_decay=0.9)
    result = train(recipe, "default", tmp_path / "run", log=lines.append, **{**SMALL, "eval_train": 96})
    row = load_run(tmp_path / "run")["metrics"][0]
    assert row["ema_top1"] is not None and result["status"] == "completed"
    assert load_checkpoint(tmp_path / "run" / "best.pt")["ema"] is not None
    # the overfitting gap's train side: the final weights on 96 of the 128 training images, read as test images are,
    # the same figure as evaluating last.pt's weights on those images apart from the loop
    from rsbkit.core.data import Data, fixed_subset, load_data
    from rsbkit.core.evaluate import evaluate
    from rsbkit.core.models import create_model
    from rsbkit.workbook.table import load_runs

    data = load_data("default", limit_train=128)
    on_train = Data("train", data.train, fixed_subset(data.train, 96), data.classes, "test")
    model = create_model(recipe, num_classes=data.num_classes)
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "last.pt")["model"])
    apart = evaluate(model, on_train, test_res=recipe.test_res, crop_pct=recipe.crop_pct,
                     interpolation=recipe.interpolation, workers=0, device="cpu")
    assert result["train_images_scored"] == 96 and result["train_ema_top1"] is not None
    assert result["train_top1"] == pytest.approx(apart["top1"], abs=1e-3)
    assert any(line.startswith("top-1 on 96 training images") for line in lines)
    table = load_runs(tmp_path / "run").iloc[0]
    assert table["fit_gap"] == pytest.approx(result["train_top1"] - result["final_top1"], abs=1e-3)
    unmeasured = train(smoke_recipe.replace(epochs=1), "default", tmp_path / "off", log=quiet, **{**SMALL, "eval_train": 0})
    assert "train_top1" not in unmeasured


def test_sigterm_during_a_checkpoint_write_stops_after_it(tmp_path, smoke_recipe, monkeypatch):
    """Preemption in the middle of torch.save: the checkpoint is finished first (an exception inside torch.save
    breaks its zip writer), then the run stops as interrupted."""
    import os
    import signal

    real_save = rtrain.save_checkpoint

    def save_while_signalled(path, state):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered while the checkpoint is being written
        real_save(path, state)

    monkeypatch.setattr(rtrain, "save_checkpoint", save_while_signalled)
    with pytest.raises(rtrain.Terminated, match="SIGTERM"):
        train(smoke_recipe.replace(epochs=3), "default", tmp_path / "run", log=quiet, **SMALL)
    state = load_checkpoint(tmp_path / "run" / "last.pt")  # whole, and the epoch's
    assert state["epoch"] == 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "interrupted" and result["error"] == "Terminated: signal SIGTERM"


def test_a_run_that_never_leaves_warmup_says_so(tmp_path, smoke_recipe):
    lines = []
    result = train(smoke_recipe.replace(warmup_epochs=1), "default", tmp_path / "run", device="cpu", workers=0,
                   limit_train=32, limit_val=16, progress="none", log=lines.append)
    assert any(line.startswith("note: every epoch of this run is warmup") for line in lines)
    assert result["warnings"] and result["warnings"][0].startswith("every epoch of this run is warmup")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["warnings"] == result["warnings"]
