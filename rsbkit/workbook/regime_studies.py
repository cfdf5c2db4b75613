"""Claims that depend on the regime, tested where the regime changes: regularization against how much a model
overfits (RSB gives A1's 600 epochs more regularization than A3's 100; ResNet-RS: regularization pays where a
model overfits).

On two cores the regime is moved by the data rather than the epochs: the same procedure on fewer training images
for the same number of images seen, so that each image is seen more often and the model overfits more. Every run
measures how much: its final weights' top-1 on its own training images (read as the test images are) minus its
test top-1, ``fit_gap`` in the run table (:func:`rsbkit.core.train.train_fit`). An augmented training loss cannot
say that: mixup and RandAugment make it high on purpose.

A run's arm is read from what it trained (its recipe's RandAugment, mixup, CutMix and stochastic depth), not from
its folder's name. What notebooks/studies/regime.ipynb and scripts/findings.py call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import RunError
from ..core.paths import find_path, output_path
from ..core.runs import atomic_write_text
from .resnet_rs_studies import study_runs
from .run_studies import read_seed_stats
from .study_stats import COMPARISON_COLUMNS, SeedStats, compare_contrast, compare_means, group_stats
from .train_and_evaluate import none_if_empty, out_folder

# the regularizers each arm trains with, as timm's 2021 args for RSB's procedures set them (RSB Table 1); weight
# decay is not among them: it is the same in every arm of the study
ARMS = {
    "none": dict(aa=None, mixup=0.0, cutmix=0.0, drop_path=0.0),
    "a3": dict(aa="rand-m6-mstd0.5-inc1", mixup=0.1, cutmix=1.0, drop_path=0.0),
    "a1": dict(aa="rand-m7-mstd0.5-inc1", mixup=0.2, cutmix=1.0, drop_path=0.05),
}
ARM_NAMES = {"none": "no RandAugment, mixup, CutMix or stochastic depth", "a3": "A3's (RandAugment m6, mixup 0.1, CutMix 1.0)",
             "a1": "A1's (RandAugment m7, mixup 0.2, CutMix 1.0, stochastic depth 0.05)"}
CELL = ["train_images", "images_seen", "arm"]


def _same(value: Any, wanted: Any) -> bool:
    empty = value is None or (isinstance(value, float) and math.isnan(value))
    if wanted is None:
        return empty or value in ("", "None")
    return not empty and (value == wanted if isinstance(wanted, str) else math.isclose(float(value), wanted))


def arm_of(run: Any) -> str:
    """The arm of :data:`ARMS` whose regularizers a run (a run-table row) trained with, else ``other``."""
    for name, fields in ARMS.items():
        if all(_same(run.get(k), v) for k, v in fields.items()):
            return name
    return "other"


def regime_runs(runs):
    """The run table of completed runs with ``arm``, ``images_seen`` (epochs x training images: the study's
    length) and ``length`` (``short`` for the fewest images seen, ``long`` for the most)."""
    need = {"train_images", "epochs", "fit_gap", "final_top1"}
    if missing := need - set(runs.columns):
        raise RunError(f"these runs lack {', '.join(sorted(missing))}: a regime study needs runs that measured "
                       "their training images' top-1 (eval_train, on by default)")
    out = runs[runs["status"] == "completed"].copy()
    if out.empty:
        raise RunError("no completed run to read")
    out["arm"] = [arm_of(r) for r in out.to_dict("records")]
    out["images_seen"] = out["epochs"].astype(int) * out["train_images"].astype(int)
    seen = sorted(out["images_seen"].unique())
    out["length"] = out["images_seen"].map(lambda v: "short" if v == seen[0] else "long" if v == seen[-1] else f"{v:,}")
    return out


def regime_cells(runs):
    """One row per (training images, images seen, arm): the mean test top-1 (``mean``, ``std``, ``n``) and the mean
    overfitting gap (``gap``, ``gap_std``) and training top-1 over its seeds."""
    top1 = group_stats(runs, CELL, "final_top1")
    gap = runs.groupby(CELL).agg(gap=("fit_gap", "mean"), gap_std=("fit_gap", "std"),
                                 train_top1=("train_top1", "mean"), length=("length", "first")).reset_index()
    return top1.merge(gap, on=CELL).sort_values(["images_seen", "train_images", "arm"]).reset_index(drop=True)


def regularization_gains(cells, stats: Optional[SeedStats] = None):
    """Each arm against ``none`` at the same data size and length: the gain in test top-1 with its 95% interval and
    verdict (:func:`rsbkit.workbook.study_stats.compare_means`), beside ``gap_none``, how much the unregularized
    model overfits there (the x of the study's figure)."""
    import pandas as pd

    rows = []
    for (images, seen), group in cells.groupby(["train_images", "images_seen"]):
        base = group[group["arm"] == "none"]
        if base.empty:
            continue
        b = base.iloc[0]
        for _, g in group[group["arm"] != "none"].iterrows():
            c = compare_means(g["mean"] - b["mean"], int(g["n"]), int(b["n"]), seed=stats, s=float(g["std"]),
                              s_ref=float(b["std"]))
            rows.append(dict(train_images=images, images_seen=seen, length=g["length"], arm=g["arm"], n=int(g["n"]),
                             n_none=int(b["n"]), top1=g["mean"], top1_none=b["mean"], gap=g["gap"], gap_none=b["gap"],
                             **c.row()))
    if not rows:
        raise RunError("no cell has both an unregularized arm (none) and a regularized one to compare")
    return pd.DataFrame(rows).sort_values(["images_seen", "arm", "train_images"]).reset_index(drop=True)


def gain_trend(cells, arm: str, length: str = "short", stats: Optional[SeedStats] = None) -> dict[str, Any]:
    """Does `arm`'s gain grow as the model overfits more: its gain on the fewest training images minus its gain on
    the most, at `length`, as one contrast of four group means with its interval and verdict."""
    at = cells[(cells["length"] == length) & cells["arm"].isin([arm, "none"])]
    sizes = sorted(at["train_images"].unique())
    if len(sizes) < 2:
        raise RunError(f"{arm} at the {length} length: fewer than two data sizes to compare")

    def group(images, which, weight):
        g = at[(at["train_images"] == images) & (at["arm"] == which)].iloc[0]
        return float(g["mean"]), float(g["std"]), int(g["n"]), weight

    small, large = sizes[0], sizes[-1]
    c = compare_contrast([group(small, arm, 1), group(small, "none", -1), group(large, arm, -1), group(large, "none", 1)],
                         seed=stats)
    return dict(arm=arm, length=length, small=small, large=large, **c.row())


def trend_sentence(trend: dict[str, Any]) -> str:
    """A gain trend in words."""
    return (f"{trend['arm'].upper()}'s regularizers at the {trend['length']} length: their gain over none on "
            f"{int(trend['small']):,} training images minus their gain on {int(trend['large']):,} is {trend['diff']:+.2f} "
            f"points (95% interval {trend['low']:+.2f} to {trend['high']:+.2f}; {trend['verdict']})")


@dataclass
class RegimeStudy:
    runs: Any  # regime_runs
    cells: Any  # regime_cells
    gains: Any  # regularization_gains
    trends: Any  # one gain_trend row per regularized arm and length with two sizes or more
    stats: Optional[SeedStats]
    out_dir: Path

    def summary(self) -> str:
        return "; ".join(trend_sentence(t) for t in self.trends.to_dict("records")) + "."


def trends_table(cells, stats: Optional[SeedStats] = None):
    import pandas as pd

    rows = []
    for length in cells["length"].unique():
        for arm in (a for a in ARMS if a != "none"):
            at = cells[(cells["length"] == length) & (cells["arm"] == arm)]
            if at["train_images"].nunique() >= 2:
                rows.append(gain_trend(cells, arm, length, stats))
    return pd.DataFrame(rows, columns=["arm", "length", "small", "large", *COMPARISON_COLUMNS])


RUN_COLUMNS = ["name", "recipe", "data", "status", "seed", "model", "train_images", "epochs", "warmup_epochs", "sched_on_updates", "lr_used",
               "weight_decay", "aa", "mixup", "cutmix", "drop_path", "final_top1", "best_top1", "train_top1", "fit_gap",
               "wall_s", "device_name", "code_version"]  # what regime_runs.csv keeps: enough to read the study again


def regularization_regime_study(*, sweep: Optional[str] = None, runs: Optional[str] = None, runs_csv: Optional[str] = None,
                                seeds: Optional[list] = None, scale: str = "demo", jobs: int = 1,
                                seed_stats: Optional[str] = "auto", out_dir: Optional[str] = None) -> RegimeStudy:
    """Run (or read) params/sweeps/regime_regularization.yaml and read it: writes ``regime_cells.csv``,
    ``regime_gains.csv``, ``regime_trends.csv`` and ``regime_runs.csv`` into `out_dir` (default: the runs' folder).
    `runs_csv`: a regime_runs.csv it wrote (findings/regime_runs.csv): read again, nothing trains."""
    import pandas as pd

    if none_if_empty(runs_csv):
        path = find_path(runs_csv)
        if not path.is_file():
            raise RunError(f"runs_csv={runs_csv!r}: no such file; give a regime_runs.csv this study wrote")
        table, folder = pd.read_csv(path), output_path("runs/regime")  # never beside the CSV: findings/ stays as committed
    else:
        table, folder, _ = study_runs(sweep, runs, seeds=seeds, scale=scale, jobs=jobs)
    stats = read_seed_stats(seed_stats, table)
    read = regime_runs(table)
    cells = regime_cells(read)
    gains = regularization_gains(cells, stats)
    trends = trends_table(cells, stats)
    folder = out_folder(out_dir, folder)
    kept = read[[c for c in RUN_COLUMNS if c in read.columns]]
    for name, frame in (("regime_cells", cells), ("regime_gains", gains), ("regime_trends", trends), ("regime_runs", kept)):
        atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))
    return RegimeStudy(read, cells, gains, trends, stats, folder)


def regime_display(cells, gains):
    """The study as findings/README.md shows it: one row per length and data size, with its epochs, how much the
    unregularized model overfits (its train-minus-test gap), each arm's mean test top-1 and each regularized arm's
    gain over none with its 95% interval and verdict."""
    import pandas as pd

    rows = []
    for (seen, images), group in cells.groupby(["images_seen", "train_images"], sort=True):
        arm = group.set_index("arm")
        row = {"length": group["length"].iloc[0], "training images": f"{int(images):,}",
               "epochs": int(seen // images), "gap, none": arm.loc["none", "gap"] if "none" in arm.index else math.nan}
        for name in ARMS:
            if name in arm.index:
                a = arm.loc[name]
                row[f"top-1 {name}"] = f"{a['mean']:.2f} ± {a['std']:.2f} (n={int(a['n'])})"
        here = gains[(gains["images_seen"] == seen) & (gains["train_images"] == images)].set_index("arm")
        for name in (a for a in ARMS if a in here.index):  # in ARMS' order: A3's, then A1's
            g = here.loc[name]
            row[f"{name} − none"] = f"{g['diff']:+.2f} ({g['low']:+.2f} .. {g['high']:+.2f}; {g['verdict']})"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")
