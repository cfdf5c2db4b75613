"""Each explorer's widget state as a recipe change (rsbkit.explore.change, widgets.ChangePanel): set the widgets, read
the change the panel shows, and load it back. The YAML lines put in the recipe's file, and the --set flags given to
load_recipe, give exactly ``base.replace(**change.fields)``; a state no recipe can express says why, with no lines."""
from __future__ import annotations

import shlex
import threading

import pytest
from clock import limit

from rsbkit.core.errors import RecipeError, RunError
from rsbkit.core.recipes import A3, load_recipe, parse_overrides
from rsbkit.explore import augment, change, images, plots, trial, widgets

DEMO = change.start_recipe("params/demo.yaml")


def round_trip(c: change.Change, tmp_path) -> None:
    """The printed forms load back to the recipe the change names."""
    assert not c.error and c.fields
    expected = c.base.replace(**c.fields)
    name = c.source.rsplit("/", 1)[-1].removesuffix(".yaml")
    path = tmp_path / f"{name}.yaml"  # the file's stem is the recipe's name
    path.write_text(c.recipe_file())
    assert load_recipe(path).replace(name=expected.name) == expected
    for line in c.yaml.splitlines():  # each YAML line is one field
        assert line.split(":")[0] in c.fields
    words = shlex.split(c.command)  # as a shell splits the command line
    assert words[:3] == ["rsbkit", "train", c.source] and words[3::2] == ["--set"] * len(c.fields)
    assert load_recipe(c.source, **parse_overrides(words[4::2])) == expected
    assert c.command == f"rsbkit train {c.source} {c.set_flags}"
    assert eval(c.python, {"recipe": c.base}) == expected  # noqa: S307 (the Python form, as the panel prints it)
    assert c.recipe == expected


def refused(c: change.Change, reason: str) -> None:
    assert reason in c.error, c.error
    assert (c.fields, c.yaml, c.set_flags, c.command, c.python, c.recipe) == ({}, "", "", "", "", None)
    assert c.text.startswith("Not a recipe") and reason in c.text


@pytest.fixture(autouse=True)
def no_drawing(monkeypatch):
    """The widgets are real, their figures blank: what is drawn is test_explore.py's; here only the controls count."""
    for name in ("randaugment_figure", "op_figure", "rrc_figure", "mix_pair_figure", "loss_figure", "resolution_explore_figure",
                 "schedule_figure"):
        monkeypatch.setattr(plots, name, lambda *a, **k: plots.go.Figure())


@pytest.fixture(scope="module")
def imgs():
    photo = images.photo("chelsea", 64)
    return images.ImageSet({"cat": photo, "cat2": photo}, {"cat": 0, "cat2": 1}, ["cat", "cat2"])


def test_the_demo_is_the_start_from_any_folder(tmp_path, monkeypatch):
    """A JupyterLab opened outside the checkout (the browser test's copy of the explorers) still finds params/demo.yaml."""
    monkeypatch.chdir(tmp_path)
    assert change.start_recipe("params/demo.yaml") == DEMO and DEMO.name == "demo" and DEMO.aa == "rand-m6-mstd0.5-inc1"
    assert change.start_recipe("a3") is A3


def test_augmentations_change(imgs, tmp_path):
    ra, rrc = widgets.randaugment_explorer(imgs.images, DEMO.aa), widgets.rrc_explorer(imgs.images)
    mix = widgets.mix_explorer(imgs, DEMO)
    panel = widgets.ChangePanel("params/demo.yaml", {"randaugment": ra, "rrc": rrc, "mix": mix})
    rrc.set(size=DEMO.train_res, scale=DEMO.scale, ratio=(0.75, 1.33), hflip=0.5)  # the demo's crop, 4/3 shown as 1.33
    assert mix.values()["mixing"] == "mixup and CutMix" and panel.change.fields == {}
    assert panel.box.value.startswith("No change from demo (params/demo.yaml)")

    ra.set(m=9, n=3)
    mix.controls["lam"].value = 0.3  # what the figure shows: no field
    assert panel.change.fields == {"aa": "rand-m9-n3-mstd0.5-inc1"}
    assert "aa: rand-m9-n3-mstd0.5-inc1" in panel.box.value and "lambda" in panel.box.value  # named as a view
    rrc.set(ratio=(0.5, 1.33), hflip=0.2, seed=7)
    assert panel.change.fields["ratio"] == (0.5, 4 / 3) and panel.change.fields["hflip"] == 0.2  # the recipe's 4/3 kept
    mix.controls["mixing"].value = "CutMix only"  # one widget, every field it sets
    assert {k: panel.change.fields[k] for k in ("mixup", "cutmix")} == {"mixup": 0.0, "cutmix": 1.0}
    mix.controls["smoothing"].value = 0.1
    round_trip(panel.change, tmp_path)
    mix.controls["mixing"].value = "mixup and CutMix"
    assert {k: panel.change.fields.get(k) for k in ("mixup", "cutmix")} == {"mixup": None, "cutmix": None}  # as the demo
    buttons = widgets.presets({"randaugment": ra, "rrc": rrc, "mix": mix}, DEMO).children
    assert [b.description for b in buttons] == ["A1 preset", "A2 preset", "A3 preset", "demo preset"]
    buttons[0].click()  # A1: RandAugment m7, 224 px crops of 8% to 100%, smoothing 0.1; mixup at alpha 0.2 and CutMix
    assert panel.change.fields == {"aa": "rand-m7-mstd0.5-inc1", "train_res": 224, "scale": (0.08, 1.0), "smoothing": 0.1,
                                   "mixup": 0.2, "cutmix": 1.0, "mixup_switch_prob": 0.5, "mixup_prob": 1.0}
    buttons[3].click()  # back to the demo: no change
    assert panel.change.fields == {} and panel.box.value.startswith("No change from demo")

    ops = widgets.op_explorer(imgs.images)
    one = widgets.ChangePanel("params/demo.yaml", {"op": ops})
    ops.set(op="Solarize", magnitude=9.0)  # Solarize is in inc0's list: the demo's inc1 becomes inc0, at m9
    assert one.change.fields == {"aa": "rand-m9-mstd0.5-inc0"}
    round_trip(one.change, tmp_path)
    ops.set(magnitude=7.5)  # refused: timm reads m as an integer
    refused(one.change, "magnitude 7.5: an aa string's m is a whole number")
    assert "Not a recipe" in one.status.value
    refused(change.recipe_change(DEMO, {"op": dict(op="TranslateX", magnitude=5)}), "op 'TranslateX' is in no op list")
    # above 10 without mmax timm would clip: the schema's own refusal, shown as the state is made
    refused(change.recipe_change(DEMO, {"randaugment": dict(m=12, n=2, mstd=0.5, inc=True)}), "timm clips RandAugment")
    # ResNet-RS-152's mmax15 is kept: m12 acts there; and torchvision's recipe, without RandAugment, gets one
    rs = change.recipe_change("resnet_rs152", {"randaugment": dict(m=12, n=2, mstd=0.0, inc=False)})
    assert rs.fields == {"aa": "rand-m12-n2-mmax15"}
    round_trip(rs, tmp_path)
    tv = change.recipe_change("torchvision", {"randaugment": dict(m=9, n=2, mstd=0.5, inc=True)})
    assert tv.fields == {"aa": "rand-m9-mstd0.5-inc1"}
    round_trip(tv, tmp_path)


def test_losses_change(tmp_path):
    loss = widgets.loss_explorer(5, lam=0.7, smoothing=0.0)
    panel = widgets.ChangePanel("params/demo.yaml", {"loss": loss})
    assert panel.change.fields == {}
    loss.set(smoothing=0.1, threshold_on=True, threshold=0.2, lam=0.4, logit=-1.0)
    assert panel.change.fields == {"smoothing": 0.1, "bce_target_thresh": 0.2}
    assert panel._repr_mimebundle_()["text/plain"] == panel.change.text  # what a papermill record keeps
    round_trip(panel.change, tmp_path)
    loss.set(threshold=0.0)  # refused by the schema: a threshold lies in (0, 1)
    refused(panel.change, "bce_target_thresh=0.0 is out of range: allowed (0, 1) or none")
    loss.set(threshold_on=False)
    assert panel.change.fields == {"smoothing": 0.1}
    # a CE recipe: the threshold is BCE's, so the loss comes with it
    ce = change.recipe_change("torchvision", {"loss": dict(smoothing=0.0, threshold_on=True, threshold=0.3)})
    assert ce.fields == {"loss": "bce", "bce_target_thresh": 0.3}
    round_trip(ce, tmp_path)


def test_resolution_change(tmp_path):
    res = widgets.resolution_explorer(images.photo("coffee", 96))
    panel = widgets.ChangePanel("params/demo.yaml", {"resolution": res})
    res.set(train_res=64, test_res=96, crop_pct=0.95, scale_min=0.25, seed=3)
    assert panel.change.fields == {"train_res": 64, "test_res": 96}
    res.set(scale_min=0.26)  # the nearest the 0.02 slider comes to the demo's 0.25 from above: a change
    assert panel.change.fields["scale"] == (0.26, 1.0)
    res.set(crop_pct=0.875, scale_min=0.08)
    assert panel.change.fields == {"train_res": 64, "test_res": 96, "crop_pct": 0.875, "scale": (0.08, 1.0)}
    round_trip(panel.change, tmp_path)
    refused(change.recipe_change(DEMO, {"resolution": dict(train_res=4, test_res=32, crop_pct=0.95, scale_min=0.25)}),
            "train_res=4 is out of range")


def test_schedule_change(tmp_path):
    sched = widgets.schedule_explorer("params/demo.yaml", 256, False)
    panel = widgets.ChangePanel("params/demo.yaml", {"schedule": sched})
    assert sched.controls["recipe"].value == "params/demo.yaml" and panel.change.fields == {}
    sched.set(batch_size=128, progressive=True, res_start=16)  # one checkbox, the three fields of progressive resizing
    assert panel.change.fields == {"batch_size": 128, "train_res_start": 16, "train_res_ramp": (7, 9), "train_res_step": 32}
    round_trip(panel.change, tmp_path)
    sched.set(res_start=48)  # nothing to grow: the demo trains at 32 px
    refused(panel.change, "a start size of 48 px is not below it")
    sched.set(progressive=False, batch_size=512, grad_accum=True)  # refused by the batch plan
    refused(panel.change, "grad_accum needs lr_base_size (256) to be a multiple of batch_size (512)")
    sched.set(recipe="a1", grad_accum=False)  # another recipe chosen: the change is from it
    assert (panel.change.source, panel.change.fields) == ("a1", {"batch_size": 512})
    assert panel.change.command == "rsbkit train a1 --set batch_size=512"
    round_trip(panel.change, tmp_path)


def test_the_yaml_goes_in_place_of_the_files_lines():
    c = change.recipe_change("params/demo.yaml", {"rrc": dict(size=48, scale=(0.25, 1.0), ratio=(0.75, 4 / 3), hflip=0.5)})
    text = c.recipe_file()
    assert text.count("train_res:") == 1 and text.rstrip().endswith("train_res: 48") and "base: a3" in text
    assert change.recipe_change("a3", {"rrc": dict(size=48, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), hflip=0.5)}
                                ).recipe_file() == "base: a3\ntrain_res: 48\n"
    assert change.rand_string("rand-m6-mstd0.5-inc1", m=6, n=3, mstd=0.5, inc=True) == "rand-m6-n3-mstd0.5-inc1"
    assert change.rand_string(None, m=7, n=2, mstd=0.5, inc=True) == "rand-m7-mstd0.5-inc1"
    refused(change.recipe_change(DEMO, {"colour": {}}), "unknown explorer 'colour'")


# ---------------------------------------------------------------- item 2's function: try the change


def test_a_trial_runs_in_the_background_and_a_second_is_refused(tmp_path):
    c = change.recipe_change("params/demo.yaml", {"loss": dict(smoothing=0.1, threshold_on=False, threshold=0.2)})
    release, seen = threading.Event(), {}

    def runner(recipe, data, out, **settings):  # the training function, held until the test lets it end
        seen.update(recipe=recipe, data=data, out=out, **settings)
        assert release.wait(30)
        return {"status": "done"}

    scale = trial.Scale(epochs=2, limit_train=200, limit_val=100)
    first = trial.try_change(c, scale, out_dir=tmp_path / "a", runner=runner)
    assert not first.done and trial.running() is first  # returned at once, running
    with pytest.raises(RunError, match="a trial is running in .*a; wait for it to end"):
        trial.try_change(c, scale, out_dir=tmp_path / "b", runner=runner)
    release.set()
    assert first.wait(30).done and first.result == {"status": "done"} and first.error is None and trial.running() is None
    assert seen["recipe"] == DEMO.replace(smoothing=0.1, epochs=2, warmup_epochs=0, name="demo-trial")
    assert (seen["data"], seen["out"], seen["limit_train"], seen["limit_val"]) == ("default", tmp_path / "a", 200, 100)
    assert "2 epoch(s) on 200 training images of default, tested on 100" in scale.describe()

    def broken(*_a, **_k):
        raise RuntimeError("out of memory")

    assert isinstance(trial.try_change(c, scale, out_dir=tmp_path / "c", runner=broken).wait(30).error, RuntimeError)
    with pytest.raises(RecipeError, match="not a recipe, so nothing to try: magnitude 7.5"):
        trial.try_change(change.recipe_change(DEMO, {"op": dict(op="Rotate", magnitude=7.5)}), runner=runner)


def test_the_scale_shortens_every_schedule_in_proportion():
    short = trial.Scale(epochs=2)
    assert short.apply(change.start_recipe("torchvision")).decay_milestones == (1,)  # 30/60/80 of 90
    grown = change.recipe_change("params/demo.yaml", {"schedule": dict(recipe="params/demo.yaml", batch_size=256,
                                                                       grad_accum=False, progressive=True, res_start=16)})
    assert grown.recipe.train_res_ramp == (7, 9) and trial.Scale(epochs=4).apply(grown.recipe).train_res_ramp == (3, 4)
    assert not trial.running() and trial.QUICK.epochs == 2


def test_a_trial_is_an_ordinary_run_folder(tmp_path):
    """One real, tiny trial: the run folder holds the recipe with the change, at the trial's scale."""
    c = change.recipe_change("params/smoke.yaml", {"loss": dict(smoothing=0.1, threshold_on=False, threshold=0.2)})
    rows = []
    t = trial.try_change(c, trial.Scale(epochs=1, limit_train=64, limit_val=32), out_dir=tmp_path / "run", device="cpu",
                         workers=0, on_epoch=rows.append)
    assert t.wait(limit(180)).done and t.error is None, t.error
    assert t.result["status"] == "completed" and len(rows) == 1
    assert load_recipe(tmp_path / "run" / "recipe.yaml").replace(name=t.recipe.name) == t.recipe
    assert t.recipe.smoothing == 0.1 and any("run " in line for line in t.lines)


def test_every_explorer_built_from_the_recipe_starts_at_no_change(imgs, tmp_path):
    """Issue 47: an explorer opened on a recipe shows no change from it; the notebook's parameters, where given, move
    it (a threshold switches on as its figure draws it); the presets reach the loss and resolution explorers; the mix
    explorer's alpha sliders are recipe fields."""
    magnitude = float(augment.parse_randaugment(DEMO.aa).magnitude)
    start = {"randaugment": widgets.randaugment_explorer(imgs.images, DEMO.aa), "op": widgets.op_explorer(imgs.images, magnitude),
             "rrc": widgets.rrc_explorer(imgs.images, DEMO), "mix": widgets.mix_explorer(imgs, DEMO),
             "loss": widgets.loss_explorer(5, smoothing=DEMO.smoothing),
             "resolution": widgets.resolution_explorer(images.photo("coffee", 96), train_res=DEMO.train_res,
                                                      test_res=DEMO.test_res, crop_pct=DEMO.crop_pct, scale_min=DEMO.scale[0]),
             "schedule": widgets.schedule_explorer("params/demo.yaml", DEMO.batch_size)}
    for name, explorer in start.items():
        assert change.recipe_change(DEMO, {name: explorer.values()}).fields == {}, name
    # the losses notebook's threshold parameter: on, as the figure above the explorer draws it
    assert change.recipe_change(DEMO, {"loss": widgets.loss_explorer(5, threshold=0.2).values()}).fields == \
        {"bce_target_thresh": 0.2}
    loss, res = start["loss"], start["resolution"]
    panel = widgets.ChangePanel("params/demo.yaml", {"loss": loss, "resolution": res})
    buttons = widgets.presets({"loss": loss, "resolution": res}, DEMO).children
    buttons[0].click()  # A1: smoothing 0.1; trained at 224 px, tested at 224 px, crops of 8% to 100%
    assert panel.change.fields == {"smoothing": 0.1, "train_res": 224, "test_res": 224, "scale": (0.08, 1.0)}
    buttons[3].click()
    assert panel.change.fields == {}
    mix = start["mix"]
    one = widgets.ChangePanel("params/demo.yaml", {"mix": mix})
    mix.set(mixup_alpha=0.2)  # A1's mixup alpha: the mixing fields come together, the CutMix alpha as the demo's
    assert one.change.fields == {"mixup": 0.2, "cutmix": 1.0, "mixup_switch_prob": 0.5, "mixup_prob": 1.0}
    round_trip(one.change, tmp_path)
    mix.set(mixing="CutMix only")
    assert one.change.fields == {"mixup": 0.0, "cutmix": 1.0}
