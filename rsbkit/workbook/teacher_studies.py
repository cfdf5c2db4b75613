"""The teacher study (notebooks/studies/teacher.ipynb): ResNet-RS's semi-supervised result and knowledge distillation
at any scale. Each arm is a set of train-notebook points run through the sweep runner (completed points reused):

- the teacher: a run folder given, or the reference recipe trained once (seed 0);
- Noisy Student (Xie et al. 2020): the reference recipe as a student of that teacher, on the labelled images plus
  ``ratio`` times as many pseudo-labelled ones from `unlabelled`, for each target kind (soft, hard);
- online distillation: the reference recipe with a stronger teacher (a larger model trained on the same data, or a
  run folder given) on every training batch;
- the reference: the reference recipe alone over the same seeds (labelled only, no teacher);
- the steps control: the reference recipe trained for ``epochs x (1 + ratio)`` epochs, as many images and optimizer
  steps as a Noisy Student sees (its epochs hold the pseudo-labelled images too), so that a student's gain can be
  told apart from the longer training it gets.

Every arm is set against the reference's seeds with rsbkit.workbook.study_stats.compare_variants (difference, noise
band, verdict); each student of pseudo-labels also against the steps control and its own teacher's single run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import RunError
from ..core.paths import output_path
from ..core.recipes import load_recipe, recipe_fields
from ..core.runs import atomic_write_text, load_run
from .plan import plan_of
from .run_studies import SMOKE_LIMITS
from .study_stats import compare_to, compare_variants, interval
from .sweep import Sweep, expand, run_and_load
from .train_and_evaluate import TRAIN_NOTEBOOK, none_if_empty, out_folder

# smoke scale, a look at the study's shape in minutes, not a result: half the images of the other studies' smoke
# scale (SMOKE_LIMITS), every arm for one epoch
SMOKE = {name: limit // 2 for name, limit in SMOKE_LIMITS.items()}


@dataclass
class TeacherStudy:
    runs: Any  # every run of the arms and the reference, labelled in 'variant'
    table: Any  # one row per arm: mean, std, n, diff to the reference, band, beyond_noise, teacher_top1, and
    # control_diff, control_band, beyond_control: against the steps control (NaN without one)
    teachers: dict  # arm's teacher -> its final top-1
    out_dir: Path

    def summary(self) -> str:
        lines = []
        ref = self.table.iloc[0]
        lines.append(f"{ref['variant']}: {ref['mean']:.2f} +- {ref['std']:.2f} over {int(ref['n'])} seeds (labelled only)")
        for row in self.table.iloc[1:].itertuples(index=False):
            own = (f"; its teacher {row.teacher_top1:.2f} ({row.mean - row.teacher_top1:+.2f})"
                   if row.teacher_top1 == row.teacher_top1 else "")
            if row.control_diff == row.control_diff:
                own += (f"; {row.control_diff:+.2f} against the reference trained as long ({row.control_verdict}: "
                        f"+-{row.control_band:.2f})")
            lines.append(f"{row.variant}: {row.mean:.2f} +- {row.std:.2f} over {row.n} seeds, {interval(row)}{own}")
        return "\n".join(lines)


def _points(out: Path, base: dict[str, Any], points: list[dict[str, Any]], seeds: Optional[list] = None):
    return expand(TRAIN_NOTEBOOK, out, base, points=points, seeds=seeds, where=f"teacher study {out}")


def control_epochs(epochs: int, ratio: float) -> int:
    """The steps control's epochs: as many images, so as many steps, as a Noisy Student's `epochs` at `ratio`."""
    return round(epochs * (1 + ratio))


def study_arms(*, teacher: str, strong_teacher: str, unlabelled: str, ratio: float, threshold: Optional[float],
               targets: list, epochs: int, steps_control: bool = True) -> list[dict[str, Any]]:
    """The students' points: a Noisy Student per target kind, the distilled student (a strong teacher given), and the
    steps control (the reference recipe for :func:`control_epochs`) when there are Noisy Students."""
    arms: list[dict[str, Any]] = [dict(teacher=teacher, unlabelled=unlabelled, pseudo_ratio=ratio, kd_target=t,
                                       **({"pseudo_threshold": threshold} if threshold is not None else {}))
                                  for t in targets]
    if strong_teacher:
        arms.append(dict(teacher=strong_teacher))
    if steps_control and targets:
        arms.append(dict(epochs=control_epochs(epochs, ratio)))
    return arms


NOISY_STUDENT = "Noisy Student"


def control_name(epochs: int) -> str:
    return f"steps control ({epochs} epochs)"


def arm_name(run: Any, epochs: int, teacher_models: dict[str, str]) -> str:
    """What an arm is, for the table and the figure (the fields it changes stay in ``changes``): a Noisy Student and
    its target kind, the teacher a student is distilled from, or the steps control; else its variant label."""
    if isinstance(run.get("unlabelled"), str):
        return f"{NOISY_STUDENT}, {run['kd_target']} pseudo-labels"
    if isinstance(run.get("teacher"), str):
        return f"distilled from {teacher_models.get(run['teacher'], Path(run['teacher']).name)}"
    if not str(run["variant"]).endswith("(reference)") and int(run["epochs"]) != epochs:
        return control_name(int(run["epochs"]))
    return str(run["variant"])


def against_control(table: Any, stats: Any, control: str) -> Any:
    """The Noisy Students' rows against the steps control (the arm named `control`): ``control_diff``,
    ``control_band``, ``beyond_control`` (the band as :func:`rsbkit.workbook.study_stats.compare_to` gives it); NaN
    elsewhere, and everywhere when no control was trained."""
    table = table.copy()
    for column in ("control_diff", "control_band", "beyond_control", "control_verdict"):
        table[column] = float("nan")
    if control not in set(table["variant"]):
        return table
    compared = compare_to(table[["variant", "mean", "std", "n", "min", "max"]], "variant", control, stats)
    students = table["variant"].str.startswith(NOISY_STUDENT)
    table.loc[students, "control_diff"] = compared.loc[students, "diff"]
    table.loc[students, "control_band"] = compared.loc[students, "band"]
    table["beyond_control"] = table["beyond_control"].astype(object)
    table.loc[students, "beyond_control"] = compared.loc[students, "beyond_noise"]
    table["control_verdict"] = table["control_verdict"].astype(object)
    table.loc[students, "control_verdict"] = compared.loc[students, "verdict"]
    return table


def _name_arms(runs: Any, table: Any, epochs: int, teachers: dict[str, dict]) -> None:
    """Each arm's name in ``variant`` (:func:`arm_name`), its variant label (teachers by folder name) in ``changes``;
    the student of a labelling teacher gets that teacher's top-1 in ``teacher_top1``."""
    models = {t: r["model"] for t, r in teachers.items()}
    names = {r["variant"]: arm_name(r, epochs, models) for _, r in runs.drop_duplicates("variant").iterrows()}
    own = {r["variant"]: teachers[r["teacher"]]["final_top1"] for _, r in runs.iterrows()
           if isinstance(r.get("unlabelled"), str) and r.get("teacher") in teachers}
    table["teacher_top1"] = [own.get(v, float("nan")) for v in table["variant"]]
    for frame in (runs, table):
        frame["changes"] = frame["variant"]
        for path in teachers:  # a label names a teacher by its folder, not its full path
            frame["changes"] = frame["changes"].str.replace(path, Path(path).name, regex=False)
        frame["variant"] = frame["variant"].map(names)


@dataclass
class TeacherSweeps:
    """The teacher study's points, all named before any trains: the teachers to train (None: all given), the students
    (every arm over the seeds) and the reference (the recipe over the seeds)."""
    teachers: Optional[Sweep]
    students: Sweep
    reference: Sweep
    teacher: str  # the labelling teacher's run folder (given, or the one the teachers' sweep trains)
    strong_teacher: str  # the distillation teacher's ("" without one)
    epochs: int  # the recipe's epochs at this scale
    out: Path

    @property
    def sweeps(self) -> list[Sweep]:
        return [s for s in (self.teachers, self.students, self.reference) if s is not None]


def teacher_sweeps(*, recipe: str = "params/demo.yaml", data: str = "default", teacher: str = "",
                   strong_model: str = "resnet50", strong_teacher: str = "", unlabelled: str = "fashion-mnist-unused",
                   ratio: float = 1.0, threshold: Optional[float] = None, targets: Optional[list] = None,
                   seeds: Optional[list] = None, scale: str = "demo", out_dir: Optional[str] = None,
                   steps_control: bool = True) -> TeacherSweeps:
    """Every point the teacher study trains (:func:`teacher_study`'s arguments), validated, nothing run: what it runs,
    and what the notebook's plan line counts before it starts."""
    if scale not in ("demo", "smoke"):
        raise RunError(f"scale={scale!r}: choose demo or smoke")
    targets = list(targets or ["soft", "hard"])
    seeds = [int(s) for s in (seeds or [0, 1, 2])]
    out = output_path(none_if_empty(out_dir) or f"runs/sweeps/teacher{'-smoke' if scale == 'smoke' else ''}")
    base: dict[str, Any] = dict(recipe=recipe, data=data, **(SMOKE if scale == "smoke" else {}))
    if scale == "smoke":
        base["overrides"] = dict(epochs=1, warmup_epochs=0)
    epochs = load_recipe(recipe, **base.get("overrides", {})).epochs  # a bad recipe fails here, before anything trains
    wanted = ([{"seed": 0}] if not none_if_empty(teacher) else []) + (
        [{"model": strong_model, "seed": 0}] if not none_if_empty(strong_teacher) and strong_model else [])
    made = None
    if wanted:  # the teachers' folders are known before they train: the students name them
        made = _points(out / "teachers", base, wanted)
        folders = iter(str(p.run_dir) for p in made.points)
        teacher = teacher or next(folders)
        strong_teacher = strong_teacher or (next(folders) if strong_model else "")
    arms = study_arms(teacher=teacher, strong_teacher=strong_teacher, unlabelled=unlabelled, ratio=ratio,
                      threshold=threshold, targets=targets, epochs=epochs, steps_control=steps_control)
    students = _points(out / "students", base, arms, seeds)
    reference = expand(TRAIN_NOTEBOOK, out / "reference", base, seeds=seeds, where=f"teacher study {out}")
    return TeacherSweeps(made, students, reference, teacher, strong_teacher, epochs, out)


def teacher_plan(jobs: int = 1, **arguments: Any) -> str:
    """What the teacher study is about to train, in one line (:func:`teacher_sweeps`'s `arguments`): the notebook
    prints it before it starts."""
    return plan_of(teacher_sweeps(**arguments).sweeps, jobs).line()


def teacher_study(*, recipe: str = "params/demo.yaml", data: str = "default", teacher: str = "",
                  strong_model: str = "resnet50", strong_teacher: str = "", unlabelled: str = "fashion-mnist-unused",
                  ratio: float = 1.0, threshold: Optional[float] = None, targets: Optional[list] = None,
                  seeds: Optional[list] = None, scale: str = "demo", jobs: int = 1, metric: str = "final_top1",
                  out_dir: Optional[str] = None, steps_control: bool = True) -> TeacherStudy:
    """Train (or reuse) the teachers, the students and the reference, then compare them. Writes teacher.csv (one row
    per arm) and teacher_runs.csv (one per run) to `out_dir` (default runs/sweeps/teacher, -smoke at smoke scale)."""
    plan = teacher_sweeps(recipe=recipe, data=data, teacher=teacher, strong_model=strong_model,
                          strong_teacher=strong_teacher, unlabelled=unlabelled, ratio=ratio, threshold=threshold,
                          targets=targets, seeds=seeds, scale=scale, out_dir=out_dir, steps_control=steps_control)
    if plan.teachers is not None:  # the teachers first (the reference recipe at seed 0, the larger model): every student reads them
        run_and_load(plan.teachers, jobs=jobs)
    teacher, strong_teacher, epochs, out = plan.teacher, plan.strong_teacher, plan.epochs, plan.out
    students = run_and_load(plan.students, jobs=jobs)
    reference = run_and_load(plan.reference, jobs=jobs)
    fields = [f for f in recipe_fields() if f in students.columns and f in reference.columns]
    runs, table, stats = compare_variants(students, reference, fields, metric)
    teachers = {t: load_run(t)["result"] for t in (teacher, strong_teacher) if t}
    _name_arms(runs, table, epochs, teachers)
    table = against_control(table, stats, control_name(control_epochs(epochs, ratio)))
    folder = out_folder(str(out), out)
    atomic_write_text(folder / "teacher.csv", table.to_csv(index=False))
    atomic_write_text(folder / "teacher_runs.csv", runs.to_csv(index=False))
    return TeacherStudy(runs, table, {t: r["final_top1"] for t, r in teachers.items()}, folder)
