"""A run handed to timm users: its weights and pretrained config in the folder layout timm's hub loading reads
(timm's own ``save_for_hf``: ``model.safetensors``, ``pytorch_model.bin``, ``config.json``), so
``timm.create_model("local-dir:OUT", pretrained=True)`` builds the run's model, and
``timm.data.resolve_data_config(model=...)`` gives the run's own evaluation: its test size, crop ratio,
interpolation, and the mean and std it was trained with."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from timm.models import save_for_hf

from .evaluate import load_model


def export_for_timm(source: Union[str, Path], out: Union[str, Path], *, ema: bool = False) -> Path:
    """Write the model (or, `ema`, its EMA) of the run folder or checkpoint `source` into the folder `out`."""
    model, recipe = load_model(source, ema=ema)
    cfg = model.pretrained_cfg
    data_config = {k: cfg[k] for k in ("input_size", "crop_pct", "interpolation", "mean", "std") if k in cfg}
    labels = cfg.get("label_names") or None
    model_config = {"label_names": list(labels)} if labels else {}
    if recipe is not None:
        model_config["rsbkit_recipe"] = recipe.name  # informational: which recipe trained it
    save_for_hf(model, str(out), model_config=model_config, data_config=data_config, safe_serialization="both")
    return Path(out)
