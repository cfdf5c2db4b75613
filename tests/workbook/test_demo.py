"""The README's main job learns: the train notebook, run by papermill with params/demo.yaml
on the embedded data, reaches 80% top-1 with augmentation on the device path and leaves its
evidence in the run folder.

Takes about 5 minutes on 2 CPU cores (the largest part of the suite)."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_demo_notebook_reaches_80_percent(tmp_path):
    out = tmp_path / "demo"
    # what scripts/demo.sh runs, with the run folder in tmp
    res = run_cli("run", "notebooks/procedures/train.ipynb", "-p", "recipe", "params/demo.yaml", "--out", str(out), timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["epochs_done"] == 10
    assert result["data"]["train_images"] == 12000 and result["data"]["val_images"] == 2000
    assert result["final_top1"] >= 80.0, (out / "metrics.csv").read_text()
    # augment_on auto: the device path (uint8 arrays augmented in the training process on this CPU)
    assert (result["resolved"]["augment_on"], result["resolved"]["input"]) == ("device", "arrays")
    for name in ("train.ipynb", "train.html", "curves.png", "metrics.csv", "recipe.yaml", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    print(f"demo: final top-1 {result['final_top1']:.2f}, best {result['best_top1']:.2f}, {result['wall_s']:.0f} s "
          f"on {result['device_name']}")
