"""Models from recipes (width scaling, starting weights), their measured cost, and the study arithmetic."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from rsbkit.core.errors import CheckpointError, RecipeError, RunError
from rsbkit.core.models import count_macs, create_model, load_init, profile, width_kwargs
from rsbkit.core.recipes import Recipe
from rsbkit.workbook.architecture_studies import depth_versus_width, pareto_front, scaling_points, source_model
from rsbkit.workbook.study_stats import BEYOND, CANNOT_TELL, WITHIN, SeedStats


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
    assert list(versus["higher"]) == ["width", "depth"]  # width higher short, depth higher long
    # one run per point and no seed study: no interval, and no winner is named
    assert list(versus["better"]) == [CANNOT_TELL] * 2 and versus["low"].isna().all()


def test_depth_versus_width_names_a_winner_only_beyond_seed_noise():
    def point(model, width, epochs, gmacs, top1, std, seeds=3):
        return dict(model=model, width=width, res=32, epochs=epochs, gmacs=gmacs, top1=top1, top1_std=std, seeds=seeds)

    table = pd.DataFrame([point("r34", 1.0, 1, 2.0, 72.0, 0.2), point("r18", 1.5, 1, 2.2, 73.0, 0.2),
                          point("r34", 1.0, 9, 2.0, 84.0, 1.5), point("r18", 1.5, 9, 2.2, 82.0, 1.5)])
    versus = depth_versus_width(table).set_index("epochs")
    short, long = versus.loc[1], versus.loc[9]
    se = math.sqrt(0.2 ** 2 / 3 * 2)  # Welch with equal spreads and 3 seeds each: 4 degrees of freedom
    assert short["diff"] == pytest.approx(1.0) and short["df"] == pytest.approx(4.0)
    assert short["high"] - short["diff"] == pytest.approx(scipy_stats.t.ppf(0.975, 4) * se)
    assert short["better"] == "width" and short["verdict"] == BEYOND
    assert long["higher"] == "depth" and long["better"] == CANNOT_TELL  # 2 points apart, but 1.5 of spread
    # a seed study's spread is read beside the points' own; the wider band is kept
    wide = depth_versus_width(table, SeedStats(n=5, mean=72.0, std=2.0, min=70.0, max=74.0)).set_index("epochs")
    assert wide.loc[1, "better"] == CANNOT_TELL and wide.loc[1, "df"] == pytest.approx(4.0)


def _fake_speeds(names, res, **kwargs):
    return pd.DataFrame([dict(model=m, width=1.0, res=res, params_m=1.0, gmacs=1.0 + i, train_imgs_per_s=100.0,
                              infer_imgs_per_s=300.0, train_peak_mem_mb=None, batch=8, device="fake",
                              precision="float32", error=None if m != "nosuch" else "unknown model nosuch")
                         for i, m in enumerate(names)])


def _fake_training(top1_of):
    """A stand-in for the sweep: each point's run folder name and a top-1 from `top1_of(parameters)`."""
    def train_points(sweep, jobs, log):
        values = [{**p.parameters.get("overrides", {}), **p.parameters} for p in sweep.points]  # recipe fields too
        rows = [dict(run=str(p.run_dir), point=p.name, status="completed", final_top1=top1_of(v), error=None,
                     wall_s=10.0, seed=v.get("seed")) for p, v in zip(sweep.points, values)]
        return pd.DataFrame(rows)
    return train_points


def test_architecture_study_trains_each_model_per_seed_and_reads_verdicts(tmp_path, monkeypatch):
    from rsbkit.workbook import architecture_studies as studies

    monkeypatch.setattr(studies, "profile_models", _fake_speeds)
    spread = {0: -0.1, 1: 0.0, 2: 0.1}
    mean = {"resnet10t": 70.0, "resnet14t": 74.0, "resnet18": 70.0}
    monkeypatch.setattr(studies, "_train_points",
                        _fake_training(lambda p: mean[p["model"]] + spread.get(p.get("seed"), 0.0)))
    study = studies.architecture_study(recipe="params/smoke.yaml", models=["resnet14t", "resnet10t", "resnet18", "nosuch"],
                                       out_dir=str(tmp_path), seeds=[0, 1, 2], reference="resnet10t")
    table = study.table.set_index("model")
    assert list(table.loc[["resnet10t", "resnet14t", "resnet18"], "seeds"]) == [3, 3, 3]
    assert table.loc["resnet14t", "final_top1"] == pytest.approx(74.0)
    assert table.loc["resnet14t", "top1_std"] == pytest.approx(0.1)
    assert table.loc["resnet14t", "wall_s"] == pytest.approx(30.0)  # what the model cost over its seeds
    assert table.loc["resnet14t", "verdict"] == BEYOND and table.loc["resnet14t", "diff"] == pytest.approx(4.0)
    assert table.loc["resnet18", "verdict"] == WITHIN  # the same mean, a spread of 0.1: the 90% interval lies inside +-0.2
    assert pd.isna(table.loc["resnet10t", "verdict"]) and table.loc["resnet10t", "diff"] == 0.0
    assert pd.isna(table.loc["nosuch", "seeds"])  # not trained: timm does not know it
    one = studies.architecture_study(recipe="params/smoke.yaml", models=["resnet14t", "resnet10t"],
                                     out_dir=str(tmp_path / "one"), seeds=[])
    # one run each: the first model is the reference, and the other has no interval
    assert one.table.set_index("model").loc["resnet10t", "verdict"] == CANNOT_TELL
    assert set(one.table["reference"]) == {"resnet14t"}
    with pytest.raises(RunError, match="reference 'resnet50' is not one of the trained models"):
        studies.architecture_study(recipe="params/smoke.yaml", models=["resnet10t"], out_dir=str(tmp_path / "x"),
                                   reference="resnet50")
    with pytest.raises(RunError, match="seeds must be distinct integers"):
        studies.architecture_study(recipe="params/smoke.yaml", models=["resnet10t"], out_dir=str(tmp_path / "y"),
                                   seeds=[0, 0])


def test_scaling_study_groups_seeds_per_point(tmp_path, monkeypatch):
    from rsbkit.workbook import architecture_studies as studies

    def fake_profile(model, res, width=1.0, **kwargs):
        return dict(model=model, width=width, res=res, params_m=1.0, gmacs=float(width) * (2 if model == "b" else 1),
                    train_imgs_per_s=1.0, infer_imgs_per_s=1.0, train_peak_mem_mb=None, device="fake", error=None)

    monkeypatch.setattr(studies, "profile", fake_profile)
    monkeypatch.setattr(studies, "_train_points", _fake_training(
        lambda p: 60.0 + 5 * (p["width"] != 1.0) + p["seed"] * 0.2))
    monkeypatch.setattr(studies, "_num_classes", lambda data: 10)
    study = studies.scaling_study(recipe="params/smoke.yaml", models=["resnet10t", "resnet14t"], widths=[2.0],
                                  resolutions=[32], epochs=[1], out_dir=str(tmp_path), seeds=[0, 1])
    table = study.table.set_index(["model", "width"])
    assert table["seeds"].tolist() == [2, 2, 2]
    assert table.loc[("resnet10t", 2.0), "top1"] == pytest.approx(65.1)
    assert table.loc[("resnet10t", 1.0), "top1_std"] == pytest.approx(math.sqrt(0.02))
    versus = depth_versus_width(study.table, study.seed_stats)
    assert versus["better"].tolist() == ["width"] and versus["width_seeds"].tolist() == [2]


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
