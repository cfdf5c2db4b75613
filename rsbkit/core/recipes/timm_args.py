"""A timm ``train.py`` run's ``args.yaml`` as the recipe that trains the same thing.

``args.yaml`` holds every argparse flag of train.py, defaults included, so the
importer reads each one: a flag with a recipe field maps to it with train.py's
semantics (:data:`FIELDS`, the LR rule and the traps below); a flag that only
says how or where the run executed (paths, workers, logging, devices) is
ignored (:data:`NOT_TRAINING`); a flag that changes training and has no field
(:data:`NO_FIELD`) is refused, naming it, unless it is at train.py's default.
A flag this module does not know (a newer timm) is listed as not read.

train.py's semantics kept here:

- the global batch is ``batch_size`` (per process) x processes x
  ``grad_accum_steps``; args.yaml does not record the processes: pass
  `world_size` (the CLI's ``--nproc``);
- ``--lr`` given is used as given; otherwise ``lr_base`` at ``lr_base_size``
  is scaled to the global batch by ``lr_base_scale`` (empty: square root for
  LAMB and the Adam family, else linear: rsbkit's ``lr_scale: auto``);
- ``--bce-loss`` chooses BCE, else soft-target cross-entropy; ``smoothing``
  goes into Mixup's targets (or label smoothing without Mixup);
- ``--color-jitter`` (default 0.4) is not applied under RandAugment unless
  ``force_color_jitter`` or a '3a' policy: args.yaml then shows 0.4 for a run
  that never jittered, and the recipe gets 0;
- ``crop_pct`` and ``interpolation`` left empty take the model's pretrained
  config, as train.py's ``resolve_data_config`` does; the test size is the
  train size (``--img-size``) as in train.py's validation.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Union

import timm
import yaml
from timm.models import get_pretrained_cfg

from ..errors import RecipeError
from .batch import lr_scaling, plan_batch
from .catalogue import RECIPES
from .schema import Recipe

# train.py flag -> recipe field, value as it is
FIELDS = {
    "model": "model", "drop": "drop", "epochs": "epochs", "cooldown_epochs": "cooldown_epochs", "opt": "opt",
    "weight_decay": "weight_decay", "momentum": "momentum", "clip_grad": "clip_grad", "sched": "sched",
    "sched_on_updates": "sched_on_updates", "warmup_epochs": "warmup_epochs", "warmup_lr": "warmup_lr",
    "min_lr": "min_lr", "decay_rate": "decay_rate", "smoothing": "smoothing", "bce_target_thresh": "bce_target_thresh",
    "hflip": "hflip", "reprob": "reprob", "mixup": "mixup", "cutmix": "cutmix", "mixup_prob": "mixup_prob",
    "mixup_switch_prob": "mixup_switch_prob", "aug_repeats": "aug_repeats", "train_interpolation": "train_interpolation",
    "model_ema": "model_ema", "model_ema_decay": "model_ema_decay", "amp": "amp", "amp_dtype": "amp_dtype",
    "channels_last": "channels_last", "sync_bn": "sync_bn", "seed": "seed",
}
# read into fields below with their own rule
RULES = ("batch_size", "grad_accum_steps", "lr", "lr_base", "lr_base_size", "lr_base_scale", "bce_loss", "img_size",
         "input_size", "crop_pct", "interpolation", "scale", "ratio", "color_jitter", "aa", "decay_milestones",
         "drop_path", "torchcompile", "dist_bn", "force_color_jitter", "kd_model_name", "kd_distill_type", "kd_loss_type",
         "kd_temperature", "distill_loss_weight", "task_loss_weight")
# change what is trained and have no recipe field: refused unless at train.py's default
NO_FIELD = {
    "gp": None, "bn_eps": None, "bn_momentum": None, "drop_block": None, "drop_connect": None, "layer_decay": None,
    "opt_eps": None, "opt_betas": None, "opt_kwargs": {}, "model_kwargs": {}, "clip_mode": "norm", "lr_noise": None,
    "lr_cycle_mul": 1.0, "lr_cycle_limit": 1, "lr_k_decay": 1.0, "warmup_prefix": False, "vflip": 0.0,
    "remode": "pixel", "recount": 1, "resplit": False, "aug_splits": 0, "jsd_loss": False, "bce_sum": False,
    "bce_pos_weight": None, "mixup_mode": "batch", "cutmix_minmax": None, "mixup_off_epoch": 0,
    "model_ema_warmup": False, "epoch_repeats": 0.0, "train_img_sizes": None, "train_size_schedule": "constant",
    "train_batch_sizes": None, "head_init_scale": None, "head_init_bias": None,
    "split_bn": False, "color_jitter_prob": None, "grayscale_prob": None, "gaussian_blur_prob": None, "no_aug": False,
    "train_crop_mode": None, "mean": None, "std": None, "in_chans": None, "pretrained": False,
    "initial_checkpoint": "", "pretrained_path": None, "model_dtype": None, "train_num_samples": None,
    "train_batches_per_epoch": None, "naflex_loader": False,
}
# say how or where the run executed, or only matter for a schedule rsbkit does not offer
NOT_TRAINING = {
    "data", "data_dir", "dataset", "train_split", "val_split", "dataset_download", "dataset_trust_remote_code",
    "class_map", "input_img_mode", "input_key", "target_key", "num_classes", "output", "experiment", "resume",
    "no_resume_opt", "start_epoch", "checkpoint_hist", "eval_metric", "log_interval", "recovery_interval",
    "save_images", "log_wandb", "wandb_project", "wandb_tags", "wandb_resume_id", "workers", "pin_mem",
    "no_prefetcher", "use_multi_epochs_loader", "worker_seeding", "device", "device_modules", "local_rank",
    "no_ddp_bb", "synchronize_step", "fuser", "fast_norm", "grad_checkpointing", "torchscript", "torchcompile_mode",
    "model_ema_force_cpu", "validation_batch_size", "val_num_samples", "val_interval", "tta", "decay_epochs",
    "patience_epochs", "lr_cycle_decay", "lr_noise_pct", "lr_noise_std", "layer_decay_min_scale",
    "layer_decay_no_opt_scale", "train_size_probs", "train_size_random_mix", "train_size_schedule_spread",
    "variable_batch_loss_scale", "kd_token_distill_type",
    "kd_student_feature_dim", "kd_teacher_feature_dim", "opt_foreach", "naflex_loss_scale", "naflex_max_seq_len",
    "naflex_patch_size_probs", "naflex_patch_sizes", "naflex_patchify_channels_first", "naflex_train_seq_lens",
}


def _at_default(value: Any, default: Any) -> bool:
    """train.py's default, reading an empty value (None, '', [], {}) as the empty default."""
    return value == default or (not value and not default and value is not True)


def read_args(source: Union[str, Path, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(source, dict):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise RecipeError(f"timm args file {path} does not exist; give the args.yaml of a train.py output folder")
    args = yaml.safe_load(path.read_text())
    if not isinstance(args, dict) or "model" not in args:
        raise RecipeError(f"{path} is not a timm train.py args.yaml (no 'model' key)")
    return args


def from_timm_args(source: Union[str, Path, dict[str, Any]], world_size: int = 1) -> tuple[Recipe, list[str]]:
    """The recipe that trains what the train.py run of `source` (an args.yaml path or its dict) trained
    on `world_size` processes, and one line per flag saying what became of it."""
    args = read_args(source)
    refused = sorted(k for k, default in NO_FIELD.items() if k in args and not _at_default(args[k], default))
    if refused:
        raise RecipeError("train.py flags without a recipe field, not at their defaults: "
                          + ", ".join(f"{k}={args[k]!r} (default {NO_FIELD[k]!r})" for k in refused)
                          + "; rsbkit cannot train that run as it was")
    if world_size < 1:
        raise RecipeError(f"world_size={world_size}: give the number of processes the run used (1 or more)")
    notes: list[str] = []
    values = {field: args[flag] for flag, field in FIELDS.items() if flag in args and args[flag] is not None}
    values["drop_path"] = args.get("drop_path") or 0.0
    per_step = int(args.get("grad_accum_steps") or 1)
    values["batch_size"] = int(args["batch_size"]) * world_size * per_step
    notes.append(f"batch_size: {args['batch_size']} per process x {world_size} process(es) x {per_step} accumulation "
                 f"step(s) = {values['batch_size']} per optimizer step")
    if args.get("lr") is not None:
        values.update(lr=float(args["lr"]), lr_base_size=values["batch_size"])
        notes.append(f"lr: {args['lr']} given, used as given (lr_base_size = the batch, so no scaling)")
    else:
        scale = args.get("lr_base_scale") or "auto"
        values.update(lr=float(args.get("lr_base", 0.1)), lr_base_size=int(args.get("lr_base_size", 256)), lr_scale=scale)
        notes.append(f"lr: lr_base {values['lr']} at {values['lr_base_size']} scaled to the batch ({scale}, timm's rule)")
    values["loss"] = "bce" if args.get("bce_loss") else "ce"
    size = args.get("img_size") or (args.get("input_size") or [None, None, None])[-1]
    cfg = get_pretrained_cfg(args["model"])
    if size is None:
        size = (cfg.input_size[-1] if cfg else 224)
        notes.append(f"train_res/test_res: {size}, the model's pretrained config (no img_size given)")
    values.update(train_res=int(size), test_res=int(size))
    values["crop_pct"] = args.get("crop_pct") or (cfg.crop_pct if cfg else 0.875)
    values["interpolation"] = args.get("interpolation") or (cfg.interpolation if cfg else "bilinear")
    values.update(scale=tuple(args.get("scale", (0.08, 1.0))), ratio=tuple(args.get("ratio", (3 / 4, 4 / 3))))
    values["aa"] = args.get("aa") or None
    jitter = float(args.get("color_jitter") or 0.0)
    jitter_off = values["aa"] is not None and not args.get("force_color_jitter") and "3a" not in values["aa"]
    if jitter and jitter_off:
        notes.append(f"color_jitter: {jitter} in args.yaml, but timm turns jitter off under RandAugment: 0")
        jitter = 0.0
    values["color_jitter"] = jitter
    if values.get("sched") == "multistep":
        values["decay_milestones"] = tuple(args.get("decay_milestones") or ())
    if args.get("kd_model_name"):  # timm's logit distillation (--kd-model-name, 2025): rsbkit's teacher, soft targets
        kind, loss = args.get("kd_distill_type") or "logit", args.get("kd_loss_type") or "kl"
        if (kind, loss) != ("logit", "kl"):
            raise RecipeError(f"kd_distill_type={kind!r}, kd_loss_type={loss!r}: rsbkit distills a teacher's logits with "
                              "KL (kd_target: soft) or its argmax (hard); feature, token and other losses are not offered")
        values.update(teacher=args["kd_model_name"], kd_target="soft", kd_temperature=float(args.get("kd_temperature") or 4.0),
                      distill_loss_weight=args.get("distill_loss_weight"), task_loss_weight=args.get("task_loss_weight"))
        notes.append(f"teacher: {args['kd_model_name']} (--kd-model-name), soft targets at T={values['kd_temperature']:g}")
    elif args.get("distill_loss_weight") is not None or args.get("task_loss_weight") is not None:
        notes.append("distill_loss_weight/task_loss_weight given without --kd-model-name: train.py ignores them, so does rsbkit")
    values["torchcompile"] = bool(args.get("torchcompile"))
    values["dist_bn"] = args.get("dist_bn") or "none"
    values["name"] = args.get("experiment") or f"timm-{args['model']}"
    known = set(FIELDS) | set(RULES) | set(NO_FIELD) | NOT_TRAINING
    unread = sorted(set(args) - known)
    notes.append("mapped: " + ", ".join(sorted(k for k in args if k in FIELDS or k in RULES)))
    notes.append("not training (how or where it ran): " + ", ".join(sorted(k for k in args if k in NOT_TRAINING)))
    if unread:
        notes.append("not read (unknown to rsbkit): " + ", ".join(unread))
    try:
        return Recipe().replace(**values), notes
    except RecipeError as exc:
        raise RecipeError(f"the run's flags give a recipe rsbkit refuses: {exc}") from None


def closest_base(recipe: Recipe) -> str:
    """The named recipe from which `recipe` differs in the fewest fields."""
    mine = recipe.to_dict()
    return min(RECIPES, key=lambda n: sum(v != mine[k] for k, v in RECIPES[n].to_dict().items() if k != "name"))


def params_yaml(recipe: Recipe, notes: list[str] = ()) -> str:
    """`recipe` as a params file: ``base:`` (the closest named recipe) plus the fields that differ."""
    base = closest_base(recipe)
    theirs = RECIPES[base].to_dict()
    fields = {k: v for k, v in recipe.to_dict().items() if k == "name" or v != theirs[k]}
    head = "".join(f"# {line}\n" for line in notes)
    return head + yaml.safe_dump({"base": base, **fields}, sort_keys=False)


# ---------------------------------------------------------------- the other way: a recipe as train.py flags

FLAG_ORDER = ("model", "drop", "drop_path", "img_size", "crop_pct", "interpolation", "train_interpolation", "scale", "ratio",
              "hflip", "color_jitter", "aa", "reprob", "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "aug_repeats",
              "bce_loss", "bce_target_thresh", "smoothing", "opt", "lr", "lr_base", "lr_base_size", "lr_base_scale",
              "weight_decay", "momentum", "clip_grad", "sched", "sched_on_updates", "epochs", "cooldown_epochs",
              "warmup_epochs", "warmup_lr", "min_lr", "decay_milestones", "decay_rate", "batch_size", "grad_accum_steps",
              "model_ema", "model_ema_decay", "amp", "amp_dtype", "channels_last", "torchcompile", "sync_bn", "dist_bn",
              "kd_model_name", "kd_distill_type", "kd_temperature", "distill_loss_weight", "task_loss_weight", "seed",
              "experiment")


def to_timm_args(recipe: Recipe, world_size: int = 1) -> tuple[dict[str, Any], list[str]]:
    """The train.py arguments (args.yaml's names) that train `recipe` on `world_size` processes, and one line
    per place where train.py will not do what rsbkit does. ``from_timm_args`` of the result gives the
    recipe back, but for the fields those lines name."""
    if world_size < 1:
        raise RecipeError(f"nproc={world_size}: give the number of processes train.py will run on (1 or more)")
    if recipe.batch_size % world_size:
        raise RecipeError(f"batch_size {recipe.batch_size} does not split over {world_size} processes; "
                          "train.py's -b is per process")
    plan = plan_batch(recipe)
    args: dict[str, Any] = {flag: recipe.to_dict()[field] for flag, field in FIELDS.items()}
    notes: list[str] = []
    per_step = 1
    if recipe.grad_accum and recipe.batch_size != recipe.lr_base_size:
        per_step = recipe.lr_base_size // recipe.batch_size
        notes.append(f"grad_accum: train.py accumulates {per_step} steps of -b {recipe.batch_size // world_size}; the "
                     f"recipe read back has batch_size {recipe.lr_base_size} (the same optimizer steps)")
    args.update(batch_size=recipe.batch_size // world_size, grad_accum_steps=per_step, drop_path=recipe.drop_path or None)
    if recipe.batch_size == recipe.lr_base_size or recipe.grad_accum or lr_scaling(recipe) == "none":
        args["lr"] = plan.lr
    else:
        scale = "" if recipe.lr_scale == "auto" else recipe.lr_scale
        args.update(lr=None, lr_base=recipe.lr, lr_base_size=recipe.lr_base_size, lr_base_scale=scale)
    notes.append(f"train.py will use lr {plan.lr:.6g} for the global batch of {recipe.batch_size}"
                 + (f" ({lr_scaling(recipe)} scaling of {recipe.lr:g} at {recipe.lr_base_size})"
                    if args["lr"] is None else ""))
    if lr_scaling(recipe) == "none" and recipe.batch_size != recipe.lr_base_size:
        notes.append("lr_scale: none is written as --lr; the recipe read back has lr_base_size = batch_size (same LR)")
    args.update(bce_loss=recipe.loss == "bce", img_size=recipe.train_res, crop_pct=recipe.crop_pct,
                interpolation=recipe.interpolation, scale=list(recipe.scale), ratio=list(recipe.ratio),
                color_jitter=recipe.color_jitter, aa=recipe.aa, torchcompile="inductor" if recipe.torchcompile else None,
                dist_bn="" if recipe.dist_bn == "none" else recipe.dist_bn, experiment=recipe.name,
                decay_milestones=list(recipe.decay_milestones) or None)
    if recipe.teacher:
        args.update(kd_model_name=recipe.teacher, kd_distill_type="logit", kd_temperature=recipe.kd_temperature,
                    distill_loss_weight=recipe.distill_loss_weight, task_loss_weight=recipe.task_loss_weight)
        if not timm.is_model(recipe.teacher.split(".")[0]):
            notes.append(f"teacher {recipe.teacher}: train.py's --kd-model-name takes a timm model name (its pretrained "
                         "weights); a run folder or checkpoint has no flag there")
        if recipe.kd_target == "hard":
            notes.append("kd_target hard: train.py's logit distillation is soft (KL) only; the recipe read back has soft")
    if recipe.test_res != recipe.train_res:
        notes.append(f"test_res {recipe.test_res}: train.py validates at --img-size {recipe.train_res}; evaluate at "
                     f"{recipe.test_res} afterwards (rsbkit evaluate --res {recipe.test_res}, or timm's validate.py)")
    if recipe.train_res_start is not None:
        notes.append(f"train_res_start {recipe.train_res_start}: 2021's train.py trains at one size, --img-size "
                     f"{recipe.train_res}; rsbkit grows it from {recipe.train_res_start} over epochs "
                     f"{list(recipe.train_res_ramp)} (FFCV's progressive resizing)")
    if recipe.color_jitter and recipe.aa:
        notes.append(f"color_jitter {recipe.color_jitter}: timm applies no jitter under RandAugment (rsbkit neither); "
                     "the recipe read back has 0")
    defaults = Recipe()
    for field, why in (("width", "train.py has no width: pass the model's own kwargs with --model-kwargs"),
                       ("attn_layer", f"train.py: --model-kwargs block_args=\"{{'attn_layer': '{recipe.attn_layer}'}}\""),
                       ("init", "train.py starts from --initial-checkpoint PATH or --pretrained"),
                       ("decay_norm_bias", "train.py never decays norm and bias weights"),
                       ("lamb_clip", "train.py's LAMB clips the global gradient norm at 1.0 (--opt-kwargs max_grad_norm=...)")):
        if getattr(recipe, field) != getattr(defaults, field):
            notes.append(f"{field} {getattr(recipe, field)!r}: {why}")
    if recipe.aug_repeats > world_size:
        notes.append(f"aug_repeats {recipe.aug_repeats}: on {world_size} process(es) train.py puts copies of an image in "
                     "one batch (BatchNorm sees them together); rsbkit deals them over forward passes")
    if recipe.augment_on != "loader":
        notes.append("augment_on: rsbkit may augment on the device; train.py augments in its loader workers (the same "
                     "timm ops and draws, in distribution)")
    notes.append("how it runs: channels_last and amp are train.py flags above; rsbkit's eval_on, decode_on, input_threads, "
                 "eval_every and ddp_broadcast_buffers have none")
    return {k: args[k] for k in FLAG_ORDER if k in args}, notes


def timm_command(recipe: Recipe, world_size: int = 1, data_dir: str = "DATA") -> str:
    """The ``train.py`` (or ``torchrun ... train.py``) command that trains `recipe`, then one comment line per
    place where train.py will not do the same thing."""
    args, notes = to_timm_args(recipe, world_size)
    words = (["torchrun", f"--nproc_per_node={world_size}"] if world_size > 1 else ["python"]) + ["train.py", "--data-dir", data_dir]
    for key, value in args.items():
        flag = "-b" if key == "batch_size" else "--" + key.replace("_", "-")
        if value is None or value is False or (key == "grad_accum_steps" and value == 1):
            continue
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(_show, value)]
        else:
            words += [flag, _show(value)]
    return " ".join(shlex.quote(w) for w in words) + "\n" + "".join(f"# {n}\n" for n in notes)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # every digit: 4/3 stays 1.3333333333333333
