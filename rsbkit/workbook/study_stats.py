"""The arithmetic behind the study notebooks: seed statistics, the verdict of every comparison, and the ablation
table. The one home of rsbkit's noise bands: no other module computes one.

Plain functions over numbers and DataFrames (from ``runs.load_runs``), so each
is tested on known input and a notebook only calls them.

How a difference of two means is read (:func:`compare_means`): its 95% interval uses Student's t with the degrees
of freedom of the spread it rests on, ``n - 1`` of the seed study when that study's spread is used for both
groups, Welch-Satterthwaite's when each group's own spread is; the wider of the two is kept. The verdict is one
of three:

- ``beyond noise``: the interval excludes 0;
- ``within noise``: it includes 0, and the 90% interval lies inside +-`margin`, the smallest difference worth
  detecting (by default twice one run's seed-to-seed standard deviation): two one-sided tests at 5% (TOST) say
  any real difference is smaller than that;
- ``cannot tell at this number of seeds``: it includes 0 but reaches past the margin; more seeds would say.

Each comparison also gives the smallest difference this design detects with 80% power, ``(t(0.975) + t(0.8)) x
SE``: what "not beyond noise" could have missed. With 2 to 5 seeds the t quantiles are 2.8 to 12.7 against the
normal's 1.96: a band from the normal quantile would be 30% to 6x too narrow.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy import stats as scipy_stats

from ..core.errors import RunError
from .paper import TABLE6_A2

BEYOND, WITHIN, CANNOT_TELL = "beyond noise", "within noise", "cannot tell at this number of seeds"
VERDICTS = (BEYOND, WITHIN, CANNOT_TELL)
# what every study table carries for each comparison (Comparison.row)
COMPARISON_COLUMNS = ("diff", "band", "low", "high", "df", "band_source", "margin", "detectable", "verdict",
                      "beyond_noise", "seeds_added_after")
LEVEL, POWER = 0.95, 0.80  # the interval's coverage (two-sided) and the power of the detectable difference
MARGIN_SDS = 2.0  # the default margin of "within noise": this many single-run seed standard deviations


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided `level` quantile of Student's t with `df` degrees of freedom (``t(0.975, 4) = 2.776``)."""
    if not df > 0:
        raise RunError(f"a t quantile needs degrees of freedom > 0, got {df}: at least 2 seeds in a group")
    return float(scipy_stats.t.ppf(0.5 + level / 2, df))


def welch_df(s1: float, n1: int, s2: float, n2: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two means with their own spreads."""
    a, b = s1 ** 2 / n1, s2 ** 2 / n2
    if a + b == 0:
        return float(n1 + n2 - 2)
    return (a + b) ** 2 / (a ** 2 / (n1 - 1) + b ** 2 / (n2 - 1))


@dataclass(frozen=True)
class Comparison:
    """A difference of two means (a group minus its reference) and how far seed noise carries it."""

    diff: float
    se: float  # its standard error
    df: float  # the degrees of freedom of that standard error
    source: str  # "seed study" (its spread for both groups, n - 1 df) or "own spreads" (Welch)
    margin: float  # the smallest difference worth detecting: "within noise" needs the interval inside +-margin
    seeds_added_after: bool = False  # a group got seeds after other results were seen (optional stopping)

    @property
    def band(self) -> float:
        """Half the 95% interval: how far apart the means must be before the difference is beyond noise."""
        return t_quantile(self.df) * self.se

    @property
    def low(self) -> float:
        return self.diff - self.band

    @property
    def high(self) -> float:
        return self.diff + self.band

    @property
    def detectable(self) -> float:
        """The smallest true difference this design finds beyond noise with 80% power."""
        return (t_quantile(self.df) + t_quantile(self.df, 2 * POWER - 1)) * self.se

    @property
    def verdict(self) -> str:
        if self.low > 0 or self.high < 0:
            return BEYOND
        half = t_quantile(self.df, 2 * LEVEL - 1) * self.se  # two one-sided tests at 5%: the 90% interval
        if -self.margin <= self.diff - half and self.diff + half <= self.margin:
            return WITHIN
        return CANNOT_TELL

    @property
    def beyond_noise(self) -> bool:
        return self.verdict == BEYOND

    def row(self) -> dict[str, Any]:
        """The columns every study table carries for a comparison."""
        return dict(diff=self.diff, band=self.band, low=self.low, high=self.high, df=self.df, band_source=self.source,
                    margin=self.margin, detectable=self.detectable, verdict=self.verdict, beyond_noise=self.beyond_noise,
                    seeds_added_after=self.seeds_added_after)


def compare_means(diff: float, n: int, n_ref: int, *, seed: Optional[SeedStats] = None, s: float = math.nan,
                  s_ref: float = math.nan, margin: Optional[float] = None, seeds_added_after: bool = False) -> Comparison:
    """The comparison of a group's mean (`n` seeds, spread `s`) with its reference's (`n_ref`, `s_ref`), `diff` apart.

    Two readings of the noise, the wider kept: the seed study's spread (`seed`) for both groups, with its ``n - 1``
    degrees of freedom; and the groups' own spreads (Welch), where each has 2 seeds or more. `margin`: the smallest
    difference worth detecting (default: twice the seed study's standard deviation, else twice the larger own
    one)."""
    try:
        return compare_contrast([(float(diff), s, n, 1.0), (0.0, s_ref, n_ref, -1.0)], seed=seed, margin=margin,
                                seeds_added_after=seeds_added_after)
    except RunError:
        raise RunError(f"cannot measure the noise of this difference: no seed study and {min(n, n_ref)} seed(s) in a "
                       "group; give seed_stats (notebooks/studies/seed_variance.ipynb) or run 2 seeds or more per group") from None


def compare_contrast(groups: Sequence[tuple[float, float, int, float]], *, seed: Optional[SeedStats] = None,
                     margin: Optional[float] = None, seeds_added_after: bool = False) -> Comparison:
    """A weighted sum of group means (a contrast), read as :func:`compare_means` reads a difference (which is this
    contrast of two groups): `groups` are
    (mean, spread, seeds, weight). A difference of two gains, (a - b) - (c - d), is weights +1, -1, -1, +1: does a
    regularizer gain more where the model overfits more. Two readings of the noise, the wider kept: the seed
    study's spread for every group (``n - 1`` df), and the groups' own spreads with the Welch-Satterthwaite
    degrees of freedom of the sum, where every group has 2 seeds or more."""
    value = sum(w * m for m, _, _, w in groups)
    readings = []
    if seed is not None:
        readings.append((seed.std * math.sqrt(sum(w * w / n for _, _, n, w in groups)), seed.n - 1.0, "seed study"))
    if all(n > 1 and not math.isnan(sd) for _, sd, n, _ in groups):
        parts = [w * w * sd * sd / n for _, sd, n, w in groups]
        total = sum(parts)
        df = total ** 2 / sum(a * a / (n - 1) for a, (_, _, n, _) in zip(parts, groups)) if total > 0 else \
            float(sum(n - 1 for _, _, n, _ in groups))
        readings.append((math.sqrt(total), df, "own spreads"))
    if not readings:
        raise RunError("cannot measure the noise of this contrast: no seed study and a group of one seed; give "
                       "seed_stats or run 2 seeds or more per group")
    se, df, source = max(readings, key=lambda r: t_quantile(r[1]) * r[0])
    if margin is None:
        margin = MARGIN_SDS * (seed.std if seed is not None else max(sd for _, sd, _, _ in groups if not math.isnan(sd)))
    return Comparison(diff=float(value), se=float(se), df=float(df), source=source, margin=float(margin),
                      seeds_added_after=bool(seeds_added_after))


def p_value(low: float, high: float, df: float) -> float:
    """The two-sided p-value of a difference whose 95% interval is `low` to `high` with `df` degrees of freedom:
    the t statistic is the interval's middle over its standard error (half its width over t(0.975, df))."""
    se = (high - low) / 2 / t_quantile(df)
    if not se > 0:
        return 0.0 if (low + high) != 0 else 1.0
    return float(2 * scipy_stats.t.sf(abs((low + high) / 2) / se, df))


def holm(p_values: Sequence[float], alpha: float = 1 - LEVEL) -> list[bool]:
    """Holm's step-down correction: which of a family of tests stay significant with the chance of any false
    "beyond noise" in the family held at `alpha` (not only each test's). Sorted ascending, the k-th smallest p
    (from 0) must be below alpha / (m - k), and the first that is not stops the rest."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    keep = [False] * len(p_values)
    for rank, i in enumerate(order):
        if not p_values[i] < alpha / (len(p_values) - rank):
            break
        keep[i] = True
    return keep


def family_check(table: pandas.DataFrame, alpha: float = 1 - LEVEL) -> pandas.DataFrame:  # noqa: F821
    """A study table's comparisons (rows with an interval: ``low``, ``high``, ``df``) read as one family: each
    row's ``p_value`` and ``holm_beyond`` (beyond noise after Holm's correction over the family's rows). Each
    verdict alone holds its own chance of a false "beyond noise" at 5%; over a table of k comparisons the chance
    of at least one is up to k x 5%, which Holm brings back to 5%."""
    out = table.copy()
    rows = out["low"].notna() & out["high"].notna() & out["df"].notna()
    p = [p_value(float(lo), float(hi), float(df)) for lo, hi, df in zip(out.loc[rows, "low"], out.loc[rows, "high"],
                                                                           out.loc[rows, "df"])]
    out["p_value"], out["holm_beyond"] = math.nan, False
    out.loc[rows, "p_value"] = p
    out.loc[rows, "holm_beyond"] = holm(p, alpha)
    return out


def reference_row() -> dict[str, Any]:
    """The comparison columns of a row that is itself the reference (or a row's best): empty, no verdict."""
    empty = dict.fromkeys(("band", "low", "high", "df", "margin", "detectable"), math.nan)
    return dict(empty, diff=0.0, band_source=None, verdict=None, beyond_noise=False, seeds_added_after=False)


def comparison_row(diff: float, n: int, n_ref: int, **kwargs: Any) -> dict[str, Any]:
    """:meth:`Comparison.row` of :func:`compare_means`, or, where the noise cannot be measured (one seed in a
    group and no seed study), the same columns empty with the verdict ``cannot tell``: a table keeps every row."""
    try:
        return compare_means(diff, n, n_ref, **kwargs).row()
    except RunError:
        empty = dict.fromkeys(("band", "low", "high", "df", "margin", "detectable"), math.nan)
        return dict(empty, diff=diff, band_source=None, verdict=CANNOT_TELL, beyond_noise=False,
                    seeds_added_after=bool(kwargs.get("seeds_added_after", False)))


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

    def noise_band(self, n_per_recipe: int = 1, n_other: Optional[int] = None) -> float:
        """How far apart two recipes' means (of `n_per_recipe` seeds each; `n_other` for the other when it differs)
        must be before the difference is beyond seed noise (two-sided 95%), both taken to have this spread.

        The difference has standard error std * sqrt(1/n + 1/n_other); the std is estimated from this study's n
        seeds, so the quantile is Student's t with n - 1 degrees of freedom (2.78 for 5 seeds), not the normal's
        1.96, which would treat it as known."""
        other = n_per_recipe if n_other is None else n_other
        return t_quantile(self.n - 1) * self.std * math.sqrt(1.0 / n_per_recipe + 1.0 / other)

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
    """For n seeds per recipe: the smallest difference of means that is beyond seed noise, and the smallest true
    difference such a comparison finds with 80% power.

    For a student: the spread of one run, std, is measured from this study's seeds. Two means of n seeds differ by
    noise alone with a standard error of std x sqrt(2/n). Because std itself is estimated from few seeds, the
    multiplier is Student's t with (seeds in this study - 1) degrees of freedom, larger than the normal's 1.96: a
    band that admits it does not know the spread exactly. A difference beyond the band is beyond noise; one inside
    it may still be real, and the last column says how large a real one this many seeds would usually catch."""
    import pandas as pd

    rows = [compare_means(0.0, n, n, seed=stats) for n in ns]
    return pd.DataFrame(dict(seeds_per_recipe=list(ns), min_significant_diff=[c.band for c in rows],
                             detectable_80pct=[c.detectable for c in rows]))


def seeds_needed(stats: SeedStats, diff: float, *, most: int = 1000) -> Optional[int]:
    """The fewest seeds per recipe with which a true difference of `diff` is found beyond noise with 80% power:
    the first n where :func:`compare_means`'s detectable difference, with the seed study's spread for both recipes,
    is at most ``|diff|``. It falls as 1/sqrt(n) (the study's degrees of freedom stay), so n is read from one seed's
    and checked; None past `most` (a difference of 0 is never found)."""
    if not abs(diff) > 0:
        return None
    one = compare_means(diff, 1, 1, seed=stats).detectable
    n = max(1, math.ceil((one / abs(diff)) ** 2 * (1 - 1e-12)))
    while n <= most and compare_means(diff, n, n, seed=stats).detectable > abs(diff):
        n += 1
    return n if n <= most else None


def group_stats(table: pandas.DataFrame, by: Sequence[str], value: str) -> pandas.DataFrame:  # noqa: F821
    """Mean, std (ddof=1), n, min and max of `value` per group of rows (runs over seeds, or the
    rows of several runs' tables pooled), one row per group, sorted by the group keys; and ``seeds_added_after``
    (any run of the group added after results) where the rows have that column."""
    groups = table.groupby(list(by))[value]
    out = groups.agg(["mean", "std", "count", "min", "max"]).reset_index().rename(columns={"count": "n"})
    if "seeds_added_after" in table:  # a group with a run added after results: its verdicts say so
        late = table.assign(seeds_added_after=table["seeds_added_after"].fillna(False).astype(bool))
        out = out.merge(late.groupby(list(by))["seeds_added_after"].any().reset_index(), on=list(by), how="left")
    return out.sort_values(list(by)).reset_index(drop=True)


def compare_to(groups: pandas.DataFrame, by: str, reference: Any, stats: Optional[SeedStats],  # noqa: F821
               margin: Optional[float] = None) -> pandas.DataFrame:  # noqa: F821
    """:func:`group_stats` rows, each compared with the `reference` group's mean by :func:`compare_means`:

    - ``noise_band``: the band from the seed study's spread (`stats`) for both groups, t with its n - 1 df;
    - ``own_band``: the band from both groups' own spreads (Welch's t; empty when a group has a single run);
    - ``band`` (the wider), ``low``/``high`` (the 95% interval of ``diff``), ``df``, ``detectable`` (80% power),
      ``verdict`` (beyond noise, within noise, cannot tell at this number of seeds) and ``beyond_noise``.

    A ``seeds_added_after`` column in `groups` (True where seeds were added after other results were seen) is
    carried into the verdicts. A group whose noise cannot be measured (one seed, no seed study) keeps its row, with
    no interval and the verdict "cannot tell at this number of seeds"."""
    ref = groups[groups[by] == reference]
    if len(ref) != 1:
        raise RunError(f"reference {by}={reference!r} is not one of the groups: {list(groups[by])}")
    ref_mean, ref_n, ref_std = float(ref["mean"].iloc[0]), int(ref["n"].iloc[0]), float(ref["std"].iloc[0])
    added = groups["seeds_added_after"] if "seeds_added_after" in groups else [False] * len(groups)
    rows = []
    for (_, g), late in zip(groups.iterrows(), added):
        n, sd = int(g["n"]), float(g["std"])
        if g[by] == reference:
            rows.append(dict(reference_row(), noise_band=stats.noise_band(n) if stats is not None else math.nan,
                             own_band=math.nan))
            continue
        try:
            c = compare_means(float(g["mean"]) - ref_mean, n, ref_n, seed=stats, s=sd, s_ref=ref_std, margin=margin,
                              seeds_added_after=bool(late))
        except RunError:  # one seed in a group and no seed study: the row stays, its verdict "cannot tell"
            rows.append(dict(comparison_row(float(g["mean"]) - ref_mean, n, ref_n, seeds_added_after=bool(late)),
                             noise_band=math.nan, own_band=math.nan))
            continue
        own = compare_means(c.diff, n, ref_n, s=sd, s_ref=ref_std, margin=c.margin).band \
            if n > 1 and ref_n > 1 and not math.isnan(sd) and not math.isnan(ref_std) else math.nan
        rows.append(dict(c.row(), noise_band=stats.noise_band(n, n_other=ref_n) if stats is not None else math.nan,
                         own_band=own))
    out = groups.copy()
    for column in ("noise_band", "own_band", *COMPARISON_COLUMNS):
        out[column] = [r[column] for r in rows]
    return out


def interval(row: Any, unit: str = " points", against: str = "the reference") -> str:
    """One comparison row of :func:`compare_to` in words: ``-0.58 points against the reference (95% interval -1.47
    to +0.31; cannot tell at this number of seeds; detects 1.20 with 80% power)``."""
    late = "; seeds added after results" if bool(getattr(row, "seeds_added_after", False)) else ""
    return (f"{row.diff:+.2f}{unit} against {against} (95% interval {row.low:+.2f} to {row.high:+.2f}; {row.verdict}"
            f"{late}; detects {row.detectable:.2f} with 80% power)")


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
        raise RunError(f"the reference needs at least 2 completed seeds to measure seed noise; it has {len(reference_runs)}. "
                       "Train it at another seed at the same scale, e.g. from a run folder's own recipe: rsbkit train "
                       "RUN/recipe.yaml --set seed=1 --limit-train N --limit-val M --out RUN-seed1 (N, M: the run's limits)")
    first = reference_runs.iloc[0]
    mixed = [k for k in fields if k not in TRAINING_COLUMNS_IGNORED and reference_runs[k].astype(str).nunique() > 1]
    if mixed or reference_runs["recipe"].nunique() > 1:
        raise RunError(f"the reference runs are not one recipe over seeds: {mixed or ['recipe']} vary among them")
    pooled = pd.concat([reference_runs.assign(variant=f"{first['recipe']} (reference)"),
                        runs.assign(variant=[variant_label(r, first, fields) for _, r in runs.iterrows()])],
                       ignore_index=True)
    table, stats = compare_labelled(pooled, metric)
    return pooled, table, stats


def compare_labelled(pooled: pandas.DataFrame, metric: str = "final_top1") -> tuple[pandas.DataFrame, SeedStats]:  # noqa: F821
    """The table of :func:`compare_variants` from runs already labelled in a ``variant`` column, the reference's
    label first (``comparison_runs.csv`` as the compare notebook writes it): (table, the reference's SeedStats)."""
    if "variant" not in pooled or metric not in pooled or not len(pooled):
        raise RunError(f"a labelled run table needs rows with 'variant' and {metric!r} columns; "
                       f"got columns {list(pooled.columns)}")
    order = {v: i for i, v in enumerate(dict.fromkeys(pooled["variant"]))}  # the reference first, then as given
    reference = next(iter(order))
    stats = seed_stats(pooled.loc[pooled["variant"] == reference, metric])
    groups = group_stats(pooled, ["variant"], metric)
    groups = groups.sort_values("variant", key=lambda c: c.map(order)).reset_index(drop=True)
    return compare_to(groups, "variant", reference, stats), stats


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
    stats: Optional[SeedStats] = None,
) -> pandas.DataFrame:  # noqa: F821
    """Table 6 laid out from finished runs: one row per (loss, LR, WD, RA) cell.

    `reference` names the row the deltas are taken against (e.g. A2's ``loss=bce,
    lr=5e-3, weight_decay=0.02, aug_repeats=3``). Several runs in one cell (seeds) are averaged and counted in
    ``runs``. With `stats` (the recipe's seed study) each delta is read by :func:`compare_means`: ``low``/``high``
    (its 95% interval), ``verdict`` (beyond noise, within noise, cannot tell at this number of seeds) and
    ``beyond_noise``; with only `noise` (a band, ``SeedStats.noise_band()``) a delta beyond it is ``beyond_noise``.
    Columns: loss, LR, WD, RA, top1, runs, delta, low, high, verdict, beyond_noise, reference, paper_A2.
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
    cells = done.groupby(list(ABLATION_FACTORS), sort=False)[metric].agg(["mean", "count", "std"]).reset_index()

    def is_ref(row) -> bool:
        return all(_same(row[k], v) for k, v in reference.items())

    ref = cells[cells.apply(is_ref, axis=1)]
    if ref.empty:
        raise RunError(f"no completed run matches the reference {reference}; it must be one of the grid's points")
    ref_value, ref_n, ref_std = float(ref["mean"].iloc[0]), int(ref["count"].iloc[0]), float(ref["std"].iloc[0])
    table = cells.rename(columns={"mean": "top1", "count": "runs", "lr": "LR", "weight_decay": "WD"})
    table["loss"] = table["loss"].str.upper()
    table["RA"] = np.where(table["aug_repeats"] > 0, "yes", "no")
    table["delta"] = table["top1"] - ref_value
    table["reference"] = cells.apply(is_ref, axis=1)
    if stats is not None:
        rows = [reference_row() if is_reference else
                comparison_row(float(d), int(n), ref_n, seed=stats, s=float(sd), s_ref=ref_std)
                for d, n, sd, is_reference in zip(table["delta"], table["runs"], table["std"], table["reference"])]
        for column in ("low", "high", "verdict", "beyond_noise"):
            table[column] = [r[column] for r in rows]
    else:
        table["low"] = table["high"] = table["verdict"] = None
        table["beyond_noise"] = None if noise is None else (table["delta"].abs() > noise)
    table["paper_A2"] = [paper_table6(r.loss, r.lr, r.weight_decay, r.aug_repeats > 0) for r in cells.itertuples()]
    # the paper's order: BCE before CE, with RA before without, then LR and WD ascending
    table = table.sort_values(["loss", "RA", "LR", "WD"], ascending=[True, False, True, True])
    return table[["loss", "LR", "WD", "RA", "top1", "runs", "delta", "low", "high", "verdict", "beyond_noise", "reference",
                  "paper_A2"]].reset_index(drop=True)


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
    at ``train_res``, ``gain`` (their difference), ``band`` (t(n - 1) x the standard error of the per-run
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
        band = t_quantile(n - 1) * float(gains.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        gain = float(curve[best] - curve[train_res])
        out.append(dict(crop_pct=float(crop), train_res=int(train_res), best_res=best, best_mean=float(curve[best]),
                        at_train_res=float(curve[train_res]), gain=gain, band=band, beyond_noise=bool(n > 1 and gain > band), n=n,
                        run_best=" ".join(str(int(r)) for r in sorted(by_run.idxmax(axis=1)))))
    return pd.DataFrame(out)
