"""Models from recipes (width scaling, starting weights), their measured cost, and the study arithmetic."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from rsbkit.core.errors import CheckpointError, RecipeError
from rsbkit.core.models import count_macs, create_model, load_init, profile, width_kwargs
from rsbkit.core.recipes import Recipe
from rsbkit.workbook.architecture_studies import depth_versus_width, pareto_front, scaling_points, source_model


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_width_multiplies_every_stage_and_a_deep_stem():
    assert width_kwargs("resnet50", 1.0) == {}
    assert width_kwargs("resnet50", 0.5) == {"channels": (32, 64, 128, 256)}  # the simple stem stays 64 in timm
    assert width_kwargs("resnetrs50", 1.5) == {"channels": (96, 192, 384, 768), "stem_width": 48}
    narrow = create_model(Recipe(model="resnet18", width=0.5), 10)
    full = create_model(Recipe(model="resnet18"), 10)
    assert narrow.layer4[-1].conv2.out_channels == 256 and full.layer4[-1].conv2.out_channels == 512
    # the 3x3 convolutions dominate: half the width is about a quarter of the weights
    assert 0.2 < params(narrow) / params(full) < 0.3
    with pytest.raises(RecipeError, match="width scaling is defined for timm's ResNet family"):
        create_model(Recipe(model="efficientnet_b0", width=2.0), 10)
    with pytest.raises(RecipeError, match="width"):
        Recipe(width=0)


def test_macs_match_the_known_resnet50_count():
    model = create_model(Recipe(model="resnet50"), 1000)
    assert count_macs(model, 224) == pytest.approx(4.1, abs=0.05)  # timm and the papers: 4.1 GMACs at 224
    assert count_macs(model, 160) == pytest.approx(4.1 * (160 / 224) ** 2, rel=0.03)


def test_profile_reports_unknown_names_and_impossible_resolutions_as_rows():
    ok = profile("resnet10t", 32, num_classes=10, batch=4, steps=1, warmup=1, device="cpu")
    assert ok["error"] is None and ok["train_imgs_per_s"] > 0 and ok["infer_imgs_per_s"] > 0
    assert ok["device"].startswith("CPU") and ok["train_peak_mem_mb"] is None  # peak memory is measured on CUDA only
    unknown = profile("resnet5O", 32, batch=2, steps=1, warmup=1, device="cpu")
    assert "unknown model 'resnet5O'; did you mean 'resnet50'" in unknown["error"] and unknown["params_m"] is None
    small = profile("vit_small_patch16_224", 8, batch=2, steps=1, warmup=1, device="cpu")
    assert small["error"].startswith("vit_small_patch16_224 cannot run at 8 px (batch 2)")
    assert "patch size (16)" in small["error"]


def test_init_loads_a_run_and_keeps_a_fresh_classifier(smoke_run):
    recipe = Recipe(model="resnet10t", init=str(smoke_run))
    model = create_model(recipe, num_classes=3)  # the smoke run had 10 classes
    source = torch.load(smoke_run / "best.pt", weights_only=True)["model"]
    assert torch.equal(model.conv1[0].weight, source["conv1.0.weight"])
    assert model.fc.weight.shape == (3, 512) and source["fc.weight"].shape == (10, 512)
    info = load_init(create_model(Recipe(model="resnet10t"), 3), smoke_run)
    assert info["fresh"] == ["fc.bias", "fc.weight"] and info["loaded"] == len(source) - 2
    with pytest.raises(CheckpointError, match="the recipe's model .* must match the source's"):
        create_model(Recipe(model="resnet10t", width=0.5, init=str(smoke_run)), 3)
    with pytest.raises(CheckpointError, match="neither a run folder, a checkpoint file nor a timm model name"):
        create_model(Recipe(model="resnet10t", init="no/such/run"), 3)
    assert source_model(str(smoke_run)) == ("resnet10t", 1.0, smoke_run.name)


def test_scaling_grid_depth_width_resolution_epochs():
    points = scaling_points(["resnet18", "resnet34"], [0.5, 1.0], [24, 32], [1, 5])
    configs = {(p["model"], p["width"]) for p in points}
    assert configs == {("resnet18", 1.0), ("resnet34", 1.0), ("resnet18", 0.5)}  # 1.0 is not repeated
    assert len(points) == 3 * 2 * 2 and all(p["train_res"] == p["test_res"] for p in points)


def test_depth_versus_width_pairs_by_nearest_cost():
    table = pd.DataFrame([
        dict(model="r18", width=1.0, res=32, epochs=1, gmacs=1.0, top1=70.0),
        dict(model="r34", width=1.0, res=32, epochs=1, gmacs=2.0, top1=72.0),
        dict(model="r18", width=1.5, res=32, epochs=1, gmacs=2.2, top1=73.0),
        dict(model="r18", width=1.0, res=32, epochs=9, gmacs=1.0, top1=80.0),
        dict(model="r34", width=1.0, res=32, epochs=9, gmacs=2.0, top1=84.0),
        dict(model="r18", width=1.5, res=32, epochs=9, gmacs=2.2, top1=82.0),
    ])
    versus = depth_versus_width(table)
    assert list(versus["depth_model"]) == ["r34", "r34"]  # nearest in GMACs to the 1.5x model
    assert list(versus["better"]) == ["width", "depth"]  # width wins short, depth wins long


def test_pareto_front_keeps_only_undominated_points():
    table = pd.DataFrame(dict(model=list("abcd"), train_imgs_per_s=[100, 50, 80, 10], top1=[70, 75, 65, 74]))
    assert list(pareto_front(table)["model"]) == ["a", "b"]


def test_studies_refuse_empty_grids(tmp_path):
    from rsbkit.core.errors import RunError
    from rsbkit.workbook.architecture_studies import scaling_study, transfer_study

    with pytest.raises(RunError, match="scaling study: models is empty"):
        scaling_study(recipe="params/smoke.yaml", models=[], widths=[], resolutions=[32], epochs=[1], out_dir=str(tmp_path))
    with pytest.raises(RunError, match="transfer study: give targets"):
        transfer_study(sources=[], targets=["default"], recipe="params/smoke.yaml", out_dir=str(tmp_path), scratch=False)
