"""timm train.py checkpoints read by rsbkit (issue 21, item 4) and validation-only folders such as
ImageNet-V2's (item 6), on the real run in tests/core/fixtures/timm_run (timm's own train.py; its
summary.csv records the EMA weights' validation, as train.py does with --model-ema)."""
from __future__ import annotations

import argparse
import csv
import pathlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from rsbkit.core.checkpoint import load_checkpoint, read_checkpoint
from rsbkit.core.data import class_folders, load_data
from rsbkit.core.errors import CheckpointError, DataError
from rsbkit.core.evaluate import load_model
from rsbkit.core.models import load_init

RUN = Path(__file__).parent / "fixtures" / "timm_run"
BEST = RUN / "model_best.pth.tar"


def best_epoch() -> dict[str, str]:
    return max(csv.DictReader(open(RUN / "summary.csv")), key=lambda r: float(r["eval_top1"]))


def test_evaluating_the_ema_weights_reproduces_train_pys_own_validation(cli):
    out = cli("evaluate", str(BEST), "--ema", "--data", str(RUN / "validation"), "--res", "32", "--crop", "0.95",
              "--device", "cpu")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.strip().splitlines()[-2:]
    got = dict(zip(header.split(), map(float, row.split())))
    recorded = best_epoch()
    assert got["top1"] == pytest.approx(float(recorded["eval_top1"]), abs=0.1)
    assert got["top5"] == pytest.approx(float(recorded["eval_top5"]), abs=0.1)
    assert got["loss"] == pytest.approx(float(recorded["eval_loss"]), abs=1e-3)


def test_a_timm_checkpoint_gives_its_architecture_weights_and_recipe():
    model, recipe = load_model(BEST)  # no model name: the checkpoint's arch
    ema, _ = load_model(BEST, ema=True)
    state = read_checkpoint(BEST)
    assert type(model).__name__ == "ResNet" and model.num_classes == 10
    assert all(torch.equal(v, state["state_dict"][k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, state["state_dict_ema"][k]) for k, v in ema.state_dict().items())
    assert (recipe.test_res, recipe.crop_pct, recipe.interpolation) == (32, 0.95, "bicubic")
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # how train.py fed it: test_resnet's own config
    with pytest.raises(CheckpointError, match="timm train.py checkpoint .*cannot be resumed"):
        load_checkpoint(BEST)


def test_a_timm_checkpoint_holding_more_than_its_args_is_refused(tmp_path):
    state = read_checkpoint(BEST)
    torch.save({**state, "args": argparse.Namespace(model="test_resnet")}, tmp_path / "ok.pth.tar")
    assert read_checkpoint(tmp_path / "ok.pth.tar")["args"].model == "test_resnet"
    torch.save({**state, "extra": pathlib.PurePosixPath("/x")}, tmp_path / "more.pth.tar")
    with pytest.raises(CheckpointError, match="more.pth.tar cannot be read"):
        read_checkpoint(tmp_path / "more.pth.tar")


def test_init_from_a_timm_checkpoint():
    import timm

    model = timm.create_model("test_resnet", num_classes=10)
    load_init(model, BEST)
    state = read_checkpoint(BEST)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def folder(root: Path, names, per_class: int = 1) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (int(name) * 20 if name.isdigit() else 0, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_integer_class_folders_are_labelled_by_number(tmp_path):
    """ImageNet-V2's layout: 0 .. N-1. As strings, 10 and 11 would sort before 2 and take labels 2 and 3."""
    data = class_folders(folder(tmp_path / "v2", [str(i) for i in range(12)]), num_classes=12)
    labels = {Path(p).parent.name: label for p, label in data.val.samples}
    assert labels == {str(i): i for i in range(12)} and len(data.train) == 0
    synsets = [f"n{i:08d}" for i in range(12)]  # a run's own class names: folder i is its class i
    assert {Path(p).parent.name: y for p, y in class_folders(tmp_path / "v2", classes=synsets).val.samples}["10"] == 10
    named = class_folders(folder(tmp_path / "named", ["n00000011", "n00000002"]), classes=synsets)
    assert sorted(y for _, y in named.val.samples) == [2, 11]
    # the evaluate path: a folder without train/, given the model's classes
    assert load_data(tmp_path / "v2", num_classes=12).val.samples == data.val.samples


def test_validation_folders_that_cannot_be_labelled_are_refused(tmp_path):
    with pytest.raises(DataError, match="class folders 12 are neither its classes nor class indices 0..11"):
        class_folders(folder(tmp_path / "a", ["0", "12"]), num_classes=12)
    with pytest.raises(DataError, match="class folders cat are neither"):
        class_folders(folder(tmp_path / "b", ["cat"]), num_classes=3)
    (tmp_path / "c" / "1").mkdir(parents=True)
    folder(tmp_path / "c", ["0"])
    with pytest.raises(DataError, match=r"class folder\(s\) 1 hold no images"):
        class_folders(tmp_path / "c", num_classes=2)


def test_an_empty_training_class_folder_is_named(tmp_path):
    folder(tmp_path / "d" / "train", ["0", "1"])
    folder(tmp_path / "d" / "val", ["0", "1"])
    (tmp_path / "d" / "train" / "2").mkdir()
    with pytest.raises(DataError, match=r"train: the class folder\(s\) 2 hold no images"):
        load_data(tmp_path / "d")


def test_the_paper_table_puts_val_and_v2_beside_the_papers_row(cli, smoke_run, embedded, tmp_path):
    """An ImageNet-V2-like folder (class folders by index) of the embedded test images: its column is the
    top-1 evaluate gives on that folder; the paper's row is A3's (the smoke run's recipe)."""
    v2 = tmp_path / "v2"
    for i in range(40):
        img, label = embedded.val[i]
        (v2 / str(label)).mkdir(parents=True, exist_ok=True)
        img.save(v2 / str(label) / f"{i}.png")
    for label in range(10):  # every class folder holds an image
        if not (v2 / str(label)).is_dir():
            idx = next(i for i in range(len(embedded.val)) if embedded.val[i][1] == label)
            (v2 / str(label)).mkdir()
            embedded.val[idx][0].save(v2 / str(label) / f"{idx}.png")
    out = cli("evaluate", str(smoke_run), "--paper-table", "--v2", str(v2), "--limit-val", "64", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    ours = next(li for li in lines if li.startswith("this model (32 px, crop 0.95)"))
    paper = next(li for li in lines if li.startswith("paper (a3, ImageNet-1k)"))
    assert paper.split()[-3:] == ["78.10", "84.50", "66.10"]  # RSB Table 1, A3
    model, _ = load_model(smoke_run)
    from rsbkit.core.evaluate import evaluate

    expected = evaluate(model, load_data(v2, classes=model.pretrained_cfg["label_names"]), test_res=32, crop_pct=0.95,
                        device="cpu")["top1"]
    assert ours.split()[-1] == f"{expected:.2f}" and ours.split()[-2] == "-"  # no ReaL labels given
