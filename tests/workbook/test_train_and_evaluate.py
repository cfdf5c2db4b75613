"""The notebook-facing functions: parameter validation, the paper table, the study helpers."""
from __future__ import annotations

import re

import pytest

from rsbkit.core.errors import DataError, RecipeError, RunError
from rsbkit.core.evaluate import default_resolutions
from rsbkit.core.runs import load_run
from rsbkit.workbook.train_and_evaluate import beside_paper, resolution_study, train_setup


def test_train_setup_turns_parameters_into_objects(tmp_path):
    setup = train_setup(recipe="params/smoke.yaml", overrides={"epochs": 2}, seed=7, out_dir=str(tmp_path / "r"),
                        device="auto", limit_train=64, limit_val=32)
    assert (setup.recipe.epochs, setup.recipe.seed, setup.recipe.model) == (2, 7, "resnet10t")
    assert (len(setup.data.train), len(setup.data.val), setup.device) == (64, 32, "cpu")
    assert setup.run_dir == tmp_path / "r" and setup.schedule() is None  # nothing planned before the run starts


def test_train_setup_shows_what_the_recipe_changes_from_its_base(tmp_path):
    demo = train_setup(recipe="params/demo.yaml", out_dir=str(tmp_path / "demo"))
    table = demo.changes()
    assert list(table.columns) == ["a3 (base)", "demo (this run)"]
    assert table.loc["model"].tolist() == ["resnet50", "resnet18"] and table.loc["scale"].tolist() == ["[0.08, 1.0]", "[0.25, 1.0]"]
    assert table.loc["train_res"].tolist() == ["160", "32"] and "lr" not in table.index and "name" not in table.index
    assert demo.recipe_note().startswith(f"recipe demo: a3 with {len(table)} changes;")
    assert str(tmp_path / "demo" / "recipe.yaml") in demo.recipe_note()
    # a name with overrides: the overrides are the changes; a YAML without base: rsbkit's field defaults
    named = train_setup(recipe="a3", overrides={"epochs": 20}, seed=3, out_dir=str(tmp_path / "a3"))
    assert named.changes().to_dict("index") == {"epochs": {"a3 (base)": "100", "a3 (this run)": "20"},
                                                "seed": {"a3 (base)": "0", "a3 (this run)": "3"}}
    bare = tmp_path / "bare.yaml"
    bare.write_text("epochs: 30\naa: null\n")
    table = train_setup(recipe=str(bare), out_dir=str(tmp_path / "bare")).changes()
    assert table.to_dict("index") == {"epochs": {"custom (base)": "100", "bare (this run)": "30"},
                                      "aa": {"custom (base)": "rand-m7-mstd0.5-inc1", "bare (this run)": "null"}}


def test_figures_name_the_dataset_as_readers_know_it(tmp_path):
    setup = train_setup(recipe="params/smoke.yaml", out_dir=str(tmp_path / "r"), limit_train=64, limit_val=32)
    assert setup.data.label == "Fashion-MNIST, embedded subset (64 train / 32 test images)"
    assert setup.data.describe()["title"] == "Fashion-MNIST, embedded subset"
    fig = setup.curves([dict(epoch=1, lr=1e-3, train_loss=1.0, val_top1=50.0, val_top5=90.0)])
    assert "on Fashion-MNIST, embedded subset (64 train / 32 test images)" in fig.layout.title.text
    assert "default" not in fig.layout.title.text


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(recipe="a9"), RecipeError, "unknown recipe 'a9'"),
    (dict(recipe="a3", overrides={"lrr": 1}), RecipeError, "unknown recipe field 'lrr'; did you mean 'lr'"),
    (dict(recipe="a3", overrides="epochs=2"), RunError, "overrides must be a dict"),
    (dict(recipe="a3", data="/no/such/dir"), DataError, "/no/such/dir does not exist"),
    (dict(recipe="a3", progress="bar"), RunError, "progress='bar': use one of line, none"),
    (dict(recipe="a3", limit_train=-5), RunError, "limit_train=-5: give an integer >= 1, or None"),
    (dict(recipe="a3", check_everyy=5), RunError, "unknown run option 'check_everyy'; did you mean 'check_every'"),
    (dict(recipe="a3", workers=1, options={"workers": 2}), RunError, "workers given twice"),
    (dict(recipe="a3", device="tpu"), Exception, "tpu"),
])
def test_train_setup_rejects_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        train_setup(**kwargs)


def test_train_setup_resume_rules(smoke_run, tmp_path):
    with pytest.raises(RunError, match="already holds a run .* set resume=True"):
        train_setup(recipe="params/smoke.yaml", out_dir=str(smoke_run))
    with pytest.raises(RunError, match="resume=True but .*last.pt does not exist"):
        train_setup(recipe="params/smoke.yaml", out_dir=str(tmp_path / "new"), resume=True)


def test_beside_paper_puts_the_run_next_to_the_recipe_it_scales(smoke_run):
    from rsbkit.core.recipes import A3, smoke

    result = load_run(smoke_run)["result"]
    table = beside_paper(result, smoke(A3, batch_size=16))
    paper = table["paper (a3)"]
    assert paper["val top-1 (%), final"] == "78.10" and paper["ImageNet-ReaL top-1 (%)"] == "84.50"
    assert paper["model"] == "resnet50" and paper["train / test resolution"] == "160 / 224" and paper["epochs"] == "100"
    assert paper["training time"] == "15 h on 4 x V100 16GB"
    assert table.loc["val top-1 (%), final", "this run"] == f"{result['final_top1']:.2f}"
    assert table.loc["model", "this run"] == "resnet10t" and "ResNet strikes back" in table.attrs["source"]


def test_default_resolutions_span_the_fixres_range():
    assert default_resolutions(32) == [24, 28, 32, 36, 40, 48]
    assert default_resolutions(160) == [120, 140, 160, 180, 200, 240]


def test_resolution_study_agrees_with_the_runs_own_evaluation(smoke_run, tmp_path):
    """At the recipe's own test resolution and crop, the sweep reproduces the top-1 the run recorded."""
    result = load_run(smoke_run)["result"]
    study = resolution_study(source=str(smoke_run), resolutions=[24, 32], crops=[0.95, 1.0], limit_val=64,
                             out_dir=str(tmp_path))
    table = study.table
    assert sorted(zip(table["test_res"], table["crop_pct"])) == [(24, 0.95), (24, 1.0), (32, 0.95), (32, 1.0)]
    at_recipe = table[(table["test_res"] == 32) & (table["crop_pct"] == 0.95)]["top1"].item()
    assert at_recipe == pytest.approx(result["final_top1"], abs=1e-3)
    assert (tmp_path / "resolution.csv").is_file() and study.pivot().shape == (2, 2)
    assert "best top-1" in study.summary() and "train resolution (32 px)" in study.summary()
    with pytest.raises(RunError, match="crop ratios lie in"):
        resolution_study(source=str(smoke_run), crops=[95])


def test_the_ablation_finds_the_seed_study_of_its_own_recipe_and_data(smoke_run, tmp_path, monkeypatch):
    """seed_stats='auto': the noise band of a seed study measured with the same recipe, data and metric,
    looked up in the seed sweep's folder, then in the committed findings; none for another recipe."""
    import json

    from rsbkit.workbook import run_studies

    def stats(path, **fields):
        record = dict(metric="final_top1", recipe="a3-smoke", data="default", n=5, mean=50.0, std=0.5, min=49.0, max=51.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**record, **fields}))
        return path

    runs_place, findings_place = tmp_path / "runs" / "seed_stats.json", tmp_path / "findings" / "seed_stats.json"
    monkeypatch.setattr(run_studies, "SEED_STATS_PLACES", (runs_place, findings_place))
    stats(findings_place, std=0.25)
    assert run_studies.find_seed_stats("a3-smoke", "default") == findings_place
    stats(runs_place, recipe="demo")  # another recipe's seed study does not apply
    assert run_studies.find_seed_stats("a3-smoke", "default") == findings_place
    assert run_studies.find_seed_stats("a3-smoke", "fashion-mnist") is None
    assert run_studies.find_seed_stats("a3-smoke", "default", metric="best_top1") is None
    table, noise, _ = run_studies.ablation_study(runs=str(smoke_run), reference={}, seed_stats="auto", out_dir=str(tmp_path / "a"))
    t4 = 2.776445  # Student's t, two-sided 95%, with the 5-seed study's 4 degrees of freedom
    assert noise == pytest.approx(t4 * 0.25 * 2 ** 0.5, rel=1e-6) and table.attrs["noise_source"] == str(findings_place)
    stats(runs_place)  # the sweep folder's own study first
    assert run_studies.ablation_study(runs=str(smoke_run), reference={}, seed_stats="auto",
                                     out_dir=str(tmp_path / "a"))[1] == pytest.approx(t4 * 0.5 * 2 ** 0.5, rel=1e-6)
    assert run_studies.ablation_study(runs=str(smoke_run), reference={}, seed_stats="", out_dir=str(tmp_path / "a"))[1] is None


def test_torchrun_rows_come_from_metrics_csv_even_when_the_run_prints_nothing(tmp_path, embedded, monkeypatch):
    """Under torchrun the live figure's rows are read from metrics.csv as it changes, not from printed "epoch" lines,
    which `progress="none"` does not print: a silent stand-in for torchrun writes two epochs' rows and its result."""
    import sys
    import textwrap

    from rsbkit.core.recipes import A3, smoke
    from rsbkit.workbook.train_and_evaluate import TrainSetup

    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import json, os, time
        from pathlib import Path
        run = Path({str(run)!r})
        for n in (1, 2):
            rows = "".join(f"{{e}},{{e * 10}},0.5\\n" for e in range(1, n + 1))
            (run / "tmp.csv").write_text("epoch,step,train_loss\\n" + rows)
            os.replace(run / "tmp.csv", run / "metrics.csv")
            time.sleep(1.2)
        (run / "result.json").write_text(json.dumps({{"status": "completed"}}))
    """)
    monkeypatch.setattr(TrainSetup, "torchrun_command", lambda self: [sys.executable, "-c", script])
    setup = TrainSetup(smoke(A3), embedded, run, "cpu", options=dict(progress="none", nproc=2))
    rows = []
    assert setup.train(on_epoch=rows.append)["status"] == "completed"
    assert rows == [{"epoch": 1, "step": 10, "train_loss": 0.5}, {"epoch": 2, "step": 20, "train_loss": 0.5}]


def test_resolution_study_takes_a_validation_only_folder(smoke_run, embedded, tmp_path):
    """The evaluate notebook's study on a folder of class folders named by index, without train/ (ImageNet-V2's layout)."""
    for i in range(30):
        img, label = embedded.val[i]
        (tmp_path / "v2" / str(label)).mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "v2" / str(label) / f"{i}.png")
    study = resolution_study(source=str(smoke_run), data=str(tmp_path / "v2"), resolutions=[32], crops=[0.95],
                             device="cpu", out_dir=str(tmp_path / "out"))
    assert list(study.table["test_res"]) == [32] and 0 <= study.table["top1"].item() <= 100


def test_the_tour_shows_the_demo_record_or_the_run_named_never_the_newest(smoke_run, tmp_path):
    """With `run` empty the tour shows the committed record of the demo procedure even when runs/ holds a newer
    finished run (a shortened test run is not "the finished run"): it lists that run, with its scale. A run named
    is shown with its scale, and said to be unlike the demo's when it is."""
    import json
    import shutil

    from rsbkit.workbook.train_and_evaluate import DEMO_RECORD, tour_run

    runs = tmp_path / "runs"
    short = runs / "walk-2ep"
    shutil.copytree(smoke_run, short, ignore=shutil.ignore_patterns("*.pt"))
    result = json.loads((short / "result.json").read_text())
    (short / "result.json").write_text(json.dumps({**result, "epochs": 2, "epochs_done": 2,
                                                   "data": {**result["data"], "train_images": 2000, "limit_train": 2000}}))
    shown = tour_run("", runs)
    assert shown.folder == DEMO_RECORD and shown.record["result"]["final_top1"] > 80 and shown.recipe.name == "demo"
    assert shown.line.startswith("the committed record of the demo procedure (params/demo.yaml, trained 2026-12-04): "
                                 "10 epochs, 12,000 train / 2,000 val images of Fashion-MNIST, embedded subset, "
                                 "final top-1 81.80%")
    assert f"{short} (2 epochs, 2,000 train / 64 val images (limited to 2,000) of" in shown.line
    named = tour_run(str(short), runs)
    assert named.folder == short and named.line.startswith(f"the run you named, {short}: 2 epochs, 2,000 train")
    assert "Not at the demo's scale (10 epochs, 12,000 train" in named.line
    assert "Not at" not in tour_run(str(DEMO_RECORD)).line
    with pytest.raises(RunError, match="holds no result.json"):
        tour_run(str(tmp_path))


def test_the_tour_draws_the_lr_the_demo_uses_with_the_batch_rule():
    from rsbkit.core.recipes import A3
    from rsbkit.workbook.train_and_evaluate import lr_note, tour_run

    note = lr_note(tour_run().recipe)
    assert note.startswith("demo trains at batch 256 with peak LR 0.008 (batch 256: lr 0.008 as defined by the recipe).")
    assert "a3 defines LR 0.008 for a global batch of 2048; at batch 256 its rule (sqrt scaling" in note
    assert "0.008 x sqrt(256/2048) = 0.002828" in note and "its own batch: no scaling" in note
    assert lr_note(A3) == "a3 trains at batch 2048 with peak LR 0.008 (batch 2048: lr 0.008 as defined by the recipe)."


def test_the_paper_column_cites_a_paper_row_or_is_absent():
    """The demo record's recipe.yaml has no paper numbers of its own; its result.json carries A3's (RSB Table 1), so
    the column is A3's row (ResNet-50, 100 epochs, 160 / 224 px), never the run's own recipe with empty cells."""
    from rsbkit.workbook.train_and_evaluate import tour_run

    shown = tour_run()
    table = beside_paper(shown.record["result"], shown.recipe)
    paper = table["paper (a3)"]
    assert (paper["model"], paper["epochs"], paper["train / test resolution"]) == ("resnet50", "100", "160 / 224")
    assert paper["val top-1 (%), final"] == "78.10" and "Table 1" in table.attrs["source"]
    alone = beside_paper({**shown.record["result"], "reported": None}, shown.recipe)
    assert list(alone.columns) == ["this run"] and "no paper column" in alone.attrs["source"]


def test_printed_text_wraps_between_words():
    from rsbkit.workbook.text import wrap

    text = "the additive study changes " * 10 + "/a/very/long/path/" * 8
    lines = wrap(text, 40).split("\n")
    assert " ".join(lines).split() == text.split()  # every word whole
    assert all(len(li) <= 40 for li in lines[:-1]) and lines[-1] == "/a/very/long/path/" * 8
