"""Figures carry their data, and a static PNG copy (or, without Chromium, an HTML file and the reason)."""
from __future__ import annotations

import base64

import plotly.graph_objects as go
import pytest

from rsbkit.workbook.figures import PLOTLY_MIME, bundle, curves_figure, save_figure

ROWS = [dict(epoch=1, lr=0.1, train_loss=2.0, val_top1=30.0, ema_top1=None),
        dict(epoch=2, lr=0.05, train_loss=1.0, val_top1=50.0, ema_top1=None)]


def test_curves_figure_shows_loss_lr_and_top1():
    fig = curves_figure(ROWS, schedule=([0, 0.5, 1, 1.5], [0.1, 0.09, 0.06, 0.02]), title="t")
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["train loss"].y) == [2.0, 1.0] and list(by_name["val top-1"].y) == [30.0, 50.0]
    assert list(by_name["planned LR"].y) == [0.1, 0.09, 0.06, 0.02] and list(by_name["LR at epoch end"].x) == [1, 2]
    assert "EMA top-1" not in by_name


def test_png_copy_for_notebooks_and_html_export(tmp_path):
    """Needs Chromium for kaleido (scripts/system-packages.sh installs Debian's)."""
    fig = curves_figure(ROWS)
    files = save_figure(fig, tmp_path / "curves")
    assert files.png is not None, files.note
    assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files.html is None
    out = bundle(fig, files.png.read_bytes())
    assert base64.b64decode(out["image/png"]) == files.png.read_bytes()
    assert out[PLOTLY_MIME]["data"][0]["y"] == [2.0, 1.0]  # the interactive copy for JupyterLab


def test_without_kaleido_the_figure_becomes_html_and_says_why(tmp_path, monkeypatch):
    def broken(self, *a, **k):
        raise RuntimeError("no Chrome found")

    monkeypatch.setattr(go.Figure, "to_image", broken)
    files = save_figure(curves_figure(ROWS), tmp_path / "curves")
    assert files.png is None and files.html.is_file() and "plotly" in files.html.read_text()[:100000].lower()
    assert "RuntimeError: no Chrome found" in files.note and "chromium" in files.note
    out = bundle(curves_figure(ROWS))
    assert "image/png" not in out and "text/html" in out


@pytest.mark.parametrize("rows", [ROWS[:1], ROWS])
def test_live_figure_updates_in_place(rows, tmp_path):
    from rsbkit.workbook.figures import LiveFigure

    live = LiveFigure(curves_figure)
    for row in rows:
        live.update(row)
    assert live.rows == rows
    files = live.finish(tmp_path / "live")
    assert files.png is not None and files.png.stat().st_size > 1000
