"""Tests for training.methods.tcsm: EMA math, gradient flow of the consistency term, ramp-up,
steps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from training.config import TCSMStageConfig, config_from_dict
from training.methods.invertible_transforms import SpatialTransform, apply
from training.methods.tcsm import (
    EMATeacher,
    consistency_loss,
    ema_alpha,
    sigmoid_rampup,
    tcsm_train_step,
)
from training.nn.losses import build_supervised_loss


def _tiny_net(seed: int = 0, in_ch: int = 1, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_ch, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, classes, 3, padding=1)
    )


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_ema_alpha_warm_up() -> None:
    assert ema_alpha(0, 0.99) == 0.0
    assert ema_alpha(1, 0.99) == 0.5
    assert ema_alpha(9, 0.99) == pytest.approx(0.9)
    assert ema_alpha(10_000, 0.99) == 0.99


def test_ema_update_math_on_a_one_weight_model() -> None:
    student = nn.Linear(1, 1, bias=False)
    teacher = EMATeacher(student, decay=0.99)
    with torch.no_grad():
        teacher.model.weight.fill_(1.0)
        student.weight.fill_(2.0)
    assert teacher.update(student, step=0) == 0.0  # α = 0: teacher jumps to the student
    assert teacher.model.weight.item() == pytest.approx(2.0)
    with torch.no_grad():
        student.weight.fill_(4.0)
    assert teacher.update(student, step=1) == 0.5
    assert teacher.model.weight.item() == pytest.approx(3.0)  # 0.5·2 + 0.5·4
    with torch.no_grad():
        student.weight.fill_(0.0)
    assert teacher.update(student, step=10_000) == 0.99
    assert teacher.model.weight.item() == pytest.approx(2.97)  # 0.99·3 + 0.01·0


def test_teacher_is_frozen_eval_and_copies_buffers() -> None:
    student = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    teacher = EMATeacher(student, decay=0.9)
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training
    student.train()
    student(torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(0)))
    teacher.update(student, step=50)
    assert torch.equal(teacher.model[1].running_mean, student[1].running_mean)
    assert teacher.model[1].num_batches_tracked.item() == 1
    with pytest.raises(ValueError, match="does not match the teacher's architecture"):
        teacher.update(nn.Linear(1, 1), step=1)
    with pytest.raises(ValueError, match=r"'decay' must be in \[0, 1\), got 1.0"):
        EMATeacher(student, decay=1.0)


def test_consistency_term_trains_the_student_and_not_the_teacher() -> None:
    student = _tiny_net()
    teacher = EMATeacher(student, decay=0.99)
    opt = torch.optim.SGD(student.parameters(), lr=1.0)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ts = [SpatialTransform(1, False, True, 1.0), SpatialTransform(2, True, False, 1.0)]
    before_s, before_t = _params(student), _params(teacher.model)

    loss = consistency_loss(student(x), teacher(apply(x, ts)), ts)
    assert loss.requires_grad and loss.item() > 0
    opt.zero_grad()
    loss.backward()
    opt.step()

    assert any(not torch.equal(a, b) for a, b in zip(before_s, student.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before_t, teacher.model.parameters(), strict=True))
    assert all(p.grad is None for p in teacher.model.parameters())


def test_reference_code_bug_would_be_caught() -> None:
    """Computing the student's output under no_grad (the public code's bug) yields a loss
    without a graph; the train step refuses to run such a student."""
    student = _tiny_net()
    teacher = EMATeacher(student)
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = SpatialTransform(1)
    with torch.no_grad():
        s_logits = student(x)
    assert consistency_loss(s_logits, teacher(apply(x, t)), t).requires_grad is False

    class NoGradStudent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _tiny_net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.net(x)

    buggy = NoGradStudent()
    opt = torch.optim.SGD(buggy.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="consistency loss carries no gradient"):
        tcsm_train_step(buggy, EMATeacher(buggy), opt, None, x, None, 0, TCSMStageConfig())


def test_consistency_loss_values() -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 3, 6, 6, generator=g)
    t_logits = torch.randn(2, 3, 6, 6, generator=g)
    ident = SpatialTransform()
    expected = (torch.softmax(s, 1) - torch.softmax(t_logits, 1)).pow(2).mean()
    assert consistency_loss(s, t_logits, ident).item() == pytest.approx(expected.item())
    # A teacher that is exactly T-equivariant to the student gives zero loss.
    t = SpatialTransform(3, True, False, 1.0)
    assert consistency_loss(s, apply(s, t), t).item() == pytest.approx(0.0, abs=1e-12)
    # Zoom-out padding is excluded from the mean unless asked for.
    z = SpatialTransform(scale=0.75)
    masked = consistency_loss(s, t_logits, z)
    unmasked = consistency_loss(s, t_logits, z, ignore_out_of_view=False)
    assert masked.item() != pytest.approx(unmasked.item())
    with pytest.raises(ValueError, match="must have the same shape"):
        consistency_loss(s, t_logits[:, :2], ident)


def test_sigmoid_rampup_values() -> None:
    assert sigmoid_rampup(0, 100, 2.0) == pytest.approx(2.0 * math.exp(-5.0))
    assert sigmoid_rampup(50, 100, 2.0) == pytest.approx(2.0 * math.exp(-1.25))
    assert sigmoid_rampup(100, 100, 2.0) == 2.0
    assert sigmoid_rampup(500, 100, 2.0) == 2.0
    assert sigmoid_rampup(0, 0, 2.0) == 2.0
    with pytest.raises(ValueError, match="'step' must be >= 0, got -1"):
        sigmoid_rampup(-1, 100)


def test_unlabeled_only_step_updates_student_and_teacher() -> None:
    student = _tiny_net(seed=4)
    teacher = EMATeacher(student, decay=0.99)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    x_u = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    cfg = TCSMStageConfig(rampup_steps=0, consistency_weight=10.0, noise_std_hu=0.05)
    before = _params(student)
    out = tcsm_train_step(
        student, teacher, opt, None, x_u, None, 0, cfg, torch.Generator().manual_seed(6)
    )
    assert set(out) == {
        "loss",
        "supervised",
        "consistency",
        "consistency_weight",
        "weighted_consistency",
        "ema_alpha",
        "agreement",
        "teacher_confidence",
        "student_confidence",
        "teacher_foreground",
    }
    assert out["weighted_consistency"] == pytest.approx(10.0 * out["consistency"])
    assert 0.0 <= out["agreement"] <= 1.0 and 1 / 3 <= out["teacher_confidence"] <= 1.0
    assert out["supervised"] == 0.0 and out["consistency"] > 0
    assert out["consistency_weight"] == 10.0 and out["ema_alpha"] == 0.0
    assert out["loss"] == pytest.approx(10.0 * out["consistency"])
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    # Step 0 has α = 0, so the teacher now equals the updated student.
    for tp, sp in zip(teacher.model.parameters(), student.parameters(), strict=True):
        assert torch.equal(tp, sp)


def test_labeled_and_unlabeled_step_with_basic_unet() -> None:
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    student = BasicUNet(spatial_dims=2, in_channels=3, out_channels=4, features=(4, 4, 8, 8, 8, 4))
    teacher = EMATeacher(student, decay=0.99)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(7)
    x_l = torch.randn(2, 3, 32, 32, generator=g)
    y = torch.randint(0, 4, (2, 32, 32), generator=g)
    x_u = torch.randn(2, 3, 32, 32, generator=g)
    cfg = TCSMStageConfig(rampup_steps=10, noise_std_hu=0.03)
    out = tcsm_train_step(
        student, teacher, opt, (x_l, y), x_u, build_supervised_loss("dice_ce"), 5, cfg, g
    )
    assert out["supervised"] > 0 and out["consistency"] > 0
    assert out["consistency_weight"] == pytest.approx(math.exp(-5 * 0.25))
    assert out["loss"] == pytest.approx(
        out["supervised"] + out["consistency_weight"] * out["consistency"], rel=1e-5
    )
    assert out["ema_alpha"] == pytest.approx(5 / 6)


def test_step_validation() -> None:
    student = _tiny_net()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="needs 'labeled_batch' or 'unlabeled_x'"):
        tcsm_train_step(student, EMATeacher(student), opt, None, None, None, 0, TCSMStageConfig())


def test_the_step_takes_the_tcsm_section_of_the_run_config() -> None:
    """The method reads the config section as loaded (validated there, once): the section's
    ramp-up and weight drive the step."""
    section = config_from_dict(
        {"tcsm": {"rampup_steps": 4, "consistency_weight": 2.0, "noise_std_hu": 0.0}}
    ).tcsm
    student = _tiny_net(seed=1)
    opt = torch.optim.SGD(student.parameters(), lr=0.0)
    x_u = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    out = tcsm_train_step(
        student, EMATeacher(student), opt, None, x_u, None, 2, section, torch.Generator()
    )
    assert out["consistency_weight"] == pytest.approx(2.0 * math.exp(-5 * 0.25))
    with pytest.raises(ValueError, match=r"'tcsm\.ema_decay' must be in \[0, 1\), got 1\.5"):
        TCSMStageConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match="Did you mean 'border'"):
        TCSMStageConfig(image_padding="boarder")


def test_consistency_on_logits_compares_logits() -> None:
    g = torch.Generator().manual_seed(8)
    s = torch.randn(2, 3, 6, 6, generator=g)
    t = torch.randn(2, 3, 6, 6, generator=g)
    ident = SpatialTransform()
    assert consistency_loss(s, t, ident, target="logits").item() == pytest.approx(
        (s - t).pow(2).mean().item()
    )
    # Logits differing by a per-pixel constant agree as probabilities, not as logits.
    assert consistency_loss(s, s + 2.0, ident).item() == pytest.approx(0.0, abs=1e-12)
    assert consistency_loss(s, s + 2.0, ident, target="logits").item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="Did you mean 'logits'"):
        TCSMStageConfig(consistency_target="logit")


def test_diagnostics_are_taken_on_the_unlabeled_slices() -> None:
    """A teacher equal to the student agrees everywhere; consistency on unlabeled slices only
    leaves the labeled ones out of the term."""
    student = _tiny_net(seed=9)
    g = torch.Generator().manual_seed(9)
    x_l, y = torch.randn(2, 1, 8, 8, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g)
    x_u = torch.randn(2, 1, 8, 8, generator=g)
    cfg = TCSMStageConfig(
        rampup_steps=0, noise_std_hu=0.0, max_scale_delta=0.0, consistency_on_labeled=False
    )

    class Equivariant(nn.Module):  # per-pixel network: rot/flip commute with it exactly
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    torch.manual_seed(0)
    net = Equivariant()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    out = tcsm_train_step(
        net, EMATeacher(net), opt, (x_l, y), x_u, build_supervised_loss("dice_ce"), 0, cfg, g
    )
    assert out["agreement"] == pytest.approx(1.0)
    assert out["consistency"] == pytest.approx(0.0, abs=1e-10)
    assert out["teacher_confidence"] == pytest.approx(out["student_confidence"], abs=1e-6)
    del student
