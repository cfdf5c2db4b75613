"""The regime study's reading, on made-up run tables: arms from what the runs trained, cells, gains, the trend."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from rsbkit.core.errors import RunError
from rsbkit.workbook.regime_studies import (
    ARMS,
    arm_of,
    gain_trend,
    regime_cells,
    regime_runs,
    regularization_gains,
    trend_sentence,
    trends_table,
)
from rsbkit.workbook.study_stats import BEYOND, CANNOT_TELL, seed_stats

SPREAD = [-0.3, 0.0, 0.3]  # three seeds around each cell's mean


def runs_of(cells: dict) -> pd.DataFrame:
    """{(train images, epochs, arm): (mean test top-1, mean gap)} as a run table of three seeds each, the arm's
    fields as a recipe writes them (RandAugment off is an empty cell)."""
    rows = []
    for (images, epochs, arm), (top1, gap) in cells.items():
        for seed, d in enumerate(SPREAD):
            fields = dict(ARMS[arm], aa=ARMS[arm]["aa"] or math.nan)
            rows.append(dict(status="completed", seed=seed, train_images=images, epochs=epochs, final_top1=top1 + d,
                             train_top1=top1 + d + gap, fit_gap=gap, **fields))
    rows.append(dict(rows[0], status="failed", final_top1=None))  # a failed run is not read
    return pd.DataFrame(rows)


# the regularizers gain 3 points on 1,500 images (where the unregularized model overfits by 12) and nothing on 12,000
STUDY = {(1500, 32, "none"): (78.0, 12.0), (1500, 32, "a3"): (81.0, 5.0), (12000, 4, "none"): (80.0, 1.0),
         (12000, 4, "a3"): (80.0, 0.5), (1500, 64, "none"): (77.0, 15.0), (1500, 64, "a3"): (81.5, 6.0)}


def test_a_runs_arm_is_read_from_its_regularizers():
    assert arm_of(dict(aa=math.nan, mixup=0.0, cutmix=0.0, drop_path=0.0)) == "none"
    assert arm_of(dict(aa="rand-m6-mstd0.5-inc1", mixup=0.1, cutmix=1.0, drop_path=0.0)) == "a3"
    assert arm_of(dict(aa="rand-m7-mstd0.5-inc1", mixup=0.2, cutmix=1.0, drop_path=0.05)) == "a1"
    assert arm_of(dict(aa="rand-m6-mstd0.5-inc1", mixup=0.2, cutmix=1.0, drop_path=0.0)) == "other"


def test_cells_gains_and_the_trend_of_a_known_study():
    runs = regime_runs(runs_of(STUDY))
    assert len(runs) == 18 and set(runs["length"]) == {"short", "long"}
    cells = regime_cells(runs)
    short = cells[(cells["train_images"] == 1500) & (cells["length"] == "short")].set_index("arm")
    assert short.loc["a3", "mean"] == pytest.approx(81.0) and short.loc["a3", "n"] == 3
    assert short.loc["none", "gap"] == pytest.approx(12.0) and short.loc["none", "train_top1"] == pytest.approx(90.0)
    gains = regularization_gains(cells)
    g = gains.set_index(["length", "train_images"]).loc[("short", 1500)]
    assert g["diff"] == pytest.approx(3.0) and g["gap_none"] == pytest.approx(12.0) and g["verdict"] == BEYOND
    assert g["df"] == pytest.approx(4) and g["band"] == pytest.approx(2.776 * 0.3 * math.sqrt(2 / 3), abs=1e-3)
    trend = gain_trend(cells, "a3", "short")
    assert trend["diff"] == pytest.approx(3.0) and trend["verdict"] == BEYOND and (trend["small"], trend["large"]) == (1500, 12000)
    assert trend_sentence(trend).startswith("A3's regularizers at the short length: their gain over none on 1,500 training "
                                            "images minus their gain on 12,000 is +3.00 points (95% interval +2.")
    # a noisy seed study widens every band: the same trend cannot be told
    noisy = gain_trend(cells, "a3", "short", seed_stats([76.0, 80.0, 84.0]))
    assert noisy["verdict"] == CANNOT_TELL and noisy["band_source"] == "seed study"
    table = trends_table(cells)
    assert list(table["length"]) == ["short"]  # the long length has one size only: no trend to read


def test_runs_without_the_training_top1_are_refused_by_name():
    runs = runs_of(STUDY).drop(columns=["fit_gap"])
    with pytest.raises(RunError, match="fit_gap"):
        regime_runs(runs)


def test_the_display_table_has_a_row_per_length_and_size_with_each_gain_in_words():
    from rsbkit.workbook.regime_studies import regime_display

    cells = regime_cells(regime_runs(runs_of(STUDY)))
    table = regime_display(cells, regularization_gains(cells))
    assert list(table["length"]) == ["short", "short", "long"] and list(table["training images"]) == ["1,500", "12,000", "1,500"]
    first = table.iloc[0]
    assert first["epochs"] == 32 and first["gap, none"] == pytest.approx(12.0)
    assert first["top-1 a3"] == "81.00 ± 0.30 (n=3)" and first["a3 − none"].startswith("+3.00 (+2.32 .. +3.68; beyond noise)")


# ------------------------------------------------------------------ study 2: depth against width

def scaling_runs_of(cells: dict) -> pd.DataFrame:
    """{(train images, epochs, model, width): (mean test top-1, mean gap)} as three seeds each."""
    rows = []
    for (images, epochs, model, width), (top1, gap) in cells.items():
        for seed, d in enumerate(SPREAD):
            rows.append(dict(status="completed", seed=seed, train_images=images, epochs=epochs, model=model, width=width,
                             final_top1=top1 + d, train_top1=top1 + d + gap, fit_gap=gap))
    return pd.DataFrame(rows)


# depth pays 2 points on 1,500 images and width nothing; on 12,000 width pays 1 and depth nothing (ResNet-RS's rule)
SCALING = {(1500, 32, "resnet18", 1.0): (75.0, 10.0), (1500, 32, "resnet34", 1.0): (77.0, 9.0),
           (1500, 32, "resnet18", 1.41): (75.0, 11.0), (12000, 4, "resnet18", 1.0): (80.0, 1.0),
           (12000, 4, "resnet34", 1.0): (80.0, 1.0), (12000, 4, "resnet18", 1.41): (81.0, 1.5)}


def test_depth_and_width_are_read_from_the_model_and_width_each_run_built():
    from rsbkit.workbook.regime_studies import scaling_arm, scaling_axes, scaling_runs

    assert scaling_arm(dict(model="resnet18", width=1.41)) == "resnet18 w1.41"
    assert scaling_arm(dict(model="resnet34", width=math.nan)) == "resnet34"  # no width column: width 1
    runs = scaling_runs(scaling_runs_of(SCALING))
    assert scaling_axes(runs, "resnet18") == {"resnet18 w1.41": "width", "resnet34": "depth"}
    with pytest.raises(RunError, match="base model 'resnet50'"):
        scaling_axes(runs, "resnet50")


def test_which_axis_pays_at_each_size_and_how_that_changes_with_the_regime():
    from rsbkit.workbook.regime_studies import (
        depth_width_display,
        depth_width_gains,
        depth_width_trends,
        difference_sentence,
        scaling_axes,
        scaling_runs,
    )

    runs = scaling_runs(scaling_runs_of(SCALING))
    axes = scaling_axes(runs, "resnet18")
    cells = regime_cells(runs)
    gains = depth_width_gains(cells, "resnet18", axes).set_index(["train_images", "arm", "against"])
    assert gains.loc[(1500, "resnet34", "resnet18"), "diff"] == pytest.approx(2.0)
    assert gains.loc[(1500, "resnet34", "resnet18"), "gap_base"] == pytest.approx(10.0)
    assert gains.loc[(12000, "resnet18 w1.41", "resnet18"), "diff"] == pytest.approx(1.0)
    depth_over_width = gains.loc[(1500, "resnet34", "resnet18 w1.41")]
    assert depth_over_width["diff"] == pytest.approx(2.0) and depth_over_width["axis"] == "depth - width"
    assert gains.loc[(12000, "resnet34", "resnet18 w1.41"), "diff"] == pytest.approx(-1.0)
    trends = depth_width_trends(cells, "resnet18", axes).set_index(["arm", "against"])
    # depth minus width on 1,500 images (+2) minus on 12,000 (-1): the rule's prediction, +3
    assert trends.loc[("resnet34", "resnet18 w1.41"), "diff"] == pytest.approx(3.0)
    assert trends.loc[("resnet34", "resnet18 w1.41"), "verdict"] == BEYOND
    assert trends.loc[("resnet18 w1.41", "resnet18"), "diff"] == pytest.approx(-1.0)
    sentence = difference_sentence(trends.reset_index().iloc[-1])
    assert sentence.startswith("resnet34 minus resnet18 w1.41: its difference on 1,500 training images minus its "
                               "difference on 12,000 is +3.00 points")
    table = depth_width_display(cells, depth_width_gains(cells, "resnet18", axes), "resnet18")
    assert list(table["training images"]) == ["1,500", "12,000"]  # the same images seen: fewest images first
    row = table.set_index("training images").loc["1,500"]
    assert row["epochs"] == 32 and row["gap, resnet18"] == pytest.approx(10.0)
    assert row["top-1 resnet34"] == "77.00 ± 0.30 (n=3)" and row["resnet34 − resnet18 w1.41"].startswith("+2.00 (")


# ------------------------------------------------------------------ study 3: procedure against architecture

PROCEDURE_FIELDS = {"demo": dict(opt="lamb", loss="bce"), "torchvision": dict(opt="momentum", loss="ce")}


def procedure_runs_of(cells: dict, spread=SPREAD) -> pd.DataFrame:
    rows = []
    for (procedure, model), (top1, gap) in cells.items():
        for seed, d in enumerate(spread):
            rows.append(dict(status="completed", seed=seed, model=model, **PROCEDURE_FIELDS[procedure],
                             final_top1=top1 + d, train_top1=top1 + d + gap, fit_gap=gap))
    return pd.DataFrame(rows)


# the demo's procedure lifts a by 3 and b by nothing: a and b swap places; c stays last
SWAP = {("torchvision", "a"): (80.0, 6.0), ("torchvision", "b"): (81.5, 5.0), ("torchvision", "c"): (70.0, 2.0),
        ("demo", "a"): (83.0, 1.0), ("demo", "b"): (81.5, 1.0), ("demo", "c"): (71.0, 0.5)}


def test_a_runs_procedure_is_read_from_its_optimizer_and_loss():
    from rsbkit.workbook.regime_studies import procedure_of

    assert procedure_of(dict(opt="lamb", loss="bce")) == "demo"
    assert procedure_of(dict(opt="momentum", loss="ce")) == "torchvision"
    assert procedure_of(dict(opt="lamb", loss="ce")) == "other"


def test_a_rank_change_beyond_noise_is_read_from_both_orders_and_the_interaction():
    from rsbkit.workbook.regime_studies import (
        pair_orders,
        pairs_display,
        procedure_cells,
        procedure_display,
        procedure_gains,
        procedure_runs,
        ranking,
        ranking_sentence,
    )

    cells = procedure_cells(procedure_runs(procedure_runs_of(SWAP)))
    assert ranking(cells, "demo") == "a > b > c" and ranking(cells, "torchvision") == "b > a > c"
    assert cells.set_index(["procedure", "model"]).loc[("torchvision", "a"), "rank"] == 2
    gains = procedure_gains(cells).set_index("model")
    assert gains.loc["a", "diff"] == pytest.approx(3.0) and gains.loc["a", "verdict"] == BEYOND
    assert gains.loc["a", "gap_base"] == pytest.approx(6.0)
    pairs = pair_orders(cells).set_index(["first", "second"])
    ab = pairs.loc[("a", "b")]
    assert ab["diff_demo"] == pytest.approx(1.5) and ab["diff_torchvision"] == pytest.approx(-1.5)
    assert ab["order"] == "reversed, beyond noise" and ab["diff"] == pytest.approx(3.0) and ab["verdict"] == BEYOND
    assert pairs.loc[("a", "c"), "order"] == "same order, beyond noise"
    sentence = ranking_sentence(cells, pair_orders(cells))
    assert "The ranking changes beyond noise: a and b swap places" in sentence
    assert list(procedure_display(cells, procedure_gains(cells))["model"]) == ["a", "b", "c"]
    assert pairs_display(pair_orders(cells)).iloc[0]["order"] == "reversed, beyond noise"
    from rsbkit.workbook.regime_studies import pair_comparisons

    family = pair_comparisons(pair_orders(cells))
    assert len(family) == 6 and list(family.iloc[0][["pair", "procedure"]]) == ["a − b", "demo"]
    assert family.iloc[1]["diff"] == pytest.approx(-1.5) and family["df"].notna().all()


def test_a_swap_of_the_means_within_the_noise_is_not_called_a_rank_change():
    from rsbkit.workbook.regime_studies import pair_orders, procedure_cells, procedure_runs, ranking_sentence

    near = {("torchvision", "a"): (80.0, 6.0), ("torchvision", "b"): (80.2, 5.0),
            ("demo", "a"): (80.3, 1.0), ("demo", "b"): (80.1, 1.0)}
    cells = procedure_cells(procedure_runs(procedure_runs_of(near, spread=[-1.0, 0.0, 1.0])))
    pairs = pair_orders(cells)
    assert pairs.iloc[0]["order"] == "reversed in the means, not beyond noise"
    assert pairs.iloc[0]["verdict"] != BEYOND
    assert "this study cannot tell at this number of seeds" in ranking_sentence(cells, pairs)


def test_runs_of_neither_procedure_are_refused_by_name(tmp_path):
    from rsbkit.workbook.regime_studies import procedure_study

    runs = procedure_runs_of(SWAP).assign(name=lambda t: [f"r{i}" for i in range(len(t))])
    runs.loc[0, "opt"] = "lamb"  # LAMB with cross-entropy: neither procedure
    runs.to_csv(tmp_path / "procedure_runs.csv", index=False)
    with pytest.raises(RunError, match="runs r0 trained neither procedure"):
        procedure_study(runs_csv=str(tmp_path / "procedure_runs.csv"), seed_stats="", out_dir=str(tmp_path / "out"))


# ------------------------------------------------------------------ weight decay where it acts

def wd_runs_of(cells: dict) -> pd.DataFrame:
    """{(step index, step, weight decay): (mean test top-1, mean gap)} as three seeds each."""
    return pd.DataFrame([dict(status="completed", seed=seed, step_index=index, step=step, weight_decay=wd,
                              final_top1=top1 + d, train_top1=top1 + d + gap, fit_gap=gap)
                         for (index, step, wd), (top1, gap) in cells.items() for seed, d in enumerate(SPREAD)])


# a larger weight decay gains 2 points without regularizers and costs 1 with them: ResNet-RS's rule, an interaction of -3
WD = {(0, "none", 1e-4): (80.0, 10.0), (0, "none", 1e-2): (82.0, 6.0),
      (1, "regularizers", 1e-4): (81.0, 4.0), (1, "regularizers", 1e-2): (80.0, 2.0)}


def test_weight_decays_effect_with_and_without_the_regularizers_and_their_difference():
    from rsbkit.workbook.regime_studies import (
        weight_decay_cells,
        weight_decay_display,
        weight_decay_effects,
        weight_decay_sentence,
    )

    cells = weight_decay_cells(wd_runs_of(WD))
    assert list(cells.loc[cells["best"], "weight_decay"]) == [1e-2, 1e-4]  # the best falls as regularizers are added
    effects = weight_decay_effects(cells)
    assert list(effects["diff"]) == pytest.approx([2.0, -1.0, -3.0])
    assert list(effects["gap_base"][:2]) == pytest.approx([10.0, 4.0]) and set(effects["verdict"]) == {BEYOND}
    interaction = effects.iloc[-1]
    assert interaction["step"] == "regularizers - none"
    assert weight_decay_sentence(interaction).startswith(
        "weight decay 0.01 against 0.0001: its effect with regularizers minus its effect with none is -3.00 points")
    table = weight_decay_display(cells, effects, {1e-4: 0.007, 1e-2: 0.517})
    assert list(table.columns[:4]) == ["regularizers", "gap at the smallest", "wd 0.0001 (0.7% shrink)", "wd 0.01 (51.7% shrink)"]
    assert table.iloc[0]["wd 0.01 (51.7% shrink)"] == "**82.00 ± 0.30 (n=3)**" and table.iloc[1]["0.01 − 0.0001"].startswith("-1.00 (")


def test_a_weight_decay_sweep_without_steps_is_refused_by_name():
    from rsbkit.workbook.regime_studies import weight_decay_cells

    with pytest.raises(RunError, match="step_index"):
        weight_decay_cells(wd_runs_of(WD).drop(columns=["step_index"]))


def test_the_holm_sentence_counts_what_stays_beyond_noise_and_names_what_does_not():
    from rsbkit.workbook.regime_studies import holm_sentence

    # p-values of about 0.01, 0.04 and 0.3: alone, two are beyond noise; under Holm only the first
    table = pd.DataFrame({"name": ["a", "b", "c"], "low": [0.5, 0.05, -1.0], "high": [2.5, 2.0, 3.0], "df": [30.0] * 3,
                          "verdict": [BEYOND, BEYOND, CANNOT_TELL]})
    said = holm_sentence(table, lambda r: r["name"])
    assert said == "Read as one family of 3 comparisons with Holm's correction, 1 of the 2 beyond noise stays so; b no longer is"
    assert holm_sentence(table.iloc[2:], lambda r: r["name"]).endswith("none was beyond noise to begin with")


def test_an_order_kept_is_said_only_where_it_is_beyond_noise_under_both_procedures():
    from rsbkit.workbook.regime_studies import pair_orders, procedure_cells, procedure_runs, ranking_sentence

    kept = {("torchvision", "a"): (82.0, 1.0), ("torchvision", "b"): (80.0, 1.0), ("torchvision", "c"): (79.8, 1.0),
            ("demo", "a"): (83.0, 1.0), ("demo", "b"): (81.0, 1.0), ("demo", "c"): (80.8, 1.0)}
    cells = procedure_cells(procedure_runs(procedure_runs_of(kept)))
    said = ranking_sentence(cells, pair_orders(cells))
    assert ("No pair swaps places in the means; 2 of the 3 pairs keep an order beyond noise under both procedures "
            "(a and b; a and c); for the other pairs this study cannot tell") in said
    clear = {k: (v[0] + (3.0 if k[1] == "c" else 0.0) * -1, v[1]) for k, v in kept.items()}  # c 3 points lower
    cells = procedure_cells(procedure_runs(procedure_runs_of(clear)))
    assert ranking_sentence(cells, pair_orders(cells)).endswith("every pair's order is beyond noise under both procedures: "
                                                                "the ranking holds.")
