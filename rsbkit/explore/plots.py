"""Figures of the explorers: each a function of plain values returning a plotly Figure.

The notebooks show them once as static figures (for papermill and HTML export)
and again inside widgets, where a slider calls the same function and the
output shows the new figure. Images travel as PNG data
URIs (``go.Image(source=...)``): a fraction of the size of pixel arrays.
"""
from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Sequence
from typing import Optional

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from ..core.colours import colour
from . import augment, losses, resolution, schedule


def data_uri(img) -> str:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


LEGEND_BELOW = dict(orientation="h", x=0, xanchor="left", y=-0.22, yanchor="top")


def wrap(text: str, width: int = 90) -> str:
    """Break a long title into lines of about `width` characters (plotly does not wrap titles)."""

    lines = [line for part in text.split("<br>") for line in (textwrap.wrap(part, width) or [""])]
    return "<br>".join(lines) or text


def fit(fig: go.Figure, height: int, *, title: Optional[str] = None, legend_below: bool = False, **layout) -> go.Figure:
    """Size a figure to where it is shown: no fixed width (plotly fills the output area or the widget;
    static PNGs are rendered at ``rsbkit.workbook.figures.PAGE_WIDTH``), a wrapped title, and the legend
    below the plots where it cannot be pushed out of the figure."""
    if title is not None:
        lines = wrap(title).count("<br>") + 1
        # the title at the top of the figure, then room for the subplot titles (one or two lines) under it
        layout["title"] = dict(text=wrap(title), font_size=14 if lines == 1 else 12, x=0.01, xanchor="left",
                               y=1, yanchor="top", yref="container", pad=dict(t=10))
        sub = 1 + max((str(a.text or "").count("<br>") for a in fig.layout.annotations), default=-1)
        layout.setdefault("margin", {}).setdefault("t", 24 + 18 * lines + 22 * sub)
    if legend_below:
        layout["legend"] = LEGEND_BELOW
        layout.setdefault("margin", {}).setdefault("b", 110)
    fig.update_layout(autosize=True, width=None, height=height, **layout)
    return fig


def _no_axes(fig: go.Figure) -> go.Figure:
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def image_grid(images: Sequence, titles: Sequence[str], cols: int = 4, *, title: str = "", tile: int = 170) -> go.Figure:
    """Images in a grid, each under its title; the gap between rows holds the longest title (RandAugment's per-draw
    titles run to three lines), so no title lies over the image above it."""
    rows = max(1, -(-len(images) // cols))
    lines = max((str(t).count("<br>") + 1 for t in titles), default=1)
    title_px = 16 * lines + 8  # 12 px text on 16 px lines
    height = rows * (tile + title_px) + 80
    gap = min(0.3, title_px / max(height - 80, 1)) if rows > 1 else 0.0
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles), horizontal_spacing=0.02, vertical_spacing=gap)
    for k, img in enumerate(images):
        fig.add_trace(go.Image(source=data_uri(img), name=str(titles[k])), k // cols + 1, k % cols + 1)
    fig.update_annotations(font_size=12)
    fit(fig, height, title=title, margin=dict(l=10, r=10, b=10))
    return _no_axes(fig)


# ------------------------------------------------------------------ augmentations


def randaugment_figure(img: Image.Image, aa: str, n: int = 8, *, seed: int = 0) -> go.Figure:
    """`n` draws of timm's RandAugment, each titled with the ops that ran (none: both skipped by p=0.5)."""
    samples = augment.randaugment_samples(img, aa, n, seed=seed)
    return image_grid([s for s, _ in samples], ["<br>".join(ops) or "(no op ran)" for _, ops in samples],
                      title=f"timm RandAugment {aa}: {n} draws")


def op_figure(img: Image.Image, op: str, magnitude: float, *, seed: int = 0) -> go.Figure:
    """One op on its own at a fixed magnitude, beside the original."""
    return image_grid([img, augment.apply_op(img, op, magnitude, seed=seed)], ["original", f"{op} at magnitude {magnitude:g}"],
                      cols=2, title=f"{op}, magnitude {magnitude:g} of 10", tile=260)


def rrc_figure(img: Image.Image, size: int = 160, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *, hflip: float = 0.5,
               n: int = 6, seed: int = 0) -> go.Figure:
    """timm's RandomResizedCrop: the crop boxes on the original, then the crops at `size` (flipped or not)."""
    samples = augment.rrc_samples(img, size, scale, ratio, n, hflip=hflip, seed=seed)
    fig = make_subplots(rows=1, cols=n + 1, column_widths=[2.0] + [1.0] * n, horizontal_spacing=0.01,
                        subplot_titles=["boxes on the original"] + [f"crop {k + 1}{'<br>(flipped)' if f else ''}"
                                                                    for k, (_, _, f) in enumerate(samples)])
    fig.add_trace(go.Image(source=data_uri(img), name="original"), 1, 1)
    for k, (crop, (top, left, h, w), _) in enumerate(samples):
        fig.add_shape(type="rect", x0=left, y0=top, x1=left + w, y1=top + h, line=dict(width=2), row=1, col=1)
        fig.add_trace(go.Image(source=data_uri(crop), name=f"crop {k + 1}"), 1, k + 2)
    fig.update_annotations(font_size=12)
    fit(fig, 330, title=f"RandomResizedCrop to {size} px, scale {tuple(scale)}, ratio ({ratio[0]:.2f}, {ratio[1]:.2f})",
        margin=dict(l=10, r=10, b=10))
    return _no_axes(fig)


def mix_figure(a: Image.Image, b: Image.Image, label_a: int, label_b: int, classes: Sequence[str], lam: float,
               mode: str = "mixup", *, smoothing: float = 0.0, seed: int = 0) -> go.Figure:
    """The mixed image and the soft target the loss sees, for one pair."""
    mixed = augment.mix_pair(a, b, label_a, label_b, len(classes), lam, mode, smoothing=smoothing, seed=seed)
    what = (f"mixup, lam {lam:.2f}" if mode == "mixup" else
            f"cutmix: asked lam {lam:.2f},<br>the box leaves {mixed.lam:.2f} of a")
    fig = make_subplots(rows=1, cols=4, column_widths=[1, 1, 1, 1.6], horizontal_spacing=0.04,
                        subplot_titles=[f"a: {classes[label_a]}", f"b: {classes[label_b]}", what, "soft target"])
    for col, img in ((1, a), (2, b), (3, mixed.image)):
        fig.add_trace(go.Image(source=data_uri(img)), 1, col)
    fig.add_trace(go.Bar(x=list(classes), y=mixed.target, name="target", text=[f"{v:.3f}" for v in mixed.target],
                         textposition="outside"), 1, 4)
    fig.update_xaxes(visible=False, row=1, col=1)
    for col in (1, 2, 3):
        fig.update_xaxes(visible=False, row=1, col=col)
        fig.update_yaxes(visible=False, row=1, col=col)
    fig.update_yaxes(range=[0, 1.1], row=1, col=4)
    fit(fig, 360, title=mix_title(mode, lam, mixed.lam, smoothing), showlegend=False, margin=dict(l=10, r=10, b=10))
    return fig


def mix_title(mode: str, asked: float, lam: float, smoothing: float = 0.0) -> str:
    """Each mode's own formula. CutMix pastes a box of b of area about 1 - lam into a, at a random centre; the box is
    clipped at the image's border, so timm corrects lam to the share of a's pixels left, and the target uses that."""
    target = "target = lam x onehot(a) + (1 - lam) x onehot(b)" + (f", smoothed {smoothing:g}" if smoothing else "")
    if mode == "mixup":
        return f"mixup: image = lam x a + (1 - lam) x b; {target}"
    clipped = (f"the box was clipped at the border, so lam is corrected from {asked:.2f} to {lam:.2f}"
               if abs(lam - asked) > 0.005 else f"lam {lam:.2f}")
    return f"cutmix: a box of b, area 1 - lam, pasted into a; {clipped} (the share of a's pixels); {target}"


def mix_pair_figure(images, a: str, b: str, lam: float, mode: str = "mixup", *, smoothing: float = 0.0,
                    seed: int = 0) -> go.Figure:
    """`mix_figure` for two images of an ``images.ImageSet``, by name."""
    return mix_figure(images.square(a), images.square(b), images.labels[a], images.labels[b], images.classes, lam, mode,
                      smoothing=smoothing, seed=seed)


# ------------------------------------------------------------------ losses


def loss_figure(num_classes: int = 5, label_a: int = 1, label_b: int = 3, lam: float = 0.7, *, smoothing: float = 0.0,
                threshold: Optional[float] = None, logit: float = 2.0, cls: Optional[int] = None) -> go.Figure:
    """BCE against softmax CE on one mixed target: targets, loss as one logit moves, gradient per class.

    The logits are 0 except class `cls` (default: `label_a`), which is set to `logit`.
    """
    cls = label_a if cls is None else cls
    target = losses.soft_target(num_classes, label_a, label_b, lam, smoothing)
    z = np.zeros(num_classes, dtype=np.float32)
    z[cls] = logit
    xs = np.linspace(-6, 6, 61)
    classes = [f"class {k}" for k in range(num_classes)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("targets", f"loss as the logit<br>of class {cls} moves",
                                                        "gradient<br>d loss / d logit"))
    fig.add_trace(go.Bar(x=classes, y=target, name="mixed target (CE and BCE)", marker_color=colour("target")), 1, 1)
    if threshold is not None:
        fig.add_trace(go.Bar(x=classes, y=losses.bce_target(target, threshold), name=f"BCE target, threshold {threshold:g}",
                             marker_color=colour("BCE target")), 1, 1)
    for kind, name in (("bce", "BCE"), ("ce", "softmax CE")):  # one colour per loss, in every panel and figure
        sweep = losses.loss_sweep(z, target, cls, xs, kind, threshold=threshold)
        fig.add_trace(go.Scatter(x=sweep["logit"], y=sweep["loss"], name=f"{name} loss", mode="lines",
                                 line_color=colour(name)), 1, 2)
        point = losses.loss_and_grad(z, target, kind, threshold=threshold)
        fig.add_trace(go.Scatter(x=[logit], y=[point.loss], mode="markers", marker_size=10, showlegend=False,
                                 name=f"{name} loss at the logit", marker_color=colour(name)), 1, 2)
        fig.add_trace(go.Bar(x=classes, y=point.grad, name=f"{name} gradient", marker=dict(
            color=colour(name), pattern_shape="/" if kind == "ce" else "")), 1, 3)
    fig.update_xaxes(title_text="logit", row=1, col=2)
    fit(fig, 470, title=f"lam {lam:g} between class {label_a} and class {label_b}, smoothing {smoothing:g}", legend_below=True,
        barmode="group")
    return fig


# ------------------------------------------------------------------ resolution


def resolution_explore_figure(img: Image.Image, train_res: int = 160, test_res: int = 224, crop_pct: float = 0.95,
                              scale=(0.08, 1.0), *, measured=None, seed: int = 0) -> go.Figure:
    """What the network sees in training and at test, the apparent-size ratio over test resolutions,
    and (with `measured`, a resolution table of a run) the measured top-1 over the same axis."""
    train, test = resolution.train_and_test_views(img, train_res, test_res, crop_pct, scale, seed=seed)
    ratio = resolution.apparent_size_ratio(train_res, test_res, crop_pct, scale)
    match = resolution.matching_test_res(train_res, crop_pct, scale)
    fig = make_subplots(rows=1, cols=3, column_widths=[1, 1, 1.5],
                        subplot_titles=(f"train: a RandomResizedCrop<br>at {train_res} px", f"test: {test_res} px,<br>crop {crop_pct:g}",
                                        "train / test apparent object size"))
    fig.add_trace(go.Image(source=data_uri(train)), 1, 1)
    fig.add_trace(go.Image(source=data_uri(test)), 1, 2)
    xs = np.arange(max(16, train_res // 2), 2 * train_res + 1, max(1, train_res // 32))
    fig.add_trace(go.Scatter(x=xs, y=[resolution.apparent_size_ratio(train_res, int(x), crop_pct, scale) for x in xs],
                             name="apparent size ratio", mode="lines", line_color=colour("apparent size")), 1, 3)
    fig.add_trace(go.Scatter(x=[test_res], y=[ratio], mode="markers", marker_size=11, name=f"test {test_res} px: {ratio:.2f}"), 1, 3)
    if measured is not None and len(measured):
        best = measured.groupby("test_res")["top1"].max().reset_index()
        fig.add_trace(go.Scatter(x=best["test_res"], y=best["top1"], name="measured top-1 (%)", mode="lines+markers",
                                 line_color=colour("measured top-1"),
                                 xaxis="x3", yaxis="y4"))  # a second y axis on the third panel
        # its own round ticks (a synced axis labels the left axis's tick positions: 57.55, 63.86, 70.18)
        fig.update_layout(yaxis4=dict(overlaying="y3", anchor="x3", side="right", title="top-1 (%)", showgrid=False,
                                      tickmode="auto", nticks=6, tickformat=".0f"))
    fig.add_hline(y=1.0, line_dash="dot", row=1, col=3)
    fig.update_xaxes(title_text="test resolution (px)", row=1, col=3)
    for col in (1, 2):
        fig.update_xaxes(visible=False, row=1, col=col)
        fig.update_yaxes(visible=False, row=1, col=col)
    maps = {res: "-".join(map(str, resolution.resnet_maps(res).values())) for res in (train_res, test_res)}
    fit(fig, 470, title=f"objects look {ratio:.2f}x as large in training as at test; equal at about {match:.0f} px<br>"
        f"ResNet's feature maps (stem, max-pool, stages 1-4): {maps[train_res]} at {train_res} px, "
        f"{maps[test_res]} at {test_res} px", legend_below=True)
    return fig


# ------------------------------------------------------------------ schedule and cost


def schedule_figure(recipe, batch_size: Optional[int] = None, grad_accum: Optional[bool] = None,
                    dataset_size: int = schedule.IMAGENET_TRAIN) -> go.Figure:
    """The LR over training (top) and the train size of each epoch (bottom: flat unless the recipe
    resizes progressively), with the compute that saves against training at train_res throughout."""
    curve, plan = schedule.lr_curve(recipe, batch_size, grad_accum=grad_accum, dataset_size=dataset_size)
    sizes = schedule.train_res_curve(recipe)
    if sizes["train_res"].nunique() == 1:  # a constant train size: a flat panel says nothing, the title says the size
        fig = go.Figure(go.Scatter(x=curve["epoch"], y=curve["lr"], mode="lines", name=recipe.name, line_color=colour("LR")))
        fit(fig, 380, title=f"{recipe.name}: {plan.rule}; trains at {recipe.train_res} px throughout",
            xaxis_title="epoch", yaxis_title="learning rate")
        return fig
    saved = 1 - sizes["relative_pixels"].mean()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.08,
                        subplot_titles=("learning rate", f"train size (px): {saved:.0%} fewer pixels than "
                                                         f"{recipe.train_res} px throughout"))
    fig.add_trace(go.Scatter(x=curve["epoch"], y=curve["lr"], mode="lines", name=recipe.name, line_color=colour("LR")), 1, 1)
    # epoch e (1-based) trains over [e - 1, e) on the LR curve's axis
    fig.add_trace(go.Scatter(x=sizes["epoch"] - 1, y=sizes["train_res"], mode="lines", line_shape="hv", name="train size",
                             showlegend=False), 2, 1)
    fit(fig, 520, title=f"{recipe.name}: {plan.rule}")
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    return fig


def cost_figure(table=None) -> go.Figure:
    table = schedule.cost_table() if table is None else table
    fig = make_subplots(rows=1, cols=2, subplot_titles=("compute relative to A1 (epochs x pixels)", "reported hours on 4 V100"))
    fig.add_trace(go.Bar(x=table["recipe"], y=table["relative_compute"], text=[f"{v:.2f}" for v in table["relative_compute"]],
                         textposition="outside", showlegend=False), 1, 1)
    fig.add_trace(go.Bar(x=table["recipe"], y=table["reported_hours"], text=table["reported_hours"], textposition="outside",
                         showlegend=False), 1, 2)
    fit(fig, 360, title="the cost of A1, A2, A3")
    return fig


def trial_figure(runs: dict[str, Sequence[dict]], *, title: str = "") -> go.Figure:
    """An explorer's trial beside its reference, per epoch: test top-1 (left) and train loss (right), one trace per
    run (`runs`: a label -> metrics.csv rows; a label starting "reference" is drawn grey and dashed)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test top-1 (%)", "train loss"), horizontal_spacing=0.1)
    for label, rows in runs.items():
        ref = label.startswith("reference")
        style = dict(color=colour("reference run" if ref else "training change"), dash="dash" if ref else "solid")
        epochs = [r["epoch"] for r in rows]
        fig.add_trace(go.Scatter(x=epochs, y=[r.get("val_top1") for r in rows], mode="lines+markers", name=label,
                                 line=style, legendgroup=label), 1, 1)
        fig.add_trace(go.Scatter(x=epochs, y=[r.get("train_loss") for r in rows], mode="lines+markers", name=label,
                                 line=style, legendgroup=label, showlegend=False), 1, 2)
    fig.update_xaxes(title_text="epoch", dtick=1)
    return fit(fig, 320, title=title or "this change beside the reference", legend_below=True)
