"""The model studies (architectures, transfer, ResNet-RS scaling) run under papermill at smoke scale on
CPU, through the sweep runner; each test checks the tables the notebook wrote."""
from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest
from conftest import texts

pytestmark = pytest.mark.cost(180)  # seconds in the suite on 2 cores: files start costliest first (conftest)

SMOKE = ["-p", "recipe", "params/smoke.yaml", "-p", "limit_train", "64", "-p", "limit_val", "32", "-p", "device", "cpu",
         "-p", "workers", "0", "-p", "jobs", "2"]


def figures(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_architectures_table_with_measured_speed_and_clear_errors(tmp_path, cli):
    out = tmp_path / "arch"
    res = cli("run", "notebooks/studies/architectures.ipynb", *SMOKE, "-p", "models", "[resnet10t, test_vit, resnet5O]",
                  "-p", "speed_batch", "4", "-p", "speed_steps", "2", "-p", "out_dir", str(out), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(out / "architectures.csv").set_index("model")
    assert list(table.index) == ["resnet10t", "test_vit", "resnet5O"]
    for model in ("resnet10t", "test_vit"):
        row = table.loc[model]
        assert row["status"] == "completed" and 0 <= row["final_top1"] <= 100
        assert row["train_imgs_per_s"] > 0 and row["infer_imgs_per_s"] > 0 and row["params_m"] > 0 and row["gmacs"] > 0
        assert row["device"].startswith("CPU") and row["res"] == 32
    assert "did you mean 'resnet50'" in table.loc["resnet5O", "speed_error"]
    assert pd.isna(table.loc["resnet5O", "final_top1"])  # not trained, and the others ran
    assert table.loc["resnet10t", "params_m"] < 5.5  # resnet10t with 10 classes: ~4.9 M
    assert figures(out / "architectures.ipynb") == 1
    assert (out / "runs" / "model=resnet10t" / "result.json").is_file()


def test_transfer_from_a_run_to_a_folder_dataset_laid_out_like_table5(tmp_path, smoke_run, image_folder, cli):
    out = tmp_path / "transfer"
    finetune = tmp_path / "ft.yaml"
    finetune.write_text("base: a3\nmodel: resnet10t\nepochs: 1\nwarmup_epochs: 0\nbatch_size: 16\nlr_base_size: 16\n"
                        "train_res: 32\ntest_res: 32\nopt: sgd\nlr: 0.01\nloss: ce\nmixup: 0\ncutmix: 0\n")
    res = cli("run", "notebooks/studies/transfer.ipynb", "-p", "sources", json.dumps([str(smoke_run)]),
                  "-p", "targets", json.dumps([str(image_folder)]), "-p", "recipe", str(finetune), "-p", "device", "cpu",
                  "-p", "workers", "0", "-p", "jobs", "2", "-p", "out_dir", str(out), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(out / "transfer.csv").set_index("target")
    row = table.loc[str(image_folder)]
    assert (row["train_images"], row["test_images"], row["classes"]) == (72, 18, 3)
    assert 0 <= row[smoke_run.name] <= 100 and 0 <= row["scratch-resnet10t"] <= 100
    # the fine-tuned run started from the source's weights, with a new 3-class head
    recipe = (out / "runs" / f"{smoke_run.name}_to_imgs" / "recipe.yaml").read_text()
    assert f"init: {smoke_run}" in recipe
    assert "init: null" in (out / "runs" / "scratch-resnet10t_to_imgs" / "recipe.yaml").read_text()
    text = "".join(o.get("text", "") for c in nbformat.read(out / "transfer.ipynb", as_version=4).cells
                   if c.cell_type == "code" for o in c.outputs)
    assert "failed" not in text


def test_resnet_rs_scaling_grid_with_pareto_and_published_points(tmp_path, cli):
    out = tmp_path / "rs"
    res = cli("run", "notebooks/studies/resnet_rs_scaling.ipynb", *SMOKE, "-p", "models", "[resnet10t]",
                  "-p", "widths", "[0.5]", "-p", "resolutions", "[24, 32]", "-p", "epochs", "[1]",
                  "-p", "speed_batch", "4", "-p", "speed_steps", "1", "-p", "published_models", "[resnetrs50, efficientnet_b0]",
                  "-p", "published_batch", "2", "-p", "out_dir", str(out), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(out / "scaling.csv")
    assert len(table) == 2 * 2  # (10t, 10t x0.5) x 2 resolutions (x 1 length: a smoke run; more depths and two lengths in test_models)
    assert set(table["status"]) == {"completed"} and table["top1"].between(0, 100).all()
    assert set(zip(table["model"], table["width"], table["scaling"])) == {("resnet10t", 1.0, "depth"), ("resnet10t", 0.5, "width")}
    narrow = table[(table["width"] == 0.5) & (table["res"] == 32)]["gmacs"].iloc[0]
    full = table[(table["width"] == 1.0) & (table["model"] == "resnet10t") & (table["res"] == 32)]["gmacs"].iloc[0]
    assert narrow < full / 2.5  # half width: about a quarter of the multiply-accumulates
    versus = pd.read_csv(out / "depth_vs_width.csv")
    assert len(versus) == 2 and set(versus["higher"]) <= {"depth", "width", "tie"}
    assert set(versus["better"]) == {"cannot tell at this number of seeds"}  # one run a point: no winner named
    published = pd.read_csv(out / "published_speed.csv")
    assert list(published["timm"]) == ["resnetrs50", "efficientnet_b0"] and (published["infer_imgs_per_s"] > 0).all()
    assert list(published["top1"]) == [78.8, 77.1] and published["device"].str.startswith("CPU").all()
    assert figures(out / "resnet_rs_scaling.ipynb") == 3


def test_teacher_study_puts_a_teachers_students_beside_the_labelled_only_recipe(tmp_path, smoke_run, cli, monkeypatch):
    """The teacher notebook at smoke size with a given teacher and no distillation arm: Noisy Student's students (soft
    pseudo-labels from 128 of the unused Fashion-MNIST images) and the labelled-only reference over the same two
    seeds, compared, with the student's own teacher beside it."""
    monkeypatch.setenv("RSBKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "teacher"
    res = cli("run", "notebooks/studies/teacher.ipynb", "-p", "recipe", "params/smoke.yaml", "-p", "scale", "smoke",
              "-p", "teacher", str(smoke_run), "-p", "strong_model", "", "-p", "unlabelled", "fashion-mnist-unused:128",
              "-p", "targets", "[soft]", "-p", "seeds", "[0, 1]", "-p", "jobs", "2", "-p", "steps_control", "false",
              "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(out / "teacher.csv")
    assert list(table["n"]) == [2, 2] and table["variant"].iloc[0] == "smoke (reference)"
    assert table["control_diff"].isna().all()  # no steps control asked for (tests/workbook/test_teacher_studies.py)
    assert table["variant"].iloc[1] == "Noisy Student, soft pseudo-labels"
    assert f"teacher={smoke_run.name}" in table["changes"].iloc[1] and "unlabelled=fashion-mnist-unused:128" in table["changes"].iloc[1]
    assert table["teacher_top1"].iloc[1] == json.loads((smoke_run / "result.json").read_text())["final_top1"]
    student = next((out / "students").glob("*_seed=1"))
    record = json.loads((student / "result.json").read_text())["pseudo_labels"]
    assert (record["used"], record["unlabelled"], record["target"]) == (128, 128, "soft")
    assert figures(out / "teacher.ipynb") == 1
    said = " ".join(texts(out / "teacher.ipynb").split())
    assert "this study starts 4 training points of 4" in said  # stated before the first trained (2 arms x 2 seeds)
