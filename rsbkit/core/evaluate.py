"""Evaluation at any test resolution and crop ratio, and sweeps over both.

The FixRes effect (RSB Figure 4) and the crop-ratio ablation (RSB Table 9) are
tables from ``resolution_sweep``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, RealLabelsImagenet, resolve_data_config

from .checkpoint import check_format, is_timm_checkpoint, read_checkpoint, timm_weights
from .data import Data, eval_loader, eval_transform, load_data
from .devices import autocast, default_workers, pick_device
from .errors import CheckpointError, DataError, RecipeError
from .models import create_model
from .recipes import Recipe, from_timm_args


def evaluate_loader(
    model: torch.nn.Module,
    loader: Iterable,
    device: torch.device,
    *,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    real_labels: Any = None,
    reduce: Optional[Callable[[list[float]], list[float]]] = None,
) -> dict[str, Any]:
    """Top-1, top-5 (%) and cross-entropy over a loader of (images, labels, skipped).

    `reduce` sums the counts over processes when each evaluated a shard.
    """
    return evaluate_models({"model": model}, loader, device, amp_dtype=amp_dtype, channels_last=channels_last,
                           real_labels=real_labels, reduce=reduce)["model"]


@torch.no_grad()
def _evaluate_batch(models, sums, images, labels, device, amp_dtype, channels_last, real_labels) -> int:
    """Add one batch's top-1, top-5 and loss sums for each model; returns the batch's images (0 when none was readable)."""
    if images is None:
        return 0
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    for k, (name, model) in enumerate(models.items()):
        with autocast(device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        # cross-entropy on hard labels whatever the training loss, as timm's validate.py reports
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        sums[name] += torch.stack([(top[:, 0] == labels).sum(), (top == labels[:, None]).any(dim=1).sum(),
                                   F.cross_entropy(logits, labels, reduction="sum")]).double()
        if real_labels is not None and k == 0:
            real_labels.add_result(logits)
    return len(labels)


def evaluate_models(
    models: dict[str, torch.nn.Module],
    loader: Iterable,
    device: torch.device,
    *,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    real_labels: Any = None,
    reduce: Optional[Callable[[list[float]], list[float]]] = None,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_loader` for several models (a model and its EMA) on the same decoded batches:
    the validation set is read once. Counts stay on the device until the end. `real_labels`
    scores the first model."""
    for model in models.values():
        model.eval()
    sums = {name: torch.zeros(3, device=device, dtype=torch.float64) for name in models}  # top-1, top-5, loss
    n, skipped = 0, []
    batches = iter(loader)
    try:
        for images, labels, skipped_batch in batches:
            skipped += skipped_batch
            n += _evaluate_batch(models, sums, images, labels, device, amp_dtype, channels_last, real_labels)
    finally:
        if hasattr(batches, "close"):  # a generator (the device path's input thread): stopped now, even on an error
            batches.close()
    out = {}
    for name, total in sums.items():
        counts = total.tolist() + [n]
        c1, c5, loss, seen = reduce(counts) if reduce is not None else counts
        if seen == 0:
            raise DataError("evaluation saw no readable images")
        out[name] = dict(top1=100 * c1 / seen, top5=100 * c5 / seen, loss=loss / seen, images=int(seen),
                         skipped=[s.path for s in skipped])
    if real_labels is not None:
        first = next(iter(out))
        out[first]["real_top1"] = real_labels.get_accuracy(k=1)
        out[first]["real_top5"] = real_labels.get_accuracy(k=5)
    return out


def evaluate(
    model: torch.nn.Module,
    data: Union[Data, str, Path],
    *,
    test_res: int,
    crop_pct: float,
    interpolation: str = "bicubic",
    batch_size: int = 128,
    workers: Optional[int] = None,
    device: Union[str, torch.device, None] = None,
    amp_dtype: Optional[torch.dtype] = None,
    real_json: Union[str, Path, None] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> dict[str, Any]:
    """Evaluate on the validation split at `test_res` after resizing to test_res / crop_pct, normalised
    with `mean` and `std` (default: the model's pretrained_cfg, which load_model sets to how it was trained).

    With `real_json` (the ImageNet ReaL labels file), also ReaL top-1/top-5 through
    timm's RealLabelsImagenet; that needs a folder dataset of the ImageNet val images.
    """
    data = load_data(data)
    device = pick_device(device)
    real = None
    if real_json is not None:
        if data.val_files is None:
            raise DataError(f"ReaL labels need the ImageNet val images as a folder dataset; {data.name} has no file names")
        real = RealLabelsImagenet(data.val_files, real_json=str(real_json), topk=(1, 5))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = mean or cfg.get("mean") or IMAGENET_DEFAULT_MEAN, std or cfg.get("std") or IMAGENET_DEFAULT_STD
    loader = eval_loader(
        data.val, eval_transform(test_res, crop_pct, interpolation, mean, std), batch_size=batch_size,
        workers=default_workers(device) if workers is None else workers, pin_memory=device.type == "cuda",
    )
    model = model.to(device)
    return evaluate_loader(model, loader, device, amp_dtype=amp_dtype, real_labels=real)


def resolution_sweep(
    model: torch.nn.Module,
    data: Union[Data, str, Path],
    resolutions: Iterable[int],
    crop_pcts: Iterable[float] = (0.875, 0.95, 1.0),
    **kwargs: Any,
) -> pandas.DataFrame:  # noqa: F821
    """Top-1/top-5 for every (test resolution, crop ratio): one row each."""
    import pandas as pd

    data = load_data(data)
    rows = []
    for res in resolutions:
        for crop in crop_pcts:
            metrics = evaluate(model, data, test_res=int(res), crop_pct=float(crop), **kwargs)
            rows.append(dict(test_res=int(res), crop_pct=float(crop), resize_to=int(res / crop),
                             top1=metrics["top1"], top5=metrics["top5"], loss=metrics["loss"]))
    return pd.DataFrame(rows)


def load_model(
    source: Union[str, Path],
    *,
    model: Optional[str] = None,
    num_classes: Optional[int] = None,
    ema: bool = False,
    device: Union[str, torch.device] = "cpu",
) -> tuple[torch.nn.Module, Optional[Recipe]]:
    """A model from a run folder (its best.pt), an rsbkit checkpoint, a plain state_dict
    (with `model` and `num_classes`), or a timm pretrained name such as
    ``resnet50.a1_in1k`` (downloads; needs a network). Returns (model, recipe or None)."""

    path = Path(source)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    if not path.exists():
        if model is None and timm.is_model(str(source).split(".")[0]):
            try:
                return timm.create_model(str(source), pretrained=True).to(device).eval(), None
            except Exception as exc:
                raise CheckpointError(f"could not load timm pretrained weights {source!r} ({type(exc).__name__}: {exc}); "
                                      "this needs a network, or pass a checkpoint path") from None
        raise CheckpointError(f"no checkpoint, run folder or timm model named {source}")
    if model is not None:  # plain weights
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = timm.create_model(model, num_classes=num_classes or 1000)
        try:
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (RuntimeError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{path} does not hold weights for {model} with {num_classes} classes: {str(exc)[:300]}") from None
        return net.to(device).eval(), None
    state = read_checkpoint(path)
    if is_timm_checkpoint(state):
        return timm_run_model(state, path, ema=ema, device=device)
    state = check_format(state, path)
    recipe = Recipe().replace(**state["recipe"])
    # the run's own architecture: width, dynamic image size for ViTs; not its init weights (the checkpoint has them)
    net = create_model(recipe.replace(init=None), state["num_classes"])
    key = "ema" if ema else "model"
    if state.get(key) is None:
        raise CheckpointError(f"{path} holds no {key!r} weights" + ("; the run had model_ema off" if ema else ""))
    net.load_state_dict(state[key])
    # how the run fed it (rsbkit trains with ImageNet's mean/std, whatever timm's config for the model says)
    net.pretrained_cfg = {**(getattr(net, "pretrained_cfg", None) or {}), "label_names": list(state.get("classes") or []),
                          "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "crop_pct": recipe.crop_pct,
                          "interpolation": recipe.interpolation, "input_size": (3, recipe.test_res, recipe.test_res)}
    return net.to(device).eval(), recipe


def load_data_for(model: torch.nn.Module, data: Union[Data, str, Path], *, limit_val: Optional[int] = None) -> Data:
    """`data` to evaluate `model` on: a folder of class folders without train/ (ImageNet-V2, a validation
    split) is labelled by the model's class names (its pretrained_cfg's label_names) or class count."""
    labels = (getattr(model, "pretrained_cfg", None) or {}).get("label_names") or None
    return load_data(data, limit_val=limit_val, classes=labels, num_classes=getattr(model, "num_classes", None))


def timm_run_model(state: dict[str, Any], path: Union[str, Path], *, ema: bool = False,
                   device: Union[str, torch.device] = "cpu") -> tuple[torch.nn.Module, Optional[Recipe]]:
    """The model of a timm train.py checkpoint (its ``arch``, the class count of its classifier) with its
    weights or (`ema`) its EMA weights, and the recipe its ``args`` give (None where rsbkit cannot express
    them: the evaluation then takes timm's defaults)."""
    weights = timm_weights(state, path, ema)
    args = vars(state["args"]) if isinstance(state.get("args"), argparse.Namespace) else {}
    net = timm.create_model(state["arch"], num_classes=args.get("num_classes") or _head_classes(weights))
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit timm's {state['arch']}: {str(exc)[:300]}") from None
    try:
        recipe = from_timm_args({**args, "model": state["arch"]})[0] if args else None
    except RecipeError:
        recipe = None
    fed = resolve_data_config(args, model=net)  # as train.py fed it: its flags, else the model's config
    net.pretrained_cfg = {**(getattr(net, "pretrained_cfg", None) or {}), **fed}
    return net.to(device).eval(), recipe


def _head_classes(weights: dict[str, torch.Tensor]) -> int:
    """The class count of a state dict's classifier (its last 2-d weight)."""
    last = [v for k, v in weights.items() if k.endswith("weight") and v.ndim == 2]
    return int(last[-1].shape[0]) if last else 1000


def default_resolutions(train_res: int) -> list[int]:
    """Test resolutions around the train one, 0.75x to 1.5x, in steps of 4 px (the FixRes range)."""
    return sorted({max(8, int(round(train_res * f / 4)) * 4) for f in (0.75, 0.875, 1.0, 1.125, 1.25, 1.5)})
