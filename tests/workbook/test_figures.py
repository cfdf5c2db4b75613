"""Figures carry their data, and a static PNG copy (or, without Chromium, an HTML file and the reason)."""
from __future__ import annotations

import base64
import subprocess
import sys

import pandas as pd
import plotly.graph_objects as go
import pytest
from clock import limit

from rsbkit.workbook.figures import PLOTLY_MIME, bundle, cliff_figure, curves_figure, save_figure

ROWS = [dict(epoch=1, lr=0.1, train_loss=2.0, val_top1=30.0, ema_top1=None),
        dict(epoch=2, lr=0.05, train_loss=1.0, val_top1=50.0, ema_top1=None)]


def test_curves_figure_shows_loss_lr_and_top1():
    fig = curves_figure(ROWS, schedule=([0, 0.5, 1, 1.5], [0.1, 0.09, 0.06, 0.02]), title="t")
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["train loss"].y) == [2.0, 1.0] and list(by_name["val top-1"].y) == [30.0, 50.0]
    assert list(by_name["planned LR"].y) == [0.1, 0.09, 0.06, 0.02] and list(by_name["LR at epoch end"].x) == [1, 2]
    assert "EMA top-1" not in by_name


def test_cliff_figure_draws_each_train_size_and_path_in_test_order():
    table = pd.DataFrame(dict(train_res=[32, 32, 32, 40], path=["rsbkit", "rsbkit", "torch", "rsbkit"],
                              test_res=[34, 32, 32, 40], mean=[60.0, 80.0, 79.0, 75.0]))
    fig = cliff_figure(table)
    assert [t.name for t in fig.data] == ["trained at 32 px, rsbkit", "trained at 32 px, torch", "trained at 40 px, rsbkit"]
    assert list(fig.data[0].x) == [32, 34] and list(fig.data[0].y) == [80.0, 60.0]
    assert [s.x0 for s in fig.layout.shapes] == [32, 40]


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


def test_a_missing_or_broken_chromium_gives_html_instead_of_a_hang(tmp_path):
    """kaleido's server starts Chromium in a thread; when that failed, its export waited forever
    (a sweep point then sat until Slurm's time limit). Now the figure falls back to HTML and says why.
    One process tries both: no browser at the path, and one that exits at once (it starts, then closes)."""
    code = ("import os\nimport plotly.graph_objects as go\nfrom rsbkit.workbook import figures\n"
            "for browser in ('/nonexistent/chromium', '/bin/false'):\n"
            "    os.environ['BROWSER_PATH'] = browser\n"
            "    figures._kaleido_server = None\n"
            "    for i in range(2):\n"
            f"        files = figures.save_figure(go.Figure(go.Scatter(x=[1, 2], y=[2, 1])), r'{tmp_path}/fig' + str(i))\n"
            "        print(files.png, files.html is not None and files.html.is_file(), files.note)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit(90))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("None True static PNG export failed (") for line in lines), out.stdout
    assert "kaleido needs a Chromium" in lines[0] and "BrowserFailedError" in lines[2]


def test_the_report_figure_keeps_every_run_name_readable():
    """Two runs with the same time and top-1 and long names: the bars carry the whole names on their own lines, the
    scatter prints no labels over each other (one legend entry per run instead)."""
    import pandas as pd

    from rsbkit.workbook.figures import comparison_figure

    runs = pd.DataFrame(dict(name=["demo-20261204-200701", "demo-20261204-200702-with-a-long-name"],
                             final_top1=[81.8, 81.8], wall_s=[205.0, 205.0]))
    fig = comparison_figure(runs)
    bars = fig.data[0]
    assert bars.orientation == "h" and list(bars.y) == list(runs["name"])
    scatter = fig.data[1:]
    assert [t.name for t in scatter] == list(runs["name"]) and all("text" not in (t.mode or "") for t in scatter)


def test_the_report_table_fits_a_page(smoke_run, tmp_path):
    """The page shows the columns that tell runs apart (not the folder's full path, which made the table wider than a
    page); report.csv and the figures keep every column."""
    from rsbkit.workbook.run_studies import report, report_view

    table, _, folder = report(runs=[str(smoke_run)], out_dir=str(tmp_path / "report"))
    shown = report_view(table)
    assert "run" not in shown.columns and len(shown.columns) <= 12 and "train_images" in shown.columns
    assert "run" in table.columns and "run" in (folder / "report.csv").read_text().splitlines()[0].split(",")


def test_an_idle_kernel_stops_its_chromium_and_the_next_figure_starts_it(monkeypatch):
    """Issue 47: each open notebook's kernel kept a Chromium (about 0.8 GB) for its whole life; now it is stopped after
    KALEIDO_IDLE_S without an export, and the next figure starts it again. Needs Chromium, like the PNG test."""
    import time

    from kaleido._sync_server import GlobalKaleidoServer

    from rsbkit.workbook import figures

    monkeypatch.setattr(figures, "KALEIDO_IDLE_S", 0.5)
    png, why = figures.png_bytes(curves_figure(ROWS))
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n", why
    assert figures._kaleido_server and GlobalKaleidoServer().is_running()
    deadline = time.monotonic() + limit(20)
    while GlobalKaleidoServer().is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not GlobalKaleidoServer().is_running() and figures._kaleido_server is None
    png, why = figures.png_bytes(curves_figure(ROWS))
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n" and GlobalKaleidoServer().is_running(), why
