"""The README's main job learns: the demo recipe on the embedded data reaches 80% top-1.

Takes about 4.5 minutes on 2 CPU cores (the largest part of the suite)."""
from __future__ import annotations

import pytest

from rsbkit.train import train


@pytest.mark.slow
def test_demo_reaches_80_percent(root, tmp_path):
    lines = []
    result = train(root / "params" / "demo.yaml", "default", tmp_path / "demo", log=lines.append, progress="line")
    assert result["status"] == "completed" and result["epochs_done"] == 10
    assert result["final_top1"] >= 80.0, "\n".join(lines)
    assert result["data"]["train_images"] == 12000 and result["data"]["val_images"] == 2000
    print(f"demo: final top-1 {result['final_top1']:.2f}, best {result['best_top1']:.2f}, {result['wall_s']:.0f} s "
          f"on {result['device_name']}")
