"""What the study notebooks call (seed_variance, ablation, compare, report): run or read a sweep,
then the statistics of rsbkit.workbook.study_stats over its runs, saved beside them as JSON and CSV.
Like the procedures, each takes a notebook's plain parameters and fails early with a clear message."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import RsbkitError, RunError
from ..core.paths import checkout_path, find_path, output_path
from ..core.recipes import EXECUTION_FIELDS, recipe_fields
from ..core.runs import atomic_write_text, stamped_folder
from .study_stats import (
    MARGIN_SDS,
    SeedStats,
    ablation_table,
    compare_labelled,
    compare_means,
    compare_variants,
    interval,
    noise_table,
    seed_stats,
    seeds_needed,
)
from .sweep import load_sweep, run_and_load
from .table import load_runs
from .train_and_evaluate import none_if_empty, out_folder

# the studies' smoke scale: at most this many train / test images a run, a look at a study's shape in minutes
SMOKE_LIMITS = dict(limit_train=512, limit_val=256)


def sweep_runs(sweep: Optional[str], runs: Optional[str], jobs: int = 1):
    """Run a sweep file (completed points are reused) and/or read a folder of runs: (DataFrame, folder)."""

    if none_if_empty(runs):
        return load_runs(runs), Path(runs)
    if not none_if_empty(sweep):
        raise RunError("give a sweep file (sweep=...) to run, or a folder of finished runs (runs=...)")
    spec = load_sweep(sweep)
    return run_and_load(spec, jobs=jobs), spec.out


@dataclass
class SeedStudy:
    runs: Any  # DataFrame of the runs
    stats: Any  # studies.SeedStats
    metric: str
    out_dir: Path

    @property
    def values(self) -> list[float]:
        done = self.runs[self.runs["status"] == "completed"]
        return [float(v) for v in done[self.metric]]

    def summary(self) -> str:
        s = self.stats
        return (f"{s.n} seeds: {self.metric} {s.mean:.2f} +- {s.std:.2f} (std), range {s.min:.2f} - {s.max:.2f} "
                f"({s.range:.2f} points). Two single runs must differ by more than {s.noise_band(1):.2f} points, "
                f"two means of 5 seeds by more than {s.noise_band(5):.2f}, before the difference is beyond seed "
                f"noise (two-sided 95%, Student's t with {s.n - 1} degrees of freedom: the spread is itself measured "
                f"from {s.n} seeds).")


def seed_study(*, sweep: Optional[str] = None, runs: Optional[str] = None, jobs: int = 1,
               metric: str = "final_top1", out_dir: Optional[str] = None) -> SeedStudy:
    """N seeds of one recipe: statistics written to ``seed_stats.json`` for the ablation to use."""

    table, folder = sweep_runs(sweep, runs, jobs)
    if metric not in table.columns:
        raise RunError(f"metric {metric!r} is not a run column; use final_top1, best_top1 or final_top5")
    failed = table[table["status"] != "completed"]
    if len(failed):
        print(f"{len(failed)} run(s) not completed are left out: {', '.join(failed['name'])}")
    done = table[table["status"] == "completed"]
    stats = seed_stats(done[metric])
    folder = out_folder(out_dir, folder)
    record = dict(metric=metric, recipe=_sole(done, "recipe"), data=_sole(done, "data"), n=stats.n,
                  mean=stats.mean, std=stats.std, min=stats.min, max=stats.max,
                  seeds=[int(s) for s in done["seed"]], values=[float(v) for v in done[metric]],
                  noise_band_1=stats.noise_band(1), noise_table=noise_table(stats).to_dict("records"))
    atomic_write_text(folder / "seed_stats.json", json.dumps(record, indent=2) + "\n")
    return SeedStudy(table, stats, metric, folder)


def _sole(table, column: str) -> Optional[str]:
    """The one value a column holds over every row (a seed study's recipe, its dataset), else None."""
    values = set(table[column].dropna().astype(str)) if column in table.columns else set()
    return values.pop() if len(values) == 1 else None


COMMITTED_SEED_STATS = checkout_path("findings", "seed_stats.json")  # the demo seed study (None when installed)
# where the ablation looks for a seed study of its own recipe: the seed sweep's folder
# (params/sweeps/seeds.yaml), then the statistics committed with the findings (a source checkout)
SEED_STATS_PLACES = tuple(p for p in (Path("runs") / "sweeps" / "seeds" / "seed_stats.json", COMMITTED_SEED_STATS) if p)


def find_seed_stats(recipe: Optional[str], data: Optional[str], metric: str = "final_top1") -> Optional[Path]:
    """A seed study's ``seed_stats.json`` measured with this recipe, dataset and metric (None if none is found):
    a noise band is only meaningful for the recipe and data whose seeds it was measured on."""

    for path in map(find_path, SEED_STATS_PLACES):
        if path.is_file():
            rec = json.loads(path.read_text())
            if (rec.get("recipe"), rec.get("data"), rec.get("metric")) == (recipe, data, metric) and recipe is not None:
                return path
    return None


def load_seed_stats(seed_stats_json: Optional[str]) -> Optional[SeedStats]:
    """A seed study's statistics from its ``seed_stats.json`` (None when not given)."""
    if not none_if_empty(seed_stats_json):
        return None
    path = find_path(seed_stats_json)
    if not path.is_file():
        raise RunError(f"seed_stats {path} does not exist; run notebooks/studies/seed_variance.ipynb first, or leave it empty")
    return seed_stats_of(json.loads(path.read_text()))


def seed_stats_of(record: dict[str, Any]) -> SeedStats:
    """The :class:`SeedStats` a ``seed_stats.json`` record holds."""
    return SeedStats(record["n"], record["mean"], record["std"], record["min"], record["max"])


def trial_seeds(diff: float, seed_stats_json: Optional[str] = None) -> str:
    """How many seeds a real comparison of an explorer's trial with its reference would need (``seeds`` of
    :func:`rsbkit.explore.trial.one_seed_text`): no seed study is measured at a trial's scale, so the committed
    demo seed study (`seed_stats_json`, default ``findings/seed_stats.json``) stands in, and the text says so: its
    spread is one run's at the demo's full scale, and a shorter run's is likely larger, so the counts are the least."""
    path = find_path(seed_stats_json) if seed_stats_json else COMMITTED_SEED_STATS
    if path is None or not Path(path).is_file():
        return ("How many seeds a real comparison needs: no seed study is found (findings/seed_stats.json); "
                "notebooks/studies/seed_variance.ipynb measures one run's spread, and compare.ipynb reads differences against it.")
    rec = json.loads(Path(path).read_text())  # its statistics, and the recipe and data named in the text
    stats = seed_stats_of(rec)
    band = compare_means(0.0, 1, 1, seed=stats).band
    margin = MARGIN_SDS * stats.std
    need, least = seeds_needed(stats, diff), seeds_needed(stats, margin)
    size = (f"a true difference of {abs(diff):.2f} points is found (80% power) with {need} seed{'s' * (need > 1)} per recipe"
            if need
            else "the two runs end level, which says nothing either way" if abs(diff) < 0.005
            else f"a difference of {abs(diff):.2f} points is too small to find with any practical number of seeds")
    where = f"{Path(path).parent.name}/{Path(path).name}"
    return (f"How many seeds a real comparison needs, with the seed study of the {rec.get('recipe')} recipe on the "
            f"{rec.get('data')} data as the stand-in ({stats.n} seeds at its full scale, one run's spread {stats.std:.2f} "
            f"points; {where}): two single "
            f"runs must differ by more than {band:.2f} points to be beyond noise; {size}; the smallest difference worth "
            f"detecting ({margin:.2f} points, {MARGIN_SDS:g}x one run's spread) needs {least}. This scale's spread is not "
            "measured and is likely larger (fewer epochs and images), so these are the fewest; "
            "notebooks/studies/seed_variance.ipynb at this scale gives the real count.")


def read_seed_stats(seed_stats: Optional[str], runs: Any = None, metric: str = "final_top1") -> Optional[SeedStats]:
    """A seed study's statistics (``seed_stats.json``); empty: none; "auto": what it means everywhere
    (:func:`rsbkit.workbook.run_studies.find_seed_stats`), a seed study of the same recipe, data and metric as the
    `runs`' first step, else none (the groups' own spreads then make the bands)."""
    if seed_stats == "auto":
        found = None
        if runs is not None and len(runs) and {"recipe", "data"} <= set(runs.columns):
            base = runs.sort_values("step_index").iloc[0] if "step_index" in runs.columns else runs.iloc[0]
            found = find_seed_stats(str(base["recipe"]), str(base["data"]), metric)
        seed_stats = str(found) if found else None
    return load_seed_stats(seed_stats)


def ablation_study(*, sweep: Optional[str] = None, runs: Optional[str] = None, jobs: int = 1,
                   reference: Optional[dict[str, Any]] = None, seed_stats: Optional[str] = None,
                   metric: str = "final_top1", out_dir: Optional[str] = None):
    """The Table 6 grid from a sweep or finished runs: (table, noise band or None, folder).

    ``seed_stats="auto"`` uses a seed study of the same recipe, dataset and metric when one is found
    (:func:`find_seed_stats`: the seed sweep's folder, else the committed findings); a path uses that
    file; empty uses none. ``table.attrs['noise_source']`` says which file the band came from.
    """

    table, folder = sweep_runs(sweep, runs, jobs)
    if seed_stats == "auto":
        found = find_seed_stats(_sole(table, "recipe"), _sole(table, "data"), metric)
        seed_stats = str(found) if found else None
    stats = load_seed_stats(seed_stats)
    noise = None if stats is None else stats.noise_band(1)
    result = ablation_table(table, reference or {}, metric=metric, noise=noise, stats=stats)
    result.attrs["noise_source"] = seed_stats or None
    folder = out_folder(out_dir, folder)
    atomic_write_text(folder / "ablation.csv", result.to_csv(index=False))
    return result, noise, folder


@dataclass
class ComparisonStudy:
    runs: Any  # DataFrame: the reference's seeds and every variant's runs, labelled in 'variant'
    table: Any  # DataFrame: one row per variant (mean, std, n, min, max, and study_stats.compare_to's columns)
    stats: Any  # studies.SeedStats of the reference's seeds
    metric: str
    out_dir: Path

    def summary(self) -> str:
        lines = []
        for row in self.table.iloc[1:].itertuples(index=False):
            lines.append(f"{row.variant}: {row.mean:.2f} +- {row.std:.2f} over {row.n} seeds, {interval(row)}")
        ref = self.table.iloc[0]
        return "\n".join([f"{ref.variant}: {ref['mean']:.2f} +- {ref['std']:.2f} over {ref.n} seeds"] + lines)


def _runs_of(source: str, jobs: int = 1):
    """A sweep file (run, completed points reused) or a run folder or folder of runs (read): (runs, folder)."""
    if str(source).endswith((".yaml", ".yml")):
        return sweep_runs(source, None, jobs)
    return sweep_runs(None, source, jobs)


def comparison_study(*, reference: str, sweeps: list, jobs: int = 1, metric: str = "final_top1",
                     out_dir: Optional[str] = None, runs_csv: Optional[str] = None) -> ComparisonStudy:
    """Variants of a recipe (each a sweep file, seeds included) against that recipe's seed sweep.

    `reference` and each of `sweeps` may also be a run folder or a folder of finished runs, read and not run: an
    explorer's trials (``runs/explore/...``) beside their reference runs at the same scale, for example, once each
    has the seeds a comparison needs (the reference at least 2).

    Every sweep runs through the sweep runner (completed points are reused). Writes ``comparison.csv``
    (one row per variant) and ``comparison_runs.csv`` (one row per run) to `out_dir` (empty: the
    reference sweep's folder's parent / comparison).

    `runs_csv`: a ``comparison_runs.csv`` this study wrote (``findings/comparison_runs.csv``): the table is
    recomputed from its runs, and nothing trains; `reference` and `sweeps` are then not read.
    """

    if none_if_empty(runs_csv):
        import pandas as pd

        path = find_path(runs_csv)
        if not path.is_file():
            raise RunError(f"runs_csv {path} does not exist; give a comparison_runs.csv this notebook wrote "
                           "(findings/comparison_runs.csv in a checkout), or leave it empty to run the sweeps")
        runs = pd.read_csv(path)
        if "name" not in runs and "run" in runs:  # the committed table keeps the run folders, not their names
            runs["name"] = [Path(str(r)).name for r in runs["run"]]
        if "status" in runs:
            runs = runs[runs["status"] == "completed"]
        table, stats = compare_labelled(runs, metric)
        folder = out_folder(out_dir, output_path("runs/comparison"))  # never beside the CSV: findings/ stays as committed
        atomic_write_text(folder / "comparison.csv", table.to_csv(index=False))
        return ComparisonStudy(runs, table, stats, metric, folder)
    if isinstance(sweeps, str):
        sweeps = [sweeps]
    if not sweeps:
        raise RunError("give the variants' sweep files: sweeps=[params/sweeps/loss_ce.yaml, ...]")
    ref_runs, ref_folder = _runs_of(reference, jobs)
    import pandas as pd

    variants = pd.concat([_runs_of(s, jobs)[0] for s in sweeps], ignore_index=True)
    if metric not in variants.columns:
        raise RunError(f"metric {metric!r} is not a run column; use final_top1, best_top1 or final_top5")
    fields = [f for f in recipe_fields() if f in variants.columns and f in ref_runs.columns]
    runs, table, stats = compare_variants(variants, ref_runs, fields, metric)
    folder = out_folder(out_dir, ref_folder.parent / "comparison")
    atomic_write_text(folder / "comparison.csv", table.to_csv(index=False))
    atomic_write_text(folder / "comparison_runs.csv", runs.to_csv(index=False))
    return ComparisonStudy(runs, table, stats, metric, folder)


# the report's table on a page: what tells runs apart and how they did; report.csv holds every column (the folder,
# speed, memory, device: the full path alone made the table wider than a page and its HTML export cut it short)
REPORT_COLUMNS = ("name", "recipe", "status", "model", "epochs_done", "train_images", "loss", "lr", "seed",
                  "final_top1", "best_top1", "wall_s")


# What a report does not compare when it groups runs: who and where, results and costs, the seed (groups pool
# seeds), how a run executed (EXECUTION_FIELDS), sweep parameters (their recipe fields are columns already).
NOT_COMPARED = {"run", "name", "source", "recipe", "status", "error", "seed", "code_version", "device_name", "wall_s",
                "imgs_per_s", "peak_mem_mb", "num_skipped", "final_top1", "best_top1", "best_epoch", "final_top5",
                "final_loss", "warnings", "lr_used", "final_ema_top1", "train_top1", "fit_gap", *EXECUTION_FIELDS}


def unlike_columns(table, group_by: list, allow: list) -> dict[str, list]:
    """The columns in which runs of one group differ, other than `group_by`, `allow` and :data:`NOT_COMPARED`:
    {column: its values}. Runs that differ in data size, epochs done or a recipe field are not repeats of one thing."""
    out: dict[str, list] = {}
    skip = set(group_by) | set(allow) | NOT_COMPARED
    for column in table.columns:
        if column in skip or column.startswith("param."):
            continue
        for _, group in (table.groupby(group_by) if group_by else [(None, table)]):
            values = group[column].astype(str)
            if values.nunique() > 1:
                out[column] = sorted(set(values))
                break
    return out


def _listed(differ: dict[str, list]) -> str:
    """Columns and the values runs differ in, as a clause: ``epochs: 2, 10; train_images: 2000, 12000``."""
    return "; ".join(f"{c}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}" for c, v in differ.items())


def _refuse_to_pool(table, group_by: list, allow_unlike: list) -> None:
    differ = unlike_columns(table, group_by, allow_unlike)
    if differ:
        listed = _listed(differ)
        raise RunError(f"the runs grouped by {group_by} also differ in {listed}. A group's mean would mix unlike runs: "
                       f"add those columns to group_by, choose runs that agree, or pass allow_unlike="
                       f"{sorted(differ)} to pool them anyway")


def report(*, runs: list, metric: str = "final_top1", group_by: Optional[list] = None, out_dir: Optional[str] = None,
           allow_unlike: Optional[list] = None):
    """Gather runs into (runs table, per-group summary or None, folder); writes report.csv (every column; the table
    is shown through :func:`report_view`). Grouping pools only runs
    that agree on everything but the grouped columns (and the seed): otherwise it refuses, naming each column that
    differs and its values; `allow_unlike` lists the columns to pool over anyway. A refusal writes nothing (no
    report folder is made); :func:`report_study` turns it into one line for the notebook."""

    if isinstance(runs, str):
        runs = [runs]
    table = load_runs(runs)
    if table.empty:
        raise RunError(f"no runs found under {runs}")
    group_by, allow_unlike = list(group_by or []), list(allow_unlike or [])
    unknown = [g for g in group_by + allow_unlike + [metric] if g not in table.columns]
    if unknown:
        raise RunError(f"{unknown} are not run columns; choose from {', '.join(map(str, table.columns))}")
    groups = None
    if group_by:
        done = table[table["status"] == "completed"]
        _refuse_to_pool(done, group_by, allow_unlike)
        groups = done.groupby(group_by)[metric].agg(["count", "mean", "std", "min", "max"]).reset_index()
    folder = out_folder(out_dir, stamped_folder("report"))  # only once the report stands
    atomic_write_text(folder / "report.csv", table.to_csv(index=False))
    return table, groups, folder


# what makes runs unlike even when nothing is grouped: the data, its size and the training length
SCALE_COLUMNS = ("data", "train_images", "val_images", "epochs", "epochs_done")


def unlike_scale(table) -> dict[str, list]:
    """The scale columns (:data:`SCALE_COLUMNS`) in which the completed runs of `table` differ: {column: values}."""
    done = table[table["status"] == "completed"] if "status" in table.columns else table
    out = {}
    for column in SCALE_COLUMNS:
        if column in done.columns and done[column].astype(str).nunique() > 1:
            out[column] = sorted(set(done[column].astype(str)))
    return out


@dataclass
class Report:
    """What report.ipynb shows: the runs, the groups, the folder it wrote (None when refused), the refusal (one
    line, or None), and the scale columns in which the runs differ (:func:`unlike_scale`)."""

    table: Any  # DataFrame of every run (None when even the runs could not be read)
    groups: Any  # DataFrame per group, or None
    folder: Optional[Path]
    refused: Optional[str] = None
    unlike: Optional[dict] = None

    def summary(self) -> str:
        if self.refused:
            return f"report refused (nothing written): {self.refused}"
        text = f"{len(self.table)} runs; report.csv in {self.folder}"
        if self.unlike:
            text += (f". Unlike runs: they differ in {_listed(self.unlike)}, so their numbers compare only in kind (a shortened "
                     "run is not a repeat of a full one); group_by those columns, or choose runs at one scale")
        return text

    def view(self):
        return None if self.table is None else report_view(self.table)

    @property
    def completed(self):
        return self.table[self.table["status"] == "completed"]


def report_study(*, runs: list, metric: str = "final_top1", group_by: Optional[list] = None,
                 out_dir: Optional[str] = None, allow_unlike: Optional[list] = None) -> Report:
    """:func:`report` for a notebook: a refusal (no runs, unknown columns, unlike runs grouped) comes back as one line
    in ``refused``, not a traceback that stops Run All, and writes nothing; the runs' table is kept when it could be
    read. Ungrouped runs that differ in scale (data, size, epochs) are named in ``unlike``."""
    try:
        table, groups, folder = report(runs=runs, metric=metric, group_by=group_by, out_dir=out_dir,
                                       allow_unlike=allow_unlike)
    except RunError as exc:
        try:
            table = load_runs([runs] if isinstance(runs, str) else runs)
        except RsbkitError:
            table = None
        return Report(None if table is None or table.empty else table, None, None, refused=str(exc))
    grouped = set(group_by or []) | set(allow_unlike or [])
    unlike = {c: v for c, v in unlike_scale(table).items() if c not in grouped}
    return Report(table, groups, folder, unlike=unlike or None)


def report_view(table):
    """The report's table as a page shows it: :data:`REPORT_COLUMNS` (report.csv holds the rest)."""
    return table[[c for c in REPORT_COLUMNS if c in table.columns]]
