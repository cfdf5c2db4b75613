"""One colour per meaning in every figure rsbkit draws (the explorers', the notebooks', the reports'): a trace of BCE
is the same red in every panel of every figure, the planned LR the same grey, so a class never has to re-learn a
legend between two figures. Plotly's default colours go by trace order, which changes whenever a figure gains a
trace (a threshold, a schedule).

Training never uses it; it is in core because two sibling layers draw with it, the explorers (rsbkit.explore.plots)
and the notebooks' figures (rsbkit.workbook.figures): explore may not import workbook (tests/test_layers.py) and
workbook is built on core alone, so core, below both, is the one place both can import."""
from __future__ import annotations

COLOURS = {
    # losses
    "BCE": "#d62728",
    "softmax CE": "#1f77b4",
    "target": "#7f7f7f",
    "BCE target": "#ff7f0e",
    # training curves
    "train loss": "#1f77b4",
    "planned LR": "#7f7f7f",
    "LR": "#2ca02c",
    "val top-1": "#9467bd",
    "EMA top-1": "#ff7f0e",
    # ResNet-RS's studies
    "training change": "#2ca02c",
    "architecture change": "#8c564b",
    "paper": "#7f7f7f",
    # an explorer's trial beside its reference run (the recipe, no change, at the same scale)
    "reference run": "#7f7f7f",
    # the regime study: each arm's regularizers
    "regime-a3": "#1f77b4",
    "regime-a1": "#d62728",
    # depth against width: the axis a model is scaled along
    "scaling-depth": "#8c564b",
    "scaling-width": "#2ca02c",
    "scaling-depth - width": "#7f7f7f",
    # procedure against architecture: each model
    "model-resnet18": "#1f77b4",
    "model-convnext_atto": "#ff7f0e",
    "model-mobilenetv3_large_100": "#9467bd",
    # resolution
    "apparent size": "#1f77b4",
    "measured top-1": "#9467bd",
}


def colour(meaning: str) -> str:
    """The colour of `meaning` (a key of :data:`COLOURS`); a KeyError names a meaning without one."""
    return COLOURS[meaning]
