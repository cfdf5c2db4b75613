"""Sweep files are validated before anything runs; a failing point does not stop the others;
a second invocation runs only what is not completed."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from rsbkit.workbook.sweep import (
    SWEEP_PLAN,
    SweepError,
    expand,
    load_sweep,
    pending,
    point_status,
    run_sweep,
    single_point,
    with_plan,
)
from rsbkit.workbook.table import load_runs

pytestmark = pytest.mark.cost(30)  # seconds in the suite on 2 cores: files start costliest first (conftest)

TRAIN = "notebooks/procedures/train.ipynb"
SMOKE = dict(recipe="params/smoke.yaml", limit_train=128, limit_val=64, device="cpu", workers=0)


def write(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_grid_times_seeds_routes_recipe_fields_into_overrides(tmp_path):
    sweep = expand(TRAIN, tmp_path, {"recipe": "params/smoke.yaml", "overrides": {"epochs": 2, "lr": 1.0}},
                   {"loss": ["bce", "ce"], "lr": [0.001, 0.002]}, seeds=[0, 1])
    assert len(sweep.points) == 8
    first = sweep.points[0]
    assert first.name == "loss=bce_lr=0.001_seed=0" and first.run_dir == tmp_path / first.name
    # a grid value beats the shared override of the same field; other shared overrides stay
    assert first.parameters == {"recipe": "params/smoke.yaml", "seed": 0, "out_dir": str(tmp_path / first.name),
                                "overrides": {"epochs": 2, "lr": 0.001, "loss": "bce"}}
    assert [p.parameters["seed"] for p in sweep.points[:2]] == [0, 1]


def test_points_list_for_tables_that_are_not_a_product(tmp_path):
    sweep = load_sweep(ROOT / "params" / "sweeps" / "table6_a2.yaml", out=tmp_path)
    assert len(sweep.points) == 22
    a2 = [p for p in sweep.points if p.name == "loss=bce_lr=0.005_weight_decay=0.02_aug_repeats=3"]
    assert a2[0].parameters["overrides"] == {"loss": "bce", "lr": 0.005, "weight_decay": 0.02, "aug_repeats": 3}
    assert a2[0].parameters["recipe"] == "params/a2.yaml" and a2[0].parameters["seed"] == 0


def test_a_named_point_labels_its_folder_and_a_bad_name_is_refused(tmp_path):
    """The regime study's points: a name and a seed label the folder (its other values are the point's changes); a
    name that cannot name a folder is refused before anything runs."""
    sweep = load_sweep(ROOT / "params" / "sweeps" / "regime_regularization.yaml", out=tmp_path)
    first = sweep.points[0]
    assert first.name == "n1500-short-none_seed=0" and first.parameters["limit_train"] == 1500
    assert first.parameters["overrides"]["aa"] is None and first.parameters["overrides"]["sched_on_updates"] is True
    # run seed by seed: every cell's seed 0 before any seed 1
    assert [p.parameters["seed"] for p in sweep.points] == sorted(p.parameters["seed"] for p in sweep.points)
    with pytest.raises(SweepError, match="a point's name labels its folder.*'N 1'"):
        expand(TRAIN, tmp_path, {"recipe": "params/smoke.yaml"}, points=[{"name": "N 1", "lr": 0.1}])


def test_cumulative_steps_each_add_to_the_one_before(tmp_path):
    """steps: each point is the step before it plus its own changes (an additive study); seeds cross every step;
    folders keep the order and the names; each point records its step (index, name, own changes, paper value)."""
    path = write(tmp_path, f"""
notebook: {TRAIN}
out: {tmp_path / 'out'}
parameters: {{recipe: params/smoke.yaml, overrides: {{epochs: 2}}}}
steps:
  - {{name: baseline, paper: 10.0}}
  - {{name: ls, smoothing: 0.1, paper: 12.5}}
  - {{name: no-mixup, mixup: 0.0, cutmix: 0.0}}
  - {{name: ls-off, smoothing: 0.0}}
seeds: [0, 1]
""")
    sweep = load_sweep(path)
    assert [p.name for p in sweep.points] == ["00-baseline_seed=0", "00-baseline_seed=1", "01-ls_seed=0", "01-ls_seed=1",
                                              "02-no-mixup_seed=0", "02-no-mixup_seed=1", "03-ls-off_seed=0", "03-ls-off_seed=1"]
    overrides = [p.parameters["overrides"] for p in sweep.points[::2]]
    assert overrides == [{"epochs": 2}, {"epochs": 2, "smoothing": 0.1},
                         {"epochs": 2, "smoothing": 0.1, "mixup": 0.0, "cutmix": 0.0},
                         {"epochs": 2, "smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0}]
    steps = [p.step for p in sweep.points[::2]]
    assert [(s["index"], s["name"], s["paper"]) for s in steps] == [(0, "baseline", 10.0), (1, "ls", 12.5), (2, "no-mixup", None),
                                                                    (3, "ls-off", None)]
    assert steps[2]["changes"] == {"mixup": 0.0, "cutmix": 0.0} and sweep.points[1].parameters["seed"] == 1
    from rsbkit.workbook.sweep import summarize

    table = summarize(sweep, {}, log=lambda line: None)  # the sweep's table keeps the steps' order and names
    assert list(table["step"][::2]) == ["baseline", "ls", "no-mixup", "ls-off"] and list(table["step_index"][::2]) == [0, 1, 2, 3]
    assert table["paper"].iloc[2] == 12.5


def test_a_step_may_run_its_own_seeds_and_the_notebooks_seeds_replace_them(tmp_path):
    """A third seed where a delta sits near its band: a step's seeds replace the sweep's for it alone; the seeds a
    study notebook is given replace every step's."""
    from rsbkit.workbook.resnet_rs_studies import scaled_sweep

    text = f"""
notebook: {TRAIN}
out: {tmp_path / 'out'}
parameters: {{recipe: params/smoke.yaml}}
steps:
  - {{name: baseline}}
  - {{name: ls, smoothing: 0.1, seeds: [0, 1, 2]}}
  - {{name: sd, drop_path: 0.1}}
grid: {{weight_decay: [0.01, 0.001]}}
"""
    sweep = load_sweep(write(tmp_path, text + "seeds: [0, 1]\n"))
    seeds = {}
    for p in sweep.points:
        seeds.setdefault(p.step["name"], []).append(p.parameters["seed"])
    assert seeds == {"baseline": [0, 1] * 2, "ls": [0, 1, 2] * 2, "sd": [0, 1] * 2}
    assert "02-sd_weight_decay=0.01_seed=1" in [p.name for p in sweep.points]
    assert sweep.points[-1].parameters["overrides"] == {"smoothing": 0.1, "drop_path": 0.1, "weight_decay": 0.001}
    again = scaled_sweep(str(tmp_path / "sweep.yaml"), seeds=[5])
    assert {p.parameters["seed"] for p in again.points} == {5} and len(again.points) == 6
    with pytest.raises(SweepError, match="step 01-ls gives its own seeds.*seeds: \\[...\\]"):
        load_sweep(write(tmp_path, text))
    with pytest.raises(SweepError, match="step 'ls': seeds is the step's own list of seeds, got 2"):
        load_sweep(write(tmp_path, text.replace("seeds: [0, 1, 2]", "seeds: 2") + "seeds: [0]\n"))
    # seeds added after other results were seen: the step says so, its points carry it (sweep_point.json's step),
    # and a notebook's own seeds, fixed before its runs, drop it
    late = text.replace("seeds: [0, 1, 2]}", "seeds: [0, 1, 2], seeds_added_after: true}") + "seeds: [0, 1]\n"
    flags = {p.step["name"]: p.step["seeds_added_after"] for p in load_sweep(write(tmp_path, late)).points}
    assert flags == {"baseline": False, "ls": True, "sd": False}
    assert not any(p.step["seeds_added_after"] for p in scaled_sweep(str(tmp_path / "sweep.yaml"), seeds=[5]).points)
    for bad in ("seeds_added_after: yes}", "seeds_added_after: 1}"):
        with pytest.raises(SweepError, match="step 'ls': seeds_added_after is true when the step's own seeds were added"):
            load_sweep(write(tmp_path, text.replace("seeds: [0, 1, 2]}", "seeds: [0, 1, 2], " + bad)
                             .replace("yes}", "'yes'}") + "seeds: [0]\n"))
    with pytest.raises(SweepError, match="step 'sd': seeds_added_after is true when"):  # no seeds of its own to have added
        load_sweep(write(tmp_path, text.replace("drop_path: 0.1}", "drop_path: 0.1, seeds_added_after: true}") + "seeds: [0]\n"))


def test_a_steps_run_carries_its_step_into_the_run_table(smoke_run, tmp_path):
    import shutil

    from rsbkit.workbook.table import SWEEP_POINT

    run = tmp_path / "out" / "01-ls_seed=0"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("*.pt"))
    step = dict(index=1, name="ls", changes={"smoothing": 0.1}, paper=12.5, label="01-ls")
    (run / SWEEP_POINT).write_text(json.dumps(dict(status="completed", parameters={"seed": 0}, step=step)))
    row = load_runs(tmp_path / "out").iloc[0]
    assert (row["step_index"], row["step"], row["step_paper"]) == (1, "ls", 12.5)


def test_seeds_added_after_results_are_recorded_and_marked_in_the_run_table(smoke_run, tmp_path):
    import shutil

    from rsbkit.workbook.table import SWEEP_POINT

    def sweep(seeds):
        return expand(TRAIN, tmp_path, {"recipe": "params/smoke.yaml"}, {"loss": ["bce", "ce"]}, seeds=seeds)

    def complete(point):
        point.run_dir.mkdir(parents=True, exist_ok=True)
        (point.run_dir / SWEEP_POINT).write_text(json.dumps(dict(status="completed", parameters=point.parameters)))

    first = with_plan(sweep([0]))
    assert not any(p.added_after_results for p in first.points)
    # a seed added before any result joins the plan: nothing was seen, nothing is biased
    planned = with_plan(sweep([0, 1]))
    assert not any(p.added_after_results for p in planned.points)
    complete(planned.points[0])
    late = with_plan(sweep([0, 1, 2]))  # the third seed, added once loss=bce_seed=0 had its result
    assert [p.name for p in late.points if p.added_after_results] == ["loss=bce_seed=2", "loss=ce_seed=2"]
    assert [p.name for p in with_plan(sweep([0, 1, 2])).points if p.added_after_results] == \
        ["loss=bce_seed=2", "loss=ce_seed=2"]  # a rerun does not forget
    plan = json.loads((tmp_path / SWEEP_PLAN).read_text())
    assert plan["added_after_results"] == ["loss=bce_seed=2", "loss=ce_seed=2"] and len(plan["points"]) == 4
    # a folder with results and no plan (made before plans were kept): the points with a folder are the plan
    (tmp_path / SWEEP_PLAN).unlink()
    assert [p.name for p in with_plan(sweep([0, 1])).points if p.added_after_results] == \
        ["loss=bce_seed=1", "loss=ce_seed=0", "loss=ce_seed=1"]
    # the run table marks a late run, so its verdicts say "seeds added after results"
    run = tmp_path / "late_run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("*.pt"))
    (run / SWEEP_POINT).write_text(json.dumps(dict(status="completed", parameters={"seed": 2}, added_after_results=True)))
    assert bool(load_runs(run).iloc[0]["seeds_added_after"])


@pytest.mark.parametrize("text, message", [
    ("notebook: NB\ngrid: {loss: [bce]}\nparalel: 2\n", "line 3: unknown key 'paralel'"),
    ("notebook: NB\ngrid: {}\n", "the grid is empty"),
    ("notebook: NB\ngrid: {loss: []}\n", "grid 'loss' needs a non-empty list"),
    ("notebook: NB\ngrid: {lrr: [1, 2]}\n", "'lrr' is not a parameter of notebooks/procedures/train.ipynb or a recipe field"),
    ("notebook: NB\nparameters: {recipe: params/smoke.yaml}\ngrid: {loss: [bce, focal]}\n", "point loss=focal: unknown loss (loss) 'focal'; valid: bce, ce"),
    ("notebook: NB\nparameters: {recipe: a9}\nseeds: [0]\n", "point seed=0: unknown recipe 'a9'"),
    ("notebook: NB\ngrid: {seed: [1]}\nseeds: [0]\n", "either as 'seeds' or in the grid"),
    ("notebook: NB\ngrid: {loss: [bce]}\nseeds: [true]\n", "seeds needs a non-empty list of integers, got [True]"),
    ("notebook: NB\ngrid: {loss: [bce]}\npoints: [{loss: ce}]\n", "either 'grid' or 'points'"),
    ("notebook: notebooks/nope.ipynb\nseeds: [0]\n", "notebook notebooks/nope.ipynb does not exist"),
    ("grid: {loss: [bce]}\n", "no 'notebook:'"),
    ("notebook: NB\npoints: [{loss: bce}]\nsteps: [{name: a}]\n", "give either 'steps' or 'points'"),
    ("notebook: NB\ngrid: {smoothing: [0.1]}\nsteps: [{name: a}, {name: b, smoothing: 0.2}]\n",
     "smoothing is both in the grid and changed by a step"),
    ("notebook: NB\nsteps: [{name: a}, {name: a, loss: ce}]\n", "step 2 needs a name of its own"),
    ("notebook: NB\nsteps: [{sched: cosine}]\n", "step 1 needs a name of its own"),
    ("notebook: NB\nsteps: [{name: a, paper: high}]\n", "step 'a': paper is the published value (a number)"),
    ("notebook: NB\nparameters: {recipe: params/smoke.yaml}\nsteps: [{name: a}, {name: b, loss: focal}]\n",
     "point 01-b: unknown loss (loss) 'focal'"),
])
def test_bad_sweep_files_are_rejected_before_anything_runs(tmp_path, text, message):
    path = write(tmp_path, text.replace("NB", TRAIN) + f"out: {tmp_path / 'out'}\n")
    with pytest.raises(SweepError, match=re.escape(message)):
        load_sweep(path)
    assert not (tmp_path / "out").exists()


def test_cli_rejects_bad_sweep_and_bad_notebook_parameter_with_one_line(tmp_path, cli):
    out = cli("sweep", str(write(tmp_path, f"notebook: {TRAIN}\ngrid: {{}}\n")))
    assert out.returncode == 2 and "the grid is empty" in out.stderr and "Traceback" not in out.stderr
    out = cli("run", TRAIN, "-p", "recipee", "a3")
    assert out.returncode == 2 and "'recipee' is not a parameter" in out.stderr and "recipe, overrides, data" in out.stderr


def test_single_point_chooses_the_run_folder():
    point = single_point(TRAIN, {"recipe": "params/demo.yaml"})
    assert point.run_dir.parent.name == "runs" and point.run_dir.name.startswith("demo-")
    assert point.parameters["out_dir"] == str(point.run_dir)
    assert single_point(TRAIN, {"out_dir": "runs/x"}, "runs/x").run_dir == Path("runs/x")  # the same folder twice
    with pytest.raises(SweepError, match="-p out_dir runs/a and --out runs/b name two run folders"):
        single_point(TRAIN, {"out_dir": "runs/a"}, "runs/b")  # the -p would be dropped without a word


@pytest.mark.timeout(600)
def test_failing_point_does_not_stop_the_others_and_rerun_skips_completed(tmp_path, cli):
    """batch_size 512 needs more than the 128 training images: that point fails at run time."""
    spec = dict(notebook=TRAIN, out=str(tmp_path / "sweep"), parameters=SMOKE, grid={"batch_size": [16, 512, 32]})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = cli("sweep", str(path), "--jobs", "2")
    assert out.returncode == 1, out.stdout + out.stderr  # a point failed: non-zero, but after running all
    ok16, bad, ok32 = (tmp_path / "sweep" / f"batch_size={b}" for b in (16, 512, 32))
    assert point_status(ok16) == point_status(ok32) == "completed" and point_status(bad) == "failed"
    failed = json.loads((bad / "sweep_point.json").read_text())
    assert failed["error"].startswith("RunError: a global batch of 512 images needs more than the 128")
    assert (bad / "train.ipynb").is_file() and (bad / "train.html").is_file()  # the failed notebook is kept
    assert "rsbkit: this run failed" in (bad / "train.ipynb").read_text()
    for ok in (ok16, ok32):
        assert json.loads((ok / "result.json").read_text())["status"] == "completed"
        assert (ok / "train.ipynb").is_file() and (ok / "train.html").is_file() and (ok / "curves.png").is_file()
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [p["final_status"] for p in summary["points"]] == ["completed", "failed", "completed"]
    table = load_runs(tmp_path / "sweep")  # the failed point is listed too, with its error
    assert sorted(zip(table["name"], table["status"])) == [
        ("batch_size=16", "completed"), ("batch_size=32", "completed"), ("batch_size=512", "failed")]
    assert table.set_index("name").loc["batch_size=512", "error"] == failed["error"]

    # a point whose folder is lost is pending again, like the failed one (nothing runs here)
    ok16.rename(tmp_path / "aside")
    assert [p.name for p in pending(load_sweep(path))] == ["batch_size=16", "batch_size=512"]
    (tmp_path / "aside").rename(ok16)
    # second invocation: the completed points are skipped, only the failed 512 runs again (and fails again)
    kept = (ok32 / "sweep_point.json").read_text()
    lines = []
    table = run_sweep(load_sweep(path), jobs=1, log=lines.append)
    assert "3 points, 2 already completed, running 1" in lines[0]
    assert list(table["status"]) == ["skipped (completed before)", "failed", "skipped (completed before)"]
    assert (ok32 / "sweep_point.json").read_text() == kept
    assert json.loads((bad / "sweep_point.json").read_text())["attempt"] == 2


def test_a_kernel_port_clash_is_recognised_and_nothing_else():
    """Two kernels starting at once can collide on a port (seen in a local-executor sweep here); run_point
    starts the notebook again only for that failure, where no cell has run."""
    from rsbkit.workbook.sweep import kernel_port_clash

    clash = ("zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:44423')\n"
             "Error occurred while starting new kernel client for kernel aee53d79: Kernel died before replying to kernel_info\n")
    assert kernel_port_clash(clash)
    assert not kernel_port_clash("RuntimeError: Kernel died before replying to kernel_info\n")  # another start-up failure
    assert not kernel_port_clash("PapermillExecutionError: RunError: a global batch of 512 images needs more\n")


@pytest.mark.parametrize("path", sorted((ROOT / "params" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_sweep_file_validates(path, monkeypatch, capsys):
    """`rsbkit sweep FILE --dry-run` on each file of params/sweeps: keys, notebook parameters and every
    point's recipe are checked, and it lists one line per point (grid product or points, times seeds)."""
    from rsbkit.__main__ import main

    monkeypatch.chdir(ROOT)  # the files name recipes and notebooks relative to the repository root
    spec = yaml.safe_load(path.read_text())
    seeds = len(spec.get("seeds") or [None])
    columns = math.prod(len(v) for v in (spec.get("grid") or {}).values())
    if "points" in spec:
        expected = len(spec["points"]) * seeds
    else:  # a step may run its own seeds
        expected = sum(len(s.get("seeds") or [None] * seeds) for s in spec.get("steps") or [{}]) * columns
    assert main(["sweep", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == expected and all(line.startswith(f"{spec['out']}/") for line in lines)


def test_a_study_says_how_many_points_it_starts_and_about_how_long(tmp_path):
    """Issue 47: a study notebook (and `rsbkit run`) states its training points and an estimate before starting them;
    completed points are counted as reused; the estimate scales the demo record's wall time by epochs x images."""
    from rsbkit.workbook.plan import NOTEBOOK_START_S, study_plan, sweeps_plan
    from rsbkit.workbook.table import SWEEP_POINT

    sweep = tmp_path / "seeds.yaml"
    sweep.write_text(yaml.safe_dump(dict(notebook="notebooks/procedures/train.ipynb", out=str(tmp_path / "points"),
                                         parameters=dict(recipe=str(ROOT / "params" / "demo.yaml"), data="default"),
                                         seeds=[0, 1, 2])))
    plan = sweeps_plan([str(sweep)])
    assert (plan.points, plan.to_run, plan.unestimated) == (3, 3, 0)
    assert plan.seconds == pytest.approx(3 * (NOTEBOOK_START_S + 205.52))  # the demo record: 10 epochs in 205.52 s
    assert plan.line().startswith("this study starts 3 training points of 3: about 11 min, at the demo record's pace")
    (tmp_path / "points" / "seed=0").mkdir(parents=True)
    (tmp_path / "points" / "seed=0" / SWEEP_POINT).write_text(json.dumps({"status": "completed"}))
    assert sweeps_plan([str(sweep)], jobs=2).line().startswith(
        "this study starts 2 training points of 3 (1 completed, reused): about 4 min with 2 at once")
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump(dict(notebook="notebooks/procedures/train.ipynb", out=str(tmp_path / "short"),
                                         parameters=dict(recipe=str(ROOT / "params" / "demo.yaml"), limit_train=1200,
                                                         overrides={"epochs": 2}), seeds=[0])))
    assert sweeps_plan([str(short)]).seconds == pytest.approx(NOTEBOOK_START_S + 205.52 * 2 * 1200 / 120000)
    compare = "notebooks/studies/compare.ipynb"
    assert study_plan(compare, dict(reference=str(sweep), sweeps=[str(short)])).points == 4
    assert study_plan(compare, dict(runs_csv="findings/comparison_runs.csv")).line() == (
        "runs_csv is given: this study reads finished runs and trains nothing")
    assert study_plan("notebooks/procedures/train.ipynb", {}) is None
    assert study_plan("notebooks/studies/ablation.ipynb", dict(sweep=str(sweep))).points == 3  # its reference: a row
    # a study that rewrites its sweep's points (another scale, other seeds) is not planned from the file
    assert study_plan("notebooks/studies/additive.ipynb", dict(sweep=str(sweep))).points == 3
    assert study_plan("notebooks/studies/additive.ipynb", dict(sweep=str(sweep), scale="smoke")) is None
    assert study_plan("notebooks/studies/additive.ipynb", dict(sweep=str(sweep), seeds=[0])) is None


def test_a_one_sweep_study_plans_the_points_it_runs_at_its_seeds_and_scale(tmp_path):
    """The additive, weight-decay and regime notebooks' first line: the sweep as the study runs it (other seeds, the
    smoke scale's 1 epoch in 10 on 512 images), or that it reads finished runs."""
    from rsbkit.workbook.plan import study_line

    spec = yaml.safe_load((ROOT / "params" / "sweeps" / "weight_decay.yaml").read_text())
    path = tmp_path / "weight_decay.yaml"  # its points go under tmp_path: none completed
    path.write_text(yaml.safe_dump(dict(spec, out=str(tmp_path / "wd"))))
    assert study_line(str(path)).startswith("this study starts 36 training points of 36: about 2.2 h")
    assert study_line(str(path), seeds=[0]).startswith("this study starts 15 training points of 15: about 55 min")
    smoke = study_line(str(path), seeds=[0], scale="smoke")
    assert smoke.startswith("this study starts 15 training points of 15: about 4 min")  # 15 x (15 s + 1 epoch of 512)
    assert study_line(str(path), runs=str(tmp_path)) == "runs is given: this study reads finished runs and trains nothing"
