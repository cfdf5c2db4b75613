"""Widget glue: sliders and dropdowns wired to the figure functions of ``plots``.

Every explorer is ``Explorer(build, controls)``: a plotly figure drawn by
``build(**control values)``, redrawn whenever a control changes. No computation
lives here; ``plots`` and the modules it calls hold it and are tested.
"""
from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any, Optional, Union

import ipywidgets as W
import plotly.graph_objects as go

from ..core.errors import RsbkitError
from ..core.recipes import RECIPES, Recipe
from . import augment, change, images, plots, schedule, trial


def plotly_bundle(fig: go.Figure) -> dict[str, Any]:
    """The figure as JupyterLab's plotly renderer takes it: it fills the output area and follows its width."""

    return {"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/plain": "<plotly figure>"}


class Explorer:
    """Controls above a figure that `build` redraws on every change.

    The figure is shown through an ``ipywidgets.Output`` with JupyterLab's plotly
    renderer, which sizes it to the output area and follows the window (a plotly
    ``FigureWidget`` keeps plotly's 700 px default when it renders before it is
    placed). ``figure`` is the last one drawn.
    """

    def __init__(self, build: Callable[..., go.Figure], controls: dict[str, W.ValueWidget], **fixed: Any):
        self.build, self.controls, self.fixed = build, controls, fixed
        self.output = W.Output(layout=W.Layout(width="100%"))
        self.error = W.HTML()
        self.figure = self.draw()
        self._show()
        for control in controls.values():
            control.observe(self._changed, names="value")
        self.ui = W.VBox([W.HBox(list(controls.values()), layout=W.Layout(flex_flow="row wrap")), self.error, self.output],
                         layout=W.Layout(width="100%"))

    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def draw(self) -> go.Figure:
        return self.build(**self.fixed, **self.values())

    def _show(self) -> None:
        # the Output widget's outputs set in one assignment: no capture context, nothing for a kernel client
        # (papermill's nbclient) to route, and the old figure goes as the new one arrives
        self.output.outputs = ({"output_type": "display_data", "data": plotly_bundle(self.figure), "metadata": {}},)

    def _changed(self, _change=None) -> None:
        try:
            self.figure = self.draw()
            self._show()
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


# every control shows its whole label (its natural width) and gets room for it; the long form is its tooltip
LABEL = {"description_width": "initial"}


def _slider(value, lo, hi, step, description, float_=True, tooltip: str = "", **kw):
    cls = W.FloatSlider if float_ else W.IntSlider
    return cls(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False,
               style=LABEL, layout=W.Layout(width="400px"), tooltip=tooltip or description, **kw)


def _control(cls, description: str, tooltip: str = "", width: str = "auto", **kw):
    """Any other control with its label in full."""
    margin = None
    if cls is W.Checkbox:
        kw.setdefault("indent", False)
        margin = "0 28px 0 0"  # apart from the next control's label: "inc variants" and "seed" read as one label
    return cls(description=description, style=LABEL, layout=W.Layout(width=width, margin=margin), tooltip=tooltip or description,
               **kw)


# ------------------------------------------------------------------ augmentations


def randaugment_explorer(imgs: dict, aa: str = "rand-m7-mstd0.5-inc1") -> Explorer:
    def build(image: str, m: int, mstd: float, n: int, inc: bool, seed: int) -> go.Figure:
        return plots.randaugment_figure(imgs[image], f"rand-m{m}-n{n}-mstd{mstd:g}-inc{int(inc)}", seed=seed)

    cfg = augment.parse_randaugment(aa)
    return Explorer(build, dict(
        image=_control(W.Dropdown, "image", options=list(imgs)),
        m=_slider(int(cfg.magnitude), 0, 10, 1, "magnitude m", float_=False),
        mstd=_slider(float(cfg.magnitude_std), 0.0, 2.0, 0.1, "magnitude noise mstd"),
        n=_slider(cfg.num_ops, 1, 4, 1, "ops per image n", float_=False),
        inc=_control(W.Checkbox, "increasing ops (inc1)", "timm's increasing variants of the ops (inc1)",
                     value="Increasing" in "".join(cfg.ops)),
        seed=_slider(0, 0, 50, 1, "draw seed", float_=False),
    ))


def op_explorer(imgs: dict, magnitude: float = 7.0) -> Explorer:
    """One op at a time, starting at `magnitude` (the notebook's: the one its static figure is drawn at)."""
    increasing = augment.parse_randaugment("rand-inc1").ops
    ops = increasing + tuple(o for o in augment.parse_randaugment("rand-inc0").ops if o not in increasing)
    return Explorer(lambda image, op, magnitude: plots.op_figure(imgs[image], op, magnitude), dict(
        image=_control(W.Dropdown, "image", options=list(imgs)),
        op=_control(W.Dropdown, "op", options=list(ops), value="Rotate"),
        magnitude=_slider(float(magnitude), 0.0, 10.0, 0.5, "magnitude"),
    ))


def rrc_explorer(imgs: dict, recipe: Optional[Recipe] = None) -> Explorer:
    """RandomResizedCrop and flip, starting at `recipe`'s train size, scale, ratio and flip (default: A1-A3's 160 px,
    0.08-1, 3/4-4/3, 0.5): the notebook's recipe, so that its change starts at none."""
    def build(image, size, scale, ratio, hflip, seed):
        return plots.rrc_figure(imgs[image], size, scale, ratio, hflip=hflip, seed=seed)

    size, scale, ratio, hflip = ((recipe.train_res, tuple(recipe.scale), tuple(round(r, 2) for r in recipe.ratio), recipe.hflip)
                                 if recipe is not None else (160, (0.08, 1.0), (0.75, 1.33), 0.5))
    return Explorer(build, dict(
        image=_control(W.Dropdown, "image", options=list(imgs)),
        size=_slider(size, 16, 288, 16, "train resolution", float_=False),
        scale=_control(W.FloatRangeSlider, "scale", "crop area range, as a fraction of the image", width="400px",
                       value=scale, min=0.02, max=1.0, step=0.02, continuous_update=False),
        ratio=_control(W.FloatRangeSlider, "ratio", "crop aspect ratio range", width="400px",
                       value=ratio, min=0.3, max=3.0, step=0.01, continuous_update=False),
        hflip=_slider(hflip, 0.0, 1.0, 0.1, "flip probability"),
        seed=_slider(0, 0, 50, 1, "seed", float_=False),
    ))


def mix_explorer(images_: images.ImageSet, recipe: Optional[Recipe] = None) -> Explorer:
    """Mix two images of the set: targets over its classes (one per photo, or the dataset's). "in training" is what a
    run mixes (the recipe's mixup and CutMix alphas, switching per batch): the figure shows one pair, in `mode`."""
    names = images_.names

    def build(a, b, lam, mode, smoothing, seed, mixing, mixup_alpha, cutmix_alpha):
        return plots.mix_pair_figure(images_, a, b, lam, mode, smoothing=smoothing, seed=seed)

    alphas = (recipe.mixup or change.ALPHAS[0], recipe.cutmix or change.ALPHAS[1]) if recipe else change.ALPHAS
    return Explorer(build, dict(
        a=_control(W.Dropdown, "image a", options=names, value=names[0]),
        b=_control(W.Dropdown, "image b", options=names, value=names[1 % len(names)]),
        lam=_slider(0.7, 0.0, 1.0, 0.01, "lambda"),
        mode=_control(W.ToggleButtons, "mode", options=["mixup", "cutmix"]),
        smoothing=_slider(0.0, 0.0, 0.3, 0.05, "label smoothing"),
        seed=_slider(0, 0, 50, 1, "box seed", float_=False),
        mixing=_control(W.Dropdown, "in training", "what a run mixes: mixup and CutMix switching per batch, one of them, or "
                        "neither (the recipe's alphas)", options=list(change.MIXING),
                        value=change.mixing_of(recipe) if recipe else change.MIXING[0]),
        mixup_alpha=_slider(alphas[0], 0.05, 1.0, 0.05, "mixup alpha",
                            tooltip="a run draws each batch's lambda from Beta(alpha, alpha): small alphas keep it near 0 or 1"),
        cutmix_alpha=_slider(alphas[1], 0.05, 1.0, 0.05, "CutMix alpha", tooltip="the same for CutMix's box area"),
    ))


def presets(targets: dict[str, Explorer], recipe: Optional[Recipe] = None) -> W.HBox:
    """A1 / A2 / A3 buttons that set the explorers (`targets`: keys of rsbkit.explore.change.MAPPERS) to the recipe's
    settings: augmentation, mixing and its alphas, label smoothing and BCE threshold, train and test sizes; with
    `recipe` (the notebook's), a last button for its own settings, where the change from it is none."""
    def apply(p):
        if "randaugment" in targets and p["aa"] and str(p["aa"]).startswith("rand"):
            cfg = augment.parse_randaugment(p["aa"])
            targets["randaugment"].set(m=int(cfg.magnitude), mstd=float(cfg.magnitude_std), n=cfg.num_ops,
                                       inc="Increasing" in "".join(cfg.ops))
        if "op" in targets and p["aa"] and str(p["aa"]).startswith("rand"):
            targets["op"].set(magnitude=float(augment.parse_randaugment(p["aa"]).magnitude))
        if "rrc" in targets:
            targets["rrc"].set(size=p["train_res"], scale=tuple(p["scale"]), ratio=tuple(round(r, 2) for r in p["ratio"]),
                               hflip=p["hflip"])
        if "mix" in targets:
            mixing = {"mixing": change.mixing_choice(p["mixup"], p["cutmix"])} if "mixing" in targets["mix"].controls else {}
            if "mixup_alpha" in targets["mix"].controls:  # an alpha that is off keeps its slider where it was
                mixing.update({k: a for k, a in (("mixup_alpha", p["mixup"]), ("cutmix_alpha", p["cutmix"])) if a})
            targets["mix"].set(smoothing=p["smoothing"], **mixing)
        if "loss" in targets:
            thresh = p.get("bce_target_thresh")
            targets["loss"].set(smoothing=p["smoothing"], threshold_on=thresh is not None,
                                **({"threshold": thresh} if thresh is not None else {}))
        if "resolution" in targets:
            targets["resolution"].set(train_res=p["train_res"], test_res=p["test_res"], crop_pct=p["crop_pct"],
                                      scale_min=p["scale"][0])

    choices = {name: (p, f"set every explorer to {name}'s augmentation") for name, p in augment.PRESETS.items()}
    if recipe is not None and recipe.name.upper() not in choices:
        choices[recipe.name] = (augment.preset(recipe), f"set every explorer back to {recipe.name}'s own augmentation "
                                                         "(the recipe the change below is from)")
    buttons = []
    for name, (p, tip) in choices.items():
        button = W.Button(description=f"{name} preset", tooltip=tip, layout=W.Layout(width="auto"))
        button.on_click(lambda _b, p=p: apply(p))
        buttons.append(button)
    return W.HBox(buttons)


# ------------------------------------------------------------------ losses, resolution, schedule


def loss_explorer(num_classes: int = 5, *, lam: float = 0.7, smoothing: float = 0.0, threshold: Optional[float] = None) -> Explorer:
    """Starts at the notebook's parameters: its lam, smoothing and, when given, its threshold (switched on, as the
    figure above it draws it)."""
    def build(lam, smoothing, threshold_on, threshold, logit, cls):
        return plots.loss_figure(num_classes, 1, 3, lam, smoothing=smoothing,
                                 threshold=threshold if threshold_on else None, logit=logit, cls=cls)

    return Explorer(build, dict(
        lam=_slider(lam, 0.0, 1.0, 0.05, "lambda (class 1 vs class 3)"),
        smoothing=_slider(smoothing, 0.0, 0.3, 0.05, "label smoothing"),
        threshold_on=_control(W.Checkbox, "use a BCE target threshold", "BCE: targets above the threshold become 1",
                              value=threshold is not None),
        threshold=_slider(0.2 if threshold is None else threshold, 0.0, 0.9, 0.05, "threshold"),
        logit=_slider(2.0, -6.0, 6.0, 0.25, "logit"),
        cls=_control(W.Dropdown, "of class", "the class whose logit the middle panel moves",
                     options=list(range(num_classes)), value=1),
    ))


def resolution_explorer(img, measured=None, *, train_res: int = 160, test_res: int = 224, crop_pct: float = 0.95,
                        scale_min: float = 0.08) -> Explorer:
    """Train and test sizes, crop ratio and the crop's scale floor, starting at the notebook's parameters (those its
    static figure is drawn at); with a run's `measured` table, around the run's own resolutions."""
    def build(train_res, test_res, crop_pct, scale_min, seed):
        return plots.resolution_explore_figure(img, train_res, test_res, crop_pct, (scale_min, 1.0), measured=measured, seed=seed)

    if measured is not None and len(measured):  # slider ranges around the run's own resolutions
        lo, hi = int(measured["test_res"].min()), int(measured["test_res"].max())
        train = dict(value=lo + (hi - lo) // 3, min=8, max=2 * hi, step=4)
        test = dict(value=lo + (hi - lo) // 3, min=lo, max=hi, step=4)
    else:
        train, test = dict(value=train_res, min=16, max=448, step=16), dict(value=test_res, min=16, max=448, step=16)
    return Explorer(build, dict(
        train_res=_control(W.IntSlider, "train resolution", "RandomResizedCrop size in training (px)", width="400px",
                           continuous_update=False, **train),
        test_res=_control(W.IntSlider, "test resolution", "centre-crop size at test (px)", width="400px",
                          continuous_update=False, **test),
        crop_pct=_slider(crop_pct, 0.5, 1.0, 0.025, "crop ratio"),
        scale_min=_slider(scale_min, 0.02, 1.0, 0.02, "RRC scale min"),
        seed=_slider(0, 0, 50, 1, "crop seed", float_=False),
    ))


def schedule_explorer(recipe: Union[str, Recipe] = "a3", batch_size: int = 2048, grad_accum: bool = False) -> Explorer:
    """Starts at the notebook's parameters: its recipe (a catalogue name, or a YAML file that joins the choices under
    its path), batch size (the nearest on the slider) and grad_accum."""
    batches = [64, 128, 256, 512, 1024, 2048, 4096]
    start = min(batches, key=lambda b: abs(b - batch_size))
    label = recipe.name if isinstance(recipe, Recipe) else str(recipe)
    choices = dict(RECIPES) if label in RECIPES else {label: change.start_recipe(recipe), **RECIPES}
    first = dict(recipe=label, batch_size=start, grad_accum=grad_accum)

    def build(recipe, batch_size, grad_accum, progressive, res_start):
        r = choices[recipe]
        if progressive:  # FFCV's proportions: the growth from 74% to 86% of the run
            r = schedule.progressive(r, min(res_start, r.train_res))
        return plots.schedule_figure(r, batch_size, grad_accum)

    return Explorer(build, dict(
        recipe=_control(W.Dropdown, "recipe", options=list(choices), value=first["recipe"]),
        batch_size=_control(W.SelectionSlider, "batch size", "the global batch of the run", width="400px",
                            options=batches, value=first["batch_size"], continuous_update=False),
        grad_accum=_control(W.Checkbox, "accumulate to the recipe's batch",
                            "accumulate gradients up to the batch the recipe's LR is for, instead of scaling the LR",
                            value=first["grad_accum"]),
        progressive=_control(W.Checkbox, "progressive resizing (FFCV)",
                             "grow the train size to the recipe's train_res from 74% to 86% of the run, in steps of 32 px",
                             value=False),
        res_start=_control(W.IntSlider, "start size", "the train size before the growth (px)", width="400px",
                           value=128, min=16, max=448, step=16, continuous_update=False),
    ))


# ------------------------------------------------------------------ the recipe change


class ChangePanel:
    """The change from `recipe` that the explorers' widgets make, in a text box to copy (YAML lines, the command
    line, Python), redone on every control change; a state the recipe cannot express says why instead
    (:func:`rsbkit.explore.change.recipe_change`). `explorers` maps ``change.MAPPERS`` names to explorers.

    "Try it" (or :meth:`try_it`, the same as one call for papermill) starts a short run of the recipe with the change
    at `scale` (:func:`rsbkit.explore.trial.try_change`, in the background: the click returns at once), draws its
    curves per epoch, and when it ends draws them beside the reference run at the same scale (run once and reused;
    the first try runs it too, and says so) with what one seed at this scale can and cannot tell
    (:func:`rsbkit.explore.trial.one_seed_text`; `seeds`, from the notebook, adds the seed count: this layer may not
    import the workbook's seed arithmetic). A click while a trial runs is refused in the panel, not queued.
    `settings` are train()'s run options (device, workers)."""

    def __init__(self, recipe: Union[str, Recipe], explorers: dict[str, Explorer], source: Optional[str] = None, *,
                 scale: trial.Scale = trial.QUICK, seeds: Optional[Callable[[float], str]] = None,
                 settings: Optional[dict[str, Any]] = None):
        self.base = change.start_recipe(recipe)
        self.source = source or (recipe if isinstance(recipe, str) else self.base.name)
        self.explorers = explorers
        self.scale, self.seeds, self.settings = scale, seeds, dict(settings or {})
        self.status = W.HTML()
        self.box = W.Textarea(layout=W.Layout(width="100%"), tooltip="select and copy")
        self.button = W.Button(description="Try it", icon="play", button_style="success",
                               tooltip="train the recipe with this change, briefly, in the background (runs/explore/)")
        self.scale_note = W.HTML()
        self.notice = W.HTML()  # a refusal: a state that is not a recipe, or a trial already running
        self.progress = W.HTML()
        self.curves = W.Output(layout=W.Layout(width="100%"))
        self.reading = W.Textarea(layout=W.Layout(width="100%", display="none"), tooltip="what this trial can and cannot tell")
        self.trial: Optional[trial.Trial] = None
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.button.on_click(lambda _b: self.try_it())
        for explorer in explorers.values():
            for control in explorer.controls.values():
                control.observe(self.update, names="value")
        self.update()
        self.ui = W.VBox([self.status, self.box, W.HBox([self.button, self.scale_note]), self.notice, self.progress,
                          self.curves, self.reading], layout=W.Layout(width="100%"))

    def state(self) -> dict[str, dict[str, Any]]:
        return {name: explorer.values() for name, explorer in self.explorers.items()}

    def update(self, _change=None) -> None:
        self.change = change.recipe_change(self.base, self.state(), self.source)
        self.box.value = self.change.text
        self.box.rows = self.change.text.count("\n") + 2
        name, source = self.change.base.name, self.change.source
        where = name if source == name else f"{name} ({source})"
        self.status.value = (f"<b style='color:#b00'>Not a recipe: {html.escape(self.change.error)}</b>" if self.change.error
                             else f"<b>These settings as a change to {html.escape(where)}</b>, to copy:")
        self.scale_note.value = html.escape(f"at {self.scale.describe()}; {self.scale.duration(self.change.base)}")

    # ---------------------------------------------------------------- try it

    def try_it(self) -> Optional[trial.Trial]:
        """Start the trial of the change as it stands; returns it, or None (refused: the panel says why)."""
        tried = self.change
        try:
            started = trial.try_change(tried, self.scale, reference=True, on_epoch=lambda row: self._epoch("this change", row),
                                       on_reference_epoch=lambda row: self._epoch(self._reference_label(tried), row),
                                       on_done=self._ended, **self.settings)
        except RsbkitError as exc:  # RunError: one is running; RecipeError: not a recipe
            self.notice.value = f"<b style='color:#b00'>Not started: {html.escape(str(exc))}</b>"
            return None
        self.trial, self.notice.value = started, ""
        self.reading.value, self.reading.layout.display = "", "none"
        reference = self._reference_label(tried)
        self.rows = {"this change": [], reference: trial.epoch_rows(started.reference) if not started.reference_ran else []}
        what = "no change (the recipe itself)" if not tried.fields else ", ".join(f"{k}={v!r}" for k, v in tried.fields.items())
        then = (f"; the reference ({tried.base.name} at this scale, no change) is missing, so this first try runs it too, after "
                f"the change, in {started.reference} (reused from now on): about twice as long" if started.reference_ran
                else f"; beside the reference in {started.reference}")
        self._say(f"Running {what} in {started.out_dir}{then}.")
        self._draw()
        return started

    def _reference_label(self, tried: change.Change) -> str:
        return f"reference ({tried.base.name}, no change)"

    def _say(self, text: str) -> None:
        self.progress.value = html.escape(text)

    def _epoch(self, label: str, row: dict[str, Any]) -> None:
        """One epoch ended (called in the trial's thread): its row joins the curves."""
        self.rows.setdefault(label, []).append(row)
        top1 = row.get("val_top1")
        self._say(f"{label}: epoch {row.get('epoch')}/{self.scale.epochs}, train loss {row.get('train_loss')}"
                  + (f", test top-1 {top1}%" if top1 is not None else ""))
        self._draw()

    def _draw(self) -> None:
        shown = {k: v for k, v in self.rows.items() if v}
        if not shown:
            self.curves.outputs = ()
            return
        fig = plots.trial_figure(shown, title=f"{self.scale.epochs} epoch(s) on {self.scale.limit_train:,} images, one seed")
        self.curves.outputs = ({"output_type": "display_data", "data": plotly_bundle(fig), "metadata": {}},)

    def _ended(self, ended: trial.Trial) -> None:
        """The trial ended (called in its thread): the curves beside the reference, and what they can tell."""
        self.notice.value = ""  # a refusal while it ran is over
        if ended.error is not None:
            self._say(f"The trial in {ended.out_dir} failed: {type(ended.error).__name__}: {ended.error}")
        else:
            ran = " (run now: it is reused from now on)" if ended.reference_ran else ""
            self._say(f"Done: {ended.out_dir}, beside the reference {ended.reference}{ran}. Both are ordinary run folders: "
                      "report.ipynb and compare.ipynb read them.")
        reference = next((k for k in self.rows if k.startswith("reference")), None)
        if reference is not None and not self.rows[reference]:
            self.rows[reference] = trial.epoch_rows(ended.reference)
        self._draw()
        text = trial.one_seed_text(ended, self.seeds)
        self.reading.value, self.reading.rows = text, text.count("\n") + 3
        self.reading.layout.display = None

    def _repr_mimebundle_(self, **kwargs):
        """The panel, with the change as it stands as its plain text: what a papermill run's record and a reader
        without the widgets see."""
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.change.text
        return bundle
