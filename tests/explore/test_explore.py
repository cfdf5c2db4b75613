"""The functions behind the explorers, on real values: timm's RandAugment ops and their rates,
crops, mixed images and targets, BCE/CE gradients, FixRes sizes, schedules; and the widget glue."""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS, _RAND_TRANSFORMS

from rsbkit.core.errors import DataError, RecipeError
from rsbkit.core.recipes import A1, A3
from rsbkit.explore import augment, images, losses, plots, resolution, schedule, widgets


@pytest.fixture(scope="module")
def cat():
    return images.photo("chelsea", 128)


def test_photos_are_real_colour_images():
    img = images.photo("astronaut", 100)
    assert img.mode == "RGB" and min(img.size) == 100 and np.asarray(img).std() > 30
    with pytest.raises(DataError, match="unknown photo 'dog'"):
        images.photo("dog")
    s = images.ImageSet.load(("chelsea", "coffee"), size=64)
    assert s.names == ["chelsea", "coffee"] and s.labels == {"chelsea": 0, "coffee": 1} and s.square("coffee", 32).size == (32, 32)


def test_dataset_images_keep_their_labels_and_classes():
    s = images.ImageSet.load(data="default", n=3, size=32)
    assert len(s.names) == 3 and len(s.classes) == 10
    assert all(s.classes[s.labels[name]] == name for name in s.names)


@pytest.mark.parametrize("aa, n, m, mstd, ops", [
    ("rand-m6-mstd0.5-inc1", 2, 6, 0.5, _RAND_INCREASING_TRANSFORMS),  # A3
    ("rand-m7-mstd0.5-inc1", 2, 7, 0.5, _RAND_INCREASING_TRANSFORMS),  # A1, A2
    ("rand-m9-n3-mstd0", 3, 9, 0.0, _RAND_TRANSFORMS),
    ("rand-m15-mstd101", 2, 15, math.inf, _RAND_TRANSFORMS),  # mstd > 100: uniform in [0, m]
])
def test_randaugment_strings_read_back_from_timm(aa, n, m, mstd, ops):
    cfg = augment.parse_randaugment(aa)
    assert (cfg.num_ops, cfg.magnitude, cfg.magnitude_std, cfg.prob) == (n, m, mstd, 0.5)
    assert cfg.ops == tuple(ops)
    assert ("SolarizeIncreasing" in cfg.ops) == ("inc1" in aa) and ("Solarize" in cfg.ops) == ("inc1" not in aa)


def test_bad_randaugment_string_is_named():
    with pytest.raises(RecipeError, match="aa='rand-q5'"):
        augment.parse_randaugment("rand-q5")
    with pytest.raises(RecipeError, match="aa='autoaug'"):
        augment.randaugment("autoaug")


def test_randaugment_samples_are_timms_draws(cat):
    samples = augment.randaugment_samples(cat, "rand-m9-mstd0.5-inc1", 12, seed=3)
    again = augment.randaugment_samples(cat, "rand-m9-mstd0.5-inc1", 12, seed=3)
    ops = set(augment.parse_randaugment("rand-m9-mstd0.5-inc1").ops)
    for (img, ran), (img2, ran2) in zip(samples, again):
        assert ran == ran2 and np.array_equal(np.asarray(img), np.asarray(img2))  # seeded
        assert set(ran) <= ops and len(ran) <= 2
        if not ran:
            assert img is cat  # both chosen ops skipped by p=0.5: the image is untouched
    assert any(ran for _, ran in samples) and any(not ran for _, ran in samples)


def test_op_rates_match_n_times_p_over_the_op_list():
    """2 ops drawn with replacement from 15, each applied with p=0.5: each op runs on 1/15 of images."""
    freq = augment.op_frequencies("rand-m7-mstd0.5-inc1", draws=3000, seed=0)
    assert len(freq) == 15
    assert sum(freq.values()) == pytest.approx(1.0, abs=0.05)
    assert all(abs(f - 1 / 15) < 0.02 for f in freq.values()), freq


def test_single_ops_at_fixed_magnitude(cat):
    x = np.asarray(cat).astype(int)
    assert np.array_equal(np.asarray(augment.apply_op(cat, "Invert", 5)), 255 - x)
    assert np.array_equal(np.asarray(augment.apply_op(cat, "Rotate", 0)), x)  # magnitude 0: no rotation
    assert np.abs(np.asarray(augment.apply_op(cat, "Rotate", 10)).astype(int) - x).mean() > 10  # 30 degrees
    with pytest.raises(RecipeError, match="unknown RandAugment op 'Blur'"):
        augment.apply_op(cat, "Blur", 5)


def test_random_resized_crop_boxes_follow_scale_and_ratio(cat):
    w, h = cat.size
    boxes = augment.rrc_boxes(cat, scale=(0.25, 0.5), ratio=(0.75, 1.33), n=30, seed=1)
    assert boxes == augment.rrc_boxes(cat, scale=(0.25, 0.5), ratio=(0.75, 1.33), n=30, seed=1)
    for top, left, bh, bw in boxes:
        assert 0 <= top and top + bh <= h and 0 <= left and left + bw <= w
        assert 0.2 <= bh * bw / (w * h) <= 0.55 and 0.7 <= bw / bh <= 1.4  # within rounding of the ranges
    crops = augment.rrc_samples(cat, 48, n=10, hflip=1.0, seed=1)
    assert all(c.size == (48, 48) and flipped for c, _, flipped in crops)
    with pytest.raises(RecipeError, match="scale=\\(0.5, 0.2\\)"):
        augment.rrc_boxes(cat, scale=(0.5, 0.2))


def test_mixup_image_and_target():
    a = Image.new("RGB", (8, 8), (200, 0, 100))
    b = Image.new("RGB", (8, 8), (0, 100, 100))
    m = augment.mix_pair(a, b, 0, 2, 4, 0.7, "mixup")
    assert tuple(m.image[0, 0]) == (140, 30, 100) and m.lam == 0.7 and m.box is None
    assert np.allclose(m.target, [0.7, 0.0, 0.3, 0.0])
    smoothed = augment.mix_pair(a, b, 0, 2, 4, 0.7, "mixup", smoothing=0.1).target
    # timm: on = 1 - 0.1 + 0.1/4 = 0.925, off = 0.025
    assert np.allclose(smoothed, [0.7 * 0.925 + 0.3 * 0.025, 0.025, 0.3 * 0.925 + 0.7 * 0.025, 0.025])


def test_cutmix_pastes_a_box_and_corrects_lambda():
    a = Image.new("RGB", (32, 32), (255, 0, 0))
    b = Image.new("RGB", (32, 32), (0, 0, 255))
    m = augment.mix_pair(a, b, 1, 0, 3, 0.6, "cutmix", seed=2)
    yl, yh, xl, xh = m.box
    inside = np.zeros((32, 32), bool)
    inside[yl:yh, xl:xh] = True
    assert (m.image[inside] == (0, 0, 255)).all() and (m.image[~inside] == (255, 0, 0)).all()
    assert m.lam == pytest.approx(1 - inside.sum() / 1024)  # lambda is the area of a that is left
    assert np.allclose(m.target, [1 - m.lam, m.lam, 0.0])
    with pytest.raises(RecipeError, match="lam=1.5"):
        augment.mix_pair(a, b, 0, 1, 2, 1.5)


def test_presets_are_the_recipes_settings():
    assert augment.PRESETS["A3"]["aa"] == A3.aa == "rand-m6-mstd0.5-inc1"
    assert augment.PRESETS["A1"]["smoothing"] == 0.1 and augment.PRESETS["A3"]["train_res"] == 160


def test_bce_and_ce_loss_and_gradient_on_a_mixed_target():
    target = losses.soft_target(5, 1, 3, 0.7, 0.1)
    assert np.allclose(target, [0.02, 0.65, 0.02, 0.29, 0.02])
    assert np.array_equal(losses.bce_target(target, 0.2), [0, 1, 0, 1, 0])  # the threshold erases 0.65 vs 0.29
    z = np.array([0.0, 2.0, 0.0, 1.0, 0.0])
    bce = losses.loss_and_grad(z, target, "bce")
    sig = 1 / (1 + np.exp(-z))
    assert np.allclose(bce.grad, sig - target, atol=1e-6)  # each class on its own
    assert bce.loss == pytest.approx(float(-(target * np.log(sig) + (1 - target) * np.log(1 - sig)).sum()), rel=1e-5)
    ce = losses.loss_and_grad(z, target, "ce")
    soft = np.exp(z) / np.exp(z).sum()
    assert np.allclose(ce.grad, soft - target, atol=1e-6) and abs(ce.grad.sum()) < 1e-6  # classes compete
    assert ce.loss == pytest.approx(float(-(target * np.log(soft)).sum()), rel=1e-5)
    sweep = losses.loss_sweep(z, target, 1, [-2.0, 0.0, 2.0], "bce")
    assert list(sweep["logit"]) == [-2.0, 0.0, 2.0] and sweep["loss"].iloc[2] == pytest.approx(bce.loss, rel=1e-5)
    with pytest.raises(RecipeError, match="loss 'mse'"):
        losses.loss_and_grad(z, target, "mse")


def test_fixres_apparent_sizes():
    assert resolution.mean_inverse_sqrt_scale((0.08, 1.0)) == pytest.approx(2 * (1 - math.sqrt(0.08)) / 0.92)
    assert resolution.mean_inverse_sqrt_scale((0.25, 0.25)) == pytest.approx(2.0)
    # A3: train 160, crop 0.95: objects match in size near 237 px; A3 tests at 224
    assert resolution.matching_test_res(160, 0.95) == pytest.approx(236.97, abs=0.01)
    assert resolution.apparent_size_ratio(160, 224, 0.95) == pytest.approx(236.97 / 224, abs=1e-3)
    assert resolution.apparent_size_ratio(224, 224, 1.0, scale=(1.0, 1.0)) == pytest.approx(1.0)
    sizes = resolution.object_sizes(0.5, 160, 224, 0.95)
    assert sizes["test"] == pytest.approx(0.5 * 224 / 0.95)
    assert sizes["train_p10"] < sizes["train_median"] < sizes["train_p90"]
    train, test = resolution.train_and_test_views(images.photo("coffee", 300), 160, 224, 0.95)
    assert train.size == (160, 160) and test.size == (224, 224)
    with pytest.raises(RecipeError, match="scale=\\(0.0, 1.0\\)"):
        resolution.mean_inverse_sqrt_scale((0.0, 1.0))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_map_sizes_are_the_networks(name):
    model = timm.create_model(name, num_classes=10).eval()
    layers = dict(zip(resolution.RESNET_STAGES, (model.conv1, model.maxpool, model.layer1, model.layer2, model.layer3,
                                                 model.layer4)))
    for res in (32, 33, 34, 37, 38, 64, 65, 224):
        seen = {}
        hooks = [m.register_forward_hook(lambda _m, _i, out, k=k, seen=seen: seen.__setitem__(k, out.shape[-1])) for k, m in layers.items()]
        with torch.no_grad():
            model(torch.zeros(1, 3, res, res))
        for h in hooks:
            h.remove()
        assert resolution.resnet_maps(res) == seen, res
    assert resolution.resnet_maps(32)["stage 4"] == 1 and resolution.resnet_maps(33)["stage 4"] == 2
    assert (resolution.resnet_maps(36)["max-pool"], resolution.resnet_maps(38)["max-pool"]) == (9, 10)
    table = resolution.resnet_map_table([32, 34])
    assert table.loc[34].tolist() == [17, 9, 9, 5, 3, 2] and list(table.columns) == list(resolution.RESNET_STAGES)


def test_lr_curve_applies_the_batch_rule():
    curve, plan = schedule.lr_curve(A3, 256)
    peak = 8e-3 * (256 / 2048) ** 0.5  # LAMB: timm's square-root rule
    assert plan.lr == pytest.approx(peak) and curve["lr"].max() == pytest.approx(peak, rel=0.01)
    peak_epoch = curve.loc[curve["lr"].idxmax(), "epoch"]
    assert 5 <= peak_epoch < 6  # 5 warmup epochs, the LR set once per epoch
    assert curve["lr"].iloc[0] == 1e-4 and curve.loc[curve["epoch"] < 1, "lr"].nunique() == 1
    assert curve["lr"].iloc[-1] < 1e-5 and curve["epoch"].iloc[-1] == pytest.approx(100, abs=0.2)
    curve, plan = schedule.lr_curve(A3, 256, grad_accum=True)
    assert plan.lr == 0.008 and plan.accum_steps == 8 and curve["lr"].max() == pytest.approx(0.008, rel=0.01)
    cost = schedule.cost_table().set_index("recipe")
    assert cost.loc["a3", "relative_compute"] == pytest.approx(100 * 160**2 / (600 * 224**2))
    assert cost.loc["a1", "reported_hours"] == 110 and cost.loc["a2", "relative_compute"] == 0.5


def test_progressive_resizing_is_drawn_and_costed():
    ffcv = schedule.progressive(A3.replace(train_res=192, epochs=88), 160)  # FFCV's rn50_88_epochs
    assert (ffcv.train_res_start, ffcv.train_res_ramp, ffcv.train_res_step) == (160, (65, 76), 32)
    sizes = schedule.train_res_curve(ffcv)
    assert list(sizes["train_res"].iloc[[0, 65, 70, 71, 87]]) == [160, 160, 160, 192, 192]  # epochs 1, 66, 71, 72, 88
    pixels = (71 * 160**2 + 17 * 192**2) / (88 * 192**2)  # epochs 0-70 at 160 px, 71-87 at 192
    assert schedule.cost_table([A3.replace(train_res=192, epochs=88), ffcv])["relative_compute"].iloc[1] == pytest.approx(pixels)
    fig = plots.schedule_figure(ffcv, 1024)
    assert list(fig.data[1].y[[0, 87]]) == [160, 192] and f"{1 - pixels:.0%} fewer pixels" in str(fig.layout.annotations[1].text)
    flat = plots.schedule_figure(A3)  # a constant train size: no flat panel, the size in the title
    assert len(flat.data) == 1 and not flat.layout.annotations and "trains at 160 px throughout" in flat.layout.title.text


def test_figures_carry_the_values(cat):
    fig = plots.mix_figure(images.center_square(cat, 32), images.center_square(cat, 32), 0, 1, ["a", "b"], 0.25)
    assert np.allclose(fig.data[3].y, [0.25, 0.75])
    fig = plots.schedule_figure(A1, 1024)
    assert max(fig.data[0].y) == pytest.approx(5e-3 * 0.5 ** 0.5, rel=0.01) and "1024" in fig.layout.title.text
    assert len(plots.randaugment_figure(cat, "rand-m7", n=4).data) == 4


def test_widget_controls_redraw_the_figure(cat):
    imgs = {"cat": cat, "coffee": images.photo("coffee", 128)}
    ra = widgets.randaugment_explorer(imgs)
    before = [t.source for t in ra.figure.data]
    ra.controls["m"].value = 10
    assert [t.source for t in ra.figure.data] != before and ra.error.value == ""
    assert "rand-m10-n2-mstd0.5-inc1" in ra.figure.layout.title.text

    mix = widgets.mix_explorer(images.ImageSet(imgs, {"cat": 0, "coffee": 1}, ["cat", "coffee"]))
    mix.controls["lam"].value = 0.2
    assert np.allclose(mix.figure.data[3].y, [0.2, 0.8])

    rrc = widgets.rrc_explorer(imgs)
    sched = widgets.schedule_explorer()
    widgets.presets({"randaugment": ra, "rrc": rrc, "mix": mix}).children[2].click()  # A3
    assert (ra.values()["m"], rrc.values()["size"], rrc.values()["scale"]) == (6, 160, (0.08, 1.0))
    sched.controls["batch_size"].value = 512
    assert max(sched.figure.data[0].y) == pytest.approx(0.008 * (512 / 2048) ** 0.5, rel=0.01)
    sched.set(progressive=True, res_start=128)  # A3: 128 px, growing to 160 from epoch 74 to 86
    assert (sched.figure.data[1].y[0], sched.figure.data[1].y[-1]) == (128, 160)


def test_widget_shows_an_error_and_stays_alive():
    def build(x):
        if x > 1:
            raise RecipeError(f"x={x} is too large")
        return plots.go.Figure(plots.go.Scatter(y=[x]))

    import ipywidgets as W

    ex = widgets.Explorer(build, dict(x=W.IntSlider(value=0, max=5)))
    ex.controls["x"].value = 3
    assert "RecipeError: x=3 is too large" in ex.error.value and ex.figure.data[0].y == (0,)
    ex.controls["x"].value = 1
    assert ex.error.value == "" and ex.figure.data[0].y == (1,)


def test_loss_explorer_threshold_adds_the_bce_target():
    ex = widgets.loss_explorer()
    n = len(ex.figure.data)
    ex.controls["threshold_on"].value = True
    assert len(ex.figure.data) == n + 1 and list(ex.figure.data[1].y) == [0, 1, 0, 1, 0]
    assert torch.tensor(ex.figure.data[0].y).sum().item() == pytest.approx(1.0)


def _colours(fig) -> dict:
    """{trace name: colour} of a figure's traces (line, marker or bar colour)."""
    out = {}
    for t in fig.data:
        c = (getattr(t, "line", None) and t.line.color) or (getattr(t, "marker", None) and t.marker.color)
        if t.name and isinstance(c, str):
            out[t.name] = c
    return out


def test_one_colour_per_meaning_across_a_notebooks_figures():
    """explore/losses.ipynb draws the loss figure without and with a threshold, then the widget's: BCE keeps one colour
    (its loss, its point and its gradient) and CE another, in every figure; the tour's and the train notebook's curves
    keep theirs whether or not the planned LR is drawn."""
    from rsbkit.workbook.figures import curves_figure

    figures = [plots.loss_figure(5, 1, 3, 0.7, smoothing=0.1), plots.loss_figure(5, 1, 3, 0.7, smoothing=0.1, threshold=0.2),
               widgets.loss_explorer(5, lam=0.7, smoothing=0.1).figure]
    seen: dict = {}
    for fig in figures:
        for name, c in _colours(fig).items():
            seen.setdefault(name, set()).add(c)
    assert all(len(c) == 1 for c in seen.values()), seen
    bce = {c for name, cs in seen.items() if name.startswith("BCE ") and "target" not in name for c in cs}
    ce = {c for name, cs in seen.items() if name.startswith("softmax CE") for c in cs}
    assert len(bce) == len(ce) == 1 and bce != ce
    rows = [dict(epoch=e, lr=1e-3, train_loss=1.0 / e, val_top1=10.0 * e, val_top5=90.0) for e in (1, 2, 3)]
    with_lr, without = curves_figure(rows, schedule=([0, 1, 2, 3], [0, 1e-3, 5e-4, 0])), curves_figure(rows)
    assert {k: v for k, v in _colours(with_lr).items() if k != "planned LR"} == _colours(without)


def test_cutmix_shows_the_lambda_asked_and_the_one_corrected(cat):
    """Asking lambda 0.40 pastes a box of about 60% of the image; clipped at the border it leaves more of a, and timm
    corrects lambda to that share: the figure says both, and why, with CutMix's own formula (not mixup's)."""
    a, b = images.center_square(cat, 64), images.center_square(images.photo("coffee", 128), 64)
    fig = plots.mix_figure(a, b, 0, 1, ["cat", "coffee"], 0.4, "cutmix", seed=3)
    corrected = augment.mix_pair(a, b, 0, 1, 2, 0.4, "cutmix", seed=3).lam
    assert corrected != pytest.approx(0.4, abs=0.005)  # this seed's box is clipped
    title = fig.layout.title.text.replace("<br>", " ")
    assert "cutmix: a box of b, area 1 - lam, pasted into a" in title
    assert f"corrected from 0.40 to {corrected:.2f}" in title and "lam x a + (1 - lam) x b" not in title
    assert f"asked lam 0.40,<br>the box leaves {corrected:.2f} of a" in fig.layout.annotations[2].text
    mixup = plots.mix_figure(a, b, 0, 1, ["cat", "coffee"], 0.4, "mixup")
    assert "mixup: image = lam x a + (1 - lam) x b" in mixup.layout.title.text.replace("<br>", " ")


def test_widgets_start_at_the_notebooks_parameters():
    loss = widgets.loss_explorer(5, lam=0.3, smoothing=0.1, threshold=0.4)
    assert (loss.controls["lam"].value, loss.controls["smoothing"].value, loss.controls["threshold"].value) == (0.3, 0.1, 0.4)
    sched = widgets.schedule_explorer("a1", 256, True)
    assert (sched.controls["recipe"].value, sched.controls["batch_size"].value, sched.controls["grad_accum"].value) == ("a1", 256, True)
    static = plots.schedule_figure(A1, 256, True)
    assert list(sched.figure.data[0].y) == list(static.data[0].y)  # the widget opens on the figure above it


def test_explorer_text_is_large_enough_for_a_projector(cat):
    """Every title and subplot title of the explorers' figures at 12 px or more, and no <sub> (about 8 px)."""
    figs = [plots.randaugment_figure(cat, "rand-m9-mstd0.5-inc1", n=4), plots.rrc_figure(cat, 64),
            plots.resolution_explore_figure(cat, 64, 96), plots.loss_figure(), plots.schedule_figure(A3),
            plots.mix_figure(images.center_square(cat, 32), images.center_square(cat, 32), 0, 1, ["a", "b"], 0.5, "cutmix")]
    for fig in figs:
        title = fig.layout.title
        assert title.font.size is None or title.font.size >= 12, title.text
        assert all(a.font.size is None or a.font.size >= 12 for a in fig.layout.annotations), [a.text for a in fig.layout.annotations]
        assert "<sub>" not in str(title.text) and all("<sub>" not in str(a.text) for a in fig.layout.annotations)
    import pandas as pd

    measured = pd.DataFrame(dict(test_res=[64, 96, 128], top1=[57.55, 63.86, 70.18]))
    axis = plots.resolution_explore_figure(cat, 64, 96, measured=measured).layout.yaxis4
    assert axis.tickmode == "auto" and axis.tickformat == ".0f"  # its own round ticks, not the left axis's positions
    resolution_title = figs[2].layout.title.text
    assert "ResNet's feature maps" in resolution_title and "<br>ResNet<br>" not in resolution_title


def test_the_ingredients_table_has_no_nan():
    from rsbkit.workbook.paper import ingredients

    table = ingredients()
    assert not table.isna().any().any() and "nan" not in table.to_string().lower()
    assert table.loc["BCE instead of CE (with repeated aug)", "A1"] == "" and table.loc["BCE instead of CE (with repeated aug)", "A2"] > 0
