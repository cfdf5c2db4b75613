"""The README's main job learns: the train notebook, run by papermill with params/demo.yaml on the embedded data,
follows the demo's reference curve with augmentation on the device path, and leaves its evidence in the run folder:
the executed notebook (with its HTML export) says what was trained, beside what, and ends with one live figure kept
as a static copy.

The suite runs the first 3 of the demo's 10 epochs (``stop_after: 3``: the LR schedule is the full run's) and holds
epoch 3's top-1 against the same 3 epochs at 5 seeds (tests/workbook/demo_curve.csv, from
params/sweeps/demo_curve.yaml): the training loss (tight: the seeds' spread is 0.006) and the test top-1 (loose: at
epoch 3 it still swings by several points between seeds) each inside the seeds' 99.5% Student-t prediction interval
for one more run (about 1% false alarms for the two together; another CPU's kernels round differently, which acts as
another seed). What this costs in
coverage: the suite no longer sees epochs 4 to 10 or the final >= 80% (the README's first command and
benchmarks/README.md measure those); a fault that only shows late in training (the cosine tail, the last checkpoint)
is left to the resume and schedule tests of tests/core."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import figures, run_cli, texts
from scipy import stats

from rsbkit.core.runs import read_metrics

pytestmark = pytest.mark.cost(200)  # seconds in the suite on 2 cores: files start costliest first (conftest)

EPOCHS = 3
REFERENCE = Path(__file__).with_name("demo_curve.csv")


def reference_band(epoch: int, column: str = "val_top1", level: float = 0.995) -> tuple[float, float]:
    """The interval that one more run's value at `epoch` falls in with probability `level`, from the reference
    seeds: mean +- t(n - 1) s sqrt(1 + 1/n)."""
    with open(REFERENCE) as f:
        values = [float(r[column]) for r in csv.DictReader(f) if int(r["epoch"]) == epoch]
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def test_the_reference_band_is_a_student_t_prediction_interval():
    low, high = reference_band(EPOCHS)
    with open(REFERENCE) as f:
        rows = [r for r in csv.DictReader(f)]
    assert sorted({int(r["seed"]) for r in rows}) == [0, 1, 2, 3, 4] and {int(r["epoch"]) for r in rows} == {1, 2, 3}
    values = [float(r["val_top1"]) for r in rows if int(r["epoch"]) == EPOCHS]
    assert low < min(values) and max(values) < high
    assert reference_band(EPOCHS, level=0.95)[0] > low  # wider at 99.5% than at 95%
    # bands that still fail a run that learns less: chance is 10% top-1; the loss band is a few hundredths wide
    loss_low, loss_high = reference_band(EPOCHS, "train_loss")
    assert low > 30 and loss_high - loss_low < 0.1


@pytest.mark.slow
def test_demo_notebook_follows_the_reference_curve(tmp_path):
    out = tmp_path / "demo"
    # what scripts/demo.sh runs, with the run folder in tmp, stopped after epoch 3
    res = run_cli("run", "notebooks/procedures/train.ipynb", "-p", "recipe", "params/demo.yaml",
                  "-p", "options", f"{{stop_after: {EPOCHS}}}", "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "stopped" and result["epochs_done"] == EPOCHS and result["seed"] == 0
    assert result["data"]["train_images"] == 12000 and result["data"]["val_images"] == 2000
    low, high = reference_band(EPOCHS)
    assert low <= result["final_top1"] <= high, (low, high, (out / "metrics.csv").read_text())
    loss = float(read_metrics(out / "metrics.csv")[-1]["train_loss"])  # epoch 3's
    loss_low, loss_high = reference_band(EPOCHS, "train_loss")
    assert loss_low <= loss <= loss_high, (loss_low, loss_high, (out / "metrics.csv").read_text())
    # augment_on auto: the device path (uint8 arrays augmented in the training process on this CPU)
    assert (result["resolved"]["augment_on"], result["resolved"]["input"]) == ("device", "arrays")
    for name in ("train.ipynb", "train.html", "curves.png", "metrics.csv", "recipe.yaml", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert len(metrics) == EPOCHS + 1 and str(result["final_top1"]) in metrics[-1]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"

    # the executed notebook: the live figure ends as one final figure, interactive (plotly) plus a static PNG copy
    executed = out / "train.ipynb"
    [final] = figures(executed)
    assert "application/vnd.plotly.v1+json" in final
    assert "data:image/png;base64," + final["image/png"][:40] in (out / "train.html").read_text()
    data = "Fashion-MNIST, embedded subset (12,000 train / 2,000 test images)"
    assert final["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] == f"demo: resnet18 on {data}"
    text = texts(executed)
    assert f"data {data}" in text
    assert "78.10" in text and "paper (a3)" in text  # the table beside A3's published top-1
    # the recipe as what it changes from its base (demo.yaml: A3 scaled down), not the whole YAML
    assert f"recipe demo: a3 with 8 changes; every field, resolved (LR after batch scaling, steps per epoch), goes to " \
           f"{out / 'recipe.yaml'}" in text
    assert "a3 (base)" in text and "resnet18" in text and "mixup_switch_prob" not in text
    assert f"status stopped: final top-1 {result['final_top1']:.2f}%" in text
    assert f"the executed notebook is kept in the run folder: {executed}" in text
    print(f"demo, {EPOCHS} epochs: top-1 {result['final_top1']:.2f} (reference band {low:.2f} to {high:.2f}), "
          f"{result['wall_s']:.0f} s on {result['device_name']}")
