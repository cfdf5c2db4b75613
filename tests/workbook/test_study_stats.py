"""Seed statistics and the Table 6 layout, on known numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from rsbkit.core.errors import RunError
from rsbkit.workbook.paper import TABLE6_A2, TABLE9_CROP
from rsbkit.workbook.study_stats import ablation_table, best_test_resolution, noise_table, paper_table6, seed_stats


def test_seed_stats_on_known_values():
    s = seed_stats([79.5, 79.7, 79.9, None])
    assert (s.n, s.min, s.max) == (3, 79.5, 79.9)
    assert s.mean == pytest.approx(79.7) and s.std == pytest.approx(0.2)  # sample std, ddof=1
    assert s.range == pytest.approx(0.4)
    # a spread measured from 3 seeds: t(0.975, 2 df) = 4.303, not 1.96. Two single runs: 4.303 * 0.2 * sqrt(2);
    # two means of 5 seeds: 4.303 * 0.2 * sqrt(2/5)
    assert s.noise_band(1) == pytest.approx(1.2170, abs=1e-4)
    assert s.noise_band(5) == pytest.approx(0.5443, abs=1e-4)
    table = noise_table(s, ns=(1, 5))
    assert list(table["seeds_per_recipe"]) == [1, 5] and table["min_significant_diff"].iloc[1] == pytest.approx(0.5443, abs=1e-4)
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
    # with the recipe's seed study each delta gets its interval and one of the three verdicts
    seed = seed_stats([80.0, 80.2, 80.4, 80.1, 80.3])
    read = ablation_table(runs, {"loss": "bce", "lr": 0.005, "weight_decay": 0.02, "aug_repeats": 3}, stats=seed)
    assert pd.isna(read["verdict"].iloc[0]) and list(read["verdict"][1:]) == ["cannot tell at this number of seeds", "beyond noise"]
    band = seed.noise_band(1, n_other=2)  # one run against the reference's two, the seed study's spread
    assert read["high"].iloc[2] == pytest.approx(-1.2 + band) and bool(read["beyond_noise"].iloc[2])


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
    t4 = scipy_stats.t.ppf(0.975, 4)  # the seed study's 5 seeds: 4 degrees of freedom
    seed_band = t4 * math.sqrt(0.5) * math.sqrt(1 / 3 + 1 / 5)
    assert table.loc["ce", "diff"] == -2.0 and table.loc["ce", "noise_band"] == pytest.approx(seed_band)
    # the variant's own spread, Welch's t: wider than the seed study's band here, and just wider than 2 points
    welch = scipy_stats.ttest_ind([78, 79, 80], [80, 81, 82, 81, 81], equal_var=False).confidence_interval(0.95)
    assert table.loc["ce", "own_band"] == pytest.approx((welch.high - welch.low) / 2)
    assert table.loc["ce", "band"] == table.loc["ce", "own_band"] and table.loc["ce", "verdict"] == "cannot tell at this number of seeds"
    assert (table.loc["ce", "low"], table.loc["ce", "high"]) == (pytest.approx(welch.low), pytest.approx(welch.high))
    # the same mean from seeds 3 points apart: beyond the seed study's band, not beyond its own spread
    assert table.loc["mse", "diff"] == -2.0 and table.loc["mse", "noise_band"] == pytest.approx(seed_band)
    welch = scipy_stats.ttest_ind([76, 79, 82], [80, 81, 82, 81, 81], equal_var=False).confidence_interval(0.95)
    assert table.loc["mse", "band"] == pytest.approx((welch.high - welch.low) / 2)
    assert not bool(table.loc["mse", "beyond_noise"])
    # one run has no spread of its own: the seed study's band alone
    assert math.isnan(table.loc["hinge", "own_band"])
    assert table.loc["hinge", "band"] == pytest.approx(t4 * math.sqrt(0.5) * math.sqrt(1 + 1 / 5))
    assert table.loc["hinge", "verdict"] == "cannot tell at this number of seeds"  # -2.0 against a band of 2.15
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
    band = scipy_stats.t.ppf(0.975, 4) * math.sqrt(0.5) * math.sqrt(1 / 3 + 1 / 5)
    assert list(table["noise_band"][1:]) == pytest.approx([band] * 3)
    # loss=ce: -2 over 3 seeds is inside its Welch interval (-4.05 to +0.05); lr=0.004: 0 with a 90% interval inside
    # +-2 seed standard deviations (1.41); torchvision_demo: -5 is beyond
    assert list(table["beyond_noise"]) == [False, False, False, True]
    assert list(table["verdict"][1:]) == ["cannot tell at this number of seeds", "within noise", "beyond noise"]
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
    # paired over 2 runs: t with 1 degree of freedom (12.7), so a gain of 3 points is not beyond noise
    assert one["band"] == pytest.approx(scipy_stats.t.ppf(0.975, 1) * np.std([2, 4], ddof=1) / np.sqrt(2))
    assert not one["beyond_noise"]
    assert one["run_best"] == "28 28"
    assert (table.loc[0.875, "best_res"], table.loc[0.875, "gain"], table.loc[0.875, "beyond_noise"]) == (24, 0.0, False)
    with pytest.raises(RunError, match="no row at the train size 20 px"):
        best_test_resolution(rows, 20)


# ------------------------------------------------------------------ Student-t bands and the three verdicts

@pytest.mark.parametrize("a, b", [
    ([80.1, 80.5], [79.6, 80.3]),  # 2 seeds each
    ([80.1, 80.5, 80.2], [79.6, 80.3, 79.9]),  # 3 each, similar spreads
    ([80.1, 80.5, 80.2, 80.0, 80.4], [79.0, 80.9, 79.5, 81.2, 79.4]),  # 5 each, unequal spreads
    ([80.1, 80.5, 80.2], [79.0, 80.9, 79.5, 81.2, 79.4]),  # 3 against 5, unequal spreads
])
def test_own_spread_interval_is_welchs_t_interval_as_scipy_computes_it(a, b):
    from scipy import stats

    from rsbkit.workbook.study_stats import compare_means

    c = compare_means(np.mean(a) - np.mean(b), len(a), len(b), s=np.std(a, ddof=1), s_ref=np.std(b, ddof=1))
    test = stats.ttest_ind(a, b, equal_var=False)
    low, high = test.confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(low), pytest.approx(high)) and c.df == pytest.approx(test.df)
    assert c.beyond_noise == (test.pvalue < 0.05) and c.source == "own spreads"


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_seed_study_band_uses_t_with_its_seeds_minus_one_degrees_of_freedom(seeds):
    from scipy import stats

    from rsbkit.workbook.study_stats import compare_means, noise_table, t_quantile

    s = seed_stats([81.8, 81.7, 81.45, 82.05, 81.6][:seeds])
    t = stats.t.ppf(0.975, seeds - 1)
    assert t_quantile(seeds - 1) == pytest.approx(t)  # 12.71, 4.30, 2.78: against the normal's 1.96
    assert s.noise_band(1) == pytest.approx(t * s.std * math.sqrt(2))
    assert s.noise_band(3, n_other=2) == pytest.approx(t * s.std * math.sqrt(1 / 3 + 1 / 2))
    c = compare_means(0.3, 3, 3, seed=s)
    assert (c.low, c.high) == pytest.approx(stats.t.interval(0.95, seeds - 1, loc=0.3, scale=s.std * math.sqrt(2 / 3)))
    # the smallest difference found with 80% power: (t(0.975) + t(0.80)) x SE
    assert c.detectable == pytest.approx((t + stats.t.ppf(0.8, seeds - 1)) * s.std * math.sqrt(2 / 3))
    table = noise_table(s, ns=(1, 5))
    assert list(table["min_significant_diff"]) == pytest.approx([s.noise_band(1), s.noise_band(5)])
    assert (table["detectable_80pct"] > table["min_significant_diff"]).all()


def test_the_wider_reading_decides_and_the_verdict_is_one_of_three():
    from rsbkit.workbook.study_stats import BEYOND, CANNOT_TELL, WITHIN, compare_means

    seed = seed_stats([81.8, 81.7, 81.45, 82.05, 81.6])  # the demo's seed study: std 0.23, 4 df
    # the example (section 11, less_wd): -0.58 over 3 and 3 seeds; the normal band said +-0.56, beyond
    c = compare_means(-0.58, 3, 3, seed=seed, s=0.50, s_ref=0.25)
    assert c.source == "own spreads" and c.band > 0.58 and c.verdict == CANNOT_TELL
    assert compare_means(-1.5, 5, 5, seed=seed, s=0.2, s_ref=0.2).verdict == BEYOND
    # within noise: the interval includes 0 and lies inside +-2 seed standard deviations (0.45 here)
    many = compare_means(0.02, 40, 40, seed=seed, s=0.2, s_ref=0.2)
    assert many.margin == pytest.approx(2 * seed.std) and many.verdict == WITHIN
    assert compare_means(0.02, 2, 2, seed=seed).verdict == CANNOT_TELL  # the same difference, too few seeds
    # within noise is two one-sided tests at 5%: the 90% interval inside the margin, though the 95% one is not
    tost = compare_means(0.0, 3, 5, seed=seed)
    assert tost.high > tost.margin and tost.verdict == WITHIN
    assert scipy_stats.t.ppf(0.95, 4) * tost.se < tost.margin < scipy_stats.t.ppf(0.975, 4) * tost.se
    assert compare_means(0.5, 1, 1, s=math.nan, s_ref=math.nan, seed=seed).source == "seed study"
    with pytest.raises(RunError, match="no seed study and 1 seed"):
        compare_means(0.5, 1, 3, s=math.nan, s_ref=0.2)


@pytest.mark.parametrize("a, b", [([80.1, 80.5, 80.2], [79.6, 80.3, 79.9]), ([80.1, 80.5, 80.2], [79.0, 80.9, 79.5, 81.2, 79.4])])
def test_a_two_group_contrast_is_the_difference_of_two_means(a, b):
    from rsbkit.workbook.study_stats import compare_contrast, compare_means

    sa, sb, stats = np.std(a, ddof=1), np.std(b, ddof=1), seed_stats([81.8, 81.7, 81.45])
    c = compare_contrast([(np.mean(a), sa, len(a), 1), (np.mean(b), sb, len(b), -1)], seed=stats)
    d = compare_means(np.mean(a) - np.mean(b), len(a), len(b), seed=stats, s=sa, s_ref=sb)
    assert (c.diff, c.low, c.high, c.df, c.source, c.verdict) == \
        (pytest.approx(d.diff), pytest.approx(d.low), pytest.approx(d.high), pytest.approx(d.df), d.source, d.verdict)


def test_a_difference_of_two_gains_reads_its_four_groups_spreads():
    """(a - b) - (c - d) on four groups of 3 runs with one spread: the Welch-Satterthwaite df of equal spreads and
    sizes is the pooled 4 x (3 - 1) = 8, and the interval is t(0.975, 8) x s x sqrt(4/3) wide each side."""
    from rsbkit.workbook.study_stats import BEYOND, CANNOT_TELL, compare_contrast

    groups = [(83.0, 0.5, 3, 1), (80.0, 0.5, 3, -1), (81.0, 0.5, 3, -1), (80.5, 0.5, 3, 1)]
    c = compare_contrast(groups)
    assert c.diff == pytest.approx(2.5) and c.df == pytest.approx(8) and c.source == "own spreads"
    assert c.band == pytest.approx(scipy_stats.t.ppf(0.975, 8) * 0.5 * math.sqrt(4 / 3)) and c.verdict == BEYOND
    # a seed study noisier than the groups' own spreads is the reading kept, with its n - 1 df
    wide = compare_contrast(groups, seed=seed_stats([80.0, 82.0, 81.0]))
    assert wide.source == "seed study" and wide.df == 2 and wide.verdict == CANNOT_TELL
    with pytest.raises(RunError, match="group of one seed"):
        compare_contrast([(83.0, math.nan, 1, 1), (80.0, 0.5, 3, -1)])
