"""TCSM: transformation-consistent self-ensembling (mean teacher with transform consistency).

The student sees ``x``; the EMA teacher sees ``T(x)`` (random rot90/flip/scale plus noise); the
student's softmax output is mapped by the same ``T`` and pulled towards the teacher's:
``L_cons = mean((T(softmax(f_s(x))) − softmax(f_t(T(x))))²)``.

The public reference implementation evaluates this term under ``torch.no_grad()``, which makes
it a constant that trains nothing. Here only the teacher side is detached, and
:func:`tcsm_train_step` refuses to run if the consistency term carries no gradient.

This module is the method alone (plain modules and tensors, and its hyper-parameters as the
``tcsm`` section of the run's config, :class:`~training.config.TCSMStageConfig`);
``training.stages.tcsm`` wires it into a training run's data and loop.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from training.config import ConsistencyTarget, TCSMStageConfig
from training.methods.invertible_transforms import (
    InterpolationMode,
    SpatialTransform,
    add_gaussian_noise,
    apply,
    sample_transforms,
    valid_region,
)

__all__ = [
    "EMATeacher",
    "consistency_loss",
    "ema_alpha",
    "sigmoid_rampup",
    "tcsm_train_step",
    "teacher_student_diagnostics",
]

logger = logging.getLogger(__name__)


def ema_alpha(step: int, decay: float) -> float:
    """Warm-up EMA factor ``min(1 − 1/(step+1), decay)``: the teacher tracks the student
    closely while the student is still random, then averages over ~1/(1−decay) steps."""
    if step < 0:
        raise ValueError(f"Argument 'step' must be >= 0, got {step}.")
    return min(1.0 - 1.0 / (step + 1), decay)


class EMATeacher(nn.Module):
    """A frozen deep copy of the student whose parameters follow an exponential moving average.

    Buffers (e.g. BatchNorm running mean/var, ``num_batches_tracked``) are *copied* from the
    student rather than averaged: running statistics are already averages, and integer buffers
    cannot be blended. The teacher stays in eval mode so its targets are deterministic.
    """

    def __init__(self, student: nn.Module, decay: float = 0.99):
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(
                f"Argument 'student' must be a torch.nn.Module, got {type(student).__name__}."
            )
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"Argument 'decay' must be in [0, 1), got {decay}.")
        self.decay = float(decay)
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> EMATeacher:
        """Keep the wrapped teacher in eval mode whatever the caller's mode."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """EMA step ``θ_t ← α·θ_t + (1−α)·θ_s`` with the warm-up α; returns α."""
        alpha = ema_alpha(step, self.decay)
        t_params = dict(self.model.named_parameters())
        s_params = dict(student.named_parameters())
        if t_params.keys() != s_params.keys():
            missing = sorted(set(t_params) ^ set(s_params))[:5]
            raise ValueError(
                "Argument 'student' does not match the teacher's architecture "
                f"(differs in {missing})."
            )
        for name, tp in t_params.items():
            tp.mul_(alpha).add_(s_params[name].detach(), alpha=1.0 - alpha)
        s_buffers = dict(student.named_buffers())
        for name, tb in self.model.named_buffers():
            if name in s_buffers:
                tb.copy_(s_buffers[name])
        return alpha


def sigmoid_rampup(step: int | float, ramp_steps: int | float, w_max: float = 1.0) -> float:
    """``w_max·exp(−5(1 − t/T)²)`` for ``t < T``, ``w_max`` from ``T`` on (and for ``T <= 0``)."""
    if step < 0:
        raise ValueError(f"Argument 'step' must be >= 0, got {step}.")
    if ramp_steps <= 0 or step >= ramp_steps:
        return float(w_max)
    phase = 1.0 - float(step) / float(ramp_steps)
    return float(w_max) * math.exp(-5.0 * phase * phase)


def consistency_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    transforms: SpatialTransform | Sequence[SpatialTransform],
    ignore_out_of_view: bool = True,
    target: ConsistencyTarget | str = ConsistencyTarget.PROBABILITIES,
) -> Tensor:
    """Mean squared difference between ``T(softmax(student))`` and ``softmax(teacher)``.

    ``student_logits`` are the student's outputs on the untransformed ``x`` (they keep their
    graph); ``teacher_logits`` are the teacher's outputs on ``T(x)`` and are detached. The
    softmax is taken before ``T`` so bilinear resampling blends probabilities, not logits.
    With ``ignore_out_of_view`` pixels padded in by zooming out are left out of the mean.
    ``target="logits"`` compares ``T(student logits)`` with the teacher's logits instead.
    """
    for name, val in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(val, Tensor):
            raise TypeError(f"Argument '{name}' must be a torch.Tensor, got {type(val).__name__}.")
        if val.ndim != 4:
            raise ValueError(
                f"Argument '{name}' has shape {tuple(val.shape)}; expected (N, K, H, W)."
            )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Arguments 'student_logits' {tuple(student_logits.shape)} and 'teacher_logits' "
            f"{tuple(teacher_logits.shape)} must have the same shape."
        )
    if ConsistencyTarget.parse(target, "Argument 'target'") is ConsistencyTarget.LOGITS:
        p_student = apply(student_logits, transforms, mode=InterpolationMode.BILINEAR)
        p_teacher = teacher_logits.detach()
    else:
        p_student = apply(
            torch.softmax(student_logits, dim=1), transforms, mode=InterpolationMode.BILINEAR
        )
        p_teacher = torch.softmax(teacher_logits.detach(), dim=1)
    sq = (p_student - p_teacher).pow(2)
    if not ignore_out_of_view:
        return sq.mean()
    mask = valid_region(transforms, sq.shape, device=sq.device).to(sq.dtype)
    denom = mask.sum() * sq.shape[1]
    return (sq * mask).sum() / denom.clamp_min(1.0)


def tcsm_train_step(
    student: nn.Module,
    teacher: EMATeacher,
    optimizer: torch.optim.Optimizer,
    labeled_batch: tuple[Tensor, Tensor] | None,
    unlabeled_x: Tensor | None,
    supervised_loss: Callable[[Tensor, Tensor], Tensor],
    step: int,
    cfg: TCSMStageConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One optimisation step: ``sup + w(step)·cons``, backward, optimizer step, EMA update.

    ``cfg`` is the run's ``tcsm`` config section; the step reads the consistency settings
    (``consistency_weight``, ``rampup_steps``, ``noise_std_hu``, ``max_scale_delta``,
    ``image_padding``, ``consistency_on_labeled``, ``consistency_target``) and leaves the rest
    (batch sizes, optimiser, ``ema_decay``) to whoever built ``optimizer`` and ``teacher``.

    Labeled and unlabeled images go through the student in one forward pass. Returns the loss
    parts as floats: ``loss``, ``supervised``, ``consistency``, ``consistency_weight``,
    ``ema_alpha``.
    """
    if labeled_batch is None and unlabeled_x is None:
        raise ValueError("tcsm_train_step needs 'labeled_batch' or 'unlabeled_x'; both are None.")
    parts: list[Tensor] = []
    n_labeled = 0
    y: Tensor | None = None
    if labeled_batch is not None:
        if not (isinstance(labeled_batch, tuple | list) and len(labeled_batch) == 2):
            raise TypeError("Argument 'labeled_batch' must be a pair (x, y) or None.")
        x_l, y = labeled_batch
        n_labeled = x_l.shape[0]
        parts.append(x_l)
    if unlabeled_x is not None:
        parts.append(unlabeled_x)
    if len(parts) == 2 and parts[0].shape[1:] != parts[1].shape[1:]:
        raise ValueError(
            f"Labeled x {tuple(parts[0].shape)} and 'unlabeled_x' {tuple(parts[1].shape)} must "
            "share channels and spatial size."
        )
    x = torch.cat(parts) if len(parts) == 2 else parts[0]

    student.train()
    logits = student(x)
    device = logits.device
    sup = logits.new_zeros(())
    if y is not None and n_labeled > 0:
        sup = supervised_loss(logits[:n_labeled], y.to(device))

    start = 0 if cfg.consistency_on_labeled else n_labeled
    cons = logits.new_zeros(())
    if x.shape[0] > start:
        x_c, s_logits = x[start:], logits[start:]
        transforms = sample_transforms(x_c.shape[0], generator, cfg.max_scale_delta)
        x_t = apply(
            x_c, transforms, mode=InterpolationMode.BILINEAR, padding_mode=cfg.image_padding
        )
        x_t = add_gaussian_noise(x_t, cfg.noise_std_hu, generator)
        with torch.no_grad():
            t_logits = teacher(x_t)
        cons = consistency_loss(s_logits, t_logits, transforms, target=cfg.consistency_target)
        if torch.is_grad_enabled() and not cons.requires_grad:
            raise RuntimeError(
                "The consistency loss carries no gradient to the student (was the student "
                "forward run under torch.no_grad()?); it would train nothing."
            )
        # Diagnostics on the unlabeled slices (the consistency slices when there are none).
        first = max(0, n_labeled - start) if x.shape[0] > n_labeled else 0
        diagnostics = teacher_student_diagnostics(
            s_logits[first:], t_logits[first:], transforms[first:]
        )
    else:
        diagnostics = {}

    weight = sigmoid_rampup(step, cfg.rampup_steps, cfg.consistency_weight)
    total = sup + weight * cons
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    alpha = teacher.update(student, step)
    return {
        "loss": float(total.detach()),
        "supervised": float(sup.detach()),
        "consistency": float(cons.detach()),
        "consistency_weight": weight,
        "weighted_consistency": weight * float(cons.detach()),
        "ema_alpha": alpha,
        **diagnostics,
    }


@torch.no_grad()
def teacher_student_diagnostics(
    student_logits: Tensor,
    teacher_logits: Tensor,
    transforms: Sequence[SpatialTransform],
) -> dict[str, float]:
    """Why consistency does (not) train: how the two networks relate on the same images.

    ``agreement``: fraction of in-view pixels where ``argmax T(student)`` equals the teacher's
    argmax (near 1 means the term has little to teach); ``teacher_confidence`` /
    ``student_confidence``: mean max-probability of each; ``teacher_foreground``: fraction of
    pixels the teacher labels non-background (collapse to background shows here first).
    """
    if student_logits.shape[0] == 0:
        return {}
    p_s = torch.softmax(student_logits.float(), dim=1)
    p_st = apply(p_s, list(transforms), mode=InterpolationMode.BILINEAR)
    p_t = torch.softmax(teacher_logits.float(), dim=1)
    valid = valid_region(list(transforms), p_t.shape, device=p_t.device)[:, 0].bool()
    same = (p_st.argmax(1) == p_t.argmax(1)) & valid
    n_valid = valid.sum().clamp_min(1)
    return {
        "agreement": float(same.sum() / n_valid),
        "teacher_confidence": float(p_t.amax(1).mean()),
        "student_confidence": float(p_s.amax(1).mean()),
        "teacher_foreground": float((p_t.argmax(1) > 0).float().mean()),
    }
