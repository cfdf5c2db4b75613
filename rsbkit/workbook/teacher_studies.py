"""The teacher study (notebooks/studies/teacher.ipynb): ResNet-RS's semi-supervised result and knowledge distillation
at any scale. Each arm is a set of train-notebook points run through the sweep runner (completed points reused):

- the teacher: a run folder given, or the reference recipe trained once (seed 0);
- Noisy Student (Xie et al. 2020): the reference recipe as a student of that teacher, on the labelled images plus
  ``ratio`` times as many pseudo-labelled ones from `unlabelled`, for each target kind (soft, hard);
- online distillation: the reference recipe with a stronger teacher (a larger model trained on the same data, or a
  run folder given) on every training batch;
- the reference: the reference recipe alone over the same seeds (labelled only, no teacher).

Every arm is set against the reference's seeds with rsbkit.workbook.study_stats.compare_variants (difference, noise
band, verdict), and each student arm against its own teacher's single run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import RunError
from ..core.paths import output_path
from ..core.recipes import load_recipe, recipe_fields
from ..core.runs import atomic_write_text, load_run
from .study_stats import compare_variants
from .sweep import expand, run_and_load
from .train_and_evaluate import none_if_empty, out_folder

TRAIN_NOTEBOOK = "notebooks/procedures/train.ipynb"
SMOKE = dict(limit_train=256, limit_val=128)  # a look at the study's shape in minutes, not a result


@dataclass
class TeacherStudy:
    runs: Any  # every run of the arms and the reference, labelled in 'variant'
    table: Any  # one row per arm: mean, std, n, diff to the reference, band, beyond_noise, teacher_top1
    teachers: dict  # arm's teacher -> its final top-1
    out_dir: Path

    def summary(self) -> str:
        lines = []
        ref = self.table.iloc[0]
        lines.append(f"{ref['variant']}: {ref['mean']:.2f} +- {ref['std']:.2f} over {int(ref['n'])} seeds (labelled only)")
        for row in self.table.iloc[1:].itertuples(index=False):
            verdict = "more than seed noise" if row.beyond_noise else "within seed noise"
            own = (f"; its teacher {row.teacher_top1:.2f} ({row.mean - row.teacher_top1:+.2f})"
                   if row.teacher_top1 == row.teacher_top1 else "")
            lines.append(f"{row.variant}: {row.mean:.2f} +- {row.std:.2f} over {row.n} seeds, {row.diff:+.2f} against the "
                         f"reference ({verdict}: +-{row.band:.2f}){own}")
        return "\n".join(lines)


def _points(out: Path, base: dict[str, Any], points: list[dict[str, Any]], seeds: Optional[list] = None):
    return expand(TRAIN_NOTEBOOK, out, base, points=points, seeds=seeds, where=f"teacher study {out}")


def teacher_study(*, recipe: str = "params/demo.yaml", data: str = "default", teacher: str = "",
                  strong_model: str = "resnet50", strong_teacher: str = "", unlabelled: str = "fashion-mnist-unused",
                  ratio: float = 1.0, threshold: Optional[float] = None, targets: Optional[list] = None,
                  seeds: Optional[list] = None, scale: str = "demo", jobs: int = 1, metric: str = "final_top1",
                  out_dir: Optional[str] = None) -> TeacherStudy:
    """Train (or reuse) the teachers, the students and the reference, then compare them. Writes teacher.csv (one row
    per arm) and teacher_runs.csv (one per run) to `out_dir` (default runs/sweeps/teacher, -smoke at smoke scale)."""
    if scale not in ("demo", "smoke"):
        raise RunError(f"scale={scale!r}: choose demo or smoke")
    targets = list(targets or ["soft", "hard"])
    seeds = [int(s) for s in (seeds or [0, 1, 2])]
    out = output_path(none_if_empty(out_dir) or f"runs/sweeps/teacher{'-smoke' if scale == 'smoke' else ''}")
    base: dict[str, Any] = dict(recipe=recipe, data=data, **(SMOKE if scale == "smoke" else {}))
    if scale == "smoke":
        base["overrides"] = dict(epochs=1, warmup_epochs=0)
    load_recipe(recipe)  # a bad recipe fails here, before anything trains
    wanted = ([{"seed": 0}] if not none_if_empty(teacher) else []) + (
        [{"model": strong_model, "seed": 0}] if not none_if_empty(strong_teacher) and strong_model else [])
    if wanted:  # the teachers first (the reference recipe at seed 0, the larger model): every student reads them
        made = _points(out / "teachers", base, wanted)
        run_and_load(made, jobs=jobs)
        folders = iter(str(p.run_dir) for p in made.points)
        teacher = teacher or next(folders)
        strong_teacher = strong_teacher or (next(folders) if strong_model else "")
    arms = [dict(teacher=teacher, unlabelled=unlabelled, pseudo_ratio=ratio, kd_target=t,
                 **({"pseudo_threshold": threshold} if threshold is not None else {})) for t in targets]
    if strong_teacher:
        arms.append(dict(teacher=strong_teacher))
    students = run_and_load(_points(out / "students", base, arms, seeds), jobs=jobs)
    reference = run_and_load(expand(TRAIN_NOTEBOOK, out / "reference", base, seeds=seeds, where=f"teacher study {out}"),
                             jobs=jobs)
    fields = [f for f in recipe_fields() if f in students.columns and f in reference.columns]
    runs, table, _ = compare_variants(students, reference, fields, metric)
    teachers = {t: load_run(t)["result"]["final_top1"] for t in {teacher, strong_teacher} if t}
    own = {}
    for _, r in runs.iterrows():
        t = r.get("teacher")
        if isinstance(t, str) and t in teachers and isinstance(r.get("unlabelled"), str):  # students of a labeller
            own[r["variant"]] = teachers[t]
    table["teacher_top1"] = [own.get(v, float("nan")) for v in table["variant"]]
    for path in teachers:  # a label names a teacher by its folder, not its full path
        for frame in (runs, table):
            frame["variant"] = frame["variant"].str.replace(path, Path(path).name, regex=False)
    folder = out_folder(str(out), out)
    atomic_write_text(folder / "teacher.csv", table.to_csv(index=False))
    atomic_write_text(folder / "teacher_runs.csv", runs.to_csv(index=False))
    return TeacherStudy(runs, table, teachers, folder)
