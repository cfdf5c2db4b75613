"""The GPU check's dry run on the CPU (scripts/gpu_check.sh --dry-run), and in it `rsbkit bench --quick`: every entry
measured, the JSON written with what it ran on."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from clock import limit
from conftest import ROOT, run_whole
from PIL import Image

from rsbkit.workbook.bench import IMAGENET_SIZE, write_jpegs

pytestmark = pytest.mark.cost(175)  # seconds in the suite on 2 cores: files start costliest first (conftest)


# What the GPU machine's image lacks of what rsbkit's extras install, from the device tool's description of the
# image's packages (read 2026-11-17; checked again 2026-12-04): the dry run refuses these imports.
GPU_IMAGE_LACKS = ["plotly", "papermill", "jupyter", "jupyterlab", "jupyter_client", "jupyter_core", "jupyter_server",
                   "ipykernel", "IPython", "ipywidgets", "anywidget", "kaleido", "nbformat", "nbconvert", "submitit",
                   "playwright"]


@pytest.fixture(scope="module")
def gpu_check_dry_run(tmp_path_factory):
    """scripts/gpu_check.sh --dry-run: every step of the GPU check at tiny sizes on the CPU, refusing every import of a
    package the GPU image lacks; its bench step is `rsbkit bench --quick` (no separate run of it)."""
    import os

    out = tmp_path_factory.mktemp("gpu-check")
    back = out.with_name(out.name + "-OUT")  # the device tool's $OUT: what comes back from a lent machine
    res = run_whole(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)], timeout=600, cwd=ROOT,
                    env={**os.environ, "GPU_CHECK_REFUSE": ",".join(GPU_IMAGE_LACKS), "OUT": str(back)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout


def test_gpu_check_dry_run_runs_every_step(gpu_check_dry_run):
    out, printed = gpu_check_dry_run
    table = (out / "summary.md").read_text().split("\n\n")[0].splitlines()
    steps = [line.split("|")[1].strip() for line in table[2:]]
    assert steps == ["env", "data", "cuda_tests", "race", "census", "threads", "bench", "demo", "a1_free", "a1_capped", "a3_jpeg"]
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in steps}
    for name, r in results.items():
        assert r["status"] == "ok" or (r["status"] == "skipped" and "CUDA" in r["why"]), (name, r)
        assert r["limit_s"] > 0 and r["seconds"] < r["limit_s"], (name, r)  # each step's limit, written beside its time
    refused = out / "refused-imports.txt"
    assert not refused.exists(), refused.read_text()  # no step reached a package the GPU image lacks
    assert results["env"]["timm_ok"] and results["env"]["ulimit_n"] > 0
    assert results["race"]["status"] == "skipped"  # CUDA only
    # the CUDA-only tests' file ran under pytest without its xdist plugin (collection did not fail on conftest's hook)
    assert results["cuda_tests"]["status"] == "ok" and "skipped" in results["cuda_tests"]["summary"]
    assert results["threads"]["threads_1_images_per_s"] > 0 and results["threads"]["threads_2_images_per_s"] > 0
    census = results["census"]
    assert census["jpeg folder: training thread syncs per step"] == 0 and census["steps"] == "2 and 4"
    assert census["control_seen"] == [2] * 8 and census["limit_per_step"] == 0.5  # a stand-in control on the CPU
    assert "| census |" in printed and "census, blind_to:" in printed
    threads = results["threads"]  # the batches made ahead skipped: 2 + 2 per thread + 1 worker x 4 prefetched
    assert threads["threads_2_batches_skipped"] == 10 and threads["batches_timed"] == 6
    capped = results["a1_capped"]  # the cap computed from a1_free's peak, applied only on CUDA
    assert capped["cap_applied"] is False and 0 < capped["cap_mb"] < results["a1_free"]["peak_mem_mb"]
    assert capped["planned_micro_batch"] == results["a1_free"]["planned_micro_batch"] == 16
    for name in ("demo", "a1_free", "a1_capped", "a3_jpeg"):
        assert results[name]["imgs_per_s"] > 0 and (out / f"{name.replace('_', '-')}.train.log").is_file(), name
    assert results["a3_jpeg"]["input"] == "encoded" or results["a3_jpeg"]["input"] == "crops"
    assert "| bench | ok |" in printed


def test_gpu_check_leaves_exactly_three_files_where_they_come_back(gpu_check_dry_run):
    """Only what a command writes under $OUT comes back from a lent GPU machine (8 files of 16 MiB at most): the
    check writes there summary.md, results.json and logs.tar.gz, nothing else, each under 16 MiB."""
    import tarfile

    out, printed = gpu_check_dry_run
    back = out.with_name(out.name + "-OUT")
    assert sorted(p.name for p in back.iterdir()) == ["logs.tar.gz", "results.json", "summary.md"]
    assert all(p.stat().st_size < 16 * 2**20 for p in back.iterdir())
    assert (back / "summary.md").read_text() == (out / "summary.md").read_text() and "| a3_jpeg | ok |" in printed
    results = json.loads((back / "results.json").read_text())
    assert list(results["steps"]) == ["env", "data", "cuda_tests", "race", "census", "threads", "bench", "demo", "a1_free",
                                      "a1_capped", "a3_jpeg"]
    assert results["bench"]["complete"] is True and results["check"]["mode"] == "dry-run"
    with tarfile.open(back / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert f"{out.name}/census.log" in names and f"{out.name}/a1-capped.train.log" in names
    assert not [n for n in names if n.endswith((".pt", ".JPEG")) or "/data/" in n], names  # no checkpoints, no data


def test_bench_quick_writes_its_table(gpu_check_dry_run):
    out, _ = gpu_check_dry_run
    files = list((out / "bench").glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("cpu-") and files[0].name.endswith("-quick.json")
    record = json.loads(files[0].read_text())
    for key in ("device", "cpu_count", "torch", "timm", "rsbkit", "command", "date"):
        assert record[key], key
    assert "bench --quick" in record["command"]
    names = [e["name"] for e in record["entries"]]
    assert names == ["model_step_plain", "model_step", "input_loader", "input_device", "end_to_end_loader", "end_to_end_device"]
    for e in record["entries"]:
        assert e["images_per_s"] > 0, e
        for key in ("model", "res", "batch", "precision", "channels_last", "compile", "workers"):
            assert key in e, (e["name"], key)
    by = {e["name"]: e for e in record["entries"]}
    assert by["model_step_plain"]["channels_last"] is False and by["model_step"]["channels_last"] is True
    assert by["input_loader"]["input"] == "loader" and by["input_device"]["input"] == "crops"  # JPEGs: PIL crops on CPU
    assert set(record["ratios"]) >= {"model_step_vs_plain", "end_to_end_device_vs_model_step", "end_to_end_device_vs_loader"}
    printed = (out / "bench.log").read_text()
    assert "| model_step |" in printed and str(files[0].name) in printed
    # the generated folder: ImageNet-like JPEGs in ImageNet layout
    jpegs = sorted((out / "data").rglob("*.JPEG"))
    assert len(jpegs) >= 96
    sizes = {Image.open(p).size for p in jpegs[:20]}
    assert sizes <= {IMAGENET_SIZE, IMAGENET_SIZE[::-1]}


def test_generated_jpegs_are_reused(tmp_path):
    a = write_jpegs(tmp_path / "j", 20)
    stamp = (a / "train" / "class000").stat().st_mtime_ns
    assert write_jpegs(tmp_path / "j", 20) == a and (a / "train" / "class000").stat().st_mtime_ns == stamp


def test_jpegs_are_written_without_scikit_image(tmp_path, monkeypatch):
    """scikit-image comes only with the notebooks extra: without it the folder is cut from the embedded images."""
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    folder = write_jpegs(tmp_path / "j", 20)
    assert "Fashion-MNIST" in (folder / "SOURCE").read_text()
    files = sorted(folder.rglob("*.JPEG"))
    assert len(files) == 30 and {Image.open(p).size for p in files} <= {IMAGENET_SIZE, IMAGENET_SIZE[::-1]}
    pixels = [Image.open(p).convert("RGB").getextrema() for p in files[:5]]
    assert all(hi - lo > 100 for image in pixels for lo, hi in image[:1])  # pictures, not flat colour


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_default_is_the_demo_recipe_installed_or_not(monkeypatch):
    """On a CPU bench runs params/demo.yaml; an installed rsbkit (no params/ in the wheel) reads the shipped demo run's
    recipe.yaml instead, which must stay the same recipe."""
    import torch

    import rsbkit.workbook.bench as bench
    from rsbkit.core.recipes import load_recipe
    from rsbkit.workbook.train_and_evaluate import DEMO_RECORD

    demo = load_recipe(ROOT / "params" / "demo.yaml")
    assert bench.default_config(torch.device("cpu")).recipe == demo
    assert load_recipe(DEMO_RECORD / "recipe.yaml") == demo
    monkeypatch.setattr(bench, "checkout_path", lambda *parts: None)
    assert bench.demo_recipe() == DEMO_RECORD / "recipe.yaml"


@pytest.mark.parametrize("version, ok", [("1.0.31", True), ("1.0.30", False), ("1.0.9", False), ("1.1.0.dev0", True),
                                         ("0.9.16", False), ("1.0.32+local", True), ("2.0", True)])
def test_timm_floor(version, ok):
    """gpu_check.sh stops (or installs .gpu-wheels/) below timm 1.0.31, where Lamb syncs or launches per parameter."""
    assert _gpu_check_module().timm_ok(version) is ok


def test_import_guard_refuses_and_names_the_importer(tmp_path):
    """The dry run's guard is what makes a step that imports plotly fail on the CPU as it would on the GPU image:
    importing the figures module under it fails, and the log names the module that asked."""
    code = ("import sys; sys.path.insert(0, 'scripts'); import gpu_check, pathlib; "
            f"gpu_check._guard_imports(pathlib.Path({str(tmp_path)!r}), 'probe'); import rsbkit.workbook.figures")
    import os

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=limit(120),
                         env={**os.environ, "GPU_CHECK_REFUSE": "plotly"})
    assert res.returncode != 0 and "not on the GPU machine's image" in res.stderr
    assert "probe: import plotly" in (tmp_path / "refused-imports.txt").read_text()
    assert "figures.py" in (tmp_path / "refused-imports.txt").read_text()


def test_bench_reports_the_teachers_share_of_the_step(smoke_run):
    """With a teacher in the recipe, the model step includes its forward and distillation loss, and the entry says
    what share of the step's time the teacher's forward alone takes (timed on the same batches)."""
    from dataclasses import replace

    import torch

    from rsbkit.workbook.bench import default_config, format_table, model_step

    cpu = torch.device("cpu")
    cfg = default_config(cpu, quick=True)
    cfg = replace(cfg, recipe=cfg.recipe.replace(teacher=str(smoke_run)))
    entry = model_step(cfg, cpu, plain=False)
    assert entry["teacher"] == "resnet10t" and 0 < entry["teacher_share"] < 1
    table = format_table(dict(device="cpu", cpu_count=2, torch="t", timm="t", rsbkit="r", date="d", command="c",
                              entries=[entry], ratios={}))
    assert f"teacher resnet10t: {entry['teacher_share']:.0%} of model_step's time" in table
