"""Claims that depend on the regime, tested where the regime changes (issue 48), three studies:

1. regularization against how much a model overfits (RSB gives A1's 600 epochs more regularization than A3's 100;
   ResNet-RS: regularization pays where a model overfits): :func:`regularization_regime_study`;
2. depth against width by regime (ResNet-RS's scaling rule: depth where a model can overfit, width where it does
   not): :func:`depth_width_study`;
3. procedure against architecture (RSB: a procedure tuned for one architecture can reorder architectures):
   :func:`procedure_study`.

On two cores the regime is moved by the data rather than the epochs: the same procedure on fewer training images
for the same number of images seen, so that each image is seen more often and the model overfits more. Every run
measures how much: its final weights' top-1 on its own training images (read as the test images are) minus its
test top-1, ``fit_gap`` in the run table (:func:`rsbkit.core.train.train_fit`). An augmented training loss cannot
say that: mixup and RandAugment make it high on purpose.

A run's arm is read from what it trained (its recipe's regularizers; its model and width; its optimizer and loss),
not from its folder's name. What notebooks/studies/regime.ipynb and scripts/findings.py call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Optional

from ..core.errors import RunError
from ..core.paths import find_path, output_path
from ..core.runs import atomic_write_text
from .resnet_rs_studies import study_runs
from .run_studies import read_seed_stats
from .study_stats import (
    BEYOND,
    COMPARISON_COLUMNS,
    SeedStats,
    compare_contrast,
    compare_means,
    comparison_row,
    family_check,
    group_stats,
)
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


def _first_match(run: Any, named: dict[str, dict]) -> str:
    """The first name in `named` whose fields a run (a run-table row) has, else ``other``."""
    return next((name for name, fields in named.items() if all(_same(run.get(k), v) for k, v in fields.items())), "other")


def arm_of(run: Any) -> str:
    """The arm of :data:`ARMS` whose regularizers a run (a run-table row) trained with, else ``other``."""
    return _first_match(run, ARMS)


def _completed(runs, need: set, why: str):
    """The completed runs of a table that has the columns `need` (else an error naming the missing ones and `why`)."""
    if missing := need - set(runs.columns):
        raise RunError(f"these runs lack {', '.join(sorted(missing))}: {why}")
    out = runs[runs["status"] == "completed"].copy()
    if out.empty:
        raise RunError("no completed run to read")
    return out


def _regime_table(runs):
    """The completed runs with ``images_seen`` (epochs x training images: a study's length) and ``length`` (``short``
    for the fewest images seen, ``long`` for the most)."""
    out = _completed(runs, {"train_images", "epochs", "fit_gap", "final_top1"},
                     "a regime study needs runs that measured their training images' top-1 (eval_train, on by default)")
    out["images_seen"] = out["epochs"].astype(int) * out["train_images"].astype(int)
    seen = sorted(out["images_seen"].unique())
    out["length"] = out["images_seen"].map(lambda v: "short" if v == seen[0] else "long" if v == seen[-1] else f"{v:,}")
    return out


def regime_runs(runs):
    """The run table of completed runs with ``arm`` (:func:`arm_of`), ``images_seen`` (epochs x training images:
    the study's length) and ``length`` (``short`` for the fewest images seen, ``long`` for the most)."""
    out = _regime_table(runs)
    out.insert(len(out.columns) - 2, "arm", [arm_of(r) for r in out.to_dict("records")])
    return out


def regime_cells(runs):
    """One row per (training images, images seen, arm): the mean test top-1 (``mean``, ``std``, ``n``) and the mean
    overfitting gap (``gap``, ``gap_std``) and training top-1 over its seeds."""
    top1 = group_stats(runs, CELL, "final_top1")
    gap = runs.groupby(CELL).agg(gap=("fit_gap", "mean"), gap_std=("fit_gap", "std"),
                                 train_top1=("train_top1", "mean"), length=("length", "first")).reset_index()
    return top1.merge(gap, on=CELL).sort_values(["images_seen", "train_images", "arm"]).reset_index(drop=True)


def arm_gains(cells, base: str, stats: Optional[SeedStats] = None, arms: Optional[list] = None):
    """Each arm (or each of `arms`) against the `base` arm at the same data size and length: the difference in test
    top-1 with its 95% interval and verdict (:func:`rsbkit.workbook.study_stats.compare_means`), beside
    ``gap_base``, how much the base arm overfits there (the x of the studies' figures)."""
    import pandas as pd

    rows = []
    for (images, seen), group in cells.groupby(["train_images", "images_seen"]):
        at = group[group["arm"] == base]
        if at.empty:
            continue
        b = at.iloc[0]
        others = group[(group["arm"] != base) & (group["arm"].isin(arms) if arms is not None else True)]
        for _, g in others.iterrows():
            c = compare_means(g["mean"] - b["mean"], int(g["n"]), int(b["n"]), seed=stats, s=float(g["std"]),
                              s_ref=float(b["std"]))
            rows.append(dict(train_images=images, images_seen=seen, length=g["length"], arm=g["arm"], n=int(g["n"]),
                             n_base=int(b["n"]), top1=g["mean"], top1_base=b["mean"], gap=g["gap"], gap_base=b["gap"],
                             **c.row()))
    if not rows:
        raise RunError(f"no cell has both the arm {base!r} and another to compare with it")
    return pd.DataFrame(rows).sort_values(["images_seen", "arm", "train_images"]).reset_index(drop=True)


def regularization_gains(cells, stats: Optional[SeedStats] = None):
    """Each regularized arm against ``none`` (:func:`arm_gains`; its base columns named ``n_none``, ``top1_none``,
    ``gap_none``)."""
    try:
        gains = arm_gains(cells, "none", stats)
    except RunError:
        raise RunError("no cell has both an unregularized arm (none) and a regularized one to compare") from None
    return gains.rename(columns={"n_base": "n_none", "top1_base": "top1_none", "gap_base": "gap_none"})


def _group(cell: Any, weight: float) -> tuple[float, float, int, float]:
    """A cell row (``mean``, ``std``, ``n``) as one group of :func:`compare_contrast`, with its `weight`."""
    return float(cell["mean"]), float(cell["std"]), int(cell["n"]), weight


def _comparison_text(g: Any) -> str:
    """A comparison row in a display table's words: difference (interval; verdict)."""
    return f"{g['diff']:+.2f} ({g['low']:+.2f} .. {g['high']:+.2f}; {g['verdict']})"


def gain_trend(cells, arm: str, length: str = "short", stats: Optional[SeedStats] = None, base: str = "none") -> dict[str, Any]:
    """Does `arm`'s gain over `base` grow as the model overfits more: its gain on the fewest training images minus
    its gain on the most, at `length`, as one contrast of four group means with its interval and verdict."""
    at = cells[(cells["length"] == length) & cells["arm"].isin([arm, base])]
    sizes = sorted(at["train_images"].unique())
    if len(sizes) < 2:
        raise RunError(f"{arm} at the {length} length: fewer than two data sizes to compare")

    def group(images, which, weight):
        return _group(at[(at["train_images"] == images) & (at["arm"] == which)].iloc[0], weight)

    small, large = sizes[0], sizes[-1]
    c = compare_contrast([group(small, arm, 1), group(small, base, -1), group(large, arm, -1), group(large, base, 1)],
                         seed=stats)
    return dict(arm=arm, length=length, small=small, large=large, **c.row())


def trend_sentence(trend: dict[str, Any]) -> str:
    """A gain trend in words."""
    return (f"{trend['arm'].upper()}'s regularizers at the {trend['length']} length: their gain over none on "
            f"{int(trend['small']):,} training images minus their gain on {int(trend['large']):,} is {trend['diff']:+.2f} "
            f"points (95% interval {trend['low']:+.2f} to {trend['high']:+.2f}; {trend['verdict']})")


def study_table(*, sweep: Optional[str], runs: Optional[str], runs_csv: Optional[str], seeds: Optional[list], scale: str,
                jobs: int, written: str, read_back: str):
    """A regime study's run table and the folder its CSVs go to: the sweep run (completed points reused), a folder of
    finished runs read, or `runs_csv`, a table the study wrote (`written`), read again (its CSVs then go under
    `read_back`, never beside the table: findings/ stays as committed)."""
    import pandas as pd

    if none_if_empty(runs_csv):
        path = find_path(runs_csv)
        if not path.is_file():
            raise RunError(f"runs_csv={runs_csv!r}: no such file; give a {written} this study wrote")
        return pd.read_csv(path), output_path(read_back)
    table, folder, _ = study_runs(sweep, runs, seeds=seeds, scale=scale, jobs=jobs)
    return table, folder


def write_tables(folder: Path, frames: dict) -> None:
    for name, frame in frames.items():
        atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))


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
    table, folder = study_table(sweep=sweep, runs=runs, runs_csv=runs_csv, seeds=seeds, scale=scale, jobs=jobs,
                                written="regime_runs.csv", read_back="runs/regime")
    stats = read_seed_stats(seed_stats, table)
    read = regime_runs(table)
    cells = regime_cells(read)
    gains = regularization_gains(cells, stats)
    trends = trends_table(cells, stats)
    folder = out_folder(out_dir, folder)
    kept = read[[c for c in RUN_COLUMNS if c in read.columns]]
    write_tables(folder, {"regime_cells": cells, "regime_gains": gains, "regime_trends": trends, "regime_runs": kept})
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
            row[f"{name} − none"] = _comparison_text(g)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


# ------------------------------------------------------------------ study 2: depth against width by regime
# ResNet-RS's scaling rule (docs/sources.md, section 3): depth pays where a model can overfit, width where it does not.

STUDY_RUN_COLUMNS = [c for c in RUN_COLUMNS if c != "model"]
STUDY_RUN_COLUMNS[STUDY_RUN_COLUMNS.index("seed") + 1:STUDY_RUN_COLUMNS.index("seed") + 1] = ["model", "width", "opt", "loss"]


def _width(run: Any) -> float:
    value = run.get("width")
    return 1.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def scaling_arm(run: Any) -> str:
    """A run's model as the depth-against-width study names it: timm's model, with its width where that is not 1
    (``resnet18 w1.41``: rsbkit's `width`, every stage's channels times 1.41)."""
    width = _width(run)
    return str(run["model"]) if math.isclose(width, 1.0) else f"{run['model']} w{width:g}"


def scaling_runs(runs):
    """The run table of completed runs with ``arm`` (:func:`scaling_arm`, read from the model and width each run
    built), ``images_seen`` and ``length`` (as :func:`regime_runs`)."""
    if "model" not in runs.columns:
        raise RunError("these runs lack a model column: give run folders or a table written by the depth/width study")
    out = _regime_table(runs)
    out.insert(len(out.columns) - 2, "arm", [scaling_arm(r) for r in out.to_dict("records")])
    return out


def scaling_axes(runs, base: str) -> dict[str, str]:
    """Each arm's axis against the `base` arm: ``width`` for the base model built wider, ``depth`` for another model
    at width 1 (resnet34 beside resnet18: more blocks, the same channels), ``other`` for anything else."""
    first = runs.drop_duplicates("arm").set_index("arm")
    if base not in first.index:
        raise RunError(f"no completed run of the base model {base!r} (arms here: {', '.join(first.index)}); give base= "
                       "one of them")
    base_model = first.loc[base, "model"]
    axes = {}
    for arm, run in first.iterrows():
        if arm != base:
            wide = not math.isclose(_width(run), 1.0)
            axes[arm] = "width" if run["model"] == base_model and wide else "depth" if not wide else "other"
    return axes


def depth_width_pairs(axes: dict[str, str]) -> list[tuple[str, str]]:
    """(deeper arm, wider arm) for every deeper and every wider arm."""
    return [(d, w) for d, x in axes.items() if x == "depth" for w, y in axes.items() if y == "width"]


def depth_width_gains(cells, base: str, axes: dict[str, str], stats: Optional[SeedStats] = None):
    """Each scaled arm against the `base` model at each data size (column ``against`` is the base), then each deeper
    arm against each wider one (``against`` the wider): which axis pays there, with intervals and verdicts."""
    import pandas as pd

    gains = arm_gains(cells, base, stats).assign(against=base)
    pairs = [arm_gains(cells, w, stats, arms=[d]).assign(against=w) for d, w in depth_width_pairs(axes)]
    out = pd.concat([gains, *pairs], ignore_index=True)
    out.insert(4, "axis", [axes.get(a, "") if b == base else "depth - width" for a, b in zip(out["arm"], out["against"])])
    return out


def depth_width_trends(cells, base: str, axes: dict[str, str], stats: Optional[SeedStats] = None):
    """Does each axis's gain over the base, and depth's over width, grow as the model overfits more: the difference
    on the fewest training images minus the difference on the most (:func:`gain_trend`), one row each. ResNet-RS's
    rule predicts depth minus width to be larger where the model overfits more."""
    import pandas as pd

    rows = [dict(gain_trend(cells, arm, length, stats, base=base), against=base)
            for length in cells["length"].unique() for arm in axes]
    rows += [dict(gain_trend(cells, d, length, stats, base=w), against=w)
             for length in cells["length"].unique() for d, w in depth_width_pairs(axes)]
    return pd.DataFrame(rows, columns=["arm", "against", "length", "small", "large", *COMPARISON_COLUMNS])


def difference_sentence(trend: dict[str, Any]) -> str:
    """A depth/width trend in words."""
    return (f"{trend['arm']} minus {trend['against']}: its difference on {int(trend['small']):,} training images minus "
            f"its difference on {int(trend['large']):,} is {trend['diff']:+.2f} points (95% interval "
            f"{trend['low']:+.2f} to {trend['high']:+.2f}; {trend['verdict']})")


@dataclass
class DepthWidthStudy:
    runs: Any  # scaling_runs
    cells: Any  # regime_cells
    gains: Any  # depth_width_gains
    trends: Any  # depth_width_trends
    axes: dict
    base: str
    stats: Optional[SeedStats]
    out_dir: Path

    def summary(self) -> str:
        return "; ".join(difference_sentence(t) for t in self.trends.to_dict("records")) + "."


def depth_width_study(*, sweep: Optional[str] = None, runs: Optional[str] = None, runs_csv: Optional[str] = None,
                      base: str = "resnet18", seeds: Optional[list] = None, scale: str = "demo", jobs: int = 1,
                      seed_stats: Optional[str] = "auto", out_dir: Optional[str] = None) -> DepthWidthStudy:
    """Run (or read) params/sweeps/regime_depth_width.yaml and read it against the `base` model: writes
    ``depth_width_cells.csv``, ``depth_width_gains.csv``, ``depth_width_trends.csv`` and ``depth_width_runs.csv``."""
    table, folder = study_table(sweep=sweep, runs=runs, runs_csv=runs_csv, seeds=seeds, scale=scale, jobs=jobs,
                                written="depth_width_runs.csv", read_back="runs/depth_width")
    stats = read_seed_stats(seed_stats, table)
    read = scaling_runs(table)
    axes = scaling_axes(read, base)
    cells = regime_cells(read)
    gains, trends = depth_width_gains(cells, base, axes, stats), depth_width_trends(cells, base, axes, stats)
    folder = out_folder(out_dir, folder)
    kept = read[[c for c in STUDY_RUN_COLUMNS if c in read.columns]]
    write_tables(folder, {"depth_width_cells": cells, "depth_width_gains": gains, "depth_width_trends": trends,
                          "depth_width_runs": kept})
    return DepthWidthStudy(read, cells, gains, trends, axes, base, stats, folder)


def depth_width_display(cells, gains, base: str):
    """The study as findings/README.md shows it: one row per data size, with its epochs, how much the base model
    overfits, each model's mean test top-1, and each difference with its 95% interval and verdict."""
    import pandas as pd

    rows = []
    for (seen, images), group in cells.groupby(["images_seen", "train_images"], sort=True):
        arm = group.set_index("arm")
        row = {"training images": f"{int(images):,}", "epochs": int(seen // images),
               f"gap, {base}": arm.loc[base, "gap"] if base in arm.index else math.nan}
        for name in [base, *sorted(a for a in arm.index if a != base)]:
            a = arm.loc[name]
            row[f"top-1 {name}"] = f"{a['mean']:.2f} ± {a['std']:.2f} (n={int(a['n'])})"
        here = gains[(gains["images_seen"] == seen) & (gains["train_images"] == images)]
        for g in here.to_dict("records"):
            row[f"{g['arm']} − {g['against']}"] = _comparison_text(g)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


# ------------------------------------------------------------------ study 3: procedure against architecture
# RSB's claim: a procedure tuned for one architecture can reorder architectures (its Table 3, docs/sources.md).

# what each procedure trains with, read from the run's recipe (params/demo.yaml, params/torchvision_demo.yaml)
PROCEDURES = {"demo": dict(opt="lamb", loss="bce"), "torchvision": dict(opt="momentum", loss="ce")}
PROCEDURE_CELL = ["procedure", "model"]


def procedure_of(run: Any) -> str:
    """The procedure of :data:`PROCEDURES` a run (a run-table row) trained with, from its optimizer and loss."""
    return _first_match(run, PROCEDURES)


def procedure_runs(runs):
    """The completed runs with ``procedure`` (:func:`procedure_of`)."""
    out = _completed(runs, {"model", "opt", "loss", "final_top1", "fit_gap"}, "the procedure study reads each run's "
                     "model, optimizer, loss and overfitting gap (eval_train, on by default)")
    out["procedure"] = [procedure_of(r) for r in out.to_dict("records")]
    return out


def procedure_cells(runs):
    """One row per (procedure, model): mean test top-1 (``mean``, ``std``, ``n``), the mean gap and training top-1,
    and ``rank`` (1: the best mean under that procedure)."""
    top1 = group_stats(runs, PROCEDURE_CELL, "final_top1")
    gap = runs.groupby(PROCEDURE_CELL).agg(gap=("fit_gap", "mean"), gap_std=("fit_gap", "std"),
                                           train_top1=("train_top1", "mean")).reset_index()
    cells = top1.merge(gap, on=PROCEDURE_CELL)
    cells["rank"] = cells.groupby("procedure")["mean"].rank(ascending=False, method="min").astype(int)
    return cells.sort_values(["procedure", "rank"]).reset_index(drop=True)


def _cell(cells, procedure: str, model: str):
    at = cells[(cells["procedure"] == procedure) & (cells["model"] == model)]
    if at.empty:
        raise RunError(f"no completed run of {model} under the {procedure} procedure")
    return at.iloc[0]


def procedure_gains(cells, stats: Optional[SeedStats] = None, arm: str = "demo", base: str = "torchvision"):
    """Each model under `arm` against itself under `base`: the difference in test top-1 with its 95% interval and
    verdict, beside how much the model overfits under each (``gap_base`` is the figure's x)."""
    import pandas as pd

    rows = []
    for model in sorted(cells["model"].unique()):
        a, b = _cell(cells, arm, model), _cell(cells, base, model)
        c = compare_means(a["mean"] - b["mean"], int(a["n"]), int(b["n"]), seed=stats, s=float(a["std"]),
                          s_ref=float(b["std"]))
        rows.append(dict(model=model, procedure=arm, against=base, n=int(a["n"]), n_base=int(b["n"]), top1=a["mean"],
                         top1_base=b["mean"], gap=a["gap"], gap_base=b["gap"], **c.row()))
    return pd.DataFrame(rows)


def order_reading(first: Any, second: Any) -> str:
    """A pair's order under two procedures, from its two comparisons (``diff`` and ``verdict`` each)."""
    flipped = (first["diff"] > 0) != (second["diff"] > 0)
    if first["verdict"] == BEYOND and second["verdict"] == BEYOND:
        return "reversed, beyond noise" if flipped else "same order, beyond noise"
    return "reversed in the means, not beyond noise" if flipped else "same order in the means, not beyond noise"


def pair_orders(cells, stats: Optional[SeedStats] = None, arm: str = "demo", base: str = "torchvision"):
    """Every pair of models, A minus B in test top-1 under each procedure (interval and verdict each), their order
    (:func:`order_reading`), and the interaction: (A - B under `arm`) - (A - B under `base`), one contrast of four
    group means, which says whether the procedure changes the pair's difference."""
    import pandas as pd

    rows = []
    for first, second in combinations(sorted(cells["model"].unique()), 2):
        row: dict[str, Any] = dict(first=first, second=second)
        read = {}
        for procedure in (arm, base):
            a, b = _cell(cells, procedure, first), _cell(cells, procedure, second)
            read[procedure] = compare_means(a["mean"] - b["mean"], int(a["n"]), int(b["n"]), seed=stats,
                                            s=float(a["std"]), s_ref=float(b["std"])).row()
            row.update({f"{k}_{procedure}": read[procedure][k] for k in ("diff", "low", "high", "df", "verdict")})
        row["order"] = order_reading(read[arm], read[base])

        def group(procedure, model, weight):
            return _group(_cell(cells, procedure, model), weight)

        c = compare_contrast([group(arm, first, 1), group(arm, second, -1), group(base, first, -1), group(base, second, 1)],
                             seed=stats)
        rows.append(dict(row, **c.row()))
    return pd.DataFrame(rows)


def pair_comparisons(pairs, procedures: tuple = ("demo", "torchvision")):
    """Every pair's difference under each procedure as rows (``pair``, ``procedure``, ``diff``, ``low``, ``high``,
    ``df``, ``verdict``): the family a change of rank is read from (:func:`holm_sentence`)."""
    import pandas as pd

    return pd.DataFrame([dict(pair=f"{p['first']} − {p['second']}", procedure=procedure,
                              **{k: p[f"{k}_{procedure}"] for k in ("diff", "low", "high", "df", "verdict")})
                         for p in pairs.to_dict("records") for procedure in procedures])


def ranking(cells, procedure: str) -> str:
    """The models under `procedure`, best mean first: ``resnet18 > convnext_atto > ...``."""
    at = cells[cells["procedure"] == procedure].sort_values("mean", ascending=False)
    return " > ".join(at["model"])


def ranking_sentence(cells, pairs, arm: str = "demo", base: str = "torchvision") -> str:
    """Whether the ranking changes between the procedures, in words, from the pairs' orders and interactions."""
    reversed_ = [f"{p['first']} and {p['second']}" for p in pairs.to_dict("records") if p["order"] == "reversed, beyond noise"]
    means = [f"{p['first']} and {p['second']}" for p in pairs.to_dict("records")
             if p["order"] == "reversed in the means, not beyond noise"]
    head = f"Ranking by mean test top-1: {ranking(cells, arm)} under the {arm} procedure, {ranking(cells, base)} under {base}'s. "
    if reversed_:
        return head + f"The ranking changes beyond noise: {'; '.join(reversed_)} swap places, each order beyond noise under both."
    if means:
        return head + (f"The means swap {'; '.join(means)}, but not beyond noise under both procedures: whether the "
                       "ranking changes, this study cannot tell at this number of seeds.")
    kept = [f"{p['first']} and {p['second']}" for p in pairs.to_dict("records") if p["order"] == "same order, beyond noise"]
    if len(kept) == len(pairs):
        return head + "No pair swaps places, and every pair's order is beyond noise under both procedures: the ranking holds."
    held = f"{len(kept)} of the {len(pairs)} pairs keep an order beyond noise under both procedures" + (
        f" ({'; '.join(kept)})" if kept else "")
    return head + (f"No pair swaps places in the means; {held}; for the other pairs this study cannot tell at this "
                   "number of seeds whether their order holds.")


def interaction_sentence(pair: Any, arm: str = "demo", base: str = "torchvision") -> str:
    """One pair's interaction in words."""
    return (f"{pair['first']} minus {pair['second']}: {pair[f'diff_{arm}']:+.2f} points under the {arm} procedure, "
            f"{pair[f'diff_{base}']:+.2f} under {base}'s; the procedure changes their difference by {pair['diff']:+.2f} "
            f"(95% interval {pair['low']:+.2f} to {pair['high']:+.2f}; {pair['verdict']})")


@dataclass
class ProcedureStudy:
    runs: Any  # procedure_runs
    cells: Any  # procedure_cells
    gains: Any  # procedure_gains
    pairs: Any  # pair_orders
    stats: Optional[SeedStats]
    out_dir: Path

    def summary(self) -> str:
        return ranking_sentence(self.cells, self.pairs)


def procedure_study(*, sweep: Optional[str] = None, runs: Optional[str] = None, runs_csv: Optional[str] = None,
                    seeds: Optional[list] = None, scale: str = "demo", jobs: int = 1, seed_stats: Optional[str] = "auto",
                    out_dir: Optional[str] = None) -> ProcedureStudy:
    """Run (or read) params/sweeps/regime_procedure.yaml and read it: writes ``procedure_cells.csv``,
    ``procedure_gains.csv``, ``procedure_pairs.csv`` and ``procedure_runs.csv``."""
    table, folder = study_table(sweep=sweep, runs=runs, runs_csv=runs_csv, seeds=seeds, scale=scale, jobs=jobs,
                                written="procedure_runs.csv", read_back="runs/procedure")
    stats = read_seed_stats(seed_stats, table)
    read = procedure_runs(table)
    if set(read["procedure"]) - set(PROCEDURES):
        raise RunError(f"runs {', '.join(read.loc[read['procedure'] == 'other', 'name'].astype(str))} trained neither "
                       "procedure (the demo's LAMB and BCE, torchvision's SGD with momentum and CE); leave them out")
    cells = procedure_cells(read)
    gains, pairs = procedure_gains(cells, stats), pair_orders(cells, stats)
    folder = out_folder(out_dir, folder)
    kept = read[[c for c in STUDY_RUN_COLUMNS if c in read.columns]]
    write_tables(folder, {"procedure_cells": cells, "procedure_gains": gains, "procedure_pairs": pairs,
                          "procedure_runs": kept})
    return ProcedureStudy(read, cells, gains, pairs, stats, folder)


def procedure_display(cells, gains, arm: str = "demo", base: str = "torchvision"):
    """One row per model: its test top-1 and rank under each procedure, how much it overfits under each, and the
    procedure's difference with its interval and verdict."""
    import pandas as pd

    rows = []
    for g in gains.to_dict("records"):
        a, b = _cell(cells, arm, g["model"]), _cell(cells, base, g["model"])
        rows.append({"model": g["model"],
                     f"top-1 {base}": f"{b['mean']:.2f} ± {b['std']:.2f} (n={int(b['n'])}, rank {int(b['rank'])})",
                     f"top-1 {arm}": f"{a['mean']:.2f} ± {a['std']:.2f} (n={int(a['n'])}, rank {int(a['rank'])})",
                     f"gap, {base}": round(float(b["gap"]), 2), f"gap, {arm}": round(float(a["gap"]), 2),
                     f"{arm} − {base}": _comparison_text(g)})
    return pd.DataFrame(rows)


def pairs_display(pairs, arm: str = "demo", base: str = "torchvision"):
    """One row per pair: A minus B under each procedure, their order, and the interaction."""
    import pandas as pd

    def text(p, procedure):
        return f"{p[f'diff_{procedure}']:+.2f} ({p[f'low_{procedure}']:+.2f} .. {p[f'high_{procedure}']:+.2f}; {p[f'verdict_{procedure}']})"

    return pd.DataFrame([{"pair": f"{p['first']} − {p['second']}", base: text(p, base), arm: text(p, arm),
                          "order": p["order"], "interaction": _comparison_text(p)} for p in pairs.to_dict("records")])


# ------------------------------------------------------------------ study 1's second question: weight decay where it acts
# ResNet-RS (docs/sources.md, section 3): decrease weight decay when combining regularizers. Read in the regime where
# the model overfits most (params/sweeps/regime_weight_decay.yaml), at weight decays that shrink the weights.

WD_CELL = ["step_index", "step", "weight_decay"]


def weight_decay_cells(runs, value: str = "final_top1"):
    """One row per (row of regularizers, weight decay) of a cumulative sweep crossed with weight decay: mean test
    top-1 (`value`: ``mean``, ``std``, ``n``), the mean gap and training top-1 where the runs measured them (else
    empty), and ``best`` (the row's best mean)."""
    need = {"step_index", "step", "weight_decay", value}
    if missing := need - set(runs.columns):
        raise RunError(f"these runs lack {', '.join(sorted(missing))}: give the runs of a sweep with steps (rows of "
                       "regularizers) crossed with a weight_decay grid")
    done = runs[(runs["status"] == "completed") & runs["step_index"].notna()].copy()
    if done.empty:
        raise RunError("no completed run of the sweep's steps to read")
    for column in ("fit_gap", "train_top1"):
        done[column] = done[column] if column in done.columns else math.nan
    cells = group_stats(done, WD_CELL, value).merge(
        done.groupby(WD_CELL).agg(gap=("fit_gap", "mean"), train_top1=("train_top1", "mean")).reset_index(), on=WD_CELL)
    cells["best"] = cells.index.isin(cells.groupby("step_index")["mean"].idxmax())
    return cells


def weight_decay_effects(cells, stats: Optional[SeedStats] = None):
    """Each weight decay against the smallest in its row (``against``), with interval and verdict, beside how much
    the row overfits at the smallest (``gap_base``); then, for each larger weight decay, the interaction: its effect
    with every regularizer (the last row) minus its effect with none (the first row), one contrast of four groups
    (``step`` is ``last - first``). ResNet-RS's rule predicts it negative: weight decay pays less, or costs more,
    when the other regularizers are on."""
    import pandas as pd

    low = float(cells["weight_decay"].min())
    rows, at = [], cells.set_index(["step_index", "weight_decay"])
    for (index, step), group in cells.groupby(["step_index", "step"], sort=True):
        b = at.loc[(index, low)]
        for g in group[group["weight_decay"] != low].to_dict("records"):
            c = comparison_row(g["mean"] - b["mean"], int(g["n"]), int(b["n"]), seed=stats, s=float(g["std"]),
                               s_ref=float(b["std"]))  # one seed and no seed study: "cannot tell", the row kept
            rows.append(dict(step_index=index, step=step, weight_decay=g["weight_decay"], against=low, n=int(g["n"]),
                             n_base=int(b["n"]), gap=g["gap"], gap_base=b["gap"], **c))
    first, last = cells["step_index"].min(), cells["step_index"].max()
    names = cells.drop_duplicates("step_index").set_index("step_index")["step"]

    def group(index, wd, weight):
        return _group(at.loc[(index, wd)], weight)

    if first != last:
        for wd in sorted(w for w in cells["weight_decay"].unique() if w != low):
            groups = [group(last, wd, 1), group(last, low, -1), group(first, wd, -1), group(first, low, 1)]
            try:
                c = compare_contrast(groups, seed=stats).row()
            except RunError:  # one seed somewhere and no seed study: no interval
                c = dict(comparison_row(math.nan, 1, 1), diff=sum(w * m for m, _, _, w in groups))
            rows.append(dict(step_index=math.nan, step=f"{names[last]} - {names[first]}", weight_decay=wd, against=low,
                             n=math.nan, n_base=math.nan, gap=math.nan, gap_base=math.nan, **c))
    return pd.DataFrame(rows)


def weight_decay_sentence(effect: Any) -> str:
    """One interaction row of :func:`weight_decay_effects` in words."""
    first, last = str(effect["step"]).split(" - ")[1], str(effect["step"]).split(" - ")[0]
    return (f"weight decay {effect['weight_decay']:g} against {effect['against']:g}: its effect with {last} minus its "
            f"effect with {first} is {effect['diff']:+.2f} points (95% interval {effect['low']:+.2f} to "
            f"{effect['high']:+.2f}; {effect['verdict']})")


def weight_decay_display(cells, effects, shrinkage: Optional[dict] = None):
    """One row per row of regularizers: each weight decay's mean test top-1 (the row's best in bold) and each
    larger weight decay's effect against the smallest; `shrinkage` (weight decay -> fraction) heads the columns."""
    import pandas as pd

    rows = []
    for (index, step), group in cells.groupby(["step_index", "step"], sort=True):
        row: dict[str, Any] = {"regularizers": step, "gap at the smallest": float(group.sort_values("weight_decay")["gap"].iloc[0])}
        for c in group.sort_values("weight_decay").to_dict("records"):
            text = f"{c['mean']:.2f} ± {c['std']:.2f} (n={int(c['n'])})"
            head = f"wd {c['weight_decay']:g}" + (f" ({shrinkage[c['weight_decay']]:.1%} shrink)" if shrinkage else "")
            row[head] = f"**{text}**" if c["best"] else text
        for e in effects[effects["step_index"] == index].to_dict("records"):
            row[f"{e['weight_decay']:g} − {e['against']:g}"] = _comparison_text(e)
        rows.append(row)
    return pd.DataFrame(rows)


def holm_sentence(table, label) -> str:
    """A study table's comparisons read as one family (:func:`rsbkit.workbook.study_stats.family_check`): how many
    of those beyond noise stay so under Holm's correction, naming any that do not (`label`: row -> its name)."""
    checked = family_check(table)
    beyond = checked[checked["verdict"] == BEYOND]
    lost = [label(r) for r in beyond[~beyond["holm_beyond"].astype(bool)].to_dict("records")]
    k = int(checked["p_value"].notna().sum())
    head = f"Read as one family of {k} comparisons with Holm's correction, "
    if beyond.empty:
        return head + "none was beyond noise to begin with"
    kept = len(beyond) - len(lost)
    return head + (f"{kept} of the {len(beyond)} beyond noise {'stays' if kept == 1 else 'stay'} so" +
                   (f"; {', '.join(lost)} no longer {'is' if len(lost) == 1 else 'are'}" if lost else ""))
