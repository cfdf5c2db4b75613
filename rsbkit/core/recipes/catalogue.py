"""The recipes with their provenance: the RSB procedures A1/A2/A3, torchvision's original
recipe and ResNet-RS, by name (:data:`RECIPES`, :func:`get_recipe`), and :func:`smoke` to shrink any of
them to seconds. Values come from the papers, as docs/sources.md gives them (sections 1, 3 and 4); where the sources disagree
the recipe's docstring says which one it follows."""
from __future__ import annotations

from typing import Any, Optional

from ..errors import RecipeError
from .schema import Recipe, Reported, did_you_mean


def _doc(recipe: Recipe, text: str) -> None:
    """Give a recipe instance its own docstring (frozen dataclasses refuse plain assignment)."""
    object.__setattr__(recipe, "__doc__", text)


_RSB = "Wightman, Touvron, Jegou, ResNet strikes back (NeurIPS-W 2021), Table 1; docs/sources.md, section 1"

A1 = Recipe(
    name="a1",
    model="resnet50",
    drop_path=0.05,
    epochs=600,
    batch_size=2048,
    lr_base_size=2048,
    opt="lamb",
    lr=5e-3,
    weight_decay=0.01,
    sched="cosine",
    warmup_epochs=5,
    loss="bce",
    smoothing=0.1,
    train_res=224,
    aa="rand-m7-mstd0.5-inc1",
    mixup=0.2,
    cutmix=1.0,
    aug_repeats=3,
    test_res=224,
    crop_pct=0.95,
    reported=Reported(80.4, 85.7, 68.7, train_hours=110, gpus=4, gpu="V100 32GB", peak_mem_gb=22.1, source=_RSB),
)
_doc(A1, """RSB A1: the best ResNet-50, 600 epochs at 224 px; 80.4% top-1 (110 h on 4 V100).

BCE with label smoothing 0.1, LAMB 5e-3 at batch 2048, WD 0.01, 3 repeated
augmentations, RandAugment m7, mixup 0.2 / cutmix 1.0, stochastic depth 0.05.

What the paper does not list is timm train.py's 2021 default (docs/sources.md, section 4):
`warmup_lr` 1e-4 and `min_lr` 1e-6; the cosine set once per epoch
(`sched_on_updates: false`, so epoch 0 runs at warmup_lr); `train_interpolation:
random` (bilinear or bicubic per image, in the crop and in RandAugment); test
resize bicubic; BatchNorm statistics averaged over processes before each
evaluation (`dist_bn: reduce`). timm's Lamb clips the global gradient norm at 1.0
by default (`lamb_clip`); the paper lists no clipping; set `lamb_clip: none` to drop it.

Departures and open choices, each a field: `cooldown_epochs: 0` (2021's train.py
added 10 epochs at min_lr by default; the paper's 600 epochs say nothing of them).
`lr_scale: auto` scales the LR by the square root of batch / 2048 for LAMB, as
today's train.py does (2021's used --lr as given: `lr_scale: none`). With 3
repeats the copies of an image never share a forward batch: one process
accumulates 4 forward batches of 512, as the paper's 4 GPUs each took 512.
`bce_target_thresh` stays off: no primary source gives the 0.2 seen in
third-party commands, and a threshold would cancel the label smoothing
(at demo scale 0.2 cost 1.27 points, beyond the noise: findings/README.md section 9).
Under several processes `ddp_broadcast_buffers: false` (train.py's
`--no-ddp-bb`): BatchNorm buffers are not sent at every forward pass; what is
trained is the same (training normalises with batch statistics), and the
running statistics are averaged before each evaluation as above.""")

A2 = A1.replace(
    name="a2",
    epochs=300,
    weight_decay=0.02,
    smoothing=0.0,
    mixup=0.1,
    reported=Reported(79.8, 85.4, 67.9, train_hours=55, gpus=4, gpu="V100 32GB", peak_mem_gb=22.1, source=_RSB),
)
_doc(A2, """RSB A2: 300 epochs at 224 px; 79.8% top-1 (55 h on 4 V100). As A1 but WD 0.02,
no label smoothing, mixup 0.1. The reference row of the paper's ablation (Table 6).
Everything the paper leaves open is as in A1 (see its docstring).""")

A3 = A2.replace(
    name="a3",
    epochs=100,
    lr=8e-3,
    drop_path=0.0,
    aug_repeats=0,
    aa="rand-m6-mstd0.5-inc1",
    train_res=160,
    test_res=224,
    reported=Reported(78.1, 84.5, 66.1, train_hours=15, gpus=4, gpu="V100 16GB", peak_mem_gb=11.4, source=_RSB),
)
_doc(A3, """RSB A3: 100 epochs, train at 160 px, test at 224; 78.1% top-1 (15 h on 4 V100).
LAMB 8e-3, WD 0.02, no repeated augmentation, no stochastic depth, RandAugment m6.
Everything the paper leaves open is as in A1 (see its docstring): per-epoch cosine
from warmup_lr 1e-4 (epoch 0) to min_lr 1e-6, random train interpolation, no
cooldown, sqrt LR scaling for another batch size.""")

TORCHVISION = Recipe(
    name="torchvision",
    model="resnet50",
    epochs=90,
    batch_size=256,
    lr_base_size=256,
    opt="momentum",  # plain momentum; timm's "sgd" is Nesterov
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    decay_norm_bias=True,
    lamb_clip=None,
    sched="multistep",
    decay_milestones=(31, 61, 81),  # timm's milestone m lowers the LR from epoch m - 1: drops at epochs 30, 60, 80
    decay_rate=0.1,
    warmup_epochs=0,
    warmup_lr=0.0,
    min_lr=0.0,
    loss="ce",
    smoothing=0.0,
    train_res=224,
    aa=None,
    train_interpolation="bilinear",
    interpolation="bilinear",
    test_res=224,
    crop_pct=0.875,
    reported=Reported(76.1, source="torchvision ResNet-50 (He et al. 2015 recipe); RSB Table 1 note; docs/sources.md, section 1"),
)
_doc(TORCHVISION, """torchvision's original ResNet-50 recipe: the 76.1% baseline RSB compares against.

90 epochs, SGD with plain (not Nesterov) momentum 0.9 (timm's `momentum`),
LR 0.1 per 256 images, scaled linearly with the batch, divided by 10 at epochs
30/60/80 (set once per epoch, as torchvision's StepLR; timm's multistep milestones
31/61/81 give exactly that, since timm applies milestone m from epoch m - 1), WD 1e-4 on every
parameter, cross-entropy, RandomResizedCrop + flip only, bilinear resize, test
crop 0.875. Mixed precision is not part of the 2015 recipe; it stays on here for
speed: set `amp: false` for the original float32.""")


# ResNet-RS (Bello et al., Revisiting ResNets, NeurIPS 2021), docs/sources.md, section 3.
# One row per (depth, train resolution): RandAugment magnitude, dropout, stochastic depth, reported top-1.
RESNET_RS_TABLE: dict[int, dict[int, tuple[int, float, float, float]]] = {
    50: {160: (10, 0.25, 0.0, 78.8)},
    101: {160: (10, 0.25, 0.0, 80.3), 192: (15, 0.25, 0.0, 81.2)},
    152: {192: (15, 0.25, 0.0, 82.0), 224: (15, 0.25, 0.0, 82.2), 256: (15, 0.25, 0.0, 83.0)},
    200: {256: (15, 0.25, 0.1, 83.4)},
    270: {256: (15, 0.25, 0.1, 83.8)},
    350: {256: (15, 0.25, 0.1, 84.0), 320: (15, 0.4, 0.1, 84.2)},
    420: {320: (15, 0.4, 0.1, 84.4)},
}

_RS_BASE = Recipe(
    name="resnet_rs",
    epochs=350,
    batch_size=4096,  # the paper trains on TPU at 4096; the LR rule below holds at any batch
    lr_base_size=256,
    lr_scale="linear",
    opt="momentum",  # TF's momentum optimizer: plain momentum (timm's "sgd" is Nesterov)
    lr=0.1,  # 0.1 x batch / 256
    momentum=0.9,
    weight_decay=4e-5,  # lowered because dropout, stochastic depth, smoothing and RA already regularise
    lamb_clip=None,
    sched="cosine",
    sched_on_updates=True,  # the TF code computes the LR from the global step
    warmup_epochs=5,
    warmup_lr=0.0,
    min_lr=0.0,
    loss="ce",
    smoothing=0.1,
    train_interpolation="bicubic",  # NOTE: not given in the paper; timm's resnetrs configs use bicubic
    interpolation="bicubic",
    crop_pct=0.875,  # NOTE: not given in the paper; the common ImageNet value
    model_ema=True,
    model_ema_decay=0.9999,
)


def resnet_rs(depth: int = 50, train_res: Optional[int] = None) -> Recipe:
    """The ResNet-RS recipe for timm's `resnetrs{depth}` (SE 0.25 and ResNet-D built in).

    350 epochs, SGD with plain momentum 0.9 (the TF momentum optimizer; timm's
    `momentum`, not its Nesterov `sgd`) at 0.1 x batch/256, cosine with 5 warmup
    epochs updated every step, WD 4e-5 not on BN, label smoothing 0.1, EMA 0.9999,
    and per model the resolution, RandAugment magnitude, dropout and stochastic
    depth of the paper. TF's RandAugment scales a magnitude by level/10 with no
    clip, so m15 rotates up to 45 degrees: the string carries `mmax15`, without
    which timm would clip it to m10 (30 degrees). Where the
    paper lists several resolutions for one depth, `train_res` picks one (default:
    the smallest). Tested at the training resolution; override `test_res` to
    study the FixRes effect.
    """
    if depth not in RESNET_RS_TABLE:
        raise RecipeError(did_you_mean("ResNet-RS depth", depth, [str(d) for d in RESNET_RS_TABLE]).replace("'", ""))
    rows = RESNET_RS_TABLE[depth]
    res = min(rows) if train_res is None else train_res
    if res not in rows:
        raise RecipeError(f"ResNet-RS-{depth} has no recipe at train_res={res}; the paper lists {sorted(rows)}")
    magnitude, dropout, stoch_depth, top1 = rows[res]
    return _RS_BASE.replace(
        name=f"resnet_rs{depth}" + ("" if res == min(rows) else f"_{res}"),
        model=f"resnetrs{depth}",
        train_res=res,
        test_res=res,
        aa=f"rand-m{magnitude}-n2" + (f"-mmax{magnitude}" if magnitude > 10 else ""),
        drop=dropout,
        drop_path=stoch_depth,
        reported=Reported(top1, source=f"Bello et al., Revisiting ResNets (2021), ResNet-RS-{depth} at {res} px; docs/sources.md, section 3"),
    )


RECIPES: dict[str, Recipe] = {"a1": A1, "a2": A2, "a3": A3, "torchvision": TORCHVISION}
RECIPES.update({f"resnet_rs{d}": resnet_rs(d) for d in RESNET_RS_TABLE})


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A named recipe (a1, a2, a3, torchvision, resnet_rs50 ...), with overrides applied."""
    key = name.lower().replace("-", "_")
    if key not in RECIPES:
        raise RecipeError(did_you_mean("recipe", name, RECIPES))
    return RECIPES[key].replace(**overrides) if overrides else RECIPES[key]


def smoke(recipe: Recipe, **overrides: Any) -> Recipe:
    """`recipe` shrunk to seconds on a CPU: same ingredients, tiny model, images and length."""
    small = dict(
        name=f"{recipe.name}-smoke",
        model="resnet10t",
        epochs=1,
        warmup_epochs=0,
        batch_size=32,
        train_res=32,
        test_res=32,
        decay_milestones=(),
        sched="cosine" if recipe.sched == "multistep" else recipe.sched,
    )
    if recipe.train_res_start is not None:  # progressive resizing stays on: 16 px growing to 32 over the run
        small.update(train_res_start=16, train_res_step=8,
                     train_res_ramp=(0, {**small, **overrides}["epochs"] + recipe.cooldown_epochs))
    return recipe.replace(**{**small, **overrides})
