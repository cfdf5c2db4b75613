"""Every notebook is stored clean, documents its parameters, and runs under papermill with
smoke parameters on CPU; each test checks what the notebook produced, not only that it ran."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from clock import limit
from conftest import ROOT, figures, run_whole, texts

from rsbkit.workbook.study_stats import VERDICTS

pytestmark = pytest.mark.cost(130)  # seconds in the suite on 2 cores: files start costliest first (conftest)

NOTEBOOKS = sorted(p.relative_to(ROOT) for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in str(p))
EXECUTED = sorted(str(p) for p in NOTEBOOKS if p.parts[1] in ("procedures", "studies")) + ["notebooks/report.ipynb"]
SMOKE = dict(recipe="params/smoke.yaml", limit_train=128, limit_val=64, device="cpu", workers=0)


def test_the_notebooks_exist():
    assert {"notebooks/procedures/train.ipynb", "notebooks/procedures/evaluate_resolution.ipynb",
            "notebooks/studies/seed_variance.ipynb", "notebooks/studies/ablation.ipynb"} <= set(EXECUTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_stored_without_outputs_with_a_parameters_cell(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path} holds outputs: clear them before committing"
    assert nb.metadata.kernelspec.name == "python3"
    if path.parts[1] != "explore":
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_reading_a_notebook_builds_no_iri_parser():
    """nbformat (papermill, the HTML export, Jupyter) imports jsonschema's format checkers; from 4.25 these import
    rfc3987-syntax, which builds a Lark parser: 1.2-1.5 s per process (pyproject.toml keeps jsonschema below it)."""
    code = "import sys, nbformat, nbformat.validator; print(sorted(m for m in sys.modules if m.startswith(('rfc3987', 'lark'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit(60))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("path", EXECUTED)
def test_help_notebook_documents_every_parameter(path, monkeypatch, caplog):
    """`papermill --help-notebook PATH`, through papermill's own command line (click), in this process; a line
    papermill cannot parse is a logged warning."""
    from click.testing import CliRunner
    from papermill.cli import papermill

    monkeypatch.chdir(ROOT)
    out = CliRunner().invoke(papermill, ["--help-notebook", path])
    assert out.exit_code == 0 and "Unable to parse" not in out.output + caplog.text, out.output + caplog.text
    nb = nbformat.read(ROOT / path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = [line.split(":")[0] for line in cell.source.splitlines() if ": " in line and " = " in line]
    assert names
    for name in names:
        line = next(li for li in out.stdout.splitlines() if li.strip().startswith(f"{name}:"))
        assert "(default" in line, line  # "name: type (default value)", then its comment
    assert out.stdout.count("(default") == len(names)


def test_train_notebook_bad_field_fails_in_the_validation_cell(tmp_path):
    """Plain papermill: non-zero exit, the failed notebook kept, the core library's message in it."""
    failed = tmp_path / "failed.ipynb"
    out = subprocess.run([sys.executable, "-m", "papermill", "notebooks/procedures/train.ipynb", str(failed), "-k", "python3",
                          "-p", "recipe", "params/smoke.yaml", "-y", "overrides: {lrr: 0.1}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=limit(300))
    assert out.returncode != 0 and "unknown recipe field 'lrr'; did you mean 'lr'" in out.stderr
    nb = nbformat.read(failed, as_version=4)
    assert "papermill-error-cell-tag" in nb.cells[0].metadata.get("tags", [])  # papermill's banner on top
    errors = [(c.source, o) for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and "train_setup(" in errors[0][0] and errors[0][1].ename == "RecipeError"


def test_evaluate_resolution_notebook_fills_the_grid(smoke_run, tmp_path, cli):
    res = cli("run", "notebooks/procedures/evaluate_resolution.ipynb", "-p", "source", str(smoke_run),
                  "-p", "resolutions", "[24, 32, 40]", "-p", "crops", "[0.95, 1.0]", "-p", "limit_val", "64",
                  "-p", "device", "cpu", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    table = pd.read_csv(tmp_path / "resolution.csv")
    assert sorted(zip(table["test_res"], table["crop_pct"])) == [(r, c) for r in (24, 32, 40) for c in (0.95, 1.0)]
    assert list(table["resize_to"]) == [25, 24, 33, 32, 42, 40]  # resize to res / crop, then centre-crop res
    # at the recipe's own test resolution and crop, the same top-1 the run recorded
    final = json.loads((smoke_run / "result.json").read_text())["final_top1"]
    assert table[(table["test_res"] == 32) & (table["crop_pct"] == 0.95)]["top1"].item() == pytest.approx(final, abs=1e-3)
    executed = tmp_path / "evaluate_resolution.ipynb"
    assert len(figures(executed)) == 1 and (tmp_path / "resolution.png").is_file()
    text = texts(executed)
    assert "best top-1" in text and "80.24" in text  # the summary, and Table 9 beside it


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """rsbkit built as a wheel and installed into a folder of its own (its dependencies are the venv's)."""
    base = tmp_path_factory.mktemp("installed")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(base / "wheel"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    [wheel] = (base / "wheel").glob("rsbkit-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(base / "site"),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return base / "site"


def run_installed(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A command with the installed copy first on the path, from a folder that is not the checkout."""
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return run_whole([sys.executable, *args], cwd=cwd, env=env, timeout=600)


def test_the_wheel_ships_every_notebook_and_the_library_finds_them(installed, tmp_path):
    root = installed / "rsbkit" / "_notebooks"
    shipped = sorted(str(p.relative_to(root)) for p in root.rglob("*.ipynb"))
    assert shipped == sorted(str(p.relative_to("notebooks")) for p in NOTEBOOKS)
    code = ("import rsbkit, rsbkit.workbook.architecture_studies as m, rsbkit.workbook.sweep as s; print(rsbkit.__file__); "
            "print(s.find_notebook(m.TRAIN_NOTEBOOK)); print(s.find_notebook('studies/seed_variance.ipynb'))")
    out = run_installed(installed, tmp_path, "-c", code)
    assert out.returncode == 0, out.stderr
    module, train, seeds = out.stdout.split()
    assert Path(module).parent == installed / "rsbkit"  # the installed copy, not the checkout
    assert (train, seeds) == (str(root / "procedures" / "train.ipynb"), str(root / "studies" / "seed_variance.ipynb"))
    bad = run_installed(installed, tmp_path, "-m", "rsbkit", "run", "notebooks/procedures/trian.ipynb")
    assert bad.returncode == 2 and "notebook notebooks/procedures/trian.ipynb does not exist" in bad.stderr
    assert "notebooks/procedures/train.ipynb" in bad.stderr  # the ones it has, named


@pytest.fixture(scope="module")
def seed_study(tmp_path_factory, installed):
    """The seed study as its notebook documents it, run by an installed rsbkit (a wheel, not the checkout)
    from a folder holding only the sweep file: the study notebook and the train notebook its sweep names
    both come from the package."""
    base = tmp_path_factory.mktemp("seeds")
    sweep = base / "seeds.yaml"
    sweep.write_text(yaml.safe_dump(dict(notebook="notebooks/procedures/train.ipynb", out=str(base / "points"),
                                         parameters={**SMOKE, "recipe": str(ROOT / "params" / "smoke.yaml")},
                                         seeds=[0, 1])))
    res = run_installed(installed, base, "-m", "rsbkit", "run", "notebooks/studies/seed_variance.ipynb", "-p", "sweep",
                        "seeds.yaml", "-p", "jobs", "2", "--out", "study")
    assert res.returncode == 0, res.stdout + res.stderr
    assert str(installed / "rsbkit" / "_notebooks" / "studies" / "seed_variance.ipynb") in res.stdout
    return base


def test_seed_variance_notebook_runs_the_seeds_and_reports_their_spread(seed_study):
    stats = json.loads((seed_study / "study" / "seed_stats.json").read_text())
    finals = {json.loads((seed_study / "points" / f"seed={s}" / "result.json").read_text())["seed"]:
              json.loads((seed_study / "points" / f"seed={s}" / "result.json").read_text())["final_top1"] for s in (0, 1)}
    assert sorted(stats["seeds"]) == [0, 1] and stats["n"] == 2
    assert (stats["recipe"], stats["data"]) == ("smoke", "default")  # what the ablation matches it by
    for s in (0, 1):  # trained by the installed copy (outside git), each point keeping its executed notebook
        assert json.loads((seed_study / "points" / f"seed={s}" / "result.json").read_text())["code_version"] == "rsbkit 0.1.0"
        assert (seed_study / "points" / f"seed={s}" / "train.ipynb").is_file()
    assert stats["mean"] == pytest.approx(statistics.mean(finals.values()))
    assert stats["std"] == pytest.approx(statistics.stdev(finals.values()))
    assert stats["noise_band_1"] == pytest.approx(12.706205 * stats["std"] * 2 ** 0.5)  # t(0.975) with 2 - 1 df
    executed = seed_study / "study" / "seed_variance.ipynb"
    assert len(figures(executed)) == 1 and "Gaussian fit" in json.dumps(figures(executed)[0]["application/vnd.plotly.v1+json"])
    assert "2 seeds: final_top1" in texts(executed)
    # said before the seeds trained, by `rsbkit run` and the notebook: the points and the time at the demo's pace
    assert "this study starts 2 training points of 2: about 15 s with 2 at once" in " ".join(texts(executed).split())


def test_after_a_short_run_the_tour_shows_the_demo_record_and_the_report_flags_the_short_run(seed_study, tmp_path, cli,
                                                                                              monkeypatch):
    """Issue 47: a short run made before class (the seed study's points: 1 epoch, 128 images) does not become the
    tour's finished run (the tour shows the committed demo record, says so and at what scale, and lists the short run
    with its own); the report's default view puts it beside the demo record flagged as unlike, without a traceback."""
    from rsbkit.workbook.train_and_evaluate import DEMO_RECORD

    shutil.copytree(seed_study / "points" / "seed=0", tmp_path / "runs" / "walk-short", ignore=shutil.ignore_patterns("*.pt"))
    monkeypatch.chdir(tmp_path)  # the tour's runs/ is ./runs, holding only the short run
    res = cli("run", str(ROOT / "notebooks" / "tour.ipynb"), "--out", str(tmp_path / "tour"))
    assert res.returncode == 0, res.stdout + res.stderr
    said = " ".join(texts(tmp_path / "tour" / "tour.ipynb").split())  # printed text is wrapped between words
    assert ("This tour shows the committed record of the demo procedure (params/demo.yaml, trained 2026-12-04): "
            "10 epochs, 12,000 train / 2,000 val images of Fashion-MNIST, embedded subset, final top-1 81.80%") in said
    assert "the newest finished under runs/: runs/walk-short (1 epoch, 128 train / 64 val images of" in said, said[:900]
    assert "demo trains at batch 256 with peak LR 0.008" in said and "= 0.002828" in said  # section 2: the demo's LR
    assert "ResNet strikes back (NeurIPS-W 2021), Table 1" in said and "Traceback" not in said
    res = cli("run", str(ROOT / "notebooks" / "report.ipynb"), "-p", "runs", f"[{tmp_path / 'runs'}, {DEMO_RECORD}]",
              "--out", str(tmp_path / "report"))
    assert res.returncode == 0, res.stdout + res.stderr
    said = " ".join(texts(tmp_path / "report" / "report.ipynb").split())
    assert "2 runs; report.csv in" in said and "Unlike runs: they differ in" in said
    assert "train_images: 12000, 128" in said and "epochs_done: 1, 10" in said and "Traceback" not in said
    assert len(figures(tmp_path / "report" / "report.ipynb")) == 2


def test_ablation_notebook_lays_out_table6(seed_study, tmp_path, cli):
    sweep = tmp_path / "ablation.yaml"
    sweep.write_text(yaml.safe_dump(dict(notebook="notebooks/procedures/train.ipynb", out=str(tmp_path / "points"),
                                         parameters=SMOKE, grid={"loss": ["bce", "ce"]})))
    res = cli("run", "notebooks/studies/ablation.ipynb", "-p", "sweep", str(sweep), "-p", "jobs", "2",
                  "-p", "seed_stats", str(seed_study / "study" / "seed_stats.json"), "--out", str(tmp_path / "study"))
    assert res.returncode == 0, res.stdout + res.stderr
    table = pd.read_csv(tmp_path / "study" / "ablation.csv")
    top1 = {loss: json.loads((tmp_path / "points" / f"loss={loss}" / "result.json").read_text())["final_top1"]
            for loss in ("bce", "ce")}
    assert list(table["loss"]) == ["BCE", "CE"] and list(table["reference"]) == [True, False]
    assert table["delta"].iloc[1] == pytest.approx(top1["ce"] - top1["bce"])
    noise = json.loads((seed_study / "study" / "seed_stats.json").read_text())["noise_band_1"]
    assert bool(table["beyond_noise"].iloc[1]) == (abs(top1["ce"] - top1["bce"]) > noise)
    # smoke.yaml is A3 (LR 8e-3, WD 0.02, no repeats): the paper has the CE cell of that row only
    assert pd.isna(table["paper_A2"].iloc[0]) and table["paper_A2"].iloc[1] == 78.72
    assert len(figures(tmp_path / "study" / "ablation.ipynb")) == 1
    assert "this study starts 2 training points of 2: about" in res.stdout  # said before the points started

    # the same runs as variants of the seed study's recipe, against its seeds (nothing trains again)
    res = cli("run", "notebooks/studies/compare.ipynb", "-p", "reference", str(seed_study / "seeds.yaml"),
                  "-p", "sweeps", f"[{sweep}]", "--out", str(tmp_path / "compare"))
    assert res.returncode == 0, res.stdout + res.stderr
    stats = json.loads((seed_study / "study" / "seed_stats.json").read_text())
    compare = pd.read_csv(tmp_path / "compare" / "comparison.csv")
    assert list(compare["variant"]) == ["smoke (reference)", "same as the reference", "loss=ce"]
    assert list(compare["n"]) == [2, 1, 1] and compare["mean"][0] == pytest.approx(stats["mean"])
    assert compare["diff"][2] == pytest.approx(top1["ce"] - stats["mean"])
    assert compare["noise_band"][2] == pytest.approx(12.706205 * stats["std"] * (1 + 1 / 2) ** 0.5)
    assert len(pd.read_csv(tmp_path / "compare" / "comparison_runs.csv")) == 4
    # the points and the time are said before anything would train, by `rsbkit run` and by the notebook
    said = "all 4 training points are completed: nothing trains, the study reads them"
    assert said in res.stdout and said in texts(tmp_path / "compare" / "compare.ipynb")
    assert (tmp_path / "compare" / "comparison.png").is_file() and "loss=ce: " in texts(tmp_path / "compare" / "compare.ipynb")
    # each variant's 95% interval and its verdict, one of three, in the table and in the printed summary
    row = compare.iloc[2]
    assert row["low"] == pytest.approx(row["diff"] - row["band"]) and row["verdict"] in VERDICTS
    said = texts(tmp_path / "compare" / "compare.ipynb")
    assert f"(95% interval {row['low']:+.2f} to {row['high']:+.2f}; {row['verdict']}" in said

    # the committed findings' runs, read back by the same notebook: every variant's interval and verdict as
    # findings/comparison.csv has them, and nothing trains
    res = cli("run", "notebooks/studies/compare.ipynb", "-p", "runs_csv", str(ROOT / "findings" / "comparison_runs.csv"),
              "--out", str(tmp_path / "findings"))
    assert res.returncode == 0, res.stdout + res.stderr
    committed = pd.read_csv(ROOT / "findings" / "comparison.csv")
    again = pd.read_csv(tmp_path / "findings" / "comparison.csv")
    assert list(again["variant"]) == list(committed["variant"]) and list(again["verdict"][1:]) == list(committed["verdict"][1:])
    assert again["low"][1:].tolist() == pytest.approx(committed["low"][1:].tolist())
    said = texts(tmp_path / "findings" / "compare.ipynb")
    for row in committed.iloc[1:].itertuples():
        assert f"{row.variant}: " in said and f"(95% interval {row.low:+.2f} to {row.high:+.2f}; {row.verdict}" in said
    assert {"beyond noise", "cannot tell at this number of seeds"} <= set(committed["verdict"].dropna())
    assert not (tmp_path / "findings" / "runs").exists()

    # the regime study (issue 48) read back from its committed runs: the same gains and trends, its figure, no training
    res = cli("run", "notebooks/studies/regime.ipynb", "-p", "runs_csv", str(ROOT / "findings" / "regime_runs.csv"),
              "--out", str(tmp_path / "regime"))
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("regime_gains", "regime_trends"):
        committed, again = pd.read_csv(ROOT / "findings" / f"{name}.csv"), pd.read_csv(tmp_path / "regime" / f"{name}.csv")
        assert list(again["verdict"]) == list(committed["verdict"])
        assert again["low"].tolist() == pytest.approx(committed["low"].tolist())
    said = " ".join(texts(tmp_path / "regime" / "regime.ipynb").split())
    assert "runs_csv is given: this study reads finished runs and trains nothing" in said
    assert "their gain over none on 1,500 training images" in said and len(figures(tmp_path / "regime" / "regime.ipynb")) == 1

    # its two sister studies, read back the same way: depth against width, procedure against architecture
    for notebook, stem, tables, words in (
            ("depth_width", "depth_width", ("depth_width_gains", "depth_width_trends"), "resnet34 minus resnet18 w1.41"),
            ("procedure_architecture", "procedure", ("procedure_gains", "procedure_pairs"), "Ranking by mean test top-1")):
        res = cli("run", f"notebooks/studies/{notebook}.ipynb", "-p", "runs_csv", str(ROOT / "findings" / f"{stem}_runs.csv"),
                  "--out", str(tmp_path / notebook))
        assert res.returncode == 0, res.stdout + res.stderr
        for name in tables:
            committed, again = pd.read_csv(ROOT / "findings" / f"{name}.csv"), pd.read_csv(tmp_path / notebook / f"{name}.csv")
            assert list(again["verdict"]) == list(committed["verdict"])
            assert again["low"].tolist() == pytest.approx(committed["low"].tolist())
        said = " ".join(texts(tmp_path / notebook / f"{notebook}.ipynb").split())
        assert "runs_csv is given: this study reads finished runs and trains nothing" in said and words in said
        assert len(figures(tmp_path / notebook / f"{notebook}.ipynb")) == 1

    # the report gathers the ablation's runs and groups them
    res = cli("run", "notebooks/report.ipynb", "-p", "runs", f"[{tmp_path / 'points'}]", "-p", "group_by", "[loss]",
                  "--out", str(tmp_path / "report"))
    assert res.returncode == 0, res.stdout + res.stderr
    report = pd.read_csv(tmp_path / "report" / "report.csv")
    assert sorted(report["name"]) == ["loss=bce", "loss=ce"] and set(report["status"]) == {"completed"}
    assert sorted(report["final_top1"]) == sorted(top1.values())
    assert len(figures(tmp_path / "report" / "report.ipynb")) == 2

