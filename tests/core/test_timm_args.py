"""A timm train.py run's args.yaml as a recipe (issue 21, item 1), on a real run's file: timm's own train.py
(commit aa4b5850, test_resnet, 6 epochs of A3's ingredients with EMA; tests/fixtures/timm_run/command.txt)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rsbkit.core.errors import RecipeError
from rsbkit.core.recipes import from_timm_args, load_recipe, params_yaml, plan_batch, timm_command, to_timm_args

ARGS = Path(__file__).parent / "fixtures" / "timm_run" / "args.yaml"


def args(**changes):
    return {**yaml.safe_load(ARGS.read_text()), **changes}


def test_the_fixture_run_becomes_the_recipe_it_trained():
    recipe, notes = from_timm_args(ARGS)
    # what its command line (command.txt) asked for, read back through args.yaml
    assert (recipe.model, recipe.epochs, recipe.batch_size, recipe.opt, recipe.weight_decay) == ("test_resnet", 6, 64, "lamb", 0.02)
    assert (recipe.sched, recipe.warmup_epochs, recipe.warmup_lr, recipe.min_lr) == ("cosine", 1, 1e-4, 1e-6)
    assert (recipe.loss, recipe.smoothing, recipe.mixup, recipe.cutmix) == ("bce", 0.0, 0.1, 1.0)
    assert (recipe.train_res, recipe.test_res, recipe.crop_pct, recipe.interpolation) == (32, 32, 0.95, "bicubic")
    assert recipe.scale == (0.25, 1.0) and recipe.aa == "rand-m6-mstd0.5-inc1" and recipe.train_interpolation == "random"
    assert (recipe.model_ema, recipe.model_ema_decay, recipe.amp, recipe.seed) == (True, 0.99, False, 0)
    # --lr 0.008 given: train.py used it as given, and so does the recipe's plan
    assert plan_batch(recipe).lr == 0.008
    # args.yaml says color_jitter 0.4, but timm never jittered under RandAugment
    assert recipe.color_jitter == 0.0 and any("turns jitter off under RandAugment" in n for n in notes)
    assert any(n.startswith("not training") and "data_dir" in n for n in notes)


def test_the_params_file_names_its_base_and_loads_back(tmp_path):
    recipe, notes = from_timm_args(ARGS)
    text = params_yaml(recipe, notes)
    saved = yaml.safe_load(text)
    assert saved["base"] == "a3" and "mixup" not in saved  # A3's mixup 0.1 / cutmix 1.0: not repeated
    (tmp_path / "timm.yaml").write_text(text)
    assert load_recipe(tmp_path / "timm.yaml") == recipe


def test_lr_base_is_scaled_by_timms_rule_and_the_batch_counts_processes():
    # no --lr: lr_base at lr_base_size, scaled to the global batch (8 processes x 64 x 2 accumulation steps)
    recipe, _ = from_timm_args(args(lr=None, lr_base=0.1, lr_base_size=256, grad_accum_steps=2), world_size=8)
    assert recipe.batch_size == 1024 and plan_batch(recipe).lr == pytest.approx(0.1 * (1024 / 256) ** 0.5)  # LAMB: sqrt
    sgd, _ = from_timm_args(args(lr=None, lr_base=0.1, lr_base_size=256, opt="sgd"), world_size=8)
    assert plan_batch(sgd).lr == pytest.approx(0.1 * 512 / 256)  # SGD: linear
    forced, _ = from_timm_args(args(lr=None, lr_base=0.1, lr_base_size=256, opt="sgd", lr_base_scale="sqrt"), world_size=8)
    assert plan_batch(forced).lr == pytest.approx(0.1 * (512 / 256) ** 0.5)


def test_the_losses_and_a_flag_without_a_field():
    assert from_timm_args(args(bce_loss=False, smoothing=0.1))[0].loss == "ce"
    assert from_timm_args(args(bce_target_thresh=0.2))[0].bce_target_thresh == 0.2
    with pytest.raises(RecipeError, match=r"layer_decay=0.7 \(default None\).*cannot train that run"):
        from_timm_args(args(layer_decay=0.7))
    with pytest.raises(RecipeError, match="jsd_loss=True"):
        from_timm_args(args(jsd_loss=True))
    jitter, _ = from_timm_args(args(aa=None, color_jitter=0.4))
    assert jitter.color_jitter == 0.4  # without RandAugment timm jitters


def test_the_cli_prints_the_params_file(cli, tmp_path):
    out = cli("recipe", "--from-timm", str(ARGS), "--nproc", "4")
    assert out.returncode == 0, out.stderr
    assert "# batch_size: 64 per process x 4 process(es)" in out.stdout and yaml.safe_load(out.stdout)["batch_size"] == 256
    bad = tmp_path / "args.yaml"
    bad.write_text(yaml.safe_dump(args(layer_decay=0.7)))
    out = cli("recipe", "--from-timm", str(bad))
    assert out.returncode == 2 and "layer_decay" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["a1", "a2", "a3", "torchvision", "resnet_rs50", "params/demo.yaml"])
@pytest.mark.parametrize("nproc", [1, 4])
def test_export_then_import_gives_the_recipe_back_but_what_the_comments_name(name, nproc):
    recipe = load_recipe(name)
    args, notes = to_timm_args(recipe, nproc)
    assert args["batch_size"] * nproc * args["grad_accum_steps"] == recipe.batch_size  # -b is per process
    back, _ = from_timm_args(args, world_size=nproc)
    differ = [k for k, v in recipe.to_dict().items() if back.to_dict()[k] != v]
    assert all(any(n.startswith(k) for n in notes) for k in differ), (differ, notes)
    assert plan_batch(back).lr == pytest.approx(plan_batch(recipe).lr)  # the LR train.py will use, stated
    assert any(f"train.py will use lr {plan_batch(recipe).lr:.6g}" in n for n in notes)


def test_the_fixture_run_exported_again_repeats_its_command():
    """Import args.yaml, export: every training flag of the command that made the fixture comes back, same value."""
    def flags(words):
        out, key = {}, None
        for w in words:
            if w.startswith("-") and not w[1:2].isdigit():
                key = w
                out[key] = []
            elif key:
                out[key].append(w)
        return out

    def same(a, b):
        try:
            return [float(x) for x in a] == [float(x) for x in b]
        except ValueError:
            return a == b

    theirs = flags((ARGS.parent / "command.txt").read_text().split())
    ours = flags(timm_command(from_timm_args(ARGS)[0]).splitlines()[0].split())
    io = {"--data-dir", "--train-split", "--val-split", "--num-classes", "-j", "--device", "--output", "--experiment",
          "--checkpoint-hist"}
    missing = {k: v for k, v in theirs.items() if k not in io and not same(v, ours.get(k, ["<absent>"]))}
    assert not missing, {k: (v, ours.get(k)) for k, v in missing.items()}


def test_the_cli_prints_a_torchrun_command(cli):
    out = cli("recipe", "a3", "--timm-command", "--nproc", "8", "--data-dir", "/data/imagenet")
    assert out.returncode == 0, out.stderr
    command, *comments = out.stdout.splitlines()
    assert command.startswith("torchrun --nproc_per_node=8 train.py --data-dir /data/imagenet --model resnet50")
    assert " -b 256 " in command and " --lr 0.008 " in command and "--bce-loss" in command
    assert any("test_res 224: train.py validates at --img-size 160" in c for c in comments)
    for nproc, why in (("0", "nproc=0: give the number of processes"), ("3", "batch_size 2048 does not split over 3")):
        out = cli("recipe", "a3", "--timm-command", "--nproc", nproc)
        assert out.returncode == 2 and why in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_run_with_a_teacher_maps_to_the_teacher_fields_and_back():
    """timm's --kd-* flags (2025): logit distillation from a timm model becomes the recipe's teacher, and the recipe
    writes them back; feature distillation, which rsbkit does not offer, is refused by name."""
    recipe, notes = from_timm_args(args(kd_model_name="resnet50.a1_in1k", kd_distill_type="logit", kd_loss_type="kl",
                                        kd_temperature=2.0, distill_loss_weight=0.5, task_loss_weight=None))
    assert (recipe.teacher, recipe.kd_target, recipe.kd_temperature, recipe.distill_loss_weight,
            recipe.task_loss_weight) == ("resnet50.a1_in1k", "soft", 2.0, 0.5, None)
    assert any(n.startswith("teacher: resnet50.a1_in1k") for n in notes)
    written, _ = to_timm_args(recipe)
    assert (written["kd_model_name"], written["kd_distill_type"], written["kd_temperature"],
            written["distill_loss_weight"]) == ("resnet50.a1_in1k", "logit", 2.0, 0.5)
    assert from_timm_args(written)[0] == recipe
    command = timm_command(recipe)
    assert "--kd-model-name resnet50.a1_in1k --kd-distill-type logit --kd-temperature 2.0 --distill-loss-weight 0.5" in command
    with pytest.raises(RecipeError, match="kd_distill_type='feature'"):
        from_timm_args(args(kd_model_name="resnet50", kd_distill_type="feature"))
    hard = recipe.replace(teacher="runs/teacher", kd_target="hard")
    notes = to_timm_args(hard)[1]
    assert any("a run folder or checkpoint has no flag there" in n for n in notes)
    assert any("kd_target hard" in n for n in notes)
