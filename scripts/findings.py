"""Gather the demo-scale studies into findings/: one CSV row per run, the study tables, the figures.

Run after the studies (findings/README.md has the commands; they write under runs/sweeps/):

    .venv/bin/python scripts/findings.py [--runs runs/sweeps] [--out findings]

Writes, per study, the run table from rsbkit.workbook.table.load_runs (every number in
findings/README.md traces back to a run folder named in it), the study's own table
(seed_stats.json, comparison.csv, resolution.csv) and its figure as PNG, and prints
the Markdown tables that findings/README.md quotes. Checkpoints stay in runs/.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from rsbkit.workbook.figures import resolution_figure, save_figure
from rsbkit.workbook.studies import group_stats
from rsbkit.workbook.table import load_runs

RUN_COLUMNS = ["name", "recipe", "status", "seed", "model", "epochs", "batch_size", "opt", "lr", "lr_used", "weight_decay",
               "sched", "loss", "aa", "mixup", "cutmix", "aug_repeats", "train_res", "test_res", "crop_pct", "data",
               "final_top1", "best_top1", "best_epoch", "final_top5", "wall_s", "imgs_per_s", "device_name", "code_version"]
VARIANT_SWEEPS = ("loss_ce", "procedure_torchvision", "repeats", "lr")  # the compare notebook's default sweeps


def run_table(folder: Path) -> pd.DataFrame:
    """The sweep's runs, one row each, the columns a reader needs (run = the point's folder name)."""
    table = load_runs(folder)
    return table[[c for c in RUN_COLUMNS if c in table.columns]].sort_values("name").reset_index(drop=True)


def markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A DataFrame as a Markdown table, floats to `digits` decimals."""
    def cell(v):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


COMPARISON_HEADER = "| variant | final top-1 (%), mean ± std | seeds | range | difference | noise band (95%) | more than noise |"


def comparison_row(row) -> str:
    """One variant as findings/README.md shows it (tests/workbook/test_findings.py reads these rows back)."""
    first = row.variant.endswith("(reference)")
    return (f"| {row.variant} | {row.mean:.2f} ± {row.std:.2f} | {row.n} | {row.min:.2f} .. {row.max:.2f} | "
            + ("| | |" if first else f"{row.diff:+.2f} | ±{row.band:.2f} | {'yes' if row.beyond_noise else 'no'} |"))


def comparison_markdown(table: pd.DataFrame) -> str:
    return "\n".join([COMPARISON_HEADER, "|---|---|---|---|---|---|---|"] + [comparison_row(r) for r in table.itertuples()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/sweeps", help="the folder the sweep files write into")
    parser.add_argument("--out", default="findings")
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(exist_ok=True)

    # 1. seed variance: the seed_variance notebook's statistics and figure
    seeds = run_table(runs / "seeds")
    seeds.to_csv(out / "seeds_runs.csv", index=False)
    shutil.copy(runs / "seeds" / "seed_stats.json", out / "seed_stats.json")
    shutil.copy(runs / "seeds" / "seeds.png", out / "seeds.png")
    stats = json.loads((out / "seed_stats.json").read_text())
    print("## 1. seeds\n")
    print(markdown(seeds[["name", "final_top1", "best_top1", "best_epoch", "wall_s"]]))
    print(f"\nn {stats['n']}, mean {stats['mean']:.2f}, std {stats['std']:.2f}, range {stats['min']:.2f} .. {stats['max']:.2f}")
    print(markdown(pd.DataFrame(stats["noise_table"])))

    # 2, 3, 5. variants against the seeds: the compare notebook's table and figure, and each sweep's runs
    for name in VARIANT_SWEEPS:
        run_table(runs / name).to_csv(out / f"{name}_runs.csv", index=False)
    comparison = pd.read_csv(runs / "comparison" / "comparison.csv")
    comparison.to_csv(out / "comparison.csv", index=False)
    shutil.copy(runs / "comparison" / "comparison.png", out / "comparison.png")
    pooled = pd.read_csv(runs / "comparison" / "comparison_runs.csv")
    pooled[["variant", "run", "recipe", "seed", "final_top1", "best_top1"]].to_csv(out / "comparison_runs.csv", index=False)
    print("\n## comparison (final top-1; the rows findings/README.md quotes)\n")
    print(comparison_markdown(comparison))

    # 4. test resolution: evaluate_resolution on each seed run, pooled over the seeds
    per_run = []
    for point in sorted((runs / "resolution").glob("source=*")):
        if (point / "resolution.csv").is_file():
            source = json.loads((point / "sweep_point.json").read_text())["parameters"]["source"]
            per_run.append(pd.read_csv(point / "resolution.csv").assign(run=Path(source).name))
    rows = pd.concat(per_run, ignore_index=True)
    rows.to_csv(out / "resolution_runs.csv", index=False)
    table = group_stats(rows, ["test_res", "crop_pct"], "top1")
    table.to_csv(out / "resolution.csv", index=False)
    print(f"\n## test resolution (mean top-1 over {len(per_run)} seed runs; rows: test px, columns: crop ratio)\n")
    pivot = table.pivot(index="test_res", columns="crop_pct", values="mean").reset_index()
    pivot.columns = ["test px"] + [f"crop {c:g}" for c in pivot.columns[1:]]
    print(markdown(pivot))
    save_figure(resolution_figure(table.rename(columns={"mean": "top1"}), train_res=int(seeds["train_res"].iloc[0]),
                                  title=f"demo: top-1 by test resolution, mean of {len(per_run)} seed runs"),
                out / "resolution")


if __name__ == "__main__":
    main()
