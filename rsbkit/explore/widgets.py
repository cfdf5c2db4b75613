"""Widget glue: sliders and dropdowns wired to the figure functions of ``plots``.

Every explorer is ``Explorer(build, controls)``: a plotly FigureWidget drawn by
``build(**control values)``, redrawn whenever a control changes. No computation
lives here; ``plots`` and the modules it calls hold it and are tested.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from ..recipes import RECIPES
from . import augment, images, plots


def refresh(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Give `widget` the data and layout of `fig` (in place when the traces line up, so the view just updates)."""
    with widget.batch_update():
        if len(widget.data) == len(fig.data) and all(a.type == b.type for a, b in zip(widget.data, fig.data)):
            for old, new in zip(widget.data, fig.data):
                old.update(new.to_plotly_json(), overwrite=True)
        else:
            widget.data = []
            widget.add_traces(list(fig.data))
        widget.layout = fig.layout


class Explorer:
    """Controls above a FigureWidget that `build` redraws on every change."""

    def __init__(self, build: Callable[..., go.Figure], controls: dict[str, W.ValueWidget], **fixed: Any):
        self.build, self.controls, self.fixed = build, controls, fixed
        self.figure = go.FigureWidget(self.draw())
        self.error = W.HTML()
        for control in controls.values():
            control.observe(self._changed, names="value")
        self.ui = W.VBox([W.HBox(list(controls.values()), layout=W.Layout(flex_flow="row wrap")), self.error, self.figure])

    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def draw(self) -> go.Figure:
        return self.build(**self.fixed, **self.values())

    def _changed(self, _change=None) -> None:
        try:
            refresh(self.figure, self.draw())
            self.error.value = ""
        except Exception as exc:  # a bad combination shows a message, the widget stays alive
            self.error.value = f"<b style='color:#b00'>{type(exc).__name__}: {exc}</b>"

    def set(self, **values: Any) -> None:
        """Set several controls and redraw once."""
        for name, value in values.items():
            control = self.controls[name]
            with control.hold_trait_notifications():
                control.unobserve(self._changed, names="value")
                control.value = value
                control.observe(self._changed, names="value")
        self._changed()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.ui)


def _slider(value, lo, hi, step, description, float_=True, **kw):
    cls = W.FloatSlider if float_ else W.IntSlider
    return cls(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False,
               style={"description_width": "initial"}, **kw)


# ------------------------------------------------------------------ augmentations


def randaugment_explorer(imgs: dict, aa: str = "rand-m7-mstd0.5-inc1") -> Explorer:
    def build(image: str, m: int, mstd: float, n: int, inc: bool, seed: int) -> go.Figure:
        return plots.randaugment_figure(imgs[image], f"rand-m{m}-n{n}-mstd{mstd:g}-inc{int(inc)}", seed=seed)

    cfg = augment.parse_randaugment(aa)
    return Explorer(build, dict(
        image=W.Dropdown(options=list(imgs), description="image"),
        m=_slider(int(cfg.magnitude), 0, 10, 1, "magnitude m", float_=False),
        mstd=_slider(float(cfg.magnitude_std), 0.0, 2.0, 0.1, "magnitude noise mstd"),
        n=_slider(cfg.num_ops, 1, 4, 1, "ops per image n", float_=False),
        inc=W.Checkbox(value="Increasing" in "".join(cfg.ops), description="inc variants"),
        seed=_slider(0, 0, 50, 1, "seed", float_=False),
    ))


def op_explorer(imgs: dict) -> Explorer:
    increasing = augment.parse_randaugment("rand-inc1").ops
    ops = increasing + tuple(o for o in augment.parse_randaugment("rand-inc0").ops if o not in increasing)
    return Explorer(lambda image, op, magnitude: plots.op_figure(imgs[image], op, magnitude), dict(
        image=W.Dropdown(options=list(imgs), description="image"),
        op=W.Dropdown(options=list(ops), value="Rotate", description="op"),
        magnitude=_slider(7.0, 0.0, 10.0, 0.5, "magnitude"),
    ))


def rrc_explorer(imgs: dict) -> Explorer:
    def build(image, size, scale, ratio, hflip, seed):
        return plots.rrc_figure(imgs[image], size, scale, ratio, hflip=hflip, seed=seed)

    return Explorer(build, dict(
        image=W.Dropdown(options=list(imgs), description="image"),
        size=_slider(160, 32, 288, 16, "train resolution", float_=False),
        scale=W.FloatRangeSlider(value=(0.08, 1.0), min=0.02, max=1.0, step=0.02, description="scale",
                                 continuous_update=False),
        ratio=W.FloatRangeSlider(value=(0.75, 1.33), min=0.3, max=3.0, step=0.01, description="ratio",
                                 continuous_update=False),
        hflip=_slider(0.5, 0.0, 1.0, 0.1, "flip probability"),
        seed=_slider(0, 0, 50, 1, "seed", float_=False),
    ))


def mix_explorer(images_: images.ImageSet) -> Explorer:
    """Mix two images of the set: targets over its classes (one per photo, or the dataset's)."""
    names = images_.names

    def build(a, b, lam, mode, smoothing, seed):
        return plots.mix_pair_figure(images_, a, b, lam, mode, smoothing=smoothing, seed=seed)

    return Explorer(build, dict(
        a=W.Dropdown(options=names, value=names[0], description="image a"),
        b=W.Dropdown(options=names, value=names[1 % len(names)], description="image b"),
        lam=_slider(0.7, 0.0, 1.0, 0.01, "lambda"),
        mode=W.ToggleButtons(options=["mixup", "cutmix"], description="mode"),
        smoothing=_slider(0.0, 0.0, 0.3, 0.05, "label smoothing"),
        seed=_slider(0, 0, 50, 1, "box seed", float_=False),
    ))


def presets(targets: dict[str, Explorer]) -> W.HBox:
    """A1 / A2 / A3 buttons that set the explorers to the recipe's augmentation settings."""
    def apply(name):
        p = augment.PRESETS[name]
        cfg = augment.parse_randaugment(p["aa"])
        if "randaugment" in targets:
            targets["randaugment"].set(m=int(cfg.magnitude), mstd=float(cfg.magnitude_std), n=cfg.num_ops,
                                       inc="Increasing" in "".join(cfg.ops))
        if "rrc" in targets:
            targets["rrc"].set(size=p["train_res"], scale=tuple(p["scale"]), ratio=tuple(round(r, 2) for r in p["ratio"]),
                               hflip=p["hflip"])
        if "mix" in targets:
            targets["mix"].set(smoothing=p["smoothing"])

    buttons = []
    for name in augment.PRESETS:
        button = W.Button(description=f"{name} preset", tooltip=f"set every explorer to {name}'s augmentation")
        button.on_click(lambda _b, n=name: apply(n))
        buttons.append(button)
    return W.HBox(buttons)


# ------------------------------------------------------------------ losses, resolution, schedule


def loss_explorer(num_classes: int = 5) -> Explorer:
    def build(lam, smoothing, threshold_on, threshold, logit, cls):
        return plots.loss_figure(num_classes, 1, 3, lam, smoothing=smoothing,
                                 threshold=threshold if threshold_on else None, logit=logit, cls=cls)

    return Explorer(build, dict(
        lam=_slider(0.7, 0.0, 1.0, 0.05, "lambda (class 1 vs class 3)"),
        smoothing=_slider(0.0, 0.0, 0.3, 0.05, "label smoothing"),
        threshold_on=W.Checkbox(value=False, description="BCE target threshold"),
        threshold=_slider(0.2, 0.0, 0.9, 0.05, "threshold"),
        logit=_slider(2.0, -6.0, 6.0, 0.25, "logit"),
        cls=W.Dropdown(options=list(range(num_classes)), value=1, description="of class"),
    ))


def resolution_explorer(img, measured=None) -> Explorer:
    def build(train_res, test_res, crop_pct, scale_min, seed):
        return plots.resolution_explore_figure(img, train_res, test_res, crop_pct, (scale_min, 1.0), measured=measured, seed=seed)

    if measured is not None and len(measured):  # slider ranges around the run's own resolutions
        lo, hi = int(measured["test_res"].min()), int(measured["test_res"].max())
        train = dict(value=lo + (hi - lo) // 3, min=8, max=2 * hi, step=4)
        test = dict(value=lo + (hi - lo) // 3, min=lo, max=hi, step=4)
    else:
        train, test = dict(value=160, min=64, max=448, step=16), dict(value=224, min=64, max=448, step=16)
    return Explorer(build, dict(
        train_res=W.IntSlider(description="train resolution", continuous_update=False, **train),
        test_res=W.IntSlider(description="test resolution", continuous_update=False, **test),
        crop_pct=_slider(0.95, 0.5, 1.0, 0.025, "crop ratio"),
        scale_min=_slider(0.08, 0.02, 1.0, 0.02, "RRC scale min"),
        seed=_slider(0, 0, 50, 1, "crop seed", float_=False),
    ))


def schedule_explorer() -> Explorer:
    def build(recipe, batch_size, grad_accum):
        return plots.schedule_figure(RECIPES[recipe], batch_size, grad_accum)

    return Explorer(build, dict(
        recipe=W.Dropdown(options=list(RECIPES), value="a3", description="recipe"),
        batch_size=W.SelectionSlider(options=[64, 128, 256, 512, 1024, 2048, 4096], value=2048, description="batch size",
                                     continuous_update=False),
        grad_accum=W.Checkbox(value=False, description="accumulate gradients to the recipe's batch"),
    ))
