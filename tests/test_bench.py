"""`python -m rsbkit bench --quick` on the CPU: every entry measured, the JSON written with what it ran on."""
from __future__ import annotations

import json

from PIL import Image

from rsbkit.__main__ import main
from rsbkit.bench import IMAGENET_SIZE, write_jpegs


def test_bench_quick_writes_its_table(tmp_path, capsys):
    assert main(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path / "results"),
                 "--cache", str(tmp_path / "cache")]) == 0
    files = list((tmp_path / "results").glob("*.json"))
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
    out = capsys.readouterr().out
    assert "| model_step |" in out and str(files[0]) in out
    # the generated folder: ImageNet-like JPEGs in ImageNet layout
    jpegs = sorted((tmp_path / "cache").rglob("*.JPEG"))
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
