"""Gather the demo-scale studies into findings/: one CSV row per run, the study tables, the figures.

Run after the studies (findings/README.md has the commands; they write under runs/sweeps/):

    .venv/bin/python scripts/findings.py [--runs runs/sweeps] [--out findings]

Writes, per study, the run table from rsbkit.workbook.table.load_runs (every number in
findings/README.md traces back to a run folder named in it), the study's own table
(seed_stats.json, comparison.csv, resolution.csv, variants.csv, fixres_*.csv, progressive_*.csv) and its
figure as PNG, and prints the Markdown tables that findings/README.md quotes; a study whose runs are not
under --runs is skipped (its committed files stay). scripts/cliff.py writes cliff*.csv itself; this prints
their table. Checkpoints stay in runs/.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from rsbkit.core.recipes import load_recipe
from rsbkit.core.runs import read_metrics
from rsbkit.workbook.figures import cliff_figure, resolution_figure, save_figure, variants_figure
from rsbkit.workbook.study_stats import best_test_resolution, compare_to, group_stats, noise_table, seed_stats
from rsbkit.workbook.table import load_runs

RUN_COLUMNS = ["name", "recipe", "status", "seed", "model", "epochs", "batch_size", "opt", "lr", "lr_used", "weight_decay",
               "sched", "loss", "aa", "mixup", "cutmix", "aug_repeats", "train_res", "test_res", "crop_pct", "data",
               "final_top1", "best_top1", "best_epoch", "final_top5", "wall_s", "imgs_per_s", "device_name", "code_version"]
VARIANT_SWEEPS = ("loss_ce", "procedure_torchvision", "repeats", "lr")  # the compare notebook's default sweeps
NEW_VARIANT_SWEEPS = ("fixres", "progressive", "bce_thresh")  # compare.ipynb run again with these, --out runs/sweeps/variants
FIXRES_TRAIN_RES = 24  # params/sweeps/fixres.yaml


def run_table(folder: Path) -> pd.DataFrame:
    """The sweep's runs, one row each, the columns a reader needs (run = the point's folder name)."""
    table = load_runs(folder)
    return table[[c for c in RUN_COLUMNS if c in table.columns]].sort_values("name").reset_index(drop=True)


def markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A DataFrame as a Markdown table, floats to `digits` decimals."""
    def cell(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


COMPARISON_HEADER = ("| variant | final top-1 (%), mean ± std | seeds | range | difference | 95% interval | verdict | "
                     "detectable (80% power) |")


def comparison_row(row) -> str:
    """One variant as findings/README.md shows it (tests/workbook/test_findings.py reads these rows back)."""
    first = row.variant.endswith("(reference)")
    return (f"| {row.variant} | {row.mean:.2f} ± {row.std:.2f} | {row.n} | {row.min:.2f} .. {row.max:.2f} | "
            + ("| | | |" if first else f"{row.diff:+.2f} | {row.low:+.2f} .. {row.high:+.2f} | {row.verdict} | "
                                       f"{row.detectable:.2f} |"))


def comparison_markdown(table: pd.DataFrame) -> str:
    return "\n".join([COMPARISON_HEADER, "|---|---|---|---|---|---|---|---|"] + [comparison_row(r) for r in table.itertuples()])


def compared_again(table: pd.DataFrame, pooled: pd.DataFrame):
    """A comparison table (comparison.csv, variants.csv, teacher.csv) recomputed from its runs (``pooled``: one row
    per run with ``variant`` and ``final_top1``) by rsbkit.workbook.study_stats.compare_to, against its first row
    (the reference, whose seeds are the seed study); the table's other columns kept. Returns (table, the
    reference's SeedStats)."""
    groups = group_stats(pooled, ["variant"], "final_top1").set_index("variant").loc[table["variant"]].reset_index()
    stats = seed_stats(pooled.loc[pooled["variant"] == table["variant"].iloc[0], "final_top1"])
    again = compare_to(groups, "variant", table["variant"].iloc[0], stats)
    keep = [c for c in table.columns if c not in again.columns and c not in OLD_COMPARISON_COLUMNS]
    return pd.concat([again, table[keep]], axis=1), stats


OLD_COMPARISON_COLUMNS = ("control_diff", "control_band", "beyond_control", "control_verdict")  # recomputed after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/sweeps", help="the folder the sweep files write into")
    parser.add_argument("--out", default="findings")
    parser.add_argument("--pseudo-labels", default=None, metavar="TEACHER_RUN",
                        help="measure the labelling teacher's pseudo-labels against the pool's true labels (section 13)")
    parser.add_argument("--reread", action="store_true",
                        help="recompute the committed study tables from their run CSVs by the current rule (no runs needed)")
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    if args.reread:
        reread(out)
        return
    if args.pseudo_labels:
        pseudo_label_findings(args.pseudo_labels, out)
        return
    out.mkdir(exist_ok=True)
    # each study is gathered when its runs are here (a checkout holds the findings, not the checkpoints)
    for needs, gather in ((["seeds/seed_stats.json"], seed_study), (["comparison/comparison.csv"], variant_study),
                          (["resolution"], resolution_study), (["variants/comparison.csv"], resolution_variants),
                          (["resolution_fixres"], fixres_study), (["progressive", "seeds"], progressive_study)):
        if all((runs / n).exists() for n in needs):
            gather(runs, out)
        else:
            print(f"\n(skipped {gather.__name__}: no {', '.join(str(runs / n) for n in needs)})")
    if (out / "cliff.csv").is_file():
        cliff_tables(out)
    for folder, gather in (("additive", additive_findings), ("weight_decay", weight_decay_findings),
                           ("teacher", teacher_findings), ("regime_regularization", regime_findings),
                           ("regime_weight_decay", regime_weight_decay_findings),
                           ("regime_depth_width", depth_width_findings), ("regime_procedure", procedure_findings)):
        if (runs / folder).is_dir():
            gather(runs, out)
        else:
            print(f"\n(skipped {gather.__name__}: no {runs / folder})")


def seed_study(runs: Path, out: Path) -> None:
    """1. seed variance: the seed_variance notebook's statistics and figure."""
    seeds = run_table(runs / "seeds")
    seeds.to_csv(out / "seeds_runs.csv", index=False)
    shutil.copy(runs / "seeds" / "seed_stats.json", out / "seed_stats.json")
    shutil.copy(runs / "seeds" / "seeds.png", out / "seeds.png")
    stats = json.loads((out / "seed_stats.json").read_text())
    print("## 1. seeds\n")
    print(markdown(seeds[["name", "final_top1", "best_top1", "best_epoch", "wall_s"]]))
    print(f"\nn {stats['n']}, mean {stats['mean']:.2f}, std {stats['std']:.2f}, range {stats['min']:.2f} .. {stats['max']:.2f}")
    print(markdown(pd.DataFrame(stats["noise_table"])))


def variant_study(runs: Path, out: Path, folder: str = "comparison", name: str = "comparison",
                  sweeps=VARIANT_SWEEPS) -> None:
    """2, 3, 5, 6 (and 7 to 9 as `variants`). Variants against the seeds: the compare notebook's table and
    figure, and each sweep's runs."""
    for sweep in sweeps:
        run_table(runs / sweep).to_csv(out / f"{sweep}_runs.csv", index=False)
    comparison = pd.read_csv(runs / folder / "comparison.csv")
    comparison.to_csv(out / f"{name}.csv", index=False)
    shutil.copy(runs / folder / "comparison.png", out / f"{name}.png")
    pooled = pd.read_csv(runs / folder / "comparison_runs.csv")
    pooled[["variant", "run", "recipe", "seed", "final_top1", "best_top1", "wall_s"]].to_csv(out / f"{name}_runs.csv", index=False)
    print(f"\n## {name} (final top-1; the rows findings/README.md quotes)\n")
    print(comparison_markdown(comparison))


def resolution_variants(runs: Path, out: Path) -> None:
    variant_study(runs, out, "variants", "variants", NEW_VARIANT_SWEEPS)


def pooled_resolution(folder: Path) -> pd.DataFrame:
    """The evaluate_resolution tables of a resolution sweep's points, one row per (run, size, crop)."""
    per_run = []
    for point in sorted(folder.glob("source=*")):
        if (point / "resolution.csv").is_file():
            source = json.loads((point / "sweep_point.json").read_text())["parameters"]["source"]
            per_run.append(pd.read_csv(point / "resolution.csv").assign(run=Path(source).name))
    return pd.concat(per_run, ignore_index=True)


def resolution_pivot(table: pd.DataFrame) -> str:
    pivot = table.pivot(index="test_res", columns="crop_pct", values="mean").reset_index()
    pivot.columns = ["test px"] + [f"crop {c:g}" for c in pivot.columns[1:]]
    return markdown(pivot)


def resolution_study(runs: Path, out: Path) -> None:
    """4. test resolution: evaluate_resolution on each seed run, pooled over the seeds."""
    rows = pooled_resolution(runs / "resolution")
    rows.to_csv(out / "resolution_runs.csv", index=False)
    table = group_stats(rows, ["test_res", "crop_pct"], "top1")
    table.to_csv(out / "resolution.csv", index=False)
    n = rows["run"].nunique()
    print(f"\n## test resolution (mean top-1 over {n} seed runs; rows: test px, columns: crop ratio)\n")
    print(resolution_pivot(table))
    save_figure(resolution_figure(table.rename(columns={"mean": "top1"}), train_res=load_recipe("params/demo.yaml").train_res,
                                  title=f"demo: top-1 by test resolution, mean of {n} seed runs"), out / "resolution")


def fixres_study(runs: Path, out: Path) -> None:
    """7. FixRes in A3's regime: the runs trained at 24 px, evaluated from 20 to 40 px."""
    rows = pooled_resolution(runs / "resolution_fixres")
    rows.to_csv(out / "fixres_resolution_runs.csv", index=False)
    table = group_stats(rows, ["test_res", "crop_pct"], "top1")
    table.to_csv(out / "fixres_resolution.csv", index=False)
    best = best_test_resolution(rows, FIXRES_TRAIN_RES)
    best.to_csv(out / "fixres_best.csv", index=False)
    n = rows["run"].nunique()
    print(f"\n## FixRes: trained at {FIXRES_TRAIN_RES} px, mean top-1 over {n} runs\n")
    print(resolution_pivot(table))
    print("\n" + markdown(best[["crop_pct", "best_res", "best_mean", "at_train_res", "gain", "band", "beyond_noise", "run_best"]]))
    save_figure(resolution_figure(table.rename(columns={"mean": "top1"}), train_res=FIXRES_TRAIN_RES,
                                  title=f"trained at {FIXRES_TRAIN_RES} px: top-1 by test resolution, mean of {n} runs"),
                out / "fixres_resolution")


def progressive_study(runs: Path, out: Path) -> None:
    """8. progressive resizing: each epoch's size and time, beside the demo's seeds."""
    rows, demo_res = [], load_recipe("params/demo.yaml").train_res
    for sweep in ("seeds", "progressive"):
        for run in sorted(p for p in (runs / sweep).iterdir() if (p / "metrics.csv").is_file()):
            for r in read_metrics(run / "metrics.csv"):
                rows.append(dict(sweep=sweep, run=run.name, epoch=int(r["epoch"]), train_res=r.get("train_res") or demo_res,
                                 epoch_s=float(r["epoch_s"]), imgs_per_s=float(r["imgs_per_s"]), val_top1=r["val_top1"]))
    epochs = pd.DataFrame(rows)
    epochs["train_res"] = epochs["train_res"].astype(int)
    epochs.to_csv(out / "progressive_epochs.csv", index=False)
    summary = progressive_summary(epochs)
    summary.to_csv(out / "progressive_time.csv", index=False)
    print("\n## progressive resizing: time (s) per run, mean over runs\n")
    print(markdown(summary))


def progressive_summary(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per sweep: runs, mean total of the epochs' seconds, and the mean epoch time and images/s at each train size
    (tests/workbook/test_findings.py recomputes it from progressive_epochs.csv)."""
    totals = epochs.groupby(["sweep", "run"])["epoch_s"].sum().groupby("sweep").agg(["count", "mean"])
    sizes = epochs.groupby(["sweep", "train_res"]).agg(epoch_s=("epoch_s", "mean"), imgs_per_s=("imgs_per_s", "mean"),
                                                      epochs=("epoch", "count")).reset_index()
    sizes["runs"] = sizes["sweep"].map(totals["count"])
    sizes["total_s"] = sizes["sweep"].map(totals["mean"])
    return sizes[["sweep", "runs", "total_s", "train_res", "epochs", "epoch_s", "imgs_per_s"]].round(2)


def cliff_tables(out: Path) -> None:
    """4b. the cliff: scripts/cliff.py's table as findings/README.md quotes it."""
    print("\n## the cliff (mean top-1, crop 1.0; rows: test px)\n")
    table = pd.read_csv(out / "cliff.csv")
    print(markdown(cliff_pivot(table)))
    save_figure(cliff_figure(table, title="top-1 by test size for models trained at 32, 36 and 40 px (crop 1.0)"), out / "cliff")


def cliff_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """One row per test size: the maps, then each (train size, path)'s mean top-1."""
    table = table.assign(column=[f"train {t} {p}" for t, p in zip(table["train_res"], table["path"])])
    pivot = table.pivot(index=["test_res", "maps"], columns="column", values="mean").reset_index()
    pivot.columns.name = None
    return pivot.rename(columns={"test_res": "test px"})

# ResNet-RS's two training studies (params/sweeps/additive.yaml, weight_decay.yaml): the run columns a reader needs
RS_RUN_COLUMNS = ["name", "status", "seed", "step_index", "step", "step_paper", "model", "attn_layer", "epochs", "sched",
                  "weight_decay", "model_ema", "model_ema_decay", "smoothing", "drop_path", "aa", "drop", "final_top1",
                  "final_ema_top1", "top1", "read_from", "best_top1", "wall_s", "active_s", "imgs_per_s", "device_name", "code_version"]
ADDITIVE_SHOWN = ["step", "kind", "n", "mean", "std", "delta", "low", "high", "verdict", "seeds_added_after", "paper",
                  "paper_delta"]
WEIGHT_DECAY_SHOWN = ["step", "weight_decay", "n", "mean", "std", "best", "diff_to_best", "low", "high", "verdict",
                      "seeds_added_after"]


def rs_runs(folder: Path) -> pd.DataFrame:
    from rsbkit.workbook.resnet_rs_studies import with_top1

    runs = with_top1(load_runs(folder))
    runs["active_s"] = [active_seconds(folder / name) for name in runs["name"]]
    return runs[[c for c in RS_RUN_COLUMNS if c in runs.columns]].sort_values("name").reset_index(drop=True)


def active_seconds(run_dir: Path, slow: float = 2.0) -> float:
    """A run's wall time less what its slowed epochs lost: an epoch over `slow` times the run's median epoch
    (the run was paused, or shared the two cores with other work) counts at the median. This is the figure
    the CPU-time statements quote; ``wall_s`` stays in the run tables as measured."""
    if not (run_dir / "result.json").is_file():
        return float("nan")  # not finished: no wall time yet
    wall = float(json.loads((run_dir / "result.json").read_text())["wall_s"])
    epochs = pd.Series([float(m["epoch_s"]) for m in read_metrics(run_dir / "metrics.csv")])
    median = float(epochs.median())
    return wall - float((epochs[epochs > slow * median] - median).sum())


def cpu_time(table: pd.DataFrame) -> str:
    """The CPU-time statement of a study: its runs' active time (:func:`active_seconds`) and wall time."""
    slowed = int((table["wall_s"] - table["active_s"] > 1).sum())
    return (f"CPU time: {table['active_s'].sum() / 60:.0f} min of training over {len(table)} runs on this 2-core "
            f"machine ({table['wall_s'].sum() / 60:.0f} min wall; {slowed} run{'s' if slowed != 1 else ''} had epochs slowed by pauses or "
            f"other work, counted at their run's median epoch)")


def additive_findings(runs: Path, out: Path) -> None:
    """11. ResNet-RS's additive study: the step table, what each step changes (built), the split, the waterfall."""
    from rsbkit.workbook.figures import additive_figure
    from rsbkit.workbook.resnet_rs_studies import additive_sentence, additive_split, additive_table, read_seed_stats, step_changes
    from rsbkit.workbook.sweep import load_sweep

    table = rs_runs(runs / "additive")
    changes = step_changes(load_sweep("params/sweeps/additive.yaml"))
    stats = read_seed_stats(str(out / "seed_stats.json"))
    result = additive_table(table, stats, changes)
    split = additive_split(result)
    table.to_csv(out / "additive_runs.csv", index=False)
    result.to_csv(out / "additive.csv", index=False)
    changes.to_csv(out / "additive_changes.csv", index=False)
    save_figure(additive_figure(result, split), out / "additive")
    print("\n## 11. additive study\n")
    print(markdown(result[ADDITIVE_SHOWN]))
    print(markdown(changes[["step", "recipe_changes", "model_changes", "params_m"]]))
    print("\n" + additive_sentence(split, result["n"]))
    live = additive_table(table.assign(top1=table["final_top1"]), stats)
    print("Read by the live model instead of the EMA: " + additive_sentence(additive_split(live), live["n"]))
    print(cpu_time(table))


def weight_decay_findings(runs: Path, out: Path) -> None:
    """12. weight decay against regularization: the cells, the best per row, the verdict, the heatmap."""
    from rsbkit.workbook.figures import weight_decay_figure
    from rsbkit.workbook.resnet_rs_studies import read_seed_stats, weight_decay_table, weight_decay_verdict

    table = rs_runs(runs / "weight_decay")
    stats = read_seed_stats(str(out / "seed_stats.json"))
    cells = weight_decay_table(table, stats)
    table.to_csv(out / "weight_decay_runs.csv", index=False)
    cells.to_csv(out / "weight_decay.csv", index=False)
    save_figure(weight_decay_figure(cells), out / "weight_decay")
    print("\n## 12. weight decay against regularization\n")
    print(markdown(weight_decay_pivot(cells)))
    recipe_wd = load_recipe("params/torchvision_demo.yaml").weight_decay
    print("\n" + weight_decay_verdict(cells, recipe_wd, stats))
    live = weight_decay_table(table.assign(top1=table["final_top1"]), stats)
    print(markdown(weight_decay_pivot(live)))
    print("Read by the live model instead of the EMA: " + weight_decay_verdict(live, recipe_wd, stats))
    print(cpu_time(table))


def regime_findings(runs: Path, out: Path) -> None:
    """14. regularization against the regime: the cells, the gains, the trends, the figure, the CPU time."""
    from rsbkit.workbook.figures import regime_figure
    from rsbkit.workbook.regime_studies import regime_display, regularization_regime_study, trend_sentence

    folder = runs / "regime_regularization"
    study = regularization_regime_study(runs=str(folder), seed_stats=str(out / "seed_stats.json"), out_dir=str(out))
    kept = with_active_time(folder, out / "regime_runs.csv")
    save_figure(regime_figure(study.gains), out / "regime")
    print("\n## 14. regularization against the regime\n")
    print(markdown(regime_display(study.cells, study.gains)))
    for trend in study.trends.to_dict("records"):
        print("\n" + trend_sentence(trend) + ".")
    print(cpu_time(kept))


def with_active_time(folder: Path, csv: Path) -> pd.DataFrame:
    """A study's run CSV with each run's active seconds (:func:`active_seconds`), written back."""
    kept = pd.read_csv(csv)
    kept["active_s"] = [active_seconds(folder / name) for name in kept["name"]]
    kept.to_csv(csv, index=False)
    return kept


def regime_shrinkage(folder: Path, runs: pd.DataFrame) -> dict:
    """Weight decay -> how much it alone shrinks the weights over the run (one run's recorded recipe each)."""
    from rsbkit.core.recipes import recipe_from_yaml
    from rsbkit.workbook.resnet_rs_studies import weight_decay_shrinkage

    out = {}
    for wd, group in runs.groupby("weight_decay"):
        run = group.iloc[0]
        out[float(wd)] = weight_decay_shrinkage(recipe_from_yaml(folder / run["name"] / "recipe.yaml"),
                                                int(run["train_images"]) // int(run["batch_size"]))
    return out


REGIME_WD_RUN_COLUMNS = ["name", "step_index", "step", "status", "seed", "model", "train_images", "batch_size", "epochs",
                         "opt", "lr_used", "weight_decay", "smoothing", "drop_path", "aa", "drop", "final_top1",
                         "train_top1", "fit_gap", "wall_s", "device_name", "code_version"]


def regime_weight_decay_findings(runs: Path, out: Path) -> None:
    """14, its second question: weight decay where it acts, with and without the regularizers."""
    from rsbkit.workbook.figures import weight_decay_gap_figure
    from rsbkit.workbook.regime_studies import (
        weight_decay_cells,
        weight_decay_display,
        weight_decay_effects,
        weight_decay_sentence,
    )
    from rsbkit.workbook.resnet_rs_studies import read_seed_stats

    folder = runs / "regime_weight_decay"
    table = load_runs(folder)
    kept = table[[c for c in REGIME_WD_RUN_COLUMNS if c in table.columns]].sort_values("name").reset_index(drop=True)
    kept["active_s"] = [active_seconds(folder / name) for name in kept["name"]]
    kept.to_csv(out / "regime_wd_runs.csv", index=False)
    stats = read_seed_stats(str(out / "seed_stats.json"))
    cells = weight_decay_cells(kept)
    effects = weight_decay_effects(cells, stats)
    shrinkage = regime_shrinkage(folder, kept)
    cells.to_csv(out / "regime_wd_cells.csv", index=False)
    effects.to_csv(out / "regime_wd_effects.csv", index=False)
    (out / "regime_wd_shrinkage.json").write_text(json.dumps({f"{k:g}": v for k, v in shrinkage.items()}, indent=1) + "\n")
    save_figure(weight_decay_gap_figure(effects), out / "regime_weight_decay")
    print("\n## 14, weight decay where it acts\n")
    print(markdown(weight_decay_display(cells, effects, shrinkage)))
    for row in effects[effects["step_index"].isna()].to_dict("records"):
        print("\n- " + weight_decay_sentence(row) + ".")
    print(cpu_time(kept))


def depth_width_label(row: dict) -> str:
    return f"{row['arm']} − {row['against']} on {int(row['train_images']):,} images"


def depth_width_findings(runs: Path, out: Path) -> None:
    """15. depth against width by regime: the cells, the differences, the trends, the figure, the CPU time."""
    from rsbkit.workbook.figures import depth_width_figure
    from rsbkit.workbook.regime_studies import depth_width_display, depth_width_study, difference_sentence, holm_sentence

    folder = runs / "regime_depth_width"
    study = depth_width_study(runs=str(folder), seed_stats=str(out / "seed_stats.json"), out_dir=str(out))
    kept = with_active_time(folder, out / "depth_width_runs.csv")
    save_figure(depth_width_figure(study.gains, base=study.base), out / "depth_width")
    print("\n## 15. depth against width by regime\n")
    print(markdown(depth_width_display(study.cells, study.gains, study.base)))
    print("\n" + holm_sentence(study.gains, depth_width_label) + ".")
    for trend in study.trends.to_dict("records"):
        print("\n- " + difference_sentence(trend) + ".")
    print(cpu_time(kept))


def procedure_findings(runs: Path, out: Path) -> None:
    """16. procedure against architecture: each model under both procedures, every pair's order and interaction,
    the figure, the CPU time."""
    from rsbkit.workbook.figures import procedure_figure
    from rsbkit.workbook.regime_studies import (
        holm_sentence,
        interaction_sentence,
        pairs_display,
        procedure_display,
        procedure_study,
        ranking_sentence,
    )

    folder = runs / "regime_procedure"
    study = procedure_study(runs=str(folder), seed_stats=str(out / "seed_stats.json"), out_dir=str(out))
    kept = with_active_time(folder, out / "procedure_runs.csv")
    save_figure(procedure_figure(study.cells, study.gains), out / "procedure")
    print("\n## 16. procedure against architecture\n")
    print(markdown(procedure_display(study.cells, study.gains)))
    print(markdown(pairs_display(study.pairs)))
    print("\n" + ranking_sentence(study.cells, study.pairs))
    for pair in study.pairs.to_dict("records"):
        print("\n- " + interaction_sentence(pair) + ".")
    for family, table, label in procedure_families(study):
        print(f"\n{family}: " + holm_sentence(table, label) + ".")
    print(cpu_time(kept))


def procedure_families(study) -> list:
    """Section 16's three families of comparisons, each read with Holm's correction: (name, table, row label)."""
    from rsbkit.workbook.regime_studies import pair_comparisons

    return [("each model between the procedures", study.gains, lambda r: r["model"]),
            ("every pair's order under each procedure", pair_comparisons(study.pairs),
             lambda r: f"{r['pair']} under {r['procedure']}"),
            ("the interactions", study.pairs, lambda r: f"{r['first']} − {r['second']}")]


def weight_decay_pivot(cells: pd.DataFrame) -> pd.DataFrame:
    """Rows: the regularizers in turn; columns: weight decay; each cell 'mean ± std', the row's best in bold."""
    cells = cells.assign(text=[f"{'**' if b else ''}{m:.2f} ± {s:.2f}{'**' if b else ''} ({n})"
                               for m, s, b, n in zip(cells["mean"], cells["std"], cells["best"], cells["n"])])
    pivot = cells.pivot(index=["step_index", "step"], columns="weight_decay", values="text")
    pivot = pivot[sorted(pivot.columns, reverse=True)]
    pivot.columns = [f"wd {c:g}" for c in pivot.columns]
    return pivot.reset_index().drop(columns="step_index").rename(columns={"step": "regularizers (cumulative)"})


TEACHER_RUN_COLUMNS = ["variant", "changes", "run", "seed", "model", "teacher", "kd_target", "unlabelled", "pseudo_ratio",
                       "final_top1", "best_top1", "wall_s", "active_s", "code_version"]


def teacher_findings(runs: Path, out: Path) -> None:
    """13. teachers: the teacher notebook's arms against the labelled-only reference, its figure, each run, and
    the teachers' own runs."""
    folder = runs / "teacher"
    table = pd.read_csv(folder / "teacher.csv")
    pooled = pd.read_csv(folder / "teacher_runs.csv")
    teachers = load_runs(folder / "teachers")
    teachers = teachers[[c for c in RUN_COLUMNS if c in teachers.columns]].sort_values("name")
    teachers["active_s"] = [active_seconds(folder / "teachers" / n) for n in teachers["name"]]
    pooled["active_s"] = [active_seconds(folder / Path(r).parent.name / Path(r).name) for r in pooled["run"]]
    pooled = pooled[[c for c in TEACHER_RUN_COLUMNS if c in pooled.columns]]
    table.to_csv(out / "teacher.csv", index=False)
    pooled.to_csv(out / "teacher_runs.csv", index=False)
    teachers.to_csv(out / "teacher_teachers.csv", index=False)
    shutil.copy(folder / "teacher.png", out / "teacher.png")
    print("\n## 13. teachers\n")
    print(comparison_markdown(table))
    print(markdown(student_table(table)))
    print("\n" + soft_against_hard(table, pooled))
    print(markdown(teachers[["name", "model", "final_top1", "wall_s"]]))
    print(cpu_time(pd.concat([teachers, pooled])))


def soft_against_hard(table: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The soft Noisy Student against the hard one, with the band compare_to gives (the reference's seed spread and
    both arms' own)."""
    from rsbkit.workbook.study_stats import interval
    from rsbkit.workbook.teacher_studies import NOISY_STUDENT

    hard = f"{NOISY_STUDENT}, hard pseudo-labels"
    stats = seed_stats(runs.loc[runs["variant"] == table["variant"].iloc[0], "final_top1"])
    row = compare_to(table[["variant", "mean", "std", "n"]], "variant", hard, stats).set_index("variant").loc[
        f"{NOISY_STUDENT}, soft pseudo-labels"]
    return f"Soft against hard pseudo-labels: {interval(SimpleNamespace(**row.to_dict()), against='the hard ones')}."


def student_table(table: pd.DataFrame) -> pd.DataFrame:
    """The Noisy Students against the steps control and against their own teacher (findings section 13)."""
    students = table[table["control_diff"].notna()]
    return pd.DataFrame({
        "student": students["variant"], "top-1 (mean)": students["mean"],
        "against the steps control": [f"{d:+.2f}" for d in students["control_diff"]],
        "95% interval": [f"{d - b:+.2f} .. {d + b:+.2f}" for d, b in zip(students["control_diff"], students["control_band"])],
        "verdict": students["control_verdict"],
        "its teacher": students["teacher_top1"],
        "student − teacher": [f"{d:+.2f}" for d in students["mean"] - students["teacher_top1"]]})


def pseudo_label_findings(teacher_run: str, out: Path) -> None:
    """13. How right the labelling teacher's pseudo-labels are, against the pool's true labels (which the students
    never see): overall, per class and by confidence, into teacher_pseudo_labels.json. `teacher_run` is a run folder
    of the labelling teacher's recipe and seed (the study's own was not kept; its top-1 is written beside)."""
    from rsbkit.core.pseudo_labels import label_images, pseudo_label_quality, unlabelled_images, unused_pool
    from rsbkit.core.teacher import load_teacher

    pool, source = unlabelled_images("fashion-mnist-unused")
    _, labels, unused = unused_pool()
    teacher = load_teacher(teacher_run, num_classes=10)
    quality = pseudo_label_quality(label_images(teacher, pool), labels[unused])
    result = json.loads((Path(teacher_run) / "result.json").read_text())
    record = dict(teacher=teacher_run, teacher_final_top1=result["final_top1"], teacher_code_version=result.get("code_version"),
                  teacher_seed=result["seed"], pool=source, **quality)
    (out / "teacher_pseudo_labels.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def reread(out: Path) -> None:
    """Every study table of `out` recomputed from the run CSVs committed beside it by the library's current rule
    (rsbkit.workbook.study_stats: Student-t intervals, three verdicts), written back; prints each verdict that
    changed from the table as it was. For a change of rule, when the run folders are not at hand."""
    from rsbkit.workbook.figures import additive_figure, weight_decay_figure
    from rsbkit.workbook.resnet_rs_studies import additive_split, additive_table, read_seed_stats, weight_decay_table
    from rsbkit.workbook.sweep import load_sweep
    from rsbkit.workbook.teacher_studies import against_control

    changed = []
    seed = json.loads((out / "seed_stats.json").read_text())  # its noise table, by the current rule
    seeds = seed_stats(seed["values"])
    seed.update(noise_band_1=seeds.noise_band(1), noise_table=noise_table(seeds).to_dict("records"))
    (out / "seed_stats.json").write_text(json.dumps(seed, indent=2) + "\n")

    def note(name: str, label: str, before: bool, verdict: str, late: bool = False) -> None:
        if before != (verdict == "beyond noise") or verdict == "cannot tell at this number of seeds":
            changed.append(f"{name}: {label}: {'beyond noise' if before else 'within noise'} -> {verdict}"
                           + (" (seeds added after results)" if late else ""))

    for name in ("comparison", "variants", "teacher"):
        table, pooled = pd.read_csv(out / f"{name}.csv"), pd.read_csv(out / f"{name}_runs.csv")
        again, reference = compared_again(table, pooled)
        if name == "teacher":
            control = next(v for v in again["variant"] if v.startswith("steps control"))
            again = against_control(again, reference, control)
            for old, new in zip(table.itertuples(), again.itertuples()):
                if isinstance(new.control_verdict, str):
                    note(name, f"{new.variant} against the steps control", bool(old.beyond_control), new.control_verdict)
        for old, new in zip(table.iloc[1:].itertuples(), again.iloc[1:].itertuples()):
            note(name, new.variant, bool(old.beyond_noise), new.verdict)
        again.to_csv(out / f"{name}.csv", index=False)
        what = "teachers' students against the labelled-only recipe" if name == "teacher" else f"variants against {again['variant'][0]}"
        runs = pooled.assign(name=[Path(r).name for r in pooled["run"]])  # the figure labels a dot by its run
        save_figure(variants_figure(runs, again, title=f"final_top1: {what}"), out / name)
    stats = read_seed_stats(str(out / "seed_stats.json"))

    def marked(name: str) -> pd.DataFrame:  # the runs, with the steps whose seeds came after results as the sweep file says
        late = {p.step["name"] for p in load_sweep(f"params/sweeps/{name}.yaml").points if p.step.get("seeds_added_after")}
        runs = pd.read_csv(out / f"{name}_runs.csv")
        runs["seeds_added_after"] = runs["step"].isin(late)
        runs.to_csv(out / f"{name}_runs.csv", index=False)
        return runs

    old = pd.read_csv(out / "additive.csv")
    again = additive_table(marked("additive"), stats, pd.read_csv(out / "additive_changes.csv"))
    for o, n in zip(old.iloc[1:].itertuples(), again.iloc[1:].itertuples()):
        note("additive", n.step, bool(o.beyond_noise), n.verdict, n.seeds_added_after)
    again.to_csv(out / "additive.csv", index=False)
    save_figure(additive_figure(again, additive_split(again)), out / "additive")
    old = pd.read_csv(out / "weight_decay.csv")
    again = weight_decay_table(marked("weight_decay"), stats)
    for o, n in zip(old.itertuples(), again.itertuples()):
        if not n.best:
            note("weight_decay", f"{n.step}, wd {n.weight_decay:g} against the row's best", bool(o.worse_than_best), n.verdict,
                 n.seeds_added_after)
    again.to_csv(out / "weight_decay.csv", index=False)
    save_figure(weight_decay_figure(again), out / "weight_decay")
    old = pd.read_csv(out / "fixres_best.csv")
    again = best_test_resolution(pd.read_csv(out / "fixres_resolution_runs.csv"), FIXRES_TRAIN_RES)
    for o, n in zip(old.itertuples(), again.itertuples()):
        note("fixres_best", f"crop {n.crop_pct}", bool(o.beyond_noise), "beyond noise" if n.beyond_noise else "within noise")
    again.to_csv(out / "fixres_best.csv", index=False)
    print("verdicts that changed or cannot be told:\n" + "\n".join(changed))


if __name__ == "__main__":
    main()
