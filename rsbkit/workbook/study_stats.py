"""The arithmetic behind the study notebooks: seed statistics and the ablation table.

Plain functions over numbers and DataFrames (from ``runs.load_runs``), so each
is tested on known input and a notebook only calls them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..core.errors import RunError
from .paper import TABLE6_A2

Z95 = 1.959964  # two-sided 95% quantile of the standard normal


@dataclass(frozen=True)
class SeedStats:
    """Spread of one metric over n seeds of one recipe (RSB Figure 2)."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    min: float
    max: float

    @property
    def range(self) -> float:
        return self.max - self.min

    def noise_band(self, n_per_recipe: int = 1, z: float = Z95, n_other: Optional[int] = None) -> float:
        """How far apart two recipes' means (of `n_per_recipe` seeds each) must be before
        the difference is unlikely (two-sided 95%) to be seed noise alone.

        Both means carry noise of std/sqrt(n), so their difference has std
        std*sqrt(2/n); a difference beyond z times that is significant. Assumes the
        two recipes have this seed spread (the paper: 0.08-0.15 points at ImageNet scale)
        and treats the std as known: estimated from few seeds it is itself uncertain,
        so with under ~10 seeds read the band as a lower bound. `n_other`: the other
        recipe's number of seeds when it differs (std*sqrt(1/n + 1/n_other)).
        """
        other = n_per_recipe if n_other is None else n_other
        return z * self.std * math.sqrt(1.0 / n_per_recipe + 1.0 / other)

    def gaussian_pdf(self, x: Sequence[float]) -> np.ndarray:
        """The Gaussian fit (mean, std) evaluated at `x`: the curve drawn over the histogram."""
        x = np.asarray(x, dtype=float)
        s = self.std if self.std > 0 else 1e-9
        return np.exp(-0.5 * ((x - self.mean) / s) ** 2) / (s * math.sqrt(2 * math.pi))


def seed_stats(values: Iterable[float]) -> SeedStats:
    """Mean, std (ddof=1), min and max of one metric over seeds; at least two values."""
    v = np.asarray([float(x) for x in values if x is not None and not math.isnan(float(x))])
    if len(v) < 2:
        raise RunError(f"seed statistics need at least 2 finished runs, got {len(v)}; run more seeds")
    return SeedStats(n=len(v), mean=float(v.mean()), std=float(v.std(ddof=1)), min=float(v.min()), max=float(v.max()))


def noise_table(stats: SeedStats, ns: Sequence[int] = (1, 2, 3, 5, 10)) -> pandas.DataFrame:  # noqa: F821
    """For n seeds per recipe: the smallest difference of means that means something."""
    import pandas as pd

    return pd.DataFrame(dict(seeds_per_recipe=list(ns), min_significant_diff=[stats.noise_band(n) for n in ns]))


def group_stats(table: pandas.DataFrame, by: Sequence[str], value: str) -> pandas.DataFrame:  # noqa: F821
    """Mean, std (ddof=1), n, min and max of `value` per group of rows (runs over seeds, or the
    rows of several runs' tables pooled), one row per group, sorted by the group keys."""
    groups = table.groupby(list(by))[value]
    out = groups.agg(["mean", "std", "count", "min", "max"]).reset_index().rename(columns={"count": "n"})
    return out.sort_values(list(by)).reset_index(drop=True)


def compare_to(groups: pandas.DataFrame, by: str, reference: Any, stats: SeedStats) -> pandas.DataFrame:  # noqa: F821
    """:func:`group_stats` rows with their difference from the `reference` group's mean and how large a
    difference seed noise makes (two-sided 95%) for those numbers of seeds:

    - ``noise_band``: from the seed study's spread (`stats`), as if both groups had it;
    - ``own_band``: from both groups' own spreads, ``z * sqrt(s_ref^2 / n_ref + s^2 / n)`` (Welch's form,
      normal quantile; empty when a group has a single run): a variant whose seeds scatter more than the
      reference's needs a larger difference;
    - ``band``: the larger of the two, and ``beyond_noise``: ``|diff| > band``.

    With 3 to 5 seeds the standard deviations are themselves uncertain: read ``beyond_noise`` as a
    screening verdict, not a test at exactly 5%.
    """
    ref = groups[groups[by] == reference]
    if len(ref) != 1:
        raise RunError(f"reference {by}={reference!r} is not one of the groups: {list(groups[by])}")
    ref_mean, ref_n, ref_std = float(ref["mean"].iloc[0]), int(ref["n"].iloc[0]), float(ref["std"].iloc[0])
    out = groups.copy()
    out["diff"] = out["mean"] - ref_mean
    out["noise_band"] = [stats.noise_band(int(n), n_other=ref_n) for n in out["n"]]
    out["own_band"] = [Z95 * math.sqrt(ref_std ** 2 / ref_n + float(sd) ** 2 / int(n)) if int(n) > 1 and ref_n > 1 else math.nan
                       for sd, n in zip(out["std"], out["n"])]
    out["band"] = out[["noise_band", "own_band"]].max(axis=1)  # NaN own_band: the seed study's band alone
    out["beyond_noise"] = out["diff"].abs() > out["band"]
    return out


TRAINING_COLUMNS_IGNORED = ("seed", "name")  # what a seed study varies, or only labels a run


def variant_label(run: Any, reference: Any, fields: Sequence[str]) -> str:
    """How one run's recipe differs from the reference run's, as a label: the recipe's name when it is another
    recipe (``torchvision_demo``), else the fields that differ (``loss=ce``, ``lr=0.004, aug_repeats=3``),
    else ``same as the reference``. `run` and `reference` are rows of :func:`rsbkit.workbook.table.load_runs`."""
    if run["recipe"] != reference["recipe"]:
        return str(run["recipe"])
    differ = [f"{k}={run[k]}" for k in fields if k not in TRAINING_COLUMNS_IGNORED and not _same(run[k], reference[k])]
    return ", ".join(differ) or "same as the reference"


def compare_variants(runs: pandas.DataFrame, reference_runs: pandas.DataFrame, fields: Sequence[str],  # noqa: F821
                     metric: str = "final_top1") -> tuple[pandas.DataFrame, pandas.DataFrame, SeedStats]:  # noqa: F821
    """Variants of a recipe against that recipe's seed study, at the scale they ran.

    `reference_runs`: the seeds of the reference recipe (one recipe, only the seed varying); `runs`: the
    variants' runs, grouped by :func:`variant_label`. Returns (the runs of both with their ``variant``
    label, one row per variant with mean, std, n, min, max, its difference from the reference mean, the
    seed-noise band for those numbers of seeds, and ``beyond_noise``; the reference's SeedStats).
    Completed runs only.
    """
    import pandas as pd

    reference_runs = reference_runs[reference_runs["status"] == "completed"]
    runs = runs[runs["status"] == "completed"]
    if len(reference_runs) < 2:
        raise RunError(f"the reference needs at least 2 completed seeds to measure seed noise; it has {len(reference_runs)}")
    first = reference_runs.iloc[0]
    mixed = [k for k in fields if k not in TRAINING_COLUMNS_IGNORED and reference_runs[k].astype(str).nunique() > 1]
    if mixed or reference_runs["recipe"].nunique() > 1:
        raise RunError(f"the reference runs are not one recipe over seeds: {mixed or ['recipe']} vary among them")
    pooled = pd.concat([reference_runs.assign(variant=f"{first['recipe']} (reference)"),
                        runs.assign(variant=[variant_label(r, first, fields) for _, r in runs.iterrows()])],
                       ignore_index=True)
    stats = seed_stats(reference_runs[metric])
    groups = group_stats(pooled, ["variant"], metric)
    order = {v: i for i, v in enumerate(dict.fromkeys(pooled["variant"]))}  # the reference first, then as given
    groups = groups.sort_values("variant", key=lambda c: c.map(order)).reset_index(drop=True)
    return pooled, compare_to(groups, "variant", f"{first['recipe']} (reference)", stats), stats


# ------------------------------------------------------------------ ablation (Table 6)

ABLATION_FACTORS = ("loss", "lr", "weight_decay", "aug_repeats")


def paper_table6(loss: str, lr: float, weight_decay: float, repeated_aug: bool) -> Optional[float]:
    """Table 6's A2 top-1 for this cell, or None where the paper has no such row."""
    for row in TABLE6_A2:
        if (row.loss, row.repeated_aug) == (loss, repeated_aug) and math.isclose(row.lr, lr) \
                and math.isclose(row.weight_decay, weight_decay):
            return row.top1
    return None


def ablation_table(
    runs: pandas.DataFrame,  # noqa: F821
    reference: dict[str, Any],
    *,
    metric: str = "final_top1",
    noise: Optional[float] = None,
) -> pandas.DataFrame:  # noqa: F821
    """Table 6 laid out from finished runs: one row per (loss, LR, WD, RA) cell.

    `reference` names the row the deltas are taken against (e.g. A2's ``loss=bce,
    lr=5e-3, weight_decay=0.02, aug_repeats=3``). `noise` is the seed-noise band
    (``SeedStats.noise_band()``): a delta inside it is marked as not meaningful.
    Several runs in one cell (seeds) are averaged and counted in ``runs``.
    Columns: loss, LR, WD, RA, top1, runs, delta, beyond_noise, paper_A2.
    """
    missing = [f for f in ABLATION_FACTORS if f not in runs.columns]
    if missing:
        raise RunError(f"the runs lack the columns {missing}; load them with rsbkit.workbook.table.load_runs")
    unknown = set(reference) - set(ABLATION_FACTORS)
    if unknown:
        raise RunError(f"reference has unknown factors {sorted(unknown)}; use {', '.join(ABLATION_FACTORS)}")
    done = runs[runs["status"] == "completed"]
    if done.empty:
        raise RunError("no completed runs to tabulate; run the ablation sweep first")
    cells = done.groupby(list(ABLATION_FACTORS), sort=False)[metric].agg(["mean", "count"]).reset_index()

    def is_ref(row) -> bool:
        return all(_same(row[k], v) for k, v in reference.items())

    ref = cells[cells.apply(is_ref, axis=1)]
    if ref.empty:
        raise RunError(f"no completed run matches the reference {reference}; it must be one of the grid's points")
    ref_value = float(ref["mean"].iloc[0])
    table = cells.rename(columns={"mean": "top1", "count": "runs", "lr": "LR", "weight_decay": "WD"})
    table["loss"] = table["loss"].str.upper()
    table["RA"] = np.where(table["aug_repeats"] > 0, "yes", "no")
    table["delta"] = table["top1"] - ref_value
    table["reference"] = cells.apply(is_ref, axis=1)
    table["beyond_noise"] = None if noise is None else (table["delta"].abs() > noise)
    table["paper_A2"] = [paper_table6(r.loss, r.lr, r.weight_decay, r.aug_repeats > 0) for r in cells.itertuples()]
    # the paper's order: BCE before CE, with RA before without, then LR and WD ascending
    table = table.sort_values(["loss", "RA", "LR", "WD"], ascending=[True, False, True, True])
    return table[["loss", "LR", "WD", "RA", "top1", "runs", "delta", "beyond_noise", "reference", "paper_A2"]] \
        .reset_index(drop=True)


def _same(a: Any, b: Any) -> bool:
    def empty(v: Any) -> bool:  # a field unset in one table is None, in another (pandas) NaN
        return v is None or (isinstance(v, float) and math.isnan(v))

    if empty(a) or empty(b):
        return empty(a) and empty(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a).lower() == str(b).lower()


# ------------------------------------------------------------------ test resolution (FixRes)


def best_test_resolution(rows: pandas.DataFrame, train_res: int, value: str = "top1") -> pandas.DataFrame:  # noqa: F821
    """Where each crop ratio's top-1 peaks over test resolutions, against testing at the train size
    (FixRes's claim: above it), from the evaluate_resolution tables of several runs (`rows`: columns
    ``run``, ``test_res``, ``crop_pct`` and `value`).

    One row per crop ratio: ``best_res`` (the peak of the mean curve over runs) and its mean, the mean
    at ``train_res``, ``gain`` (their difference), ``band`` (1.96 x the standard error of the per-run
    gains at ``best_res``: paired, each run against itself), ``beyond_noise`` (gain > band), and
    ``run_best`` (each run's own best test sizes, sorted)."""
    import pandas as pd

    if not (rows["test_res"] == train_res).any():
        raise RunError(f"the tables hold no row at the train size {train_res} px; evaluate it too "
                       f"(test sizes there: {sorted(rows['test_res'].unique())})")
    out = []
    for crop, part in rows.groupby("crop_pct"):
        by_run = part.pivot_table(index="run", columns="test_res", values=value)
        curve = by_run.mean()
        best = int(curve.idxmax())
        gains = by_run[best] - by_run[train_res]
        n = int(gains.count())
        band = Z95 * float(gains.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        gain = float(curve[best] - curve[train_res])
        out.append(dict(crop_pct=float(crop), train_res=int(train_res), best_res=best, best_mean=float(curve[best]),
                        at_train_res=float(curve[train_res]), gain=gain, band=band, beyond_noise=bool(n > 1 and gain > band), n=n,
                        run_best=" ".join(str(int(r)) for r in sorted(by_run.idxmax(axis=1)))))
    return pd.DataFrame(out)
