"""Every explorer (and the tour) also runs headless under papermill and leaves static figures
(PNG copies) in the executed notebook and its HTML export."""
from __future__ import annotations

import pytest
from conftest import figures, outputs, run_cli, texts

# explorer -> (static figures it must leave, a text its outputs must hold)
EXPLORERS = {
    "notebooks/explore/augmentations.ipynb": (5, "RandAugmentConfig(num_ops=2, magnitude=7, magnitude_std=0.5"),
    "notebooks/explore/losses.ipynb": (2, "BCE target with threshold 0.2: [0. 1. 0. 1. 0.]"),
    "notebooks/explore/resolution.ipynb": (1, "objects match in size at test 237 px"),
    "notebooks/explore/schedule.ipynb": (2, "relative_compute"),
    "notebooks/tour.ipynb": (5, "BCE instead of CE (with repeated aug)"),
}


@pytest.mark.parametrize("path", list(EXPLORERS))
def test_explorers_run_headless_and_leave_static_figures(path, tmp_path):
    extra = ["-p", "out_dir", str(tmp_path / "smoke")] if path.endswith("tour.ipynb") else []
    res = run_cli("run", path, *extra, "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    executed = tmp_path / path.rsplit("/", 1)[1]
    n, text = EXPLORERS[path]
    assert len(figures(executed)) >= n
    assert text in texts(executed)
    assert all(o.output_type != "error" for o in outputs(executed))
    assert (executed.with_suffix(".html")).read_text().count("data:image/png;base64,") >= n
