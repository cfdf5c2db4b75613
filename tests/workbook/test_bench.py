"""The GPU check's dry run on the CPU (scripts/gpu_check.sh --dry-run), and in it `rsbkit bench --quick`: every entry
measured, the JSON written with what it ran on."""
from __future__ import annotations

import json
import subprocess

import pytest
from conftest import ROOT
from PIL import Image

from rsbkit.workbook.bench import IMAGENET_SIZE, write_jpegs

pytestmark = pytest.mark.cost(75)  # seconds in the suite on 2 cores: files start costliest first (conftest)


@pytest.fixture(scope="module")
def gpu_check_dry_run(tmp_path_factory):
    """scripts/gpu_check.sh --dry-run: every step of the GPU check at tiny sizes on the CPU, with pandas, tqdm and
    scikit-image hidden as on a bare GPU machine; its bench step is `rsbkit bench --quick` (no separate run of it)."""
    out = tmp_path_factory.mktemp("gpu-check")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout


def test_gpu_check_dry_run_runs_every_step(gpu_check_dry_run):
    out, printed = gpu_check_dry_run
    steps = [line.split("|")[1].strip() for line in (out / "summary.md").read_text().splitlines()[2:]]
    assert steps == ["env", "data", "cuda_tests", "race", "census", "bench", "demo", "a1_free", "a1_capped", "a3_jpeg"]
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in steps}
    for name, r in results.items():
        assert r["status"] == "ok" or (r["status"] == "skipped" and "CUDA" in r["why"]), (name, r)
    assert results["env"]["timm_ok"] and results["env"]["ulimit_n"] > 0
    assert "Fashion-MNIST" in results["data"]["source"]  # scikit-image hidden: the fallback pictures
    assert results["census"]["jpeg folder: training thread syncs"] == 0
    for name in ("demo", "a1_free", "a1_capped", "a3_jpeg"):
        assert results[name]["imgs_per_s"] > 0 and (out / f"{name.replace('_', '-')}.train.log").is_file(), name
    assert results["a3_jpeg"]["input"] == "encoded" or results["a3_jpeg"]["input"] == "crops"
    assert "| bench | ok |" in printed


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
