"""Seed statistics and the Table 6 layout, on known numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rsbkit.core.errors import RunError
from rsbkit.workbook.paper import TABLE6_A2, TABLE9_CROP
from rsbkit.workbook.study_stats import Z95, ablation_table, best_test_resolution, noise_table, paper_table6, seed_stats


def test_seed_stats_on_known_values():
    s = seed_stats([79.5, 79.7, 79.9, None])
    assert (s.n, s.min, s.max) == (3, 79.5, 79.9)
    assert s.mean == pytest.approx(79.7) and s.std == pytest.approx(0.2)  # sample std, ddof=1
    assert s.range == pytest.approx(0.4)
    # two single runs: 1.96 * 0.2 * sqrt(2); two means of 5 seeds: 1.96 * 0.2 * sqrt(2/5)
    assert s.noise_band(1) == pytest.approx(0.5544, abs=1e-4)
    assert s.noise_band(5) == pytest.approx(0.2479, abs=1e-4)
    table = noise_table(s, ns=(1, 5))
    assert list(table["seeds_per_recipe"]) == [1, 5] and table["min_significant_diff"].iloc[1] == pytest.approx(0.2479, abs=1e-4)
    # the fitted Gaussian peaks at the mean with height 1/(std sqrt(2 pi))
    assert s.gaussian_pdf([79.7])[0] == pytest.approx(1 / (0.2 * math.sqrt(2 * math.pi)))


def test_seed_stats_needs_two_runs():
    with pytest.raises(RunError, match="at least 2 finished runs, got 1"):
        seed_stats([80.0])


def test_paper_tables_hold_the_published_rows():
    assert len(TABLE6_A2) == 22 and len(TABLE9_CROP) == 12
    assert paper_table6("bce", 5e-3, 0.02, True) == 79.85  # the A2 row
    assert paper_table6("ce", 5e-3, 0.02, True) == 79.18
    assert paper_table6("bce", 5e-3, 0.02, False) == 79.57
    assert paper_table6("bce", 1e-3, 0.02, True) is None


def _runs(cells):
    return pd.DataFrame([dict(loss=loss, lr=lr, weight_decay=wd, aug_repeats=ra, final_top1=t, status=st)
                         for loss, lr, wd, ra, t, st in cells])


def test_ablation_table_deltas_noise_and_paper_column():
    runs = _runs([
        ("bce", 5e-3, 0.02, 3, 80.0, "completed"), ("bce", 5e-3, 0.02, 3, 80.4, "completed"),  # two seeds: mean 80.2
        ("ce", 5e-3, 0.02, 3, 79.0, "completed"), ("bce", 5e-3, 0.02, 0, 80.1, "completed"),
        ("ce", 5e-3, 0.02, 0, 50.0, "failed"),  # not completed: left out
    ])
    table = ablation_table(runs, {"loss": "bce", "lr": 0.005, "weight_decay": 0.02, "aug_repeats": 3}, noise=0.5)
    assert list(table["loss"]) == ["BCE", "BCE", "CE"] and list(table["RA"]) == ["yes", "no", "yes"]
    ref = table.iloc[0]
    assert ref["reference"] and ref["top1"] == pytest.approx(80.2) and ref["runs"] == 2 and ref["delta"] == 0
    assert table.iloc[1]["delta"] == pytest.approx(-0.1) and not table.iloc[1]["beyond_noise"]
    assert table.iloc[2]["delta"] == pytest.approx(-1.2) and table.iloc[2]["beyond_noise"]
    assert list(table["paper_A2"]) == [79.85, 79.57, 79.18]


def test_ablation_table_errors_name_the_problem():
    runs = _runs([("bce", 5e-3, 0.02, 3, 80.0, "completed")])
    with pytest.raises(RunError, match="no completed run matches the reference"):
        ablation_table(runs, {"loss": "ce"})
    with pytest.raises(RunError, match="unknown factors \\['wd'\\]"):
        ablation_table(runs, {"wd": 0.02})
    with pytest.raises(RunError, match="lack the columns \\['aug_repeats'\\]"):
        ablation_table(runs.drop(columns="aug_repeats"), {})


def test_group_stats_and_comparison_with_the_seed_noise():
    from rsbkit.workbook.study_stats import compare_to, group_stats

    runs = pd.DataFrame(dict(loss=["bce"] * 5 + ["ce"] * 3 + ["mse"] * 3 + ["hinge"],
                             top1=[80, 81, 82, 81, 81, 78, 79, 80, 76, 79, 82, 79]))
    groups = group_stats(runs, ["loss"], "top1")
    assert groups.to_dict("records")[:2] == [
        dict(loss="bce", mean=81.0, std=pytest.approx(math.sqrt(0.5)), n=5, min=80, max=82),
        dict(loss="ce", mean=79.0, std=1.0, n=3, min=78, max=80),
    ]
    stats = seed_stats([80, 81, 82, 81, 81])  # std sqrt(0.5)
    table = compare_to(groups, "loss", "bce", stats).set_index("loss")
    seed_band = 1.959964 * math.sqrt(0.5) * math.sqrt(1 / 3 + 1 / 5)
    assert table.loc["ce", "diff"] == -2.0 and table.loc["ce", "noise_band"] == pytest.approx(seed_band)
    # the variant's own spread, Welch's form: wider than the seed study's band here, still under 2 points
    assert table.loc["ce", "own_band"] == pytest.approx(1.959964 * math.sqrt(0.5 / 5 + 1 / 3))
    assert table.loc["ce", "band"] == table.loc["ce", "own_band"] and bool(table.loc["ce", "beyond_noise"])
    # the same mean from seeds 3 points apart: beyond the seed study's band, not beyond its own spread
    assert table.loc["mse", "diff"] == -2.0 and table.loc["mse", "noise_band"] == pytest.approx(seed_band)
    assert table.loc["mse", "band"] == pytest.approx(1.959964 * math.sqrt(0.5 / 5 + 9 / 3))
    assert not bool(table.loc["mse", "beyond_noise"])
    # one run has no spread of its own: the seed study's band alone
    assert math.isnan(table.loc["hinge", "own_band"])
    assert table.loc["hinge", "band"] == pytest.approx(1.959964 * math.sqrt(0.5) * math.sqrt(1 + 1 / 5))
    assert not bool(table.loc["bce", "beyond_noise"])
    assert stats.noise_band(3, n_other=3) == pytest.approx(stats.noise_band(3))
    with pytest.raises(RunError, match="reference loss='l1' is not one of the groups"):
        compare_to(groups, "loss", "l1", stats)


def test_variants_are_labelled_by_what_they_change_and_set_against_the_seed_noise():
    from rsbkit.workbook.study_stats import compare_variants

    def runs(recipe, seeds, top1, **fields):
        base = dict(recipe=recipe, status="completed", loss="bce", lr=0.008, aug_repeats=0)
        return pd.DataFrame([{**base, **fields, "seed": s, "name": f"seed={s}", "final_top1": t} for s, t in zip(seeds, top1)])

    reference = runs("demo", range(5), [80, 81, 82, 81, 81])
    variants = pd.concat([runs("demo", range(3), [78, 79, 80], loss="ce"),
                          runs("demo", range(3), [81, 81.5, 80.5], lr=0.004, aug_repeats=3),
                          runs("torchvision_demo", range(3), [75, 76, 77], loss="ce", lr=0.1),
                          runs("demo", [9], [10.0]).assign(status="failed")], ignore_index=True)
    fields = ["loss", "lr", "aug_repeats", "seed"]
    pooled, table, stats = compare_variants(variants, reference, fields)
    assert list(table["variant"]) == ["demo (reference)", "loss=ce", "lr=0.004, aug_repeats=3", "torchvision_demo"]
    assert list(table["n"]) == [5, 3, 3, 3] and len(pooled) == 14  # the failed run is left out
    assert list(table["diff"]) == pytest.approx([0.0, -2.0, 0.0, -5.0])
    band = 1.959964 * math.sqrt(0.5) * math.sqrt(1 / 3 + 1 / 5)
    assert list(table["noise_band"][1:]) == pytest.approx([band] * 3)
    assert list(table["beyond_noise"]) == [False, True, False, True]
    with pytest.raises(RunError, match="not one recipe over seeds: \\['lr'\\] vary"):
        compare_variants(variants, pd.concat([reference, runs("demo", [7], [80], lr=0.1)]), fields)
    with pytest.raises(RunError, match="at least 2 completed seeds"):
        compare_variants(variants, reference.iloc[:1], fields)


def test_best_test_resolution_against_the_train_size():
    # two runs, one crop: both peak at 28 px, 2 and 4 points above their 24 px figure; a second crop peaks at 24
    rows = pd.DataFrame(dict(run=["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3, test_res=[24, 28, 32] * 4,
                             crop_pct=[1.0] * 6 + [0.875] * 6,
                             top1=[70, 72, 71, 68, 72, 69, 75, 74, 73, 75, 73, 72]))
    table = best_test_resolution(rows, 24).set_index("crop_pct")
    one = table.loc[1.0]
    assert (one["best_res"], one["best_mean"], one["at_train_res"], one["gain"], one["n"]) == (28, 72.0, 69.0, 3.0, 2)
    assert one["band"] == pytest.approx(Z95 * np.std([2, 4], ddof=1) / np.sqrt(2)) and one["beyond_noise"] == (3.0 > one["band"])
    assert one["run_best"] == "28 28"
    assert (table.loc[0.875, "best_res"], table.loc[0.875, "gain"], table.loc[0.875, "beyond_noise"]) == (24, 0.0, False)
    with pytest.raises(RunError, match="no row at the train size 20 px"):
        best_test_resolution(rows, 20)
