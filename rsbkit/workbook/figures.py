"""Plotly figures of runs and studies, shown so they survive papermill and HTML export.

A notebook output that is only plotly's own mimetype is interactive in JupyterLab
but blank in ``jupyter nbconvert --to html``. Every figure here is displayed as
one bundle: plotly's JSON (JupyterLab draws it interactively) plus a PNG from
kaleido (the executed notebook's static copy, which HTML export and GitHub
show). Where kaleido cannot run (it needs Chromium: Debian's ``chromium``), the
bundle carries HTML instead, the figure is written as a self-contained .html
file, and the notebook prints why.
"""
from __future__ import annotations

import atexit
import base64
import contextlib
import json
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.colours import colour
from ..core.runs import atomic_file
from .table import run_metrics

PLOTLY_MIME = "application/vnd.plotly.v1+json"
# figures fill the width they are shown in; their PNG copies (HTML export, and what JupyterLab's plotly renderer
# shows until the pointer enters a figure) are PAGE_WIDTH wide: narrower than JupyterLab's output area at 1280 px
PAGE_WIDTH, HEIGHT = 800, 360


# ------------------------------------------------------------------ figures


def curves_figure(rows: Sequence[dict[str, Any]], *, schedule: Optional[tuple[Sequence[float], Sequence[float]]] = None,
                  title: str = "") -> go.Figure:
    """Train loss, learning rate and val top-1 (and EMA top-1) per epoch, side by side.

    `schedule` is (epoch, lr) of the whole planned schedule, drawn dashed under the
    recorded LR so a run in progress shows where it is going.
    """
    fig = make_subplots(rows=1, cols=3, subplot_titles=("train loss", "learning rate", "val top-1 (%)"))
    epochs = [r["epoch"] for r in rows]
    fig.add_trace(go.Scatter(x=epochs, y=[r["train_loss"] for r in rows], name="train loss", mode="lines+markers",
                             line_color=colour("train loss")), 1, 1)
    if schedule is not None:
        fig.add_trace(go.Scatter(x=list(schedule[0]), y=list(schedule[1]), name="planned LR",
                                 mode="lines", line=dict(dash="dash", color=colour("planned LR"))), 1, 2)
    fig.add_trace(go.Scatter(x=epochs, y=[r["lr"] for r in rows], name="LR at epoch end", mode="markers",
                             marker_color=colour("LR")), 1, 2)
    fig.add_trace(go.Scatter(x=epochs, y=[r["val_top1"] for r in rows], name="val top-1", mode="lines+markers",
                             line_color=colour("val top-1")), 1, 3)
    if any(r.get("ema_top1") is not None for r in rows):
        fig.add_trace(go.Scatter(x=epochs, y=[r.get("ema_top1") for r in rows], name="EMA top-1", mode="lines+markers",
                                 line_color=colour("EMA top-1")), 1, 3)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, autosize=True, height=HEIGHT + 60, margin=dict(t=70, b=100),
                      legend=dict(orientation="h", x=0, xanchor="left", y=-0.3, yanchor="top"))
    return fig


def resolution_figure(table: pandas.DataFrame, *, train_res: Optional[int] = None, title: str = "") -> go.Figure:  # noqa: F821
    """Top-1 against test resolution, one line per crop ratio (the paper's Figure 4 / Table 9)."""
    fig = go.Figure()
    for crop, part in table.groupby("crop_pct"):
        part = part.sort_values("test_res")
        fig.add_trace(go.Scatter(x=part["test_res"], y=part["top1"], mode="lines+markers", name=f"crop {crop:g}"))
    if train_res is not None:
        fig.add_vline(x=train_res, line_dash="dot", annotation_text=f"train {train_res} px")
    fig.update_layout(title=title, xaxis_title="test resolution (px)", yaxis_title="top-1 (%)", autosize=True,
                      height=HEIGHT + 40)
    return fig


def cliff_figure(table: pandas.DataFrame, *, title: str = "") -> go.Figure:  # noqa: F821
    """Top-1 against test resolution for models trained at several sizes, one line per (train size,
    evaluation path): scripts/cliff.py's table (columns train_res, path, test_res, mean), with each
    train size marked."""
    fig = go.Figure()
    for (train, path), part in table.groupby(["train_res", "path"]):
        part = part.sort_values("test_res")
        fig.add_trace(go.Scatter(x=part["test_res"], y=part["mean"], mode="lines+markers", name=f"trained at {train} px, {path}",
                                 line_dash="dot" if path != "rsbkit" else None))
    for train in sorted(table["train_res"].unique()):
        fig.add_vline(x=int(train), line_dash="dot", line_color="grey")
    fig.update_layout(title=title, xaxis_title="test resolution (px)", yaxis_title="top-1 (%)", autosize=True,
                      height=HEIGHT + 80)
    return fig


def seed_figure(values: Sequence[float], stats, *, title: str = "", bins: Optional[int] = None) -> go.Figure:
    """Histogram of a metric over seeds with its Gaussian fit, as the paper's Figure 2."""

    values = list(values)
    bins = bins or min(20, max(5, math.ceil(2 * math.sqrt(len(values)))))  # 100 seeds: 20 bins, 3 seeds: 5
    lo, hi = min(values), max(values)
    pad = max(hi - lo, 1e-6) * 0.5 + 3 * stats.std
    x = np.linspace(lo - pad * 0.5, hi + pad * 0.5, 200)
    width = max(hi - lo, 1e-6) / bins if hi > lo else 0.1
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=values, xbins=dict(size=width), name=f"{stats.n} seeds"))
    fig.add_trace(go.Scatter(x=x, y=stats.gaussian_pdf(x) * stats.n * width, mode="lines",
                             name=f"Gaussian fit: {stats.mean:.2f} +- {stats.std:.2f}"))
    fig.update_layout(title=title, xaxis_title="top-1 (%)", yaxis_title="runs", autosize=True, height=HEIGHT + 40,
                      bargap=0.05)
    return fig


def run_colours(runs: Sequence[Any]) -> dict[str, str]:
    """One colour per run, by its place in `runs` (run folders, or names): pass the same dict to every figure of a
    set of runs (:func:`overlay_figure`, :func:`comparison_figure`) so a run keeps its colour across them."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3[1::2] + qualitative.Dark24
    return {str(run): palette[i % len(palette)] for i, run in enumerate(runs)}


def comparison_figure(runs: pandas.DataFrame, *, metric: str = "final_top1", label: str = "name",  # noqa: F821
                      colours: Optional[dict[str, str]] = None) -> go.Figure:
    """Each run's top-1 (horizontal bars: whole run names, one per line, however long or many) and its cost: top-1
    against training wall time, one marker per run named in the legend (labels printed at the markers fell on top
    of each other when two runs took about as long). A run's bar and marker take its colour in `colours` (keyed by
    the ``run`` column, else by `label`; default :func:`run_colours` of these runs)."""
    names = [str(n) for n in runs[label]]
    keys = [str(k) for k in (runs["run"] if "run" in runs.columns else runs[label])]
    colours = colours or run_colours(keys)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.12,
                        subplot_titles=(metric, f"{metric} against wall time"))
    fig.add_trace(go.Bar(y=names, x=runs[metric], orientation="h", showlegend=False,
                         marker_color=[colours.get(k, colour("val top-1")) for k in keys],
                         text=[f"{v:.2f}" for v in runs[metric]], textposition="auto"), 1, 1)
    for name, key, wall, value in zip(names, keys, runs["wall_s"], runs[metric]):
        fig.add_trace(go.Scatter(x=[wall], y=[value], mode="markers", name=name, marker_size=10,
                                 marker_color=colours.get(key),
                                 hovertemplate=f"{name}: %{{y:.2f}} in %{{x:.0f}} s<extra></extra>"), 1, 2)
    fig.update_yaxes(automargin=True, autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="wall time (s)", row=1, col=2)
    fig.update_layout(title=f"{metric} and cost per run", autosize=True, height=max(HEIGHT + 40, 160 + 28 * len(names)),
                      legend=dict(orientation="h", x=0, xanchor="left", y=-0.25, yanchor="top"), margin=dict(b=120))
    return fig


def variants_figure(runs: pandas.DataFrame, table: pandas.DataFrame, *, metric: str = "final_top1",  # noqa: F821
                    title: str = "") -> go.Figure:
    """Each variant's runs (one dot per seed) with their mean +- std, against the reference's mean and the
    seed-noise band a variant's mean must leave to differ by more than chance (from
    ``studies.compare_variants``). Any number of seeds and variants: the dots share a column per variant."""
    fig = go.Figure()
    order = list(table["variant"])
    fig.add_trace(go.Scatter(x=runs["variant"], y=runs[metric], mode="markers", name="one seed",
                             marker=dict(size=8, opacity=0.55), text=runs["name"], hovertemplate="%{text}: %{y:.2f}"))
    fig.add_trace(go.Scatter(x=order, y=table["mean"], mode="markers", name="mean +- std over seeds",
                             marker=dict(symbol="diamond", size=13, color="black"),
                             error_y=dict(type="data", array=table["std"].fillna(0).tolist(), visible=True)))
    ref = table.iloc[0]
    others = table.iloc[1:]
    if len(others):
        n = int(others["n"].mode().iloc[0])
        band = float(others[others["n"] == n]["noise_band"].iloc[0])
        fig.add_hrect(y0=ref["mean"] - band, y1=ref["mean"] + band, fillcolor="grey", opacity=0.15, line_width=0)
        fig.add_trace(go.Scatter(x=[order[0], order[-1]], y=[ref["mean"]] * 2, mode="lines", line=dict(dash="dash", color="grey"),
                                 name=f"reference mean; shaded: +- {band:.2f}, the seed study's noise for {n} against {int(ref['n'])} "
                                      "seeds (95%, Student's t)"))
    fig.update_xaxes(categoryorder="array", categoryarray=order, tickangle=30)
    labels_px = 3.5 * max(len(str(v)) for v in order)  # the labels' height, slanted at 30 degrees
    fig.update_layout(title=title, yaxis_title=f"{metric} (%)", autosize=True, height=HEIGHT + 20 + labels_px,
                      margin=dict(t=70, b=50 + labels_px),
                      legend=dict(orientation="h", x=0, xanchor="left", y=-(labels_px + 15) / (HEIGHT - 100), yanchor="top"))
    return fig


# ------------------------------------------------------------------ files and display


@dataclass(frozen=True)
class FigureFiles:
    png: Optional[Path]  # None when kaleido could not run
    html: Optional[Path]  # written when the PNG could not be
    note: str  # what happened, one line


_kaleido_server: Optional[bool] = None  # None: not tried yet (or stopped when idle)
# A kernel's Chromium (about 0.8 GB) is stopped when no figure was exported for this long, and started again (about
# 2 s) by the next: four or five open notebooks then hold one Chromium while figures are drawn, not one each all day.
KALEIDO_IDLE_S = 120.0
_export_lock = threading.Lock()  # an export and the idle stop never overlap
_idle_timer: Optional[threading.Timer] = None


def _start_kaleido() -> None:
    """Keep one Chromium for the exports of this process while figures are drawn: about 0.15 s a figure instead of
    2 s; stopped after :data:`KALEIDO_IDLE_S` without an export (:func:`_stop_idle_kaleido`)."""
    global _kaleido_server
    if _kaleido_server is not None:
        return
    try:
        import kaleido

        # kaleido's server starts Chromium in a thread: Kaleido() finds the browser (or raises) first,
        # so a machine without one never starts a server (see _through_server for one that dies)
        kaleido.Kaleido()
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _kaleido_server = True
    except Exception:  # no Chromium, or an old kaleido: each export starts its own and reports why it failed
        _kaleido_server = False


def _stop_idle_kaleido() -> None:
    """The idle timer's end: stop this process's Chromium unless an export is running (then the export re-arms)."""
    global _kaleido_server
    if not _export_lock.acquire(blocking=False):
        return
    try:
        if _kaleido_server:
            import kaleido

            _kaleido_server = None  # the next export starts it again
            with contextlib.suppress(Exception):  # at exit, kaleido's own atexit close may be closing it too
                kaleido.stop_sync_server(silence_warnings=True)
    finally:
        _export_lock.release()


def _arm_idle_stop() -> None:
    global _idle_timer
    if _idle_timer is not None:
        _idle_timer.cancel()
    if _kaleido_server:
        _idle_timer = threading.Timer(KALEIDO_IDLE_S, _stop_idle_kaleido)
        _idle_timer.daemon = True
        _idle_timer.start()


def _through_server(export: Callable[[], bytes]) -> bytes:
    """Run `export` while watching kaleido's server thread.

    When the Chromium it starts closes at once (a broken install, a sandbox refused)
    or crashes, that thread ends and kaleido's call would wait on its queue forever.
    Here the server is closed instead and the export runs alone, which raises the
    browser's own error (the figure then falls back to HTML with the reason).
    """
    import kaleido
    from kaleido._sync_server import GlobalKaleidoServer

    global _kaleido_server
    server = GlobalKaleidoServer()
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["png"] = export()
        except BaseException as exc:  # handed to the caller below
            done["error"] = exc

    worker = threading.Thread(target=run, daemon=True)  # left waiting on the dead server's queue if it died
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
        thread = getattr(server, "_thread", None)
        if worker.is_alive() and (thread is None or not thread.is_alive()):
            kaleido.stop_sync_server(silence_warnings=True)
            _kaleido_server = False
            return export()
    if "error" in done:
        raise done["error"]
    return done["png"]


def png_bytes(fig: go.Figure) -> tuple[Optional[bytes], str]:
    """The figure as PNG through kaleido, or (None, why not)."""

    def export() -> bytes:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            return fig.to_image(format="png", width=fig.layout.width or PAGE_WIDTH, height=fig.layout.height or HEIGHT)

    try:
        with _export_lock:
            _start_kaleido()
            try:
                return (_through_server(export) if _kaleido_server else export()), ""
            finally:
                _arm_idle_stop()
    except Exception as exc:  # kaleido raises many types: no Chromium, sandbox, timeout
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return None, (f"static PNG export failed ({type(exc).__name__}: {reason}); kaleido needs a Chromium "
                      "(Debian: apt install chromium, or set BROWSER_PATH)")


def save_figure(fig: go.Figure, stem: Union[str, Path]) -> FigureFiles:
    """Write ``stem.png``; if kaleido cannot, write a self-contained ``stem.html`` instead and say so."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    data, why = png_bytes(fig)
    if data is not None:

        with atomic_file(stem.with_suffix(".png"), "wb") as f:
            f.write(data)
        return FigureFiles(stem.with_suffix(".png"), None, f"wrote {stem.with_suffix('.png')}")
    fig.write_html(stem.with_suffix(".html"), include_plotlyjs=True)
    return FigureFiles(None, stem.with_suffix(".html"), f"{why}; wrote {stem.with_suffix('.html')} instead")


def bundle(fig: go.Figure, png: Optional[bytes] = None, *, static: bool = True) -> dict[str, Any]:
    """A display bundle: plotly JSON for JupyterLab plus a static copy (PNG, else HTML) for exports."""
    out: dict[str, Any] = {PLOTLY_MIME: json.loads(fig.to_json()), "text/plain": f"<figure: {fig.layout.title.text or 'plotly'}>"}
    if static:
        if png is None:
            png, _ = png_bytes(fig)
        if png is not None:
            out["image/png"] = base64.b64encode(png).decode()
        else:
            out["text/html"] = fig.to_html(full_html=False, include_plotlyjs="cdn")
    return out


def _saved_bundle(fig: go.Figure, save_as: Union[str, Path, None]) -> tuple[dict[str, Any], Optional[FigureFiles]]:
    """The display bundle of `fig`; with `save_as`, the figure is written first (PNG, else HTML, saying why)
    and the bundle reuses that PNG."""
    files = save_figure(fig, save_as) if save_as is not None else None
    if files is not None and files.png is None:
        print(files.note)
    return bundle(fig, files.png.read_bytes() if files and files.png else None), files


def show(fig: go.Figure, save_as: Union[str, Path, None] = None) -> None:
    """Display `fig` (interactive plus static copy); with `save_as`, also write it as PNG (or HTML, and say why)."""
    from IPython.display import display

    display(_saved_bundle(fig, save_as)[0], raw=True)


class LiveFigure:
    """A figure redrawn in place as rows arrive (``train(..., on_epoch=live.update)``).

    In JupyterLab the same output updates after every epoch; under papermill the
    last update stays. ``finish`` replaces it with the final figure plus its static
    copy and writes the PNG (or HTML) file. Outside IPython nothing is drawn; the
    files are still written.
    """

    def __init__(self, build: Callable[[list[dict[str, Any]]], go.Figure]):
        from IPython.display import display

        self.build, self.rows = build, []
        self.handle = display({"text/plain": "waiting for the first epoch ..."}, raw=True, display_id=True)

    def update(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        if self.handle is None:
            return
        # the interactive copy only: a PNG per epoch would start Chromium every epoch
        self.handle.update(bundle(self.build(self.rows), static=False), raw=True)

    def finish(self, save_as: Union[str, Path, None] = None) -> Optional[FigureFiles]:
        out, files = _saved_bundle(self.build(self.rows), save_as)
        if self.handle is not None:
            self.handle.update(out, raw=True)
        return files


def overlay_figure(run_dirs: Sequence[Union[str, Path]], column: str = "val_top1", *, title: str = "",
                   colours: Optional[dict[str, str]] = None) -> go.Figure:
    """One metric per epoch for several runs on one axis (each run's metrics.csv, or a timm run's summary.csv); each
    run in its colour in `colours` (keyed by the folder as given; default :func:`run_colours` of `run_dirs`)."""

    colours = colours or run_colours(run_dirs)
    fig = go.Figure()
    for given in run_dirs:
        folder = Path(given)
        rows = run_metrics(folder)
        if not rows:
            continue
        fig.add_trace(go.Scatter(x=[r["epoch"] for r in rows], y=[r[column] for r in rows], mode="lines+markers",
                                 name=folder.name, line_color=colours.get(str(given))))
    fig.update_layout(title=title or f"{column} per epoch", xaxis_title="epoch", yaxis_title=column, autosize=True,
                      height=HEIGHT + 40)
    return fig


def ablation_figure(table: pandas.DataFrame, noise: Optional[float] = None, *, metric: str = "final_top1") -> go.Figure:  # noqa: F821
    """Each ablation cell's delta to the reference row, with the seed-noise band shaded (when known)."""
    labels = [f"{r.loss} lr {r.LR:g} wd {r.WD:g} RA {r.RA}" for r in table.itertuples()]
    fig = go.Figure(go.Bar(x=table["delta"], y=labels, orientation="h"))
    if noise is not None:
        fig.add_vrect(x0=-noise, x1=noise, fillcolor="grey", opacity=0.2, line_width=0,
                      annotation_text="seed noise", annotation_position="top left")
    fig.update_layout(title=f"{metric}: delta to the reference row", xaxis_title="points", autosize=True,
                      height=140 + 28 * len(table))
    return fig


def architecture_figure(table: pandas.DataFrame, *, device: str = "") -> go.Figure:  # noqa: F821
    """Top-1 of each architecture against its training speed measured here."""
    done = table.dropna(subset=["final_top1", "train_imgs_per_s"]) if "final_top1" in table else table.iloc[0:0]
    fig = go.Figure(go.Scatter(x=done["train_imgs_per_s"], y=done["final_top1"], mode="markers+text",
                               text=done["model"], textposition="top center"))
    fig.update_layout(title="one recipe, many architectures", xaxis_title=f"training images/s ({device})",
                      yaxis_title="top-1 %", xaxis_type="log", autosize=True, height=HEIGHT + 80)
    return fig


def scaling_figure(table: pandas.DataFrame) -> go.Figure:  # noqa: F821
    """ResNet-RS Figure: top-1 against GMACs, depth scaling and width scaling, one panel per training length."""
    import pandas as pd

    done = table.dropna(subset=["top1", "gmacs"])
    epochs = sorted(table["epochs"].unique())
    fig = make_subplots(rows=1, cols=len(epochs), subplot_titles=[f"{e} epochs" for e in epochs], shared_yaxes=True)
    colors = {"depth": "#1f77b4", "width": "#d62728"}
    for col, e in enumerate(epochs, start=1):
        for (kind, res), g in done[done["epochs"] == e].groupby(["scaling", "res"]):
            g = g.sort_values("gmacs")
            if kind == "width":  # the base model at width 1 starts the width-scaling line
                base = done[(done["epochs"] == e) & (done["res"] == res) & (done["width"] == 1.0)
                            & (done["model"] == g["model"].iloc[0])]
                g = pd.concat([base, g], ignore_index=True).sort_values("gmacs")
            labels = [f"{m} x{w:g}" if w != 1 else m for m, w in zip(g["model"], g["width"])]
            fig.add_trace(go.Scatter(x=g["gmacs"], y=g["top1"], mode="lines+markers", text=labels,
                                     name=f"{kind} scaling @{res}px", legendgroup=f"{kind}{res}", showlegend=col == 1,
                                     line=dict(color=colors[kind], dash="solid" if res == max(table["res"]) else "dot")),
                          row=1, col=col)
        fig.update_xaxes(type="log", title_text="GMACs per image", row=1, col=col)
    fig.update_yaxes(title_text="top-1 %", row=1, col=1)
    fig.update_layout(title="depth scaling against width scaling, by training length", autosize=True, height=HEIGHT + 60)
    return fig


def resolution_scaling_figure(table: pandas.DataFrame) -> go.Figure:  # noqa: F821
    """Top-1 against training resolution for every model: where it saturates."""
    done = table.dropna(subset=["top1"])
    epochs = sorted(table["epochs"].unique())
    fig = make_subplots(rows=1, cols=len(epochs), subplot_titles=[f"{e} epochs" for e in epochs], shared_yaxes=True)
    for col, e in enumerate(epochs, start=1):
        for (model, width), g in done[done["epochs"] == e].groupby(["model", "width"]):
            g = g.sort_values("res")
            fig.add_trace(go.Scatter(x=g["res"], y=g["top1"], mode="lines+markers", legendgroup=f"{model}{width}",
                                     name=f"{model} x{width:g}" if width != 1 else model, showlegend=col == 1),
                          row=1, col=col)
        fig.update_xaxes(title_text="train = test resolution, px", row=1, col=col)
    fig.update_yaxes(title_text="top-1 %", row=1, col=1)
    fig.update_layout(title="accuracy against resolution", autosize=True, height=HEIGHT + 60)
    return fig


def pareto_figure(table: pandas.DataFrame, front: pandas.DataFrame, published: Optional[pandas.DataFrame] = None, *,  # noqa: F821
                  device: str = "") -> go.Figure:
    """Speed-accuracy: this grid (top-1 against training speed, the Pareto front drawn), and the
    published ResNet-RS and EfficientNet ImageNet top-1 against their inference speed measured here."""
    panels = 2 if published is not None and len(published) else 1
    titles = ["this grid"] + (["published ImageNet top-1, speed measured here"] if panels == 2 else [])
    fig = make_subplots(rows=1, cols=panels, subplot_titles=titles)
    done = table.dropna(subset=["top1", "train_imgs_per_s"])
    labels = [f"{m} x{w:g} @{r} {e}ep" for m, w, r, e in zip(done["model"], done["width"], done["res"], done["epochs"])]
    fig.add_trace(go.Scatter(x=done["train_imgs_per_s"], y=done["top1"], mode="markers", text=labels, name="grid points",
                             marker=dict(color="#7f7f7f")), row=1, col=1)
    if len(front):
        fig.add_trace(go.Scatter(x=front["train_imgs_per_s"], y=front["top1"], mode="lines+markers", name="Pareto front",
                                 line=dict(color="#1f77b4")), row=1, col=1)
    fig.update_xaxes(type="log", title_text=f"training images/s ({device})", row=1, col=1)
    fig.update_yaxes(title_text="top-1 %", row=1, col=1)
    if panels == 2:
        ok = published.dropna(subset=["infer_imgs_per_s"])
        for family, g in ok.groupby("family"):
            g = g.sort_values("infer_imgs_per_s", ascending=False)
            fig.add_trace(go.Scatter(x=g["infer_imgs_per_s"], y=g["top1"], mode="lines+markers", name=family,
                                     text=[f"{n} @{r}" for n, r in zip(g["name"], g["res"])]), row=1, col=2)
        fig.update_xaxes(type="log", title_text=f"inference images/s ({device})", row=1, col=2)
        fig.update_yaxes(title_text="ImageNet top-1 % (published)", row=1, col=2)
    fig.update_layout(title="speed against accuracy", autosize=True, height=HEIGHT + 80)
    return fig


def additive_figure(table: pandas.DataFrame, split: dict[str, Any], *, title: str = "") -> go.Figure:  # noqa: F821
    """ResNet-RS's additive study as a waterfall: each step's bar runs from the step before's mean top-1 to its own,
    coloured by kind (training or architecture), hatched where top-1 fell, its error bar the noise band of that
    delta; beside it, the gain
    of the training changes and of the architecture changes here and in the paper."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.1,
                        subplot_titles=("top-1 by step (whisker: noise band of the step)", "gain by kind"))
    first = table.iloc[0]
    fig.add_trace(go.Scatter(x=[first["step"]], y=[first["mean"]], mode="markers", name="baseline",
                             marker=dict(color=colour("paper"), size=12, symbol="line-ew-open", line_width=3),
                             showlegend=False, hovertemplate="%{x}: %{y:.2f}<extra></extra>"), row=1, col=1)
    for kind in ("training", "architecture"):
        rows = table.iloc[1:][table.iloc[1:]["kind"] == kind]
        if rows.empty:
            continue
        fig.add_trace(go.Bar(x=rows["step"], y=rows["delta"], base=rows["mean"] - rows["delta"], name=f"{kind} change",
                             marker_color=colour(f"{kind} change"), legendgroup=kind,  # a step that lost: hatched
                             marker_pattern_shape=["/" if d < 0 else "" for d in rows["delta"]],
                             error_y=dict(type="data", array=rows["band"].fillna(0), visible=True, color="#333"),
                             customdata=rows[["mean", "n"]].to_numpy(),
                             hovertemplate="%{x}: %{y:+.2f} -> %{customdata[0]:.2f} (%{customdata[1]} seeds)<extra></extra>"),
                      row=1, col=1)
    kinds = ["training", "architecture"]
    ours = [split["training_gain"], split["architecture_gain"]]
    paper = [split["paper_after_training"] - split["paper_baseline"], split["paper_final"] - split["paper_after_training"]]
    fig.add_trace(go.Bar(x=kinds, y=ours, name="this run", marker_color=[colour(f"{k} change") for k in kinds],
                         showlegend=False, text=[f"{v:+.2f}" for v in ours], textposition="outside",
                         hovertemplate="here, %{x}: %{y:+.2f}<extra></extra>"), row=1, col=2)
    if not any(map(math.isnan, paper)):
        fig.add_trace(go.Bar(x=kinds, y=paper, name="ResNet-RS (ImageNet)", marker_color=colour("paper"),
                             text=[f"{v:+.1f}" for v in paper], textposition="outside",
                             hovertemplate="ResNet-RS, %{x}: %{y:+.1f}<extra></extra>"), row=1, col=2)
    low = float((table["mean"] - table["band"].fillna(0)).min())
    high = float((table["mean"] + table["band"].fillna(0)).max())
    pad = max(0.5, (high - low) * 0.15)
    fig.update_yaxes(title_text="top-1 (%)", range=[low - pad, high + pad], row=1, col=1)
    fig.update_yaxes(title_text="points", row=1, col=2)
    fig.update_xaxes(tickangle=-35, row=1, col=1)
    fig.update_layout(title=title or "The additive study: training, regularization and architecture changes",
                      barmode="group", autosize=True, height=HEIGHT + 120, legend=dict(orientation="h", y=-0.45))
    return fig


def weight_decay_figure(cells: pandas.DataFrame, *, title: str = "") -> go.Figure:  # noqa: F821
    """Weight decay (columns) against regularizers added in turn (rows) as a heatmap of mean top-1, each cell's
    mean, spread and seeds written in it, the best weight decay of each row marked with a star, and the noise band
    (the largest a cell needs to be below its row's best by, before that is more than seed noise) in the title."""
    steps = cells.drop_duplicates("step_index").sort_values("step_index")
    wds = sorted(cells["weight_decay"].unique(), reverse=True)
    names = [("" if i == 0 else "+ ") + str(s) for i, s in enumerate(steps["step"])]
    z, text = [], []
    for index in steps["step_index"]:
        zr, tr = [], []
        for wd in wds:
            c = cells[(cells["step_index"] == index) & (cells["weight_decay"] == wd)]
            if c.empty:
                zr.append(None)
                tr.append("")
                continue
            c = c.iloc[0]
            spread = f" ± {c['std']:.2f}" if c["n"] > 1 and not math.isnan(c["std"]) else ""
            tr.append(f"{'★ ' if c['best'] else ''}{c['mean']:.2f}{spread} (n={int(c['n'])})")
            zr.append(c["mean"])
        z.append(zr)
        text.append(tr)
    fig = go.Figure(go.Heatmap(z=z, x=[f"wd {w:g}" for w in wds], y=names, text=text, texttemplate="%{text}",
                               textfont=dict(size=13), colorscale="Viridis", colorbar=dict(title="top-1"),
                               hovertemplate="%{y}, %{x}: %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    bands = cells["band"].dropna()
    noise = f"; noise band up to ±{bands.max():.2f}" if len(bands) else ""
    fig.update_layout(title=title or f"Weight decay against regularization (★: each row's best{noise})",
                      xaxis_title="weight decay", autosize=True, height=160 + 56 * len(names))
    return fig


def _gain_trace(fig: go.Figure, g: pandas.DataFrame, *, x: str, name: str, line: dict, labels: Optional[list] = None,  # noqa: F821
                dx: float = 0.0, hover: str = "", **where: Any) -> None:
    """One series of differences with their 95% intervals against how much the model overfits (column `x`),
    labelled with `labels` where given."""
    g = g.sort_values(x)
    fig.add_trace(go.Scatter(
        x=g[x] + dx, y=g["diff"], mode="lines+markers+text" if labels else "lines+markers", name=name,
        text=labels, textposition="top right", cliponaxis=False, line=line, marker=dict(size=10),
        error_y=dict(type="data", array=g["band"], visible=True),
        hovertemplate=hover or "overfits by %{x:.2f}, difference %{y:+.2f}<extra></extra>"), **where)


def _room(fig: go.Figure, values: pandas.Series, **where: Any) -> None:  # noqa: F821
    if len(values):  # room for the labels at both ends
        fig.update_xaxes(range=[float(values.min()) - 0.7, float(values.max()) + 1.2], **where)


def regime_figure(gains: pandas.DataFrame, *, title: str = "") -> go.Figure:  # noqa: F821
    """Regularization's gain against how much the model overfits (rsbkit.workbook.regime_studies): one point per data
    size and length, x the unregularized runs' train-minus-test gap, y each regularized arm's gain in test top-1 over
    them with its 95% interval; the data size is written beside A3's points (A1's, at the same x, are drawn a little to
    the right so that the intervals do not hide each other); a line at no gain."""
    fig = go.Figure()
    fig.add_hline(y=0, line=dict(color="grey", dash="dot"))
    for (arm, length), g in gains.groupby(["arm", "length"], sort=False):
        g = g.sort_values("gap_none")
        labelled = arm == "a3"
        _gain_trace(fig, g, x="gap_none", dx=0.0 if labelled else 0.12, name=f"{arm.upper()}'s regularizers, {length} run",
                    labels=[f"{int(n):,}" for n in g["train_images"]] if labelled else None,
                    line=dict(color=colour(f"regime-{arm}"), dash="solid" if length == "short" else "dash"),
                    hover="%{text} training images: overfits by %{x:.2f}, gain %{y:+.2f}<extra></extra>"
                    if labelled else "overfits by %{x:.2f}, gain %{y:+.2f}<extra></extra>")
    fig.update_layout(title=title or "Regularization's gain against overfitting (labels: training images)",
                      xaxis_title="how much the unregularized run overfits: train minus test top-1 (points)",
                      yaxis_title="gain in test top-1 (points, 95% CI)", font=dict(size=14), autosize=True,
                      height=HEIGHT + 140, legend=dict(orientation="h", y=-0.28))
    _room(fig, gains["gap_none"])
    return fig


def depth_width_figure(gains: pandas.DataFrame, *, base: str = "resnet18", title: str = "") -> go.Figure:  # noqa: F821
    """Depth against width by regime (rsbkit.workbook.regime_studies.depth_width_study): x how much the `base` model
    overfits at each data size, y each scaled model's difference in test top-1 from it (deeper, wider) and the deeper
    one's from the wider one, each with its 95% interval; data sizes written beside the deeper model's points."""
    fig = go.Figure()
    fig.add_hline(y=0, line=dict(color="grey", dash="dot"))
    base_gap = gains[gains["against"] == base].groupby("train_images")["gap_base"].first()
    shown = gains.assign(gap_x=gains["train_images"].map(base_gap))  # the base's gap, in the depth-over-width rows too
    for i, ((arm, against), g) in enumerate(shown.groupby(["arm", "against"], sort=False)):
        axis = g["axis"].iloc[0]
        labelled = axis == "depth"
        _gain_trace(fig, g, x="gap_x", dx=0.1 * i, name=f"{arm} − {against}" + ("" if against == base else " (depth − width)"),
                    labels=[f"{int(n):,}" for n in g.sort_values("gap_x")["train_images"]] if labelled else None,
                    line=dict(color=colour(f"scaling-{axis}"), dash="dash" if axis == "depth - width" else "solid"))
    fig.update_layout(title=title or "Depth and width against overfitting (labels: training images)",
                      xaxis_title=f"how much {base} overfits: train minus test top-1 (points)",
                      yaxis_title="difference in test top-1 (points, 95% CI)", font=dict(size=14), autosize=True,
                      height=HEIGHT + 140, legend=dict(orientation="h", y=-0.28))
    _room(fig, shown["gap_x"])
    return fig


def procedure_figure(cells: pandas.DataFrame, gains: pandas.DataFrame, *, arm: str = "demo",  # noqa: F821
                     base: str = "torchvision", title: str = "") -> go.Figure:
    """Procedure against architecture (rsbkit.workbook.regime_studies.procedure_study). Left: each model's mean test
    top-1 (± its seeds' standard deviation) under each procedure, a line per model: lines that cross are a change of
    rank. Right: the procedure's difference for each model (95% interval) against how much the model overfits under
    `base`."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.2,
                        subplot_titles=("test top-1 under each procedure", f"{arm} − {base} against overfitting"))
    for model in gains["model"]:
        at = cells[cells["model"] == model].set_index("procedure").loc[[base, arm]]
        fig.add_trace(go.Scatter(x=[base, arm], y=at["mean"], mode="lines+markers+text", name=model,
                                 text=["", model], textposition="middle right", cliponaxis=False,
                                 line=dict(color=colour(f"model-{model}")), marker=dict(size=10),
                                 error_y=dict(type="data", array=at["std"], visible=True), legendgroup=model,
                                 hovertemplate=model + " %{x}: %{y:.2f}<extra></extra>"), row=1, col=1)
        g = gains[gains["model"] == model]
        _gain_trace(fig, g, x="gap_base", name=model, labels=[model], line=dict(color=colour(f"model-{model}")),
                    row=1, col=2)
    fig.add_hline(y=0, line=dict(color="grey", dash="dot"), row=1, col=2)
    fig.update_yaxes(title_text="test top-1 (%)", row=1, col=1)
    fig.update_yaxes(title_text="difference (points, 95% CI)", row=1, col=2)
    fig.update_xaxes(title_text=f"overfitting under {base}'s (points)", row=1, col=2)
    fig.update_xaxes(range=[-0.3, 2.9], row=1, col=1)
    _room(fig, gains["gap_base"], row=1, col=2)
    fig.update_layout(title=title or f"Procedure against architecture: {base}'s and the {arm}'s",
                      font=dict(size=14), autosize=True, height=HEIGHT + 140, showlegend=False)
    return fig


def weight_decay_gap_figure(effects: pandas.DataFrame, *, title: str = "") -> go.Figure:  # noqa: F821
    """Weight decay where it acts (rsbkit.workbook.regime_studies.weight_decay_effects): x how much each row of
    regularizers overfits at the smallest weight decay, y each larger weight decay's effect on test top-1 there (95%
    interval), a line per weight decay from the row without regularizers to the row with them (labelled)."""
    fig = go.Figure()
    fig.add_hline(y=0, line=dict(color="grey", dash="dot"))
    rows = effects[effects["step_index"].notna()]
    for i, (wd, g) in enumerate(rows.groupby("weight_decay", sort=True)):
        _gain_trace(fig, g, x="gap_base", dx=0.08 * i, name=f"weight decay {wd:g} − {g['against'].iloc[0]:g}",
                    labels=list(g.sort_values("gap_base")["step"]) if i == 0 else None,
                    line=dict(color=colour("regime-a3") if i == 0 else colour("regime-a1")))
    fig.update_layout(title=title or "Weight decay's effect against overfitting (labels: regularizers)",
                      xaxis_title="how much the row overfits at the smallest weight decay (points)",
                      yaxis_title="effect on test top-1 (points, 95% CI)", font=dict(size=14), autosize=True,
                      height=HEIGHT + 140, legend=dict(orientation="h", y=-0.28))
    _room(fig, rows["gap_base"])
    return fig
