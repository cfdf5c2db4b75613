"""Run folders as a table (load_runs) and TensorBoard logging."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rsbkit.core.errors import RunError
from rsbkit.core.runs import load_run
from rsbkit.workbook.table import SWEEP_POINT, TensorBoardLogger, load_runs


def test_load_runs_one_row_per_run_with_recipe_results_and_cost(smoke_run, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(smoke_run, tmp_path / "runs" / name, ignore=shutil.ignore_patterns("*.pt"))
    unfinished = tmp_path / "runs" / "c"
    unfinished.mkdir()
    shutil.copy(smoke_run / "recipe.yaml", unfinished / "recipe.yaml")  # started, never wrote a result
    (tmp_path / "runs" / "b" / SWEEP_POINT).write_text(json.dumps({"status": "completed", "parameters": {"seed": 3}}))
    table = load_runs(tmp_path / "runs")
    assert list(table["name"]) == ["a", "b", "c"]
    result = load_run(smoke_run)["result"]
    a = table.iloc[0]
    assert (a["status"], a["recipe"], a["model"], a["loss"], a["epochs"]) == ("completed", "a3-smoke", "resnet10t", "bce", 1)
    assert a["final_top1"] == result["final_top1"] and a["wall_s"] == result["wall_s"]
    assert a["imgs_per_s"] > 0 and a["peak_mem_mb"] > 0
    assert a["lr_used"] == pytest.approx(8e-3 * (16 / 2048) ** 0.5) and a["effective_batch"] == 16
    assert a["scale"] == (0.08, 1.0)  # lists become tuples, so the table can be grouped by them
    assert (a["train_images"], a["val_images"], a["limit_train"], a["limit_val"]) == (128, 64, 128, 64)
    assert pd.isna(a["warnings"]) and a["epochs_done"] == 1
    assert a["train_top1"] == result["train_top1"] and a["fit_gap"] == pytest.approx(result["train_top1"] - result["final_top1"])
    assert table.iloc[1]["param.seed"] == 3
    assert pd.isna(table.iloc[2]["status"]) and pd.isna(table.iloc[2]["final_top1"]) and table.iloc[2]["model"] == "resnet10t"
    assert load_runs([tmp_path / "runs" / "a", tmp_path / "runs" / "a"]).shape[0] == 1  # listed once
    # a run from before a field existed trained with its default: the column holds it, so such runs group with newer ones
    old = yaml.safe_load((smoke_run / "recipe.yaml").read_text())
    old.pop("train_res_start"), old.pop("train_res_ramp")
    (unfinished / "recipe.yaml").write_text(yaml.safe_dump(old))
    c = load_runs(unfinished).iloc[0]
    assert pd.isna(c["train_res_start"]) and c["train_res_ramp"] == (0, 0) and c["train_res"] == 32
    with pytest.raises(RunError, match="no run folder or folder of runs at /no/such"):
        load_runs("/no/such")


def test_a_study_notebook_run_into_its_sweep_folder_does_not_hide_the_points(smoke_run, tmp_path):
    """seed_variance.ipynb run with --out runs/sweeps/seeds leaves sweep_point.json above the seed runs:
    load_runs of that folder lists the seeds (it listed the notebook's folder alone before), and a point
    that failed before training (only sweep_point.json) is still a row."""
    study = tmp_path / "sweeps" / "seeds"
    for name in ("seed=0", "seed=1"):
        shutil.copytree(smoke_run, study / name, ignore=shutil.ignore_patterns("*.pt"))
    failed = study / "seed=2"
    failed.mkdir()
    (failed / SWEEP_POINT).write_text(json.dumps({"status": "failed", "error": "kernel died", "parameters": {"seed": 2}}))
    (study / SWEEP_POINT).write_text(json.dumps({"status": "completed", "parameters": {"sweep": "seeds.yaml"}}))
    for where in (study, tmp_path):
        table = load_runs(where)
        assert list(table["name"]) == ["seed=0", "seed=1", "seed=2"], where
        assert list(table["status"]) == ["completed", "completed", "failed"]
    assert list(load_runs(failed)["error"]) == ["kernel died"]


def test_tensorboard_logger_writes_event_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rsbkit.workbook.table import epoch_hooks

    board = TensorBoardLogger(tmp_path)
    board(dict(epoch=1, lr=0.1, train_loss=2.0, val_top1=10.0, ema_top1=None))
    board(dict(epoch=2, lr=0.05, train_loss=1.5, val_top1=20.0, ema_top1=None))
    board.close()
    # the CLI's and the notebook's hook: the caller's on_epoch and the board both get every row
    rows = []
    with epoch_hooks(tmp_path / "both", rows.append, tensorboard=True) as hook:
        hook(dict(epoch=1, lr=0.1, val_top1=30.0))
    assert rows == [dict(epoch=1, lr=0.1, val_top1=30.0)] and list((tmp_path / "both" / "tensorboard").iterdir())
    with epoch_hooks(tmp_path / "none") as hook:
        assert hook is None and not (tmp_path / "none").exists()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("val_top1")] == [10.0, 20.0]
    assert "ema_top1" not in events.Tags()["scalars"]


def test_a_timm_output_folder_joins_the_table_and_the_figure(smoke_run, tmp_path, root):
    """timm's train.py writes args.yaml and summary.csv into its output folder (the fixture: a real run);
    load_runs lists it beside rsbkit's runs with its recipe read by the importer, and the overlay figure draws both."""
    from rsbkit.workbook.figures import overlay_figure

    timm_run = tmp_path / "runs" / "timm-out" / "fashion-mnist-test_resnet"
    timm_run.mkdir(parents=True)
    for name in ("args.yaml", "summary.csv"):
        shutil.copy(root / "tests" / "core" / "fixtures" / "timm_run" / name, timm_run / name)
    shutil.copytree(smoke_run, tmp_path / "runs" / "ours", ignore=shutil.ignore_patterns("*.pt"))
    table = load_runs(tmp_path / "runs").set_index("source")
    assert sorted(table.index) == ["rsbkit", "timm"]
    theirs = table.loc["timm"]
    assert (theirs["status"], theirs["model"], theirs["epochs_done"], theirs["final_top1"], theirs["best_top1"]) == (
        "completed", "test_resnet", 6, 72.0, 72.0)
    assert (theirs["best_epoch"], theirs["mixup"], theirs["loss"], theirs["lr_used"]) == (6, 0.1, "bce", 0.008)
    assert theirs["data"] == "data" and theirs["recipe"] == "fashion-mnist-test_resnet"
    fig = overlay_figure([table.loc["rsbkit", "run"], theirs["run"]])
    assert [t.name for t in fig.data] == ["ours", "fashion-mnist-test_resnet"]
    assert list(fig.data[1].y) == [13.5, 13.5, 24.0, 43.5, 66.5, 72.0] and list(fig.data[1].x) == [1, 2, 3, 4, 5, 6]


def _variant(smoke_run, folder, **changes):
    """A copy of the smoke run whose record says it trained on other data or for other epochs."""
    shutil.copytree(smoke_run, folder, ignore=shutil.ignore_patterns("*.pt"))
    result = json.loads((folder / "result.json").read_text())
    for key, value in changes.items():
        if key in ("train_images", "limit_train"):
            result["data"][key] = value
        else:
            result[key] = value
    (folder / "result.json").write_text(json.dumps(result))
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    recipe["loss"] = changes.get("loss", recipe["loss"])
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def test_the_report_refuses_to_pool_unlike_runs(smoke_run, tmp_path):
    """group_by loss over a 512-image run and a 12,000-image one would average unlike things: the report names what
    differs and the override; runs that differ only in the grouped field (and the seed) group."""
    from rsbkit.workbook.run_studies import report

    runs = tmp_path / "runs"
    _variant(smoke_run, runs / "bce-small")
    _variant(smoke_run, runs / "bce-big", train_images=12000, limit_train=None, final_top1=80.0)
    _variant(smoke_run, runs / "ce-small", loss="ce")
    with pytest.raises(RunError, match=r"also differ in .*train_images: 12000, 128.*allow_unlike="):
        report(runs=[str(runs)], group_by=["loss"], out_dir=str(tmp_path / "r1"))
    _, groups, _ = report(runs=[str(runs)], group_by=["loss"], out_dir=str(tmp_path / "r2"),
                          allow_unlike=["train_images", "limit_train"])
    assert groups.set_index("loss")["count"].to_dict() == {"bce": 2, "ce": 1}
    shutil.rmtree(runs / "bce-big")
    _, groups, _ = report(runs=[str(runs)], group_by=["loss"], out_dir=str(tmp_path / "r3"))
    assert list(groups["loss"]) == ["bce", "ce"]


def test_the_report_flags_unlike_runs_ungrouped_and_refuses_in_one_line_writing_nothing(smoke_run, tmp_path, monkeypatch):
    """report.ipynb's default view (nothing grouped) names the runs' difference in scale; a refused report is one line,
    keeps the runs' table and leaves no report folder; each run has one colour in both figures."""
    from rsbkit.workbook.figures import comparison_figure, overlay_figure, run_colours
    from rsbkit.workbook.run_studies import report_study

    points = tmp_path / "points"
    _variant(smoke_run, points / "short")
    _variant(smoke_run, points / "full", train_images=12000, limit_train=None, epochs_done=10, final_top1=80.0)
    monkeypatch.chdir(tmp_path)  # a report without out_dir goes to ./runs/report-<time>
    rep = report_study(runs=[str(points)])
    assert rep.refused is None and rep.folder.parent == Path("runs") and (rep.folder / "report.csv").is_file()
    assert set(rep.unlike) == {"train_images", "epochs_done"} and rep.unlike["train_images"] == ["12000", "128"]
    assert "Unlike runs: they differ in train_images: 12000, 128" in rep.summary()
    shutil.rmtree(tmp_path / "runs")
    refused = report_study(runs=[str(points)], group_by=["recipe"])
    assert refused.folder is None and refused.groups is None and not (tmp_path / "runs").exists()
    assert refused.summary().startswith("report refused (nothing written): the runs grouped by ['recipe'] also differ")
    assert "\n" not in refused.summary() and len(refused.view()) == 2
    assert report_study(runs=[str(tmp_path / "none")]).summary() == (
        f"report refused (nothing written): no run folder or folder of runs at {tmp_path / 'none'}")
    colours = run_colours(rep.table["run"])
    curves, costs = overlay_figure(rep.table["run"], colours=colours), comparison_figure(rep.completed, colours=colours)
    by_curve = {t.name: t.line.color for t in curves.data}
    by_marker = {t.name: t.marker.color for t in costs.data[1:]}
    by_bar = dict(zip(costs.data[0].y, costs.data[0].marker.color))
    assert by_curve == by_marker == by_bar and len(set(by_curve.values())) == 2


def _copy_run(smoke_run, folder, top1: float, **fields):
    """A copy of the smoke run that says it reached `top1` and trained with `fields` changed."""
    shutil.copytree(smoke_run, folder, ignore=shutil.ignore_patterns("*.pt"))
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    (folder / "recipe.yaml").write_text(yaml.safe_dump({**recipe, **fields}))
    result = json.loads((folder / "result.json").read_text())
    (folder / "result.json").write_text(json.dumps({**result, "final_top1": top1}))


def test_compare_reads_run_folders_such_as_an_explorers_trials(smoke_run, tmp_path):
    """Issue 47: a trial is an ordinary run folder, so the compare study reads it beside its reference runs at the
    same scale; a reference of one run is refused with how to train another seed of it."""
    from rsbkit.workbook.run_studies import comparison_study

    for seed, top1 in ((0, 50.0), (1, 51.0), (2, 50.5)):
        _copy_run(smoke_run, tmp_path / "reference" / f"seed{seed}", top1, seed=seed)
    for seed, top1 in ((0, 55.0), (1, 56.0)):
        _copy_run(smoke_run, tmp_path / "explore" / f"trial{seed}", top1, seed=seed, aa="rand-m9-mstd0.5-inc1")
    study = comparison_study(reference=str(tmp_path / "reference"), sweeps=[str(tmp_path / "explore")],
                             out_dir=str(tmp_path / "out"))
    row = study.table.iloc[1]
    assert row["variant"] == "aa=rand-m9-mstd0.5-inc1" and row["n"] == 2 and row["diff"] == pytest.approx(5.0)
    assert row["verdict"] == "beyond noise" and (tmp_path / "out" / "comparison.csv").is_file()
    with pytest.raises(RunError, match="at least 2 completed seeds.*--set seed=1"):
        comparison_study(reference=str(tmp_path / "reference" / "seed0"), sweeps=[str(tmp_path / "explore")])
