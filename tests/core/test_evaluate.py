"""Evaluation at chosen resolutions and crop ratios, model loading, ReaL labels."""
from __future__ import annotations

import json

import pytest
import timm
import torch

from rsbkit.core.data import load_data
from rsbkit.core.errors import CheckpointError
from rsbkit.core.evaluate import evaluate, load_model, resolution_sweep
from rsbkit.core.runs import load_run
from rsbkit.core.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from rsbkit.core.recipes import A3, smoke

    out = tmp_path_factory.mktemp("eval") / "run"
    train(smoke(A3, batch_size=16), "default", out, limit_train=256, limit_val=128, workers=0, progress="none", log=lambda *_: None)
    return out


def test_evaluate_reproduces_the_runs_own_number(trained_run):
    model, recipe = load_model(trained_run)
    data = load_data("default", limit_val=128)
    metrics = evaluate(model, data, test_res=recipe.test_res, crop_pct=recipe.crop_pct, interpolation=recipe.interpolation, workers=0)
    assert metrics["images"] == 128
    assert metrics["top1"] == pytest.approx(load_run(trained_run)["metrics"][-1]["val_top1"], abs=1e-3)


def test_resolution_sweep_table(trained_run):
    model, _ = load_model(trained_run)
    table = resolution_sweep(model, load_data("default", limit_val=64), [24, 32], [0.875, 1.0], workers=0)
    assert list(table.columns) == ["test_res", "crop_pct", "resize_to", "top1", "top5", "loss"]
    assert table[["test_res", "crop_pct", "resize_to"]].values.tolist() == [[24, 0.875, 27], [24, 1.0, 24], [32, 0.875, 36], [32, 1.0, 32]]
    assert table["top1"].between(0, 100).all() and (table["top5"] >= table["top1"]).all()


def test_load_model_errors_and_plain_weights(tmp_path, trained_run):
    with pytest.raises(CheckpointError, match="no checkpoint, run folder or timm model named"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="holds no 'ema' weights; the run had model_ema off"):
        load_model(trained_run, ema=True)
    net = timm.create_model("resnet10t", num_classes=10)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    loaded, recipe = load_model(tmp_path / "plain.pt", model="resnet10t", num_classes=10)
    assert recipe is None and torch.equal(loaded.state_dict()["fc.weight"], net.state_dict()["fc.weight"])
    with pytest.raises(CheckpointError, match="does not hold weights for resnet18"):
        load_model(tmp_path / "plain.pt", model="resnet18", num_classes=10)


def test_real_labels(tmp_path, image_folder, trained_run):
    # rename the val images as ImageNet's and give each its own label as the ReaL label set
    files = sorted(image_folder.glob("val/*/*.jpg"))
    labels = []
    for i, path in enumerate(sorted(files, key=lambda p: (p.parent.name, p.name))):
        path.rename(path.parent / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        labels.append([int(path.parent.name[-1])])
    (tmp_path / "real.json").write_text(json.dumps(labels))
    model, _ = load_model(trained_run)  # 10 outputs; the 3 folder classes are labels 0..2
    metrics = evaluate(model, image_folder, test_res=32, crop_pct=1.0, real_json=tmp_path / "real.json", workers=0)
    assert metrics["real_top1"] == pytest.approx(metrics["top1"]) and metrics["real_top5"] == pytest.approx(metrics["top5"])


@pytest.mark.parametrize("overrides", [dict(model="resnet10t", width=0.5), dict(model="vit_tiny_patch16_224", aa=None)],
                         ids=["width-0.5", "vit"])
def test_runs_of_other_architectures_load_and_evaluate_at_two_resolutions(tmp_path, overrides):
    """load_model builds the run's own architecture (width, a ViT's dynamic image size), so a scaling study's
    runs evaluate at any test resolution."""
    from rsbkit.core.recipes import A3, smoke

    run = tmp_path / "run"
    train(smoke(A3, batch_size=16, **overrides), "default", run, limit_train=32, limit_val=32, workers=0, progress="none",
          log=lambda *_: None)
    model, recipe = load_model(run)
    assert recipe.model == overrides["model"] and recipe.width == overrides.get("width", 1.0)
    data = load_data("default", limit_val=32)
    tops = [evaluate(model, data, test_res=res, crop_pct=1.0, workers=0)["top1"] for res in (32, 48)]
    assert all(0 <= t <= 100 for t in tops)
    own = evaluate(model, data, test_res=recipe.test_res, crop_pct=recipe.crop_pct, interpolation=recipe.interpolation, workers=0)
    assert own["top1"] == pytest.approx(load_run(run)["metrics"][-1]["val_top1"], abs=1e-3)  # the run's own number
    if "width" in overrides:
        assert model.layer1[0].conv1.in_channels == 32  # 64 x 0.5
