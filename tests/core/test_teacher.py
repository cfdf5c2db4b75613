"""Knowledge distillation from a teacher (rsbkit.core.teacher): the loss on known logits for each target kind and
temperature, timm's loss weighting, a frozen teacher, classes that must match, the recipe fields' checks. A run
with a teacher resuming exactly is tested with the other resumes (tests/core/test_train.py)."""
from __future__ import annotations

import math

import pytest
import torch

from rsbkit.core.errors import RecipeError
from rsbkit.core.models import create_model
from rsbkit.core.recipes import Recipe
from rsbkit.core.teacher import distill_loss, load_teacher, loss_weights


def test_soft_targets_are_kl_at_the_temperature_times_its_square():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    for t in (1.0, 4.0):
        expected = 0.0
        for s_row, t_row in zip(student.tolist(), teacher.tolist()):
            p = [math.exp(v / t) for v in t_row]
            p = [v / sum(p) for v in p]
            q = [math.exp(v / t) for v in s_row]
            q = [v / sum(q) for v in q]
            expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        expected = expected / 2 * t * t  # batch mean, times T^2
        assert distill_loss(student, teacher, "soft", t).item() == pytest.approx(expected, rel=1e-5)
    assert distill_loss(teacher, teacher, "soft", 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_targets_are_cross_entropy_with_the_teachers_argmax():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 9.0]])  # argmax 1, 2
    expected = (-math.log(math.exp(0.0) / (math.exp(2) + 1 + math.exp(-1)))
                - math.log(1 / (2 * math.exp(0.5) + 1))) / 2
    assert distill_loss(student, teacher, "hard", 4.0).item() == pytest.approx(expected, rel=1e-5)


def test_loss_weights_follow_timms_three_modes():
    assert loss_weights(None, None) == (1.0, 1.0)
    assert loss_weights(0.5, None) == (1.0, 0.5)
    assert loss_weights(2.0, 0.3) == (0.3, 2.0)
    assert loss_weights(None, 0.3) == pytest.approx((0.3, 0.7))


def test_the_teacher_is_frozen_and_its_classes_must_be_the_students(smoke_run):
    teacher = load_teacher(str(smoke_run), num_classes=10)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    student = create_model(Recipe(model="resnet10t"), 10)
    images = torch.randn(4, 3, 32, 32)
    out = student(images)
    loss = distill_loss(out, teacher.logits(images), "soft", 4.0) + torch.nn.functional.cross_entropy(out, torch.arange(4))
    loss.backward()
    torch.optim.SGD(list(student.parameters()) + list(teacher.model.parameters()), lr=1.0).step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())
    assert not teacher.model.training and len(teacher.sha256) == 64 and teacher.checkpoint.endswith("best.pt")
    with pytest.raises(RecipeError, match=r"teacher .* predicts 10 classes \(T-shirt/top, Trouser, Pullover, Dress, \.\.\.\), "
                                          r"the student's data has 3 classes \(cat, dog, fish\)"):
        load_teacher(str(smoke_run), num_classes=3, classes=["cat", "dog", "fish"])
    with pytest.raises(RecipeError, match="the student's data has 10 classes"):
        load_teacher(str(smoke_run), num_classes=10, classes=[str(i) for i in range(10)])  # same count, other names


def test_the_teacher_sees_its_own_input_size():
    from rsbkit.core.teacher import Teacher

    seen = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    Teacher(model, "t", None, None, "m", 10, None, 48).logits(torch.randn(2, 3, 32, 32))
    assert seen == [(2, 3, 48, 48)]


def test_kd_fields_without_a_teacher_or_out_of_range_are_refused():
    with pytest.raises(RecipeError, match="kd_temperature set without a teacher"):
        Recipe(kd_temperature=2.0)
    with pytest.raises(RecipeError, match="kd_target"):
        Recipe(teacher="runs/x", kd_target="soft-ish")
    with pytest.raises(RecipeError, match="kd_temperature=0"):
        Recipe(teacher="runs/x", kd_temperature=0)
