"""The demo's work done the way timm's train.py does it, to time rsbkit against it.

timm's train.py is not in the timm package (nor its sdist), so this script makes the same
timm calls that train.py's main() and train_one_epoch() make (read at
huggingface/pytorch-image-models commit 2aabaef, 2023; the calls are those of
today's train.py too) for the options the demo recipe sets, with train.py's defaults
elsewhere: ImageFolder dataset, ``create_loader`` with the prefetcher (FastCollateMixup
for mixup/cutmix, the loader's own workers, persistent by default), LAMB from
``create_optimizer_v2(**optimizer_kwargs(args))``, ``create_scheduler_v2`` stepped
once per epoch, BinaryCrossEntropy, ``loss.item()`` every step (train.py's
AverageMeter), validation and a checkpoint after every epoch (``CheckpointSaver``).

The data is the demo's: the embedded Fashion-MNIST subset written once as PNG files
in ImageNet layout (train.py reads image folders), 12,000 train / 2,000 validation.

    .venv/bin/python benchmarks/timm_train_py.py --workers 1 [--epochs 10] [--recipe params/demo.yaml]

Prints per epoch the training images/s (loader included, validation excluded) and the
top-1, then the totals. The same folder trains with rsbkit as
``python -m rsbkit train params/demo.yaml --data <folder>`` (the folder is printed).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn


def write_folder(root: Path) -> Path:
    """The embedded data as train/<class>/*.png and validation/<class>/*.png (written once)."""
    from rsbkit.core.data import load_data

    done = root / ".complete"
    if done.is_file():
        return root
    data = load_data("default")
    for split, source in (("train", data.train), ("validation", data.val)):
        for i in range(len(source)):
            img, label = source[i]
            folder = root / split / f"{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i:05d}.png")
    done.write_text("ok\n")
    return root


def train_args(recipe, workers: int, epochs: int) -> SimpleNamespace:
    """train.py's argparse namespace for this recipe: rsbkit's export (rsbkit.core.recipes.to_timm_args, what
    `rsbkit recipe --timm-command` prints) over train.py's defaults for the flags no recipe field sets."""
    from rsbkit.core.recipes import plan_batch, to_timm_args

    exported, _ = to_timm_args(recipe.replace(epochs=epochs))
    defaults = dict(
        num_classes=10, opt_eps=None, opt_betas=None, layer_decay=None, opt_kwargs={}, clip_mode="norm",
        decay_milestones=[90, 180, 270], decay_epochs=90, patience_epochs=10, lr_noise=None, lr_noise_pct=0.67,
        lr_noise_std=1.0, lr_cycle_mul=1.0, lr_cycle_decay=0.5, lr_cycle_limit=1, lr_k_decay=1.0, warmup_prefix=False,
        eval_metric="top1",
    )
    args = {**defaults, **exported, "decay_milestones": exported["decay_milestones"] or defaults["decay_milestones"],
            "workers": workers,
            "lr": plan_batch(recipe).lr,  # what train.py computes from --lr-base when --lr is not given
            "input_size": (3, recipe.train_res, recipe.train_res)}
    return SimpleNamespace(**args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="params/demo.yaml")
    parser.add_argument("--workers", type=int, default=1, help="train.py's -j (its default is 4)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--folder", default=str(Path.home() / ".cache" / "rsbkit" / "fashion-mnist-subset-png"))
    parser.add_argument("--output", default=None, help="checkpoint folder (default: a temporary one)")
    cli = parser.parse_args()

    from timm import utils
    from timm.data import FastCollateMixup, create_dataset, create_loader, resolve_data_config
    from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
    from timm.models import create_model
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    from rsbkit.core.recipes import load_recipe

    recipe = load_recipe(cli.recipe)
    args = train_args(recipe, cli.workers, cli.epochs or recipe.epochs)
    folder = write_folder(Path(cli.folder))
    device = torch.device("cpu")
    utils.random_seed(args.seed, 0)
    print(f"data {folder}; {recipe.name}: {args.model}, {args.epochs} epochs, batch {args.batch_size}, "
          f"workers {args.workers}, channels_last {args.channels_last}, torch threads {torch.get_num_threads()}", flush=True)

    model = create_model(args.model, num_classes=args.num_classes, drop_rate=args.drop, drop_path_rate=args.drop_path)
    data_config = resolve_data_config(vars(args), model=model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
    dataset_train = create_dataset("", root=str(folder), split="train", is_training=True, batch_size=args.batch_size,
                                   seed=args.seed)
    dataset_eval = create_dataset("", root=str(folder), split="validation", is_training=False, batch_size=args.batch_size)
    mixup_args = dict(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                      switch_prob=args.mixup_switch_prob, mode="batch", label_smoothing=args.smoothing,
                      num_classes=args.num_classes)
    mixup_active = args.mixup > 0 or args.cutmix > 0
    collate_fn = FastCollateMixup(**mixup_args) if mixup_active else None
    loader_train = create_loader(
        dataset_train, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=True,
        use_prefetcher=True, re_prob=args.reprob, scale=args.scale, ratio=args.ratio, hflip=args.hflip,
        color_jitter=args.color_jitter, auto_augment=args.aa, interpolation=args.train_interpolation,
        mean=data_config["mean"], std=data_config["std"], num_workers=args.workers, collate_fn=collate_fn, device=device)
    loader_eval = create_loader(
        dataset_eval, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=False,
        use_prefetcher=True, interpolation=data_config["interpolation"], mean=data_config["mean"], std=data_config["std"],
        num_workers=args.workers, crop_pct=data_config["crop_pct"], device=device)
    if mixup_active:
        train_loss_fn = BinaryCrossEntropy(target_threshold=args.bce_target_thresh) if recipe.loss == "bce" else SoftTargetCrossEntropy()
    else:
        train_loss_fn = nn.CrossEntropyLoss(label_smoothing=args.smoothing)
    validate_loss_fn = nn.CrossEntropyLoss()
    output = Path(cli.output or tempfile.mkdtemp(prefix="timm-train-py-"))
    saver = utils.CheckpointSaver(model=model, optimizer=optimizer, args=args, checkpoint_dir=str(output),
                                  recovery_dir=str(output), max_history=10)
    updates_per_epoch = len(loader_train)
    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=updates_per_epoch)

    total_images, total_train_s, start = 0, 0.0, time.perf_counter()
    for epoch in range(num_epochs):
        model.train()
        losses_m = utils.AverageMeter()
        t0, images = time.perf_counter(), 0
        num_updates = epoch * updates_per_epoch
        for input, target in loader_train:
            if args.channels_last:
                input = input.contiguous(memory_format=torch.channels_last)
            output_ = model(input)
            loss = train_loss_fn(output_, target)
            loss.backward()
            optimizer.step()
            losses_m.update(loss.item(), input.size(0))  # train.py: one host sync per step
            optimizer.zero_grad()
            num_updates += 1
            lr_scheduler.step_update(num_updates=num_updates, metric=losses_m.avg)
            images += input.size(0)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for input, target in loader_eval:
                if args.channels_last:
                    input = input.contiguous(memory_format=torch.channels_last)
                out = model(input)
                validate_loss_fn(out, target)
                correct += (out.argmax(1) == target).sum().item()
                seen += target.numel()
        top1 = 100.0 * correct / seen
        saver.save_checkpoint(epoch, metric=top1)
        lr_scheduler.step(epoch + 1, top1)
        total_images += images
        total_train_s += train_s
        print(f"epoch {epoch + 1}: loss {losses_m.avg:.4f}, top-1 {top1:.2f}, training {images / train_s:.1f} images/s "
              f"({train_s:.1f} s), validation and checkpoint {time.perf_counter() - t1:.1f} s", flush=True)
    wall = time.perf_counter() - start
    print(f"total: {num_epochs} epochs in {wall:.1f} s; training {total_images / total_train_s:.1f} images/s over all "
          f"epochs ({total_train_s:.1f} s); final top-1 {top1:.2f}", flush=True)


if __name__ == "__main__":
    main()
