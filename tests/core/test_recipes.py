"""Recipe validation messages, YAML, batch rules, reported figures. What the recipes build is in test_fidelity.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rsbkit.core.errors import RecipeError
from rsbkit.core.recipes import (
    A1,
    A3,
    EXECUTION_FIELDS,
    RECIPES,
    RESNET_RS_TABLE,
    TORCHVISION,
    Recipe,
    batch_lr,
    get_recipe,
    load_recipe,
    parse_overrides,
    plan_batch,
    recipe_from_yaml,
    resnet_rs,
    smoke,
    split_batch,
)

REPORTED = {"a1": (80.4, 85.7, 68.7, 110, 22.1), "a2": (79.8, 85.4, 67.9, 55, 22.1), "a3": (78.1, 84.5, 66.1, 15, 11.4)}


@pytest.mark.parametrize("name", ["a1", "a2", "a3"])
def test_rsb_reported_results(name):
    top1, real, v2, hours, mem = REPORTED[name]
    rep = get_recipe(name).reported
    assert (rep.top1, rep.real, rep.v2, rep.train_hours, rep.gpus, rep.peak_mem_gb) == (top1, real, v2, hours, 4, mem)


def test_resnet_rs_default_resolution_and_errors():
    assert resnet_rs(101).train_res == 160 and resnet_rs(152).train_res == 192
    assert set(RESNET_RS_TABLE) == {50, 101, 152, 200, 270, 350, 420}
    with pytest.raises(RecipeError, match="depth.*'51'|51.*did you mean"):
        resnet_rs(51)
    with pytest.raises(RecipeError, match=r"train_res=224.*\[160, 192\]"):
        resnet_rs(101, 224)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_yaml_round_trip(tmp_path, name):
    recipe = get_recipe(name)
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())
    assert recipe_from_yaml(path) == recipe
    assert yaml.safe_load(recipe.to_yaml()) == recipe.to_dict()


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[2].glob("params/*.yaml")), ids=lambda p: p.name)
def test_every_params_file_loads(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_params_yaml_bases(root):
    assert load_recipe(root / "params/a1.yaml") == A1.replace(name="a1")
    assert load_recipe(root / "params/smoke.yaml") == smoke(A3).replace(name="smoke")
    demo = load_recipe(root / "params/demo.yaml")
    # the demo is A3 scaled down: every augmentation and loss ingredient kept
    for field in ("opt", "loss", "aa", "mixup", "cutmix", "weight_decay", "sched", "aug_repeats", "crop_pct", "interpolation"):
        assert getattr(demo, field) == getattr(A3, field), field


@pytest.mark.parametrize("overrides,pattern", [
    (dict(lrr=1e-3), r"unknown recipe field 'lrr'; did you mean 'lr'"),
    (dict(opt="lambb"), r"unknown optimizer \(opt\) 'lambb'; did you mean 'lamb'"),
    (dict(loss="bce2"), r"unknown loss \(loss\) 'bce2'; did you mean 'bce'.*valid: bce, ce"),
    (dict(model="resnet5"), r"unknown model 'resnet5'; did you mean 'resnet50'"),
    (dict(sched="cosin"), r"unknown schedule \(sched\) 'cosin'; did you mean 'cosine'"),
    (dict(lr=0), r"lr=0.0 is out of range: allowed > 0"),
    (dict(lr=-1e-3), r"lr=-0.001 is out of range"),
    (dict(crop_pct=1.2), r"crop_pct=1.2 is out of range: allowed \(0, 1\]"),
    (dict(crop_pct=0), r"crop_pct=0.0 is out of range"),
    (dict(epochs=0), r"epochs=0 is out of range: allowed >= 1"),
    (dict(mixup=-0.1), r"mixup=-0.1 is out of range: allowed >= 0"),
    (dict(reprob=-0.5), r"reprob=-0.5 is out of range: allowed \[0, 1\]"),
    (dict(mixup_switch_prob=1.5), r"mixup_switch_prob=1.5 is out of range"),
    (dict(smoothing=1.0), r"smoothing=1.0 is out of range: allowed \[0, 1\)"),
    (dict(warmup_epochs=700), r"warmup_epochs=700 is out of range: allowed 0 .. epochs \(600\)"),
    (dict(aa="rand-q7"), r"aa='rand-q7' is not a timm augmentation string"),
    (dict(epochs="many"), r"epochs='many': expected a whole number"),
    (dict(amp="yes"), r"amp='yes': expected true or false"),
    (dict(lr_scale="log"), r"unknown LR scaling rule \(lr_scale\) 'log'.*valid: auto, linear, none, sqrt"),
    (dict(train_interpolation="bicubc"), r"unknown train interpolation .* did you mean 'bicubic'"),
    (dict(dist_bn="avg"), r"unknown BatchNorm sync mode \(dist_bn\) 'avg'"),
    (dict(cooldown_epochs=-1), r"cooldown_epochs=-1 is out of range"),
])
def test_bad_overrides_name_the_field(overrides, pattern):
    with pytest.raises(RecipeError, match=pattern):
        A1.replace(**overrides)


def test_unknown_recipe_lists_closest():
    with pytest.raises(RecipeError, match=r"unknown recipe 'a4'; did you mean .*'a1'.*valid: a1, a2, a3"):
        get_recipe("a4")


def test_yaml_unknown_key_names_key_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("# my recipe\nbase: a3\nepochs: 10\nwarmup_epoch: 1\n")
    with pytest.raises(RecipeError, match=r"bad.yaml, line 4: unknown recipe field 'warmup_epoch'; did you mean 'warmup_epochs'"):
        load_recipe(path)


def test_yaml_bad_value_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: a2\nepochs: 10\ncrop_pct: 1.5\n")
    with pytest.raises(RecipeError, match=r"bad.yaml, line 3: crop_pct=1.5 is out of range"):
        load_recipe(path)


def test_yaml_reads_exponents_without_dot(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: a3\nlr: 5e-3\nbce_target_thresh: none\n")  # YAML 1.1 reads 5e-3 as a string
    assert load_recipe(path).lr == 5e-3


def test_missing_yaml_file():
    with pytest.raises(RecipeError, match="recipe file nope.yaml does not exist"):
        load_recipe("nope.yaml")


def test_parse_overrides():
    assert parse_overrides(["lr=1e-3", "aa=none", "scale=[0.5, 1]", "amp=false", "epochs=3"]) == \
        {"lr": "1e-3", "aa": "none", "scale": [0.5, 1], "amp": False, "epochs": 3}
    r = A3.replace(**parse_overrides(["lr=1e-3", "scale=[0.5, 1]", "aa=none", "bce_target_thresh=null"]))
    assert (r.lr, r.scale, r.aa, r.bce_target_thresh) == (1e-3, (0.5, 1.0), None, None)
    with pytest.raises(RecipeError, match="not key=value"):
        parse_overrides(["lr"])


def test_lr_scaling_is_stated():
    plan = plan_batch(A3.replace(batch_size=256))
    assert (plan.lr, plan.accum_steps, plan.effective_batch) == (pytest.approx(8e-3 * (256 / 2048) ** 0.5), 1, 256)
    assert "0.008 x sqrt(256/2048) = 0.002828 (sqrt scaling (timm's rule for lamb)" in plan.rule
    plan = plan_batch(TORCHVISION.replace(batch_size=1024))
    assert plan.lr == pytest.approx(0.4) and "0.1 x 1024/256 = 0.4 (linear scaling" in plan.rule
    assert "used as given (lr_scale: none)" in plan_batch(A3.replace(batch_size=256, lr_scale="none")).rule


def test_repeated_augmentation_splits_the_step_into_forward_passes():
    from rsbkit.core.errors import DistributedError

    assert (plan_batch(A1).micro_batch, plan_batch(A1).accum_steps) == (512, 4)  # the paper's 4 GPUs x 512
    assert plan_batch(A1, world_size=4).accum_steps == 1 and plan_batch(A1, world_size=8).micro_batch == 256
    assert plan_batch(A1, world_size=2).accum_steps == 2
    with pytest.raises(DistributedError, match="aug_repeats 3 .* a micro_batch of at most 682 dividing 2048"):
        plan_batch(A1, micro_batch=2048)


def test_grad_accum_keeps_lr():
    plan = plan_batch(A3.replace(batch_size=256, grad_accum=True))
    assert (plan.lr, plan.accum_steps, plan.effective_batch) == (8e-3, 8, 2048)
    with pytest.raises(RecipeError, match=r"lr_base_size \(2048\) to be a multiple of batch_size \(300\)"):
        plan_batch(A3.replace(batch_size=300, grad_accum=True))


def test_the_plan_is_the_lr_for_the_batch_then_its_split():
    """plan_batch joins two steps that can be asked for apart: the LR for the global batch, then its split."""
    scaled = batch_lr(A3.replace(batch_size=256, grad_accum=True))
    assert (scaled.lr, scaled.batch) == (8e-3, 2048)  # accumulated to the batch the LR is defined for
    assert split_batch(A1, 2048) == (512, 4) and split_batch(A1, 2048, world_size=8) == (256, 1)
    plan = plan_batch(A1.replace(batch_size=1024), world_size=2)
    scaled = batch_lr(A1.replace(batch_size=1024))
    assert (plan.lr, plan.effective_batch) == (scaled.lr, scaled.batch) and plan.rule.startswith(scaled.rule + "; ")
    assert (plan.micro_batch, plan.accum_steps) == split_batch(A1.replace(batch_size=1024), 1024, world_size=2)


def test_unchanged_batch_keeps_lr():
    assert plan_batch(A1).lr == 5e-3 and plan_batch(TORCHVISION).lr == 0.1


def test_recipe_is_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        A1.lr = 1.0  # type: ignore[misc]
    assert hash(A1) == hash(A1.replace())
    assert A1.replace(lr=1e-3) != A1


def test_default_recipe_valid():
    assert Recipe().to_dict()["model"] == "resnet50"


def test_run_recipe_yaml_files_execution_apart_and_loads_back(tmp_path):
    from rsbkit.core.runs import RunFolder, write_recipe

    recipe = A3.replace(augment_on="device", eval_every=2, channels_last=True)
    run = RunFolder(tmp_path)
    write_recipe(run, recipe, {"lr": 0.001})
    saved = yaml.safe_load(run.recipe.read_text())
    assert saved["execution"] == {k: getattr(recipe, k) for k in EXECUTION_FIELDS}
    assert EXECUTION_FIELDS.isdisjoint(saved) and saved["mixup"] == recipe.mixup and saved["resolved"] == {"lr": 0.001}
    assert load_recipe(run.recipe) == recipe  # `rsbkit train runs/X/recipe.yaml` repeats the run
    (tmp_path / "bad.yaml").write_text("base: a3\nexecution:\n  mixup: 0.3\n")
    with pytest.raises(RecipeError, match=r"line 2: 'mixup' is not a way of running .*top level"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "twice.yaml").write_text("base: a3\neval_every: 3\nexecution:\n  eval_every: 2\n")
    with pytest.raises(RecipeError, match="eval_every is given twice"):
        load_recipe(tmp_path / "twice.yaml")
