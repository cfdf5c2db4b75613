"""ResNet-RS's two training studies (Bello et al. 2021, "Revisiting ResNets"), run and read:

- the additive study (its Table 1): a baseline improved one change at a time, each step the one before plus
  its own change (a cumulative sweep, ``steps:``), laid out as the paper's table, each step's delta with its
  noise band, and the split of the gain between training and architecture changes;
- weight decay against regularization (its Table 2): regularizers added in turn (rows) times weight decay
  (columns), the best weight decay per row, and whether it falls as regularizers are added.

What notebooks/studies/additive.ipynb and weight_decay.ipynb call. A run that trained an EMA of its weights is
read by the EMA's top-1 (as ResNet-RS reports its EMA rows); every other run by its final top-1.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import yaml

from ..core.errors import RunError
from ..core.models import create_model
from ..core.optim import lr_schedule
from ..core.paths import checkout_path, find_path
from ..core.recipes import batch_lr, load_recipe
from ..core.runs import atomic_write_text
from .run_studies import SMOKE_LIMITS, read_seed_stats
from .study_stats import COMPARISON_COLUMNS, SeedStats, comparison_row, interval, reference_row
from .sweep import Sweep, expand, load_sweep, run_and_load
from .table import load_runs
from .train_and_evaluate import none_if_empty, out_folder

ARCHITECTURE_FIELDS = ("model", "attn_layer", "width")  # a step changing one of these changes the architecture
SCALES = {  # scale -> what it does to every point of the sweep file
    "demo": "the sweep file as written",
    "smoke": f"1 epoch in 10 (at least 1) on at most {SMOKE_LIMITS['limit_train']} train / {SMOKE_LIMITS['limit_val']} "
             "test images, into <out>-smoke: a look at the study's shape in minutes, not a result",
}
FINDINGS = checkout_path("findings")  # a source checkout's committed studies (None for an installed rsbkit)


# ------------------------------------------------------------------ the sweep at a scale


def scaled_sweep(path: str, *, seeds: Optional[list] = None, scale: str = "demo") -> Sweep:
    """The sweep file at `path`, with `seeds` in place of its own and of its steps' (when given) and at `scale`
    (:data:`SCALES`)."""
    if scale not in SCALES:
        raise RunError(f"scale={scale!r}: choose {' or '.join(SCALES)} ({'; '.join(f'{k}: {v}' for k, v in SCALES.items())})")
    sweep = load_sweep(path)  # validates the file as written
    if not seeds and scale == "demo":
        return sweep
    spec = yaml.safe_load(find_path(path).read_text())
    seeded = [p for p in spec.get("points") or [] if isinstance(p, dict) and "seed" in p]
    if seeded and scale == "smoke":
        raise RunError(f"scale=smoke: {path}'s points set their own data sizes and seeds, which a smoke scale would "
                       "erase; for a first look run it with seeds=[0] (every cell once), or read finished runs")
    if seeds and seeded:  # points that carry their seed (run seed by seed): every cell once per seed asked, in turn
        cells = list({json.dumps({k: v for k, v in p.items() if k != "seed"}, sort_keys=True):
                      {k: v for k, v in p.items() if k != "seed"} for p in seeded}.values())
        spec["points"] = [{**cell, "seed": int(s)} for s in seeds for cell in cells]
    elif seeds:
        spec["seeds"] = [int(s) for s in seeds]
        spec["steps"] = [{k: v for k, v in s.items() if k not in ("seeds", "seeds_added_after")} if isinstance(s, dict) else s
                         for s in spec.get("steps") or []] or None
    out = sweep.out
    if scale == "smoke":
        out = out.with_name(out.name + "-smoke")
        params = dict(spec.get("parameters") or {})
        overrides = dict(params.get("overrides") or {})
        if "recipe" in params:  # the schedule shrinks with the epochs: milestones and warmup in proportion
            base = load_recipe(params["recipe"], **overrides)
            epochs = _smoke_epochs(base.epochs)
            overrides.update(epochs=epochs, warmup_epochs=_smoke_epochs(base.warmup_epochs) if base.warmup_epochs else 0,
                             decay_milestones=sorted({m for m in (round(m / 10) for m in base.decay_milestones) if 0 < m < epochs}))
        params.update({k: min(int(params.get(k) or v), v) for k, v in SMOKE_LIMITS.items()}, overrides=overrides)
        spec["parameters"] = params
        spec["steps"] = [{k: _smoke_epochs(v) if k == "epochs" else v for k, v in s.items()} if isinstance(s, dict) else s
                         for s in spec.get("steps") or []] or None
    return expand(spec["notebook"], out, spec.get("parameters"), spec.get("grid"), spec.get("seeds"),
                  points=spec.get("points"), steps=spec.get("steps"), kernel=spec.get("kernel", "python3"), where=str(path))


def _smoke_epochs(epochs: int) -> int:
    return max(1, round(int(epochs) / 10))


def study_runs(sweep: Optional[str], runs: Optional[str], *, seeds: Optional[list] = None, scale: str = "demo",
               jobs: int = 1):
    """Run the sweep (completed points reused) or read a folder of finished runs: (runs table, folder, Sweep or None)."""
    if none_if_empty(runs):
        return load_runs(runs), find_path(runs), None
    if not none_if_empty(sweep):
        raise RunError("give a sweep file (sweep=...) to run, or a folder of finished runs (runs=...)")
    spec = scaled_sweep(sweep, seeds=seeds, scale=scale)
    return run_and_load(spec, jobs=jobs), spec.out, spec


def with_top1(runs, metric: str = "final_top1"):
    """`runs` with ``top1`` (the EMA weights' final top-1 where the run trained an EMA, else `metric`) and
    ``read_from`` (``ema`` or ``model``)."""
    if metric not in runs.columns:
        raise RunError(f"metric {metric!r} is not a run column; use final_top1 or best_top1")
    import pandas as pd

    out = runs.copy()
    nothing = pd.Series(math.nan, index=out.index)
    ema = out["final_ema_top1"].astype(float) if "final_ema_top1" in out.columns else nothing
    trained_ema = out["model_ema"].fillna(False).astype(bool) if "model_ema" in out.columns else nothing.notna()
    use = trained_ema & ema.notna()
    out["top1"] = ema.where(use, out[metric].astype(float))
    out["read_from"] = use.map({True: "ema", False: "model"})
    return out


def compared(stats: Optional[SeedStats], diff: float, n: int, n_other: int, s: float, s_other: float,
             late: bool = False) -> dict:
    """A difference of two means (of `n` and `n_other` seeds, spreads `s` and `s_other`) read by
    :func:`rsbkit.workbook.study_stats.compare_means`: its band, 95% interval, verdict and detectable difference;
    `late`: either group got seeds after other results were seen."""
    return comparison_row(diff, n, n_other, seed=stats, s=s, s_ref=s_other, seeds_added_after=late)


def _late(group) -> bool:
    """Whether a step's (or cell's) runs were seeds added after results (the sweep file's seeds_added_after)."""
    return bool(group["seeds_added_after"].fillna(False).astype(bool).any()) if "seeds_added_after" in group else False


# ------------------------------------------------------------------ what each step changes, by inspection


def step_changes(sweep: Sweep, num_classes: int = 10):
    """For each step of a cumulative sweep, what it changes, found by building it: the recipe fields whose
    value differs from the step before (``recipe_changes``), the model's modules added or removed and its
    parameter count (``model_changes``, ``params_m``), and ``as_declared``: the changed fields are exactly
    the step's own (a step that names a field at the value it already had, or a field that moves with it,
    shows here). One row per step, in order."""
    import pandas as pd

    first = {}
    for p in sweep.points:
        if p.step is None:
            raise RunError(f"{sweep.out}: not a cumulative sweep (steps:); step_changes reads steps")
        first.setdefault(p.step["index"], p)
    rows, before, before_model = [], None, None
    for index in sorted(first):
        p = first[index]
        recipe = load_recipe(p.parameters["recipe"], **p.parameters.get("overrides", {}))
        fields = {k: v for k, v in recipe.to_dict().items() if k not in ("name", "seed")}
        model = create_model(dataclasses.replace(recipe, init=None), num_classes)
        modules = Counter(type(m).__name__ for m in model.modules())
        params = sum(t.numel() for t in model.parameters())
        if before is None:
            changed, model_text = {}, ""
        else:
            changed = {k: (before[k], v) for k, v in fields.items() if before[k] != v}
            model_text = module_diff(before_model[0], modules, before_model[1], params)
        own = set(p.step["changes"])
        rows.append(dict(step_index=index, step=p.step["name"], declared=", ".join(sorted(own)) or "-",
                         recipe_changes="; ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items()) or "-",
                         model_changes=model_text or "-", params_m=round(params / 1e6, 3),
                         kind="architecture" if set(changed) & set(ARCHITECTURE_FIELDS) else "training",
                         as_declared=set(changed) == own if before is not None else not own))
        before, before_model = fields, (modules, params)
    return pd.DataFrame(rows)


def module_diff(before: Counter, after: Counter, params_before: int, params_after: int) -> str:
    """Modules added and removed between two models (by type and count), and the parameter change."""
    parts = [f"+{after[k] - before[k]} {k}" for k in sorted(after) if after[k] > before[k]]
    parts += [f"-{before[k] - after[k]} {k}" for k in sorted(before) if before[k] > after[k]]
    if params_after != params_before:
        parts.append(f"params {params_after - params_before:+,}")
    return ", ".join(parts)


# ------------------------------------------------------------------ the additive study (Table 1)


def additive_table(runs, stats: Optional[SeedStats], changes=None):
    """One row per step, in order: n, mean, std of ``top1`` (:func:`with_top1`), its ``delta`` to the step
    before and its reading by :func:`compared` (``band``, ``low``/``high``, ``verdict``, ``detectable``), ``beyond_noise``,
    the paper's value and delta where the sweep gives them, and ``kind`` (training or architecture: from
    `changes`, :func:`step_changes`, else from the fields the step names)."""
    import pandas as pd

    done = runs[(runs["status"] == "completed") & runs["step_index"].notna()] if "step_index" in runs.columns else runs.iloc[0:0]
    if done.empty:
        raise RunError("no completed step of a cumulative sweep among these runs; run the sweep (steps:) first")
    rows = []
    for index, group in done.groupby("step_index", sort=True):
        values = group["top1"].astype(float)
        paper = group["step_paper"].dropna()
        rows.append(dict(step_index=int(index), step=group["step"].iloc[0], n=len(values), mean=values.mean(), late=_late(group),
                         std=values.std(ddof=1) if len(values) > 1 else math.nan, min=values.min(), max=values.max(),
                         read_from="/".join(sorted(set(group["read_from"]))),
                         paper=float(paper.iloc[0]) if len(paper) else math.nan))
    table = pd.DataFrame(rows)
    kinds = dict(zip(changes["step_index"], changes["kind"])) if changes is not None else kinds_from_runs(done)
    table["kind"] = [kinds.get(i, "training") for i in table["step_index"]]
    table["delta"] = table["mean"].diff()
    rows = [dict(reference_row(), diff=math.nan)] + [
        compared(stats, float(b["mean"] - a["mean"]), int(b.n), int(a.n), float(b["std"]), float(a["std"]), a.late or b.late)
        for (_, a), (_, b) in zip(table.iloc[:-1].iterrows(), table.iloc[1:].iterrows())]
    table = table.drop(columns="late")
    for column in COMPARISON_COLUMNS:
        table[column] = [r[column] for r in rows]
    # the paper's gain since the last step before with a published value (ResNet-RS's rows between them are not given)
    table["paper_delta"] = table["paper"] - table["paper"].ffill().shift()
    return table


def kinds_from_runs(runs) -> dict[int, str]:
    """Each step's kind from the recipes its runs recorded: ``architecture`` where a field of
    :data:`ARCHITECTURE_FIELDS` differs from the step before's, else ``training``."""
    first = runs.sort_values("step_index").drop_duplicates("step_index")
    kinds, before = {}, None
    for _, row in first.iterrows():
        now = tuple(str(row.get(f)) for f in ARCHITECTURE_FIELDS)
        kinds[int(row["step_index"])] = "architecture" if before is not None and now != before else "training"
        before = now
    return kinds


def additive_split(table) -> dict[str, Any]:
    """The gain from the baseline to the last training step and from there to the last step (architecture),
    and the training share of the total; the paper's the same way (79.0 -> 82.2 -> 83.4: 73%, "3/4")."""
    training = table[table["kind"] == "training"]
    first, last_training, last = table.iloc[0], training.iloc[-1], table.iloc[-1]
    total = float(last["mean"] - first["mean"])
    train_gain = float(last_training["mean"] - first["mean"])
    arch_gain = float(last["mean"] - last_training["mean"])
    paper = [first["paper"], last_training["paper"], last["paper"]]
    paper_share = ((paper[1] - paper[0]) / (paper[2] - paper[0])) if not any(map(math.isnan, paper)) and paper[2] != paper[0] else math.nan
    share = train_gain / total if total > 0 and train_gain >= 0 and arch_gain >= 0 else math.nan
    return dict(baseline=float(first["mean"]), after_training=float(last_training["mean"]), final=float(last["mean"]),
                training_gain=train_gain, architecture_gain=arch_gain, total_gain=total, training_share=share,
                training_share_interval=share_interval(first, last_training, last) if not math.isnan(share) else (math.nan,) * 2,
                paper_baseline=paper[0], paper_after_training=paper[1], paper_final=paper[2], paper_training_share=paper_share,
                last_training_step=str(last_training["step"]), last_step=str(last["step"]))


def share_interval(first, middle, last, draws: int = 100_000) -> tuple[float, float]:
    """The 95% interval of (middle - first) / (last - first) over three steps' means, each drawn from its
    Student-t (mean, std / sqrt(n), n - 1 degrees of freedom; seeded, so the same numbers give the same interval):
    how well 2 or 3 seeds per step place a share of a gain."""
    rng = np.random.default_rng(0)

    def mean_of(step) -> np.ndarray:
        n = int(step["n"])
        if n < 2 or math.isnan(float(step["std"])):
            return np.full(draws, float(step["mean"]))
        return float(step["mean"]) + float(step["std"]) / math.sqrt(n) * rng.standard_t(n - 1, draws)

    a, m, b = mean_of(first), mean_of(middle), mean_of(last)
    low, high = np.percentile((m - a) / (b - a), [2.5, 97.5])
    return float(low), float(high)


def additive_sentence(split: dict[str, Any], n_seeds: Any) -> str:
    """The split between training and architecture changes as one sentence with numbers; `n_seeds` is the
    steps' seed counts (the table's ``n`` column)."""
    s = split
    low, high = int(min(n_seeds)), int(max(n_seeds))
    seeds = f"{low} seed{'s' if low != 1 else ''}" if low == high else f"{low} to {high} seeds"
    low_share, high_share = s.get("training_share_interval", (math.nan, math.nan))
    share = (f"training changes give {s['training_share']:.0%} of it (95% interval {low_share:.0%} to {high_share:.0%}, "
             "each step's mean drawn from its Student-t)" if not math.isnan(s["training_share"])
             else "the two parts point different ways, so no share is given")
    paper = (f" (ResNet-RS, ResNet-200 on ImageNet: {s['paper_baseline']:.1f} -> {s['paper_after_training']:.1f} -> "
             f"{s['paper_final']:.1f}, training {s['paper_training_share']:.0%})") if not math.isnan(s["paper_training_share"]) else ""
    return (f"Baseline {s['baseline']:.2f} -> {s['after_training']:.2f} after the training changes (through "
            f"{s['last_training_step']}, {s['training_gain']:+.2f}) -> {s['final']:.2f} after the architecture changes "
            f"({s['architecture_gain']:+.2f}); of the {s['total_gain']:+.2f} points, {share}{paper}; means of "
            f"{seeds} per step.")


@dataclass
class AdditiveStudy:
    runs: Any  # one row per run, with top1 and read_from
    table: Any  # one row per step (additive_table)
    changes: Any  # what each step changes, by inspection (step_changes), or None when read from runs alone
    split: dict
    stats: Optional[SeedStats]
    out_dir: Path

    def summary(self) -> str:
        return additive_sentence(self.split, self.table["n"])


def additive_study(*, sweep: Optional[str] = None, runs: Optional[str] = None, seeds: Optional[list] = None,
                   scale: str = "demo", jobs: int = 1, seed_stats: Optional[str] = "auto", metric: str = "final_top1",
                   out_dir: Optional[str] = None) -> AdditiveStudy:
    """Run (or read) a cumulative sweep and lay it out as ResNet-RS's Table 1: writes ``additive.csv`` (one row per
    step), ``additive_runs.csv`` (one per run) and ``additive_changes.csv`` (what each step changes, by building it)."""
    table, folder, spec = study_runs(sweep, runs, seeds=seeds, scale=scale, jobs=jobs)
    runs_table = with_top1(table, metric)
    changes = step_changes(spec) if spec is not None else None
    if changes is not None and not changes["as_declared"].all():
        bad = changes[~changes["as_declared"]]
        print("steps that change more or less than they name: "
              + "; ".join(f"{r.step} names {r.declared}, changes {r.recipe_changes}" for r in bad.itertuples()))
    stats = read_seed_stats(seed_stats, table, metric)
    result = additive_table(runs_table, stats, changes)
    folder = out_folder(out_dir, folder)
    atomic_write_text(folder / "additive.csv", result.to_csv(index=False))
    atomic_write_text(folder / "additive_runs.csv", runs_table.to_csv(index=False))
    if changes is not None:
        atomic_write_text(folder / "additive_changes.csv", changes.to_csv(index=False))
    return AdditiveStudy(runs_table, result, changes, additive_split(result), stats, folder)


# ------------------------------------------------------------------ weight decay against regularization (Table 2)


def weight_decay_table(runs, stats: Optional[SeedStats]):
    """One row per (step, weight decay): n, mean, std of ``top1``; per step ``best`` marks the best weight decay,
    ``diff_to_best`` and its reading by :func:`compared` against the row's best (``band``, ``verdict``) say whether the best is
    better by more than seed noise (``worse_than_best``)."""
    done = runs[(runs["status"] == "completed") & runs["step_index"].notna()] if "step_index" in runs.columns else runs.iloc[0:0]
    if done.empty:
        raise RunError("no completed step of a cumulative sweep among these runs; run the sweep (steps: x grid "
                       "weight_decay) first")
    cells = (done.groupby(["step_index", "step", "weight_decay"], sort=True)["top1"]
             .agg(["count", "mean", "std", "min", "max"]).reset_index().rename(columns={"count": "n"}))
    late = {key: _late(g) for key, g in done.groupby(["step_index", "weight_decay"])}
    cells["best"] = False
    rows = {}
    for _, row_cells in cells.groupby("step_index"):
        best = row_cells["mean"].idxmax()
        cells.loc[best, "best"] = True
        b = cells.loc[best]
        for i in row_cells.index:
            c = cells.loc[i]
            rows[i] = reference_row() if i == best else \
                compared(stats, float(c["mean"] - b["mean"]), int(c["n"]), int(b["n"]), float(c["std"]), float(b["std"]),
                         late[(c["step_index"], c["weight_decay"])] or late[(b["step_index"], b["weight_decay"])])
    cells["diff_to_best"] = cells["mean"] - cells.groupby("step_index")["mean"].transform("max")
    for column in COMPARISON_COLUMNS:
        if column != "diff":
            cells[column] = [rows[i][column] for i in cells.index]
    cells["worse_than_best"] = cells["beyond_noise"]
    return cells


PAPER_WEIGHT_DECAY = 4e-5  # ResNet-RS's smaller weight decay (docs/sources.md, section 3)


def weight_decay_verdict(cells, recipe_wd: float, stats: Optional[SeedStats] = None, paper_wd: float = PAPER_WEIGHT_DECAY) -> str:
    """ResNet-RS's claim answered in one sentence, on the paper's own pair: with every regularizer, is `paper_wd`
    (the grid's next weight decay below the recipe's when `paper_wd` is not a column) better than the recipe's
    `recipe_wd`, beyond noise? Also whether the row's best weight decay falls as regularizers are added (a
    best-of-three reading, so only a direction)."""
    steps = cells.drop_duplicates("step_index").sort_values("step_index")
    first, last = steps.iloc[0], steps.iloc[-1]
    best = {int(i): float(g.loc[g["best"], "weight_decay"].iloc[0]) for i, g in cells.groupby("step_index")}
    last_cells = cells[cells["step_index"] == last["step_index"]].set_index("weight_decay")
    smaller = sorted(wd for wd in last_cells.index if wd < recipe_wd)
    if recipe_wd not in last_cells.index or not smaller:
        return f"the recipe's weight decay {recipe_wd:g} and a smaller one are not both columns of this grid; no verdict"
    named = "ResNet-RS's weight decay" if paper_wd in last_cells.index else "the grid's next smaller weight decay"
    paper_wd = paper_wd if paper_wd in last_cells.index else smaller[-1]
    r, p = last_cells.loc[recipe_wd], last_cells.loc[paper_wd]
    late = bool(r.get("seeds_added_after", False)) or bool(p.get("seeds_added_after", False))
    row = SimpleNamespace(**comparison_row(float(p["mean"] - r["mean"]), int(p["n"]), int(r["n"]), s=float(p["std"]),
                                           s_ref=float(r["std"]), seeds_added_after=late, seed=stats))
    if row.verdict == "beyond noise":
        verdict = "supports ResNet-RS's claim" if row.diff > 0 else "goes against ResNet-RS's claim"
    else:
        verdict = "says nothing of ResNet-RS's claim either way"
    falls = best[int(last["step_index"])] < best[int(first["step_index"])]
    return (f"With every regularizer ({last['step']}), {named} {paper_wd:g} gives {p['mean']:.2f} against "
            f"{r['mean']:.2f} at the recipe's {recipe_wd:g}: {interval(row, against='the recipe')}, which {verdict}; the "
            f"row's best of three goes from {best[int(first['step_index'])]:g} with {first['step']} to "
            f"{best[int(last['step_index'])]:g} with all of them ({'falls' if falls else 'does not fall'}), a direction "
            "read from noisy cells.")


def weight_decay_shrinkage(recipe, steps_per_epoch: int) -> float:
    """How much weight decay alone shrinks the weights over a whole run: 1 - prod(1 - lr_t x wd / (1 - momentum))
    over its steps (SGD's L2 decay through momentum's steady state; the LR from the same timm scheduler the loop
    drives). Some 2% over 470 steps of the demo's torchvision baseline at 1e-4, where ResNet-RS's 350 epochs
    go through many e-foldings: what a weight-decay study at that length can and cannot test."""
    lr = batch_lr(recipe).lr
    momentum = recipe.momentum if recipe.opt in ("sgd", "momentum", "nesterov") else 0.0
    log_kept = sum(math.log1p(-step_lr * recipe.weight_decay / (1 - momentum)) for step_lr in lr_schedule(recipe, steps_per_epoch, lr))
    return 1 - math.exp(log_kept)


@dataclass
class WeightDecayStudy:
    runs: Any
    table: Any  # one row per (step, weight decay): weight_decay_table
    recipe_wd: float
    stats: Optional[SeedStats]
    out_dir: Path

    def summary(self) -> str:
        return weight_decay_verdict(self.table, self.recipe_wd, self.stats)


def weight_decay_study(*, sweep: Optional[str] = None, runs: Optional[str] = None, seeds: Optional[list] = None,
                       scale: str = "demo", jobs: int = 1, seed_stats: Optional[str] = "auto", metric: str = "final_top1",
                       recipe_wd: Optional[float] = None, out_dir: Optional[str] = None) -> WeightDecayStudy:
    """Run (or read) regularizers added in turn x weight decay and lay it out as ResNet-RS's Table 2: writes
    ``weight_decay.csv`` (one row per cell) and ``weight_decay_runs.csv``. `recipe_wd`: the recipe's own weight
    decay (default: the largest of the grid, the recipe's in params/sweeps/weight_decay.yaml)."""
    table, folder, _ = study_runs(sweep, runs, seeds=seeds, scale=scale, jobs=jobs)
    if "weight_decay" not in table.columns or table["weight_decay"].nunique() < 2:
        raise RunError("these runs do not vary weight_decay; give a sweep with steps: and grid: {weight_decay: [...]}")
    runs_table = with_top1(table, metric)
    stats = read_seed_stats(seed_stats, table, metric)
    cells = weight_decay_table(runs_table, stats)
    recipe_wd = float(recipe_wd) if recipe_wd else float(cells["weight_decay"].max())
    folder = out_folder(out_dir, folder)
    atomic_write_text(folder / "weight_decay.csv", cells.to_csv(index=False))
    atomic_write_text(folder / "weight_decay_runs.csv", runs_table.to_csv(index=False))
    return WeightDecayStudy(runs_table, cells, recipe_wd, stats, folder)


# ------------------------------------------------------------------ the committed results (the tour)


@dataclass
class CommittedStudies:
    additive: Any  # additive.csv, or None when the study is not in findings/
    split: Optional[dict]
    weight_decay: Any  # weight_decay.csv, or None
    lines: list  # what to print: each study's sentence, or how to run it


def committed_findings(folder: Optional[str] = None, recipe_wd: float = 1e-4) -> CommittedStudies:
    """Both studies as findings/ holds them (scripts/findings.py wrote them from the runs), read, not run."""
    import pandas as pd

    folder = find_path(folder) if folder else FINDINGS
    additive = split = cells = None
    lines = []
    if folder and (folder / "additive.csv").is_file():
        additive = pd.read_csv(folder / "additive.csv")
        split = additive_split(additive)
        lines.append("Additive study: " + additive_sentence(split, additive["n"]))
    else:
        lines.append("The additive study is not in findings/ yet: notebooks/studies/additive.ipynb runs it "
                     "(25 runs at demo scale, about 10 to 20 epochs each)")
    if folder and (folder / "weight_decay.csv").is_file():
        cells = pd.read_csv(folder / "weight_decay.csv")
        stats = read_seed_stats(str(folder / "seed_stats.json")) if (folder / "seed_stats.json").is_file() else None
        lines.append("Weight decay: " + weight_decay_verdict(cells, recipe_wd, stats))
    else:
        lines.append("The weight-decay study is not in findings/ yet: notebooks/studies/weight_decay.ipynb runs it "
                     "(36 runs of 10 epochs at demo scale)")
    return CommittedStudies(additive, split, cells, lines)
