"""findings/: the demo-scale studies' evidence is in the repository and agrees with itself. Every file the
README names exists, every statistic is that of the run tables beside it, the README's rows are those of
the CSVs, and the tour's links land."""
from __future__ import annotations

import json
import math
import re
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import ROOT

from rsbkit.core.recipes import load_recipe
from rsbkit.explore.resolution import resnet_maps
from rsbkit.workbook.resnet_rs_studies import (
    additive_sentence,
    additive_split,
    additive_table,
    read_seed_stats,
    weight_decay_shrinkage,
    weight_decay_table,
    weight_decay_verdict,
)
from rsbkit.workbook.study_stats import (
    VERDICTS,
    best_test_resolution,
    compare_means,
    compare_to,
    family_check,
    group_stats,
    holm,
    p_value,
    seed_stats,
)
from rsbkit.workbook.teacher_studies import against_control

FINDINGS = ROOT / "findings"
sys.path.insert(0, str(ROOT / "scripts"))
from findings import (  # noqa: E402  (the script that wrote them)
    ADDITIVE_SHOWN,
    FIXRES_TRAIN_RES,
    active_seconds,
    cliff_pivot,
    comparison_row,
    cpu_time,
    depth_width_label,
    markdown,
    procedure_families,
    progressive_summary,
    soft_against_hard,
    student_table,
    weight_decay_pivot,
)


def t95(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def assert_verdict(row, expected) -> None:
    """A table row's interval and verdict are the library's for its numbers, and the verdict is one of the three."""
    assert (row.low, row.high) == (pytest.approx(expected.low), pytest.approx(expected.high)), row
    assert row.verdict == expected.verdict and row.verdict in VERDICTS, row


def readme() -> str:
    return (FINDINGS / "README.md").read_text()


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_file_the_findings_name_is_there_and_the_folder_is_small():
    named = set(re.findall(r"\]\(([^)#]+\.(?:csv|png|json))\)", readme()))
    assert {"seeds_runs.csv", "seeds.png", "comparison.csv", "comparison.png", "resolution.csv", "resolution.png"} <= named
    for name in named:
        assert (FINDINGS / name).is_file(), name
    assert sum(p.stat().st_size for p in FINDINGS.iterdir()) < 5 * 2**20  # a few MB at most: no checkpoints


def test_seed_statistics_are_those_of_the_seed_runs():
    runs = pd.read_csv(FINDINGS / "seeds_runs.csv")
    stats = json.loads((FINDINGS / "seed_stats.json").read_text())
    done = runs[runs["status"] == "completed"]
    assert stats["n"] == len(done) == 5 and (stats["recipe"], stats["data"]) == ("demo", "default")
    assert stats["mean"] == pytest.approx(done["final_top1"].mean())
    assert stats["std"] == pytest.approx(done["final_top1"].std(ddof=1))
    assert sorted(stats["values"]) == sorted(done["final_top1"])
    for row in done.itertuples():  # the README's seed table
        assert f"| {row.name} | {row.final_top1:.2f} | {row.best_top1:.2f} | {row.best_epoch} |" in readme(), row.name


def test_the_comparison_is_computed_from_its_runs_and_the_readme_quotes_it():
    table = pd.read_csv(FINDINGS / "comparison.csv")
    runs = pd.read_csv(FINDINGS / "comparison_runs.csv")
    stats = json.loads((FINDINGS / "seed_stats.json").read_text())
    recomputed = group_stats(runs, ["variant"], "final_top1").set_index("variant")
    seed = seed_stats(stats["values"])
    for row in table.itertuples():
        again = recomputed.loc[row.variant]
        assert (row.mean, row.std, row.n) == (pytest.approx(again["mean"]), pytest.approx(again["std"]), again["n"])
        assert row.noise_band == pytest.approx(t95(stats["n"] - 1) * stats["std"] * math.sqrt(1 / row.n + 1 / stats["n"]))
        assert row.diff == pytest.approx(row.mean - stats["mean"])
        if row.Index:  # the reference itself has no verdict
            assert_verdict(row, compare_means(row.diff, row.n, stats["n"], seed=seed, s=row.std, s_ref=stats["std"]))
        before_teachers = readme().split("## 13.")[0]  # section 13 has a reference of its own, over 3 seeds
        quoted = [line for line in before_teachers.splitlines() if line.startswith(f"| {row.variant} |")]
        assert quoted and set(quoted) == {comparison_row(row)}, row.variant
    # every run is one of the committed sweeps' runs, with the same top-1
    sweeps = pd.concat([pd.read_csv(FINDINGS / f"{name}_runs.csv").assign(sweep=name)
                        for name in ("seeds", "loss_ce", "procedure_torchvision", "repeats", "lr")])
    by_run = {f"runs/sweeps/{r.sweep}/{r.name}": r.final_top1 for r in sweeps.itertuples()}
    assert {r.run: r.final_top1 for r in runs.itertuples()} == by_run


def test_the_resolution_table_is_the_mean_of_the_seed_runs():
    rows = pd.read_csv(FINDINGS / "resolution_runs.csv")
    table = pd.read_csv(FINDINGS / "resolution.csv")
    assert rows["run"].nunique() == 5
    again = group_stats(rows, ["test_res", "crop_pct"], "top1")
    assert list(table["mean"]) == pytest.approx(list(again["mean"])) and list(table["n"]) == [5] * len(table)
    for res, part in table.groupby("test_res"):  # the README's pivot: one row per test resolution
        line = f"| {res} | " + " | ".join(f"{v:.2f}" for v in part.sort_values("crop_pct")["mean"]) + " |"
        assert line in readme(), line


def test_the_variants_are_computed_from_their_sweeps_and_the_readme_quotes_them():
    """Sections 8 to 10: train_res=24, progressive resizing and the BCE threshold against the demo's seeds."""
    table = pd.read_csv(FINDINGS / "variants.csv")
    runs = pd.read_csv(FINDINGS / "variants_runs.csv")
    recomputed = group_stats(runs, ["variant"], "final_top1").set_index("variant")
    assert len(table) == 4 and list(table["n"]) == [5, 3, 3, 3]
    for row in table.itertuples():
        again = recomputed.loc[row.variant]
        assert (row.mean, row.std, row.n) == (pytest.approx(again["mean"]), pytest.approx(again["std"]), again["n"])
        assert row.diff == pytest.approx(row.mean - table["mean"][0])
        if row.Index:
            ref = table.iloc[0]
            assert_verdict(row, compare_means(row.diff, row.n, ref["n"], seed=seed_stats(runs.loc[runs["variant"] == ref["variant"],
                           "final_top1"]), s=row.std, s_ref=ref["std"]))
        quoted = [line for line in readme().splitlines() if line.startswith(f"| {row.variant} |")]
        assert comparison_row(row) in quoted, row.variant
    sweeps = pd.concat([pd.read_csv(FINDINGS / f"{name}_runs.csv").assign(sweep=name)
                        for name in ("seeds", "fixres", "progressive", "bce_thresh")])
    assert (sweeps["status"] == "completed").all()
    by_run = {f"runs/sweeps/{r.sweep}/{r.name}": r.final_top1 for r in sweeps.itertuples()}
    assert {r.run: r.final_top1 for r in runs.itertuples()} == by_run
    fixres = pd.read_csv(FINDINGS / "fixres_runs.csv")
    assert set(fixres["train_res"]) == {FIXRES_TRAIN_RES} and set(fixres["test_res"]) == {32}


def test_fixres_tables_are_those_of_their_runs_and_the_verdict_quotes_them():
    rows = pd.read_csv(FINDINGS / "fixres_resolution_runs.csv")
    table = pd.read_csv(FINDINGS / "fixres_resolution.csv")
    assert rows["run"].nunique() == 3 and list(table["n"]) == [3] * len(table)
    again = group_stats(rows, ["test_res", "crop_pct"], "top1")
    assert list(table["mean"]) == pytest.approx(list(again["mean"]))
    best = pd.read_csv(FINDINGS / "fixres_best.csv")
    recomputed = best_test_resolution(rows, FIXRES_TRAIN_RES)
    assert list(best["best_res"]) == list(recomputed["best_res"]) == [FIXRES_TRAIN_RES] * 3  # "every crop peaks at 24"
    assert list(best["best_mean"]) == pytest.approx(list(recomputed["best_mean"]))
    assert set(best["run_best"]) == {"24 24 24"}  # and every run
    at = table[table["crop_pct"] == 0.95].set_index("test_res")["mean"]
    verdict = " ".join(readme().split("## 8. FixRes")[1].split("## 9.")[0].split())
    assert f"crop 0.95: {at[24]:.2f}; 26 px: {at[26]:.2f}; 32 px: {at[32]:.2f}" in verdict
    mean_at_24 = table[table["test_res"] == 24].set_index("crop_pct")["mean"]
    assert f"beats 0.875 by {mean_at_24[0.95] - mean_at_24[0.875]:.1f} points at 24 px" in verdict


def test_progressive_times_are_those_of_the_epochs_and_each_epoch_trained_at_the_recipes_size():
    epochs = pd.read_csv(FINDINGS / "progressive_epochs.csv")
    table = pd.read_csv(FINDINGS / "progressive_time.csv")
    pd.testing.assert_frame_equal(table, progressive_summary(epochs), check_dtype=False)
    for row in table.itertuples(index=False):  # the README's rows
        assert markdown(pd.DataFrame([row], columns=table.columns)).splitlines()[2] in readme(), row
    sweep = load_recipe(ROOT / "params" / "demo.yaml", train_res_start=24, train_res_ramp=(7, 9),
                        train_res_step=4)  # params/sweeps/progressive.yaml
    progressive = epochs[epochs["sweep"] == "progressive"]
    assert progressive["run"].nunique() == 3
    for run, part in progressive.groupby("run"):
        assert list(part["train_res"]) == [sweep.train_res_at(e - 1) for e in part["epoch"]] == [24] * 8 + [28, 32], run
    assert set(epochs[epochs["sweep"] == "seeds"]["train_res"]) == {32}


def test_the_cliff_table_is_the_mean_of_its_runs_beside_resnet_maps():
    runs = pd.read_csv(FINDINGS / "cliff_runs.csv")
    table = pd.read_csv(FINDINGS / "cliff.csv")
    again = runs.groupby(["train_res", "path", "test_res"])["top1"].agg(["mean", "count"]).reset_index()
    merged = table.merge(again, on=["train_res", "path", "test_res"], suffixes=("", "_again"))
    assert len(merged) == len(table) == len(again) == 3 * 2 * 17
    assert list(merged["mean"]) == pytest.approx(list(merged["mean_again"].round(2)), abs=1e-9)
    assert list(merged["n"]) == list(merged["count"])
    for row in table.itertuples():
        assert row.maps == "-".join(str(n) for n in resnet_maps(row.test_res).values()), row
        assert (row.maxpool, row.last_map) == (resnet_maps(row.test_res)["max-pool"], resnet_maps(row.test_res)["stage 4"])
    for line in markdown(cliff_pivot(table)).splitlines():
        assert line in readme(), line
    rsb = table[table["path"] == "rsbkit"].set_index(["train_res", "test_res"])["mean"]
    verdict = " ".join(readme().split("## 7. The 34-px cliff")[1].split("## 8.")[0].split())
    assert f"from {rsb[32, 32]:.2f} at 32 px to {rsb[32, 33]:.2f} at 33 px" in verdict
    assert f"from {rsb[36, 33]:.2f} and {rsb[40, 33]:.2f} at 33 px to {rsb[36, 32]:.2f} and {rsb[40, 32]:.2f} at 32 px" in verdict
    assert f"scores {rsb[36, 37]:.2f} at 37 px" in verdict
    paths = runs.pivot_table(index=["run", "test_res"], columns="path", values="top1")
    assert (paths["rsbkit"] - paths["torch"]).abs().max() <= 0.2 + 1e-9  # "within 0.2 points per run and size"


def test_the_additive_study_is_computed_from_its_runs_and_the_readme_quotes_it():
    runs = pd.read_csv(FINDINGS / "additive_runs.csv")
    changes = pd.read_csv(FINDINGS / "additive_changes.csv")
    table = pd.read_csv(FINDINGS / "additive.csv")
    again = additive_table(runs, read_seed_stats(str(FINDINGS / "seed_stats.json")), changes)
    pd.testing.assert_frame_equal(again[ADDITIVE_SHOWN], table[ADDITIVE_SHOWN], check_dtype=False)
    assert (runs.groupby("step")["seed"].nunique() >= 2).all() and changes["as_declared"].all()
    for line in markdown(table[ADDITIVE_SHOWN]).splitlines():
        assert line in readme(), line
    assert additive_sentence(additive_split(table), table["n"]) in " ".join(readme().split())


def test_the_weight_decay_study_is_computed_from_its_runs_and_the_readme_quotes_it():
    runs = pd.read_csv(FINDINGS / "weight_decay_runs.csv")
    cells = pd.read_csv(FINDINGS / "weight_decay.csv")
    again = weight_decay_table(runs, read_seed_stats(str(FINDINGS / "seed_stats.json")))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), cells, check_dtype=False)
    assert len(cells) == 15 and (cells["n"] >= 2).all()
    for line in markdown(weight_decay_pivot(cells)).splitlines():
        assert line in readme(), line
    stats = read_seed_stats(str(FINDINGS / "seed_stats.json"))
    assert weight_decay_verdict(cells, 1e-4, stats) in " ".join(readme().split())
    # the weight decay's whole effect over the run, as the section states it
    base = load_recipe("params/torchvision_demo.yaml", sched="cosine")
    shrink = [weight_decay_shrinkage(base.replace(weight_decay=wd), 47) for wd in (1e-4, 4e-5, 1e-5)]
    assert "shrinks the weights by {:.1%} in all at 1e-4, {:.1%} at 4e-5 and {:.2%} at 1e-5".format(*shrink) in \
        " ".join(readme().split())


def test_the_teacher_study_is_computed_from_its_runs_and_the_readme_quotes_it():
    """13. Every arm's statistics against the reference and, for the Noisy Students, against the steps control and
    their own teacher, recomputed from the runs; the README's rows are those; one code version trained them all."""
    table = pd.read_csv(FINDINGS / "teacher.csv")
    runs = pd.read_csv(FINDINGS / "teacher_runs.csv")
    teachers = pd.read_csv(FINDINGS / "teacher_teachers.csv")
    reference = table["variant"].iloc[0]
    stats = seed_stats(runs.loc[runs["variant"] == reference, "final_top1"])
    again = compare_to(group_stats(runs, ["variant"], "final_top1"), "variant", reference, stats)
    again = against_control(again, stats, "steps control (20 epochs)").set_index("variant")
    assert len(table) == 5 and (table["n"] >= 3).all()  # the reference, soft, hard, distilled, the steps control
    for row in table.itertuples():
        expected = again.loc[row.variant]
        for column in ("mean", "std", "n", "diff", "band", "control_diff", "control_band"):
            assert getattr(row, column) == pytest.approx(expected[column], nan_ok=True), (row.variant, column)
        assert row.beyond_noise == expected["beyond_noise"] and str(row.verdict) == str(expected["verdict"]), row.variant
        assert comparison_row(row) in readme(), row.variant
    labeller = teachers.loc[teachers["model"] == "resnet18", "final_top1"].item()
    students = table[table["control_diff"].notna()]
    assert len(students) == 2 and (students["teacher_top1"] == labeller).all()
    for line in markdown(student_table(table)).splitlines():
        assert line in readme(), line
    assert set(runs["code_version"]) == set(teachers["code_version"]) and runs["code_version"].nunique() == 1
    for line in markdown(teachers[["name", "model", "final_top1", "wall_s"]]).splitlines():
        assert line in readme(), line
    assert cpu_time(pd.concat([teachers, runs])) in readme()
    assert soft_against_hard(table, runs) in readme()


def test_the_regime_study_is_computed_from_its_runs_and_the_readme_quotes_it():
    """Section 14 (issue 48): the cells, gains and trends are those of its run table, every run was planned in the
    sweep file before the runs (seeds included), and the README quotes the table, each trend and the CPU time."""
    from rsbkit.workbook.regime_studies import (
        regime_cells,
        regime_display,
        regime_runs,
        regularization_gains,
        trend_sentence,
        trends_table,
    )
    from rsbkit.workbook.sweep import load_sweep

    runs = pd.read_csv(FINDINGS / "regime_runs.csv")
    stats = read_seed_stats(str(FINDINGS / "seed_stats.json"))
    cells = regime_cells(regime_runs(runs))
    gains, trends = regularization_gains(cells, stats), trends_table(cells, stats)
    for name, frame in (("regime_cells", cells), ("regime_gains", gains), ("regime_trends", trends)):
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), pd.read_csv(FINDINGS / f"{name}.csv"), check_dtype=False)
    planned = {p.name for p in load_sweep(ROOT / "params" / "sweeps" / "regime_regularization.yaml").points}
    assert set(runs["name"]) <= planned and (runs["status"] == "completed").all()
    assert set(gains["verdict"]) <= set(VERDICTS) and set(trends["verdict"]) <= set(VERDICTS)
    for line in markdown(regime_display(cells, gains)).splitlines():
        assert line in readme(), line
    text = section("14. Regularization against the regime")
    for trend in trends.to_dict("records"):
        assert trend_sentence(trend) in text, trend_sentence(trend)
    assert cpu_time(runs) in readme()


def test_weight_decay_where_it_acts_is_computed_from_its_runs_and_the_readme_quotes_it():
    """Section 14's second question (issue 48): the cells and effects are those of its run table, every run was planned
    before the runs, each weight decay's shrinkage is what the planned recipe gives, and the README quotes them."""
    from rsbkit.workbook.regime_studies import (
        weight_decay_cells,
        weight_decay_display,
        weight_decay_effects,
        weight_decay_sentence,
    )
    from rsbkit.workbook.resnet_rs_studies import weight_decay_shrinkage
    from rsbkit.workbook.sweep import load_sweep

    runs = pd.read_csv(FINDINGS / "regime_wd_runs.csv")
    stats = read_seed_stats(str(FINDINGS / "seed_stats.json"))
    cells = weight_decay_cells(runs)
    effects = weight_decay_effects(cells, stats)
    for name, frame in (("regime_wd_cells", cells), ("regime_wd_effects", effects)):
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), pd.read_csv(FINDINGS / f"{name}.csv"), check_dtype=False)
    sweep = load_sweep(ROOT / "params" / "sweeps" / "regime_weight_decay.yaml")
    assert set(runs["name"]) == {p.name for p in sweep.points} and (runs["status"] == "completed").all()
    shrinkage = {float(k): v for k, v in json.loads((FINDINGS / "regime_wd_shrinkage.json").read_text()).items()}
    for point in sweep.points:
        recipe = load_recipe(point.parameters["recipe"], **point.parameters["overrides"])
        assert shrinkage[recipe.weight_decay] == pytest.approx(weight_decay_shrinkage(recipe, 1500 // recipe.batch_size))
    assert set(effects["verdict"]) <= set(VERDICTS)
    for line in markdown(weight_decay_display(cells, effects, shrinkage)).splitlines():
        assert line in readme(), line
    text = section("14. Regularization against the regime")
    for row in effects[effects["step_index"].isna()].to_dict("records"):
        assert weight_decay_sentence(row) in text, weight_decay_sentence(row)
    assert cpu_time(runs) in text


def test_the_depth_width_study_is_computed_from_its_runs_and_the_readme_quotes_it():
    """Section 15 (issue 48): the cells, differences and trends are those of its run table, every run was planned in
    the sweep file before the runs, and the README quotes the table, each trend and the CPU time."""
    from rsbkit.workbook.regime_studies import (
        depth_width_display,
        depth_width_gains,
        depth_width_trends,
        difference_sentence,
        holm_sentence,
        regime_cells,
        scaling_axes,
        scaling_runs,
    )
    from rsbkit.workbook.sweep import load_sweep

    runs = pd.read_csv(FINDINGS / "depth_width_runs.csv")
    stats = read_seed_stats(str(FINDINGS / "seed_stats.json"))
    read = scaling_runs(runs)
    axes = scaling_axes(read, "resnet18")
    assert axes == {"resnet34": "depth", "resnet18 w1.41": "width"}
    cells = regime_cells(read)
    gains, trends = depth_width_gains(cells, "resnet18", axes, stats), depth_width_trends(cells, "resnet18", axes, stats)
    for name, frame in (("depth_width_cells", cells), ("depth_width_gains", gains), ("depth_width_trends", trends)):
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), pd.read_csv(FINDINGS / f"{name}.csv"), check_dtype=False)
    planned = {p.name for p in load_sweep(ROOT / "params" / "sweeps" / "regime_depth_width.yaml").points}
    assert set(runs["name"]) == planned and (runs["status"] == "completed").all() and len(runs) == 18
    assert set(gains["verdict"]) <= set(VERDICTS) and set(trends["verdict"]) <= set(VERDICTS)
    for line in markdown(depth_width_display(cells, gains, "resnet18")).splitlines():
        assert line in readme(), line
    text = section("15. Depth against width by regime")
    assert holm_sentence(gains, depth_width_label) in text
    base = read[read["arm"] == "resnet18"]  # the regime moved: resnet18's gap from 1,500 to 12,000 images
    small, large = (base.loc[base["train_images"] == n, "fit_gap"] for n in (1500, 12000))
    moved = compare_means(small.mean() - large.mean(), len(small), len(large), s=small.std(), s_ref=large.std())
    assert moved.beyond_noise and (f"falls by {moved.diff:.2f} points from 1,500 to 12,000 images, 95% interval "
                                   f"{moved.low:.2f} to {moved.high:.2f}") in text
    for trend in trends.to_dict("records"):
        assert difference_sentence(trend) in text, difference_sentence(trend)
    assert cpu_time(runs) in text


def test_the_procedure_study_is_computed_from_its_runs_and_the_readme_quotes_it():
    """Section 16 (issue 48): each model's difference between the procedures, every pair's orders and interaction
    are those of its run table, every run was planned before the runs, and the README quotes them."""
    from rsbkit.workbook.regime_studies import (
        interaction_sentence,
        pair_orders,
        pairs_display,
        procedure_cells,
        procedure_display,
        procedure_gains,
        procedure_runs,
        ranking_sentence,
    )
    from rsbkit.workbook.sweep import load_sweep

    runs = pd.read_csv(FINDINGS / "procedure_runs.csv")
    stats = read_seed_stats(str(FINDINGS / "seed_stats.json"))
    read = procedure_runs(runs)
    assert set(read["procedure"]) == {"demo", "torchvision"}
    cells = procedure_cells(read)
    gains, pairs = procedure_gains(cells, stats), pair_orders(cells, stats)
    for name, frame in (("procedure_cells", cells), ("procedure_gains", gains), ("procedure_pairs", pairs)):
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), pd.read_csv(FINDINGS / f"{name}.csv"), check_dtype=False)
    planned = {p.name for p in load_sweep(ROOT / "params" / "sweeps" / "regime_procedure.yaml").points}
    assert set(runs["name"]) == planned and (runs["status"] == "completed").all() and len(runs) == 18
    assert set(gains["verdict"]) <= set(VERDICTS) and set(pairs["verdict"]) <= set(VERDICTS)
    for table in (procedure_display(cells, gains), pairs_display(pairs)):
        for line in markdown(table).splitlines():
            assert line in readme(), line
    text = section("16. Procedure against architecture")
    assert ranking_sentence(cells, pairs) in text
    from rsbkit.workbook.regime_studies import holm_sentence

    for family, table, label in procedure_families(SimpleNamespace(gains=gains, pairs=pairs)):
        assert f"{family}: {holm_sentence(table, label)}" in text, family
    studies = [pd.read_csv(FINDINGS / f"{name}_runs.csv") for name in ("regime", "regime_wd", "depth_width", "procedure")]
    active, wall = (sum(s[c].sum() for s in studies) / 60 for c in ("active_s", "wall_s"))
    assert (f"The three regime studies together (sections 14 to 16, with section 14's weight-decay runs): {active:.0f} "
            f"min of training over {sum(map(len, studies))} runs ({wall:.0f} min wall)") in text
    for pair in pairs.to_dict("records"):
        assert interaction_sentence(pair) in text, interaction_sentence(pair)
    assert cpu_time(runs) in text


def section(heading: str) -> str:
    """One section of findings/README.md (from its heading to the next), whitespace collapsed."""
    text = readme().split(f"\n## {heading}", 1)[1]
    return " ".join(text.split("\n## ", 1)[0].split())


# (section, table, variant, what the section's prose says of it): each verdict the prose states, with its interval
VERDICT_SENTENCES = [
    ("2. Loss", "comparison", "loss=ce", "Cannot tell at this number of seeds: CE is 0.13 points higher"),
    ("3. Procedure", "comparison", "torchvision_demo", "Beyond noise: the RSB ingredients win by 1.02 points"),
    ("5. Repeated augmentation", "comparison", "aug_repeats=3", "Cannot tell at this number of seeds: 0.49 points lower"),
    ("6. Learning rate", "comparison", "lr=0.004", "Halving the LR costs 1.37 points, beyond noise"),
    ("6. Learning rate", "comparison", "lr=0.016", "doubling it gains 0.21, and this design cannot tell that from noise"),
    ("9. BCE target threshold", "variants", "bce_target_thresh=0.2", "0.2 costs 1.27 points, beyond noise"),
    ("9. BCE target threshold", "variants", "train_res_start=24, train_res_ramp=(7, 9), train_res_step=4",
     "4.74 points lower than the demo, beyond noise"),
]


@pytest.mark.parametrize("heading, name, variant, said", VERDICT_SENTENCES, ids=[v for _, _, v, _ in VERDICT_SENTENCES])
def test_each_verdict_the_prose_states_is_its_tables(heading, name, variant, said):
    """The prose's verdict and numbers for a comparison are the table's under the current rule: a sentence that
    still said "within noise" (or "beyond" where the interval includes 0) fails here, and so does its interval."""
    row = pd.read_csv(FINDINGS / f"{name}.csv").set_index("variant").loc[variant]
    text = section(heading)
    assert said in text, (heading, said)
    verdict = "cannot tell" if row["verdict"].startswith("cannot tell") else row["verdict"]
    assert verdict in said.lower() and f"{abs(row['diff']):.2f}" in said, (said, row["verdict"], row["diff"])
    assert f"{row['low']:+.2f}".replace("-", "−") in text or f"{-row['high']:.2f} to {-row['low']:.2f}" in text, row


HOLM_FAMILIES = {  # table -> (the rows still beyond noise after Holm's correction, those that no longer are)
    "comparison": ({"torchvision_demo", "lr=0.004"}, set()),
    "variants": ({"train_res=24", "train_res_start=24, train_res_ramp=(7, 9), train_res_step=4",
                  "bce_target_thresh=0.2"}, set()),
    "additive": (set(), {"cosine", "randaugment", "resnet_d"}),
    "weight_decay": (set(), set()),
    "teacher": ({"steps control (20 epochs)"}, {"Noisy Student, soft pseudo-labels", "Noisy Student, hard pseudo-labels"}),
}


@pytest.mark.parametrize("name", sorted(HOLM_FAMILIES))
def test_the_multiplicity_paragraph_is_holms_correction_of_each_table(name):
    table = family_check(pd.read_csv(FINDINGS / f"{name}.csv"))
    label = "step" if "step" in table else "variant"
    beyond = table[table["verdict"] == "beyond noise"]
    kept, lost = HOLM_FAMILIES[name]
    assert set(beyond.loc[beyond["holm_beyond"], label]) == kept
    assert set(beyond.loc[~beyond["holm_beyond"].astype(bool), label]) == lost
    assert not (table["holm_beyond"] & (table["verdict"] != "beyond noise")).any()  # Holm only ever takes away
    said = " ".join(readme().split("**Limits of these intervals.**")[1].split("\n\n| file")[0].split())
    assert f"({name}.csv, {int(table['p_value'].notna().sum())}" in said


def test_holm_against_known_cases():
    # m = 3: the smallest p against 0.05 / 3, the next against 0.05 / 2, the last against 0.05
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.03 > 0.025 stops the rest
    assert holm([0.01, 0.02, 0.04]) == [True, True, True]
    assert holm([0.02, 0.001]) == [True, True] and holm([0.06, 0.001]) == [False, True]
    # the p-value of an interval: a 95% interval that just touches 0 has p = 0.05
    half = t95(4)
    assert p_value(0.0, 2 * half, 4) == pytest.approx(0.05)


def test_every_section_says_what_its_testbed_can_test():
    for number in range(1, 15):
        heading = next(h for h in re.findall(r"^## (.+)$", readme(), re.M) if h.startswith(f"{number}.") or
                       h.startswith(f"{number - 1}.") and f"and {number}." in h)
        assert "What this testbed can test" in section(heading), heading


def test_the_pseudo_labels_measured_against_the_pools_labels_are_quoted_as_measured():
    q = json.loads((FINDINGS / "teacher_pseudo_labels.json").read_text())
    bands = {b["confidence"]: b for b in q["by_confidence"]}
    assert q["images"] == 48000 == sum(b["images"] for b in q["by_confidence"]) and q["teacher_seed"] == 0
    assert q["teacher_final_top1"] == pd.read_csv(FINDINGS / "teacher_teachers.csv").set_index("model").loc["resnet18", "final_top1"]
    text = section("13. Teachers")
    lowest, highest = min(q["per_class"], key=q["per_class"].get), max(q["per_class"], key=q["per_class"].get)
    for said in (f"**{q['accuracy']:.2f}% right**", f"about {100 - q['accuracy']:.0f}% of the students' pseudo-labels are wrong",
                 f"{q['per_class'][lowest]:.2f}% (class {lowest}, shirt)", f"{q['per_class'][highest]:.2f}% (class {highest}, trouser)",
                 f"{bands['0.99-1']['share']:.2f}% of images labelled at 0.99 or above are {bands['0.99-1']['accuracy']:.2f}% right",
                 f"the {bands['0-0.5']['share']:.2f}% under 0.5 only {bands['0-0.5']['accuracy']:.2f}%"):
        assert said in text, said


def test_cpu_time_counts_a_paused_epoch_at_its_runs_median(tmp_path):
    """A run paused for 600 s in its third epoch: the CPU-time statement counts that epoch at the median."""
    epochs = [20.0, 21.0, 620.0, 19.0, 20.0]
    (tmp_path / "metrics.csv").write_text("epoch,epoch_s\n" + "".join(f"{i},{s}\n" for i, s in enumerate(epochs, 1)))
    (tmp_path / "result.json").write_text(json.dumps({"wall_s": sum(epochs) + 5}))
    assert active_seconds(tmp_path) == pytest.approx(20.0 * 5 + 5)
    assert active_seconds(tmp_path / "unfinished") != active_seconds(tmp_path / "unfinished")  # nan: no result yet
    table = pd.DataFrame({"wall_s": [sum(epochs) + 5, 60.0], "active_s": [105.0, 60.0]})
    assert cpu_time(table).startswith("CPU time: 3 min of training over 2 runs") and "(13 min wall; 1 run had" in cpu_time(table)


def test_the_tour_and_the_readme_link_the_findings():
    headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", readme(), re.M)}
    tour = json.loads((ROOT / "notebooks" / "tour.ipynb").read_text())
    links = re.findall(r"\.\./findings/README\.md#([a-z0-9-]+)", "".join("".join(c["source"]) for c in tour["cells"]))
    assert len(set(links)) >= 6 and set(links) <= headings, set(links) - headings
    assert "findings/README.md" in "\n".join((ROOT / "README.md").read_text().splitlines()[:10])
