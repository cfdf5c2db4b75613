"""Models from recipes, and what they cost: parameters, multiply-accumulates, measured speed and memory.

``create_model`` is the one place a recipe becomes a timm model: the recipe's
``width`` multiplies a ResNet's channels (ResNet-RS width scaling), a ViT gets
``dynamic_img_size`` so it trains at 160 px and tests at 224 as A3 does, and
``init`` loads starting weights (a run, a checkpoint, or a timm pretrained name)
with the classifier reset for the new classes.

Unknown model names are refused by the recipe itself (with timm's closest names).
``profile`` measures a model on the machine at hand, with warm-up and device
synchronisation, and names the device in its result. A name timm does not know,
or a model that cannot run at the asked resolution, gives a row whose ``error``
says so; :func:`profile_models` goes on with the rest.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
from timm.models.resnet import ResNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .checkpoint import check_format, is_timm_checkpoint, read_checkpoint, timm_weights
from .devices import autocast, device_name, pick_device, synchronize
from .errors import CheckpointError, RecipeError
from .recipes import Recipe

ROUND = 8  # channel counts stay multiples of 8


def width_kwargs(name: str, width: float) -> dict[str, Any]:
    """timm ResNet arguments that multiply every stage's channels (and a deep stem's) by `width`."""
    if width == 1:
        return {}
    model = _timm_resnet(name, f"width={width}: width scaling", "set width: 1.0")

    def scale(c: int) -> int:
        return max(ROUND, int(round(c * width / ROUND)) * ROUND)

    kwargs: dict[str, Any] = dict(channels=tuple(scale(c) for c in RESNET_PLANES))
    if isinstance(model.conv1, nn.Sequential):  # deep stem; a simple stem is fixed at 64 channels in timm
        kwargs["stem_width"] = scale(model.conv1[3].out_channels)
    return kwargs


def attn_kwargs(name: str, attn_layer: Optional[str]) -> dict[str, Any]:
    """timm ResNet arguments that put `attn_layer` (timm.layers.get_attn's name) in every residual block.

    ``se`` on ``resnet18`` builds what timm's ``seresnet18`` is: the same blocks with timm's SEModule
    (reduction 1/16) after each block's last BatchNorm."""
    if attn_layer is None:
        return {}
    _timm_resnet(name, f"attn_layer={attn_layer!r}: attention in every block", "set attn_layer: none")
    return dict(block_args=dict(attn_layer=attn_layer))


def _timm_resnet(name: str, what: str, fix: str) -> ResNet:
    """timm's `name` built on the meta device (no memory), refused unless it is one of timm's ResNets."""
    with torch.device("meta"):
        model = timm.create_model(name)
    if not isinstance(model, ResNet):
        raise RecipeError(f"{what} is defined for timm's ResNet family (resnet*, resnet*d, resnetrs*, seresnet*, "
                          f"resnext*), not {name!r} ({type(model).__name__}); {fix}")
    return model


RESNET_PLANES = (64, 128, 256, 512)  # timm ResNet's stage widths (before the bottleneck expansion)


def create_model(recipe, num_classes: int) -> nn.Module:
    """The recipe's timm model for `num_classes`, with its width, and `init` weights when set."""
    kwargs: dict[str, Any] = dict(num_classes=num_classes, drop_rate=recipe.drop, drop_path_rate=recipe.drop_path)
    kwargs.update(width_kwargs(recipe.model, recipe.width))
    kwargs.update(attn_kwargs(recipe.model, recipe.attn_layer))
    cfg = timm.get_pretrained_cfg(recipe.model.split(".")[0]) if hasattr(timm, "get_pretrained_cfg") else None
    if cfg is not None and getattr(cfg, "fixed_input_size", False):
        kwargs["dynamic_img_size"] = True  # ViTs: any resolution (position embeddings interpolated)
    try:
        model = timm.create_model(recipe.model, **kwargs)
    except TypeError as exc:
        raise RecipeError(f"model {recipe.model!r} does not take {exc}; check drop, drop_path and width for it") from None
    if recipe.init:
        load_init(model, recipe.init)
    return model


def load_init(model: nn.Module, source: Union[str, Path]) -> dict[str, Any]:
    """Load starting weights for fine-tuning from a run folder, a checkpoint file, or a timm
    pretrained name (``resnet50.a1_in1k``: downloaded, needs a network). The classifier is
    kept fresh when its shape differs (new classes); any other mismatch is an error.
    Returns what was done: loaded and skipped keys."""

    path = Path(source)
    if path.is_dir():
        path = path / ("best.pt" if (path / "best.pt").is_file() else "last.pt")
    if path.suffix in (".pt", ".pth", ".tar") or path.exists():
        state = read_checkpoint(path)
        if is_timm_checkpoint(state):  # timm train.py's: its state_dict, as timm's --initial-checkpoint reads it
            weights, origin = timm_weights(state, path, ema=False), f"timm train.py checkpoint {path}"
        else:
            weights, origin = check_format(state, path).get("model") or {}, str(path)
    else:
        name = str(source)
        if not timm.is_model(name.split(".")[0]):
            raise CheckpointError(f"init {name!r} is neither a run folder, a checkpoint file nor a timm model name")
        try:
            weights = timm.create_model(name, pretrained=True).state_dict()
        except Exception as exc:  # no network, unknown tag
            raise CheckpointError(f"init {name!r}: timm could not load its pretrained weights ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200]}); give a run folder or checkpoint instead") from None
        origin = f"timm {name}"
    own = model.state_dict()
    head = {k for k in own if k.startswith(_classifier_prefix(model))}
    loaded, skipped = {}, []
    for key, value in weights.items():
        if key not in own:
            skipped.append(key)
        elif own[key].shape == value.shape:
            loaded[key] = value
        elif key in head:
            skipped.append(key)
        else:
            raise CheckpointError(f"init {origin}: {key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}; "
                                  "the recipe's model (and width) must match the source's")
    missing = [k for k in own if k not in loaded and k not in head]
    if missing:
        raise CheckpointError(f"init {origin} lacks {len(missing)} weights of the model (e.g. {missing[0]}); "
                              "the recipe's model must be the source's architecture")
    model.load_state_dict(loaded, strict=False)
    return dict(source=origin, loaded=len(loaded), fresh=sorted(head - set(loaded)), skipped=skipped)


def _classifier_prefix(model: nn.Module) -> str:
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "fc")
    return name if isinstance(name, str) else name[0]


# ---------------------------------------------------------------- cost


def count_macs(model: nn.Module, res: int, device: Union[str, torch.device] = "cpu") -> float:
    """Multiply-accumulates of one forward pass on one image at `res` px (what papers call FLOPs), in G."""

    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, res, res, device=device))
    model.train(was)
    return counter.get_total_flops() / 2 / 1e9


def measure_speed(model: nn.Module, res: int, *, batch: int, device: torch.device, train: bool, steps: int = 10,
                  warmup: int = 3, amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False) -> dict[str, Any]:
    """Images per second of training steps (forward, backward, SGD step) or inference, timed between
    device synchronisations after `warmup` untimed steps; peak CUDA memory in MiB (None on CPU)."""

    x = torch.randn(batch, 3, res, res, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    model.train(train)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6) if train else None

    def step():
        if train:
            with autocast(device, amp_dtype):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), autocast(device, amp_dtype):
                model(x)

    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - t0
    peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
    return dict(imgs_per_s=round(batch * steps / seconds, 1), peak_mem_mb=peak)


def profile(name: str, res: int, *, width: float = 1.0, num_classes: int = 1000, batch: int = 32,
            device: Union[str, torch.device, None] = None, steps: int = 10, warmup: int = 3,
            amp: bool = True) -> dict[str, Any]:
    """One row of an architecture table: parameters (M), GMACs at `res`, training and inference
    images/s and peak training memory, measured here. Errors become the row's ``error``."""

    device = pick_device(device)
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if (cuda and amp) else None
    row: dict[str, Any] = dict(model=name, width=width, res=res, params_m=None, gmacs=None, train_imgs_per_s=None,
                               infer_imgs_per_s=None, train_peak_mem_mb=None, batch=batch, device=device_name(device),
                               precision="bfloat16" if amp_dtype else "float32", error=None)
    try:

        model = create_model(Recipe(model=name, width=width, drop_path=0.0), num_classes).to(device)
    except (RecipeError, RuntimeError, TypeError, ValueError) as exc:
        return {**row, "error": str(exc)}
    row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    try:
        row["gmacs"] = round(count_macs(model, res, device), 3)
        if cuda:
            model.to(memory_format=torch.channels_last)
        infer = measure_speed(model, res, batch=batch, device=device, train=False, steps=steps, warmup=warmup,
                              amp_dtype=amp_dtype, channels_last=cuda)
        trained = measure_speed(model, res, batch=batch, device=device, train=True, steps=steps, warmup=warmup,
                                amp_dtype=amp_dtype, channels_last=cuda)
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:  # too small for the model, out of memory
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
        return {**row, "error": f"{name} cannot run at {res} px (batch {batch}): {type(exc).__name__}: {first}"}
    finally:
        if cuda:
            torch.cuda.empty_cache()
    return {**row, "infer_imgs_per_s": infer["imgs_per_s"], "train_imgs_per_s": trained["imgs_per_s"],
            "train_peak_mem_mb": trained["peak_mem_mb"]}


def profile_models(names, resolutions, *, widths=(1.0,), log=print, **kwargs):
    """:func:`profile` over models x resolutions (x widths), as a DataFrame; failures are rows too."""
    import pandas as pd

    rows = []
    for name in names:
        for width in widths:
            for res in ([resolutions] if isinstance(resolutions, int) else resolutions):
                row = profile(name, int(res), width=float(width), **kwargs)
                log(f"{name} w{width:g} @{res}: " + (row["error"] or f"{row['train_imgs_per_s']} img/s train, "
                                                        f"{row['infer_imgs_per_s']} img/s inference"))
                rows.append(row)
    return pd.DataFrame(rows)
