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
