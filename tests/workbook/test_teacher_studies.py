"""The teacher study's arms (rsbkit.workbook.teacher_studies): which students it trains, and the Noisy Students set
against the steps control. The notebook itself runs at smoke size in tests/workbook/test_study_notebooks.py."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy.stats import ttest_ind_from_stats

from rsbkit.workbook.study_stats import seed_stats, t_quantile, welch_df
from rsbkit.workbook.teacher_studies import against_control, arm_name, study_arms


def test_the_arms_are_a_noisy_student_per_target_the_distilled_student_and_the_steps_control():
    arms = study_arms(teacher="runs/t", strong_teacher="runs/big", unlabelled="pool", ratio=1.5, threshold=0.3,
                      targets=["soft", "hard"], epochs=10)
    assert arms == [
        dict(teacher="runs/t", unlabelled="pool", pseudo_ratio=1.5, kd_target="soft", pseudo_threshold=0.3),
        dict(teacher="runs/t", unlabelled="pool", pseudo_ratio=1.5, kd_target="hard", pseudo_threshold=0.3),
        dict(teacher="runs/big"),
        dict(epochs=25),  # 10 epochs of 2.5 times the labelled images: as many steps as a student
    ]
    assert study_arms(teacher="runs/t", strong_teacher="", unlabelled="pool", ratio=1.0, threshold=None,
                      targets=["soft"], epochs=1, steps_control=False) == [
        dict(teacher="runs/t", unlabelled="pool", pseudo_ratio=1.0, kd_target="soft")]
    # distillation alone trains no longer than the reference: no control
    assert study_arms(teacher="", strong_teacher="runs/big", unlabelled="pool", ratio=1.0, threshold=None,
                      targets=[], epochs=10) == [dict(teacher="runs/big")]


def test_noisy_students_are_set_against_the_steps_control():
    table = pd.DataFrame(dict(
        variant=["demo (reference)", "Noisy Student, soft pseudo-labels", "distilled from resnet50",
                 "steps control (20 epochs)"],
        mean=[81.0, 83.0, 81.5, 82.0], std=[0.2, 0.3, 0.2, 0.4], n=[3, 3, 3, 3],
        min=[80.8, 82.7, 81.3, 81.6], max=[81.2, 83.3, 81.7, 82.4]))
    stats = seed_stats([80.8, 81.0, 81.2])
    out = against_control(table, stats, "steps control (20 epochs)")
    student = out.iloc[1]
    assert student["control_diff"] == pytest.approx(1.0)  # 83.0 against the control's 82.0, not the reference's 81.0
    # the two groups' own spreads, Welch's t (scipy's test from the same numbers agrees: p < 0.05)
    own = t_quantile(welch_df(0.3, 3, 0.4, 3)) * math.sqrt(0.4 ** 2 / 3 + 0.3 ** 2 / 3)
    assert student["control_band"] == pytest.approx(max(own, stats.noise_band(3, n_other=3)))
    assert student["control_band"] == pytest.approx(own) and student["beyond_control"]  # 1.0 > 0.82
    assert student["control_verdict"] == "beyond noise"
    assert ttest_ind_from_stats(83.0, 0.3, 3, 82.0, 0.4, 3, equal_var=False).pvalue < 0.05
    for i in (0, 2, 3):  # only the Noisy Students have a control
        assert math.isnan(out["control_diff"].iloc[i]) and math.isnan(out["control_band"].iloc[i])
    without = against_control(table.iloc[:3], stats, "steps control (20 epochs)")  # no control trained: the columns are empty
    assert without["control_diff"].isna().all()


def test_each_arm_is_named_by_what_it_is():
    models = {"runs/t/teachers/model=resnet50_seed=0": "resnet50"}
    def name(**run):
        return arm_name({"variant": "label", "epochs": 10, **run}, 10, models)
    assert name(teacher="runs/t/teachers/seed=0", unlabelled="pool", kd_target="hard") == "Noisy Student, hard pseudo-labels"
    assert name(teacher="runs/t/teachers/model=resnet50_seed=0") == "distilled from resnet50"
    assert name(teacher="resnet50.a1_in1k") == "distilled from resnet50.a1_in1k"  # not one of the study's teachers
    assert name(epochs=20, teacher=float("nan")) == "steps control (20 epochs)"
    assert name(variant="demo (reference)") == "demo (reference)" and name(teacher=None) == "label"


def test_every_point_is_named_before_any_trains_and_the_plan_counts_them(tmp_path):
    """The teachers' folders are known before they train, so the students that read them, the reference and the
    teachers are one plan: 2 teachers, 3 seeds of 4 arms (soft, hard, distilled, steps control), 3 reference seeds."""
    from rsbkit.workbook.teacher_studies import teacher_plan, teacher_sweeps

    plan = teacher_sweeps(out_dir=str(tmp_path))
    assert [len(s.points) for s in plan.sweeps] == [2, 12, 3]
    assert plan.teacher == str(tmp_path / "teachers" / "seed=0")
    assert {p.parameters["overrides"].get("teacher") for p in plan.students.points} == \
        {plan.teacher, plan.strong_teacher, None}
    given = teacher_sweeps(out_dir=str(tmp_path), teacher=str(tmp_path / "mine"), strong_model="")
    assert given.teachers is None and len(given.students.points) == 9  # soft, hard, steps control
    assert teacher_plan(out_dir=str(tmp_path)).startswith("this study starts 17 training points of 17: about 1.6 h")
