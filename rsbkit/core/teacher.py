"""A teacher for knowledge distillation: a trained model whose outputs on each training batch are a second
target for the student (online distillation), as timm's train.py does with ``--kd-model-name`` (timm's
``LogitDistillationTask``, 2025) and as function matching does (Beyer et al., CVPR 2022: the teacher sees the
same augmented, mixed images as the student).

The teacher runs in eval mode, without gradients, in the run's precision, at its own input size when that
differs from the batch's (the batch is resized to it). Its parameters never change: they are frozen
(``requires_grad`` off), and nothing of the teacher is in the student's checkpoint, so a resumed run loads
the same teacher again and continues exactly.

The loss (:func:`distill_loss`, :func:`loss_weights`) is timm's: ``soft`` targets are the teacher's
probabilities at temperature T, the loss the KL divergence times T² (Hinton et al. 2015); ``hard`` targets
are its argmax, the loss cross-entropy (timm's hard token distillation). The weighting is timm's three modes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .errors import RecipeError
from .evaluate import load_model
from .paths import find_path


@dataclass
class Teacher:
    """A frozen model and what it was: where from, its checkpoint's hash, its classes and input size."""

    model: nn.Module
    source: str  # as the recipe named it
    checkpoint: Optional[str]  # the file its weights came from (None: timm's pretrained weights)
    sha256: Optional[str]  # of that file
    model_name: str
    num_classes: int
    classes: Optional[list]  # its class names when its run recorded them
    input_size: Optional[int]  # the size it was evaluated at (its recipe's test_res), None: the batch's
    crop_pct: float = 0.875  # its evaluation transform (pseudo-labelling): its recipe's, or timm's pretrained config
    interpolation: str = "bicubic"
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    def describe(self) -> dict[str, Any]:
        """What result.json records of the teacher."""
        return dict(source=self.source, checkpoint=self.checkpoint, sha256=self.sha256, model=self.model_name,
                    num_classes=self.num_classes, input_size=self.input_size)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a batch (resized to its input size when that differs), no gradient."""
        if self.input_size and images.shape[-1] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > self.input_size)
        return self.model(images)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_teacher(source: str, *, num_classes: Optional[int], classes: Optional[Sequence[str]] = None,
                 device: Union[torch.device, str] = "cpu") -> Teacher:
    """The teacher a recipe names: a run folder (its best.pt, else last.pt), an rsbkit or timm train.py checkpoint,
    or a timm pretrained name (downloaded: needs a network), loaded by rsbkit.core.evaluate.load_model. A teacher whose classes are not the student's is refused,
    naming both (`num_classes` None: take the teacher's, as a benchmark does)."""
    path = find_path(source)
    if path.is_dir():
        path = path / ("best.pt" if (path / "best.pt").is_file() else "last.pt")
    if not path.exists() and not timm.is_model(str(source).split(".")[0]):
        raise RecipeError(f"teacher {source!r} is neither a run folder, a checkpoint file nor a timm model name")
    model, recipe = load_model(path if path.exists() else str(source), device=device)  # evaluate's loader: one for all
    cfg = getattr(model, "pretrained_cfg", None) or {}
    theirs, their_classes = model.num_classes, list(cfg.get("label_names") or []) or None
    if num_classes is not None:
        check_classes(source, theirs, their_classes, num_classes, classes)
    checkpoint, sha = (str(path), file_sha256(path)) if path.exists() else (None, None)
    name = recipe.model if recipe is not None else str(source)
    size = cfg.get("input_size", (3, None, None))[-1]
    evaluation = dict(crop_pct=cfg.get("crop_pct", 0.875), interpolation=cfg.get("interpolation", "bicubic"),
                      mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))))
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model, str(source), checkpoint, sha, name, theirs, their_classes, size, **evaluation)


def check_classes(source: str, theirs: int, their_classes: Optional[list], num_classes: int,
                  classes: Optional[Sequence[str]]) -> None:
    """Refuse a teacher whose outputs are not the student's classes, naming both."""
    mine = list(classes) if classes else None
    if theirs != num_classes or (their_classes and mine and their_classes != mine):
        def named(n, names):
            return f"{n} classes" + (f" ({', '.join(map(str, names[:4]))}{', ...' if len(names) > 4 else ''})" if names else "")
        raise RecipeError(f"teacher {source} predicts {named(theirs, their_classes)}, the student's data has "
                          f"{named(num_classes, mine)}: a teacher must be trained on the student's classes, in the same "
                          "order; train one on this data first")


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, target: str = "soft", temperature: float = 4.0) -> torch.Tensor:
    """``soft``: KL(teacher ‖ student) of the softmaxes at `temperature`, times temperature² (timm's logit
    distillation, batch mean); ``hard``: cross-entropy with the teacher's argmax."""
    student = student.float()
    teacher = teacher.float()
    if target == "soft":
        t = temperature
        return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean",
                        log_target=True) * t * t
    if target == "hard":
        return F.cross_entropy(student, teacher.argmax(dim=-1))
    raise RecipeError(f"kd_target={target!r}: choose soft or hard")


def loss_weights(distill_loss_weight: Optional[float], task_loss_weight: Optional[float]) -> tuple[float, float]:
    """(task, distill) weights as timm's train.py reads ``--task-loss-weight`` and ``--distill-loss-weight``: both or
    only the distill weight given: as given (task 1.0 by default); only the task weight: distill = 1 - task;
    neither: 1 and 1."""
    if distill_loss_weight is not None:
        return (1.0 if task_loss_weight is None else float(task_loss_weight)), float(distill_loss_weight)
    if task_loss_weight is not None:
        return float(task_loss_weight), 1.0 - float(task_loss_weight)
    return 1.0, 1.0
