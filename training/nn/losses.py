"""Supervised segmentation losses: soft Dice, continuous Dice (Shamir et al. 2019) and Dice + CE.

All losses take raw logits ``(N, K, *spatial)`` and a reference that is either integer labels
``(N, *spatial)`` / ``(N, 1, *spatial)`` or a per-class (possibly soft) map ``(N, K, *spatial)``.
Dice terms are computed per class over the whole batch by default ("batch Dice"), because a
2.5D slice batch often has slices without any lesion, where a per-sample Dice is undefined and
noisy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import SupervisedLoss

__all__ = [
    "ContinuousDiceLoss",
    "DiceCELoss",
    "SoftDiceLoss",
    "build_supervised_loss",
    "reference_to_onehot",
]

logger = logging.getLogger(__name__)


def reference_to_onehot(reference: Tensor, num_classes: int, ndim: int) -> Tensor:
    """Return the reference as a float per-class map ``(N, K, *spatial)``.

    ``ndim`` is that of the logits: integer labels are ``(N, *spatial)`` (``ndim - 1`` dims)
    or ``(N, 1, *spatial)`` and are one-hot encoded (values must lie in ``[0, K)``); a
    floating tensor with ``K`` channels is taken as a per-class (binary or continuous)
    reference as is.
    """
    if not isinstance(reference, Tensor):
        raise TypeError(
            f"Argument 'target' must be a torch.Tensor, got {type(reference).__name__}."
        )
    if reference.is_floating_point():
        if reference.ndim < 3 or reference.shape[1] != num_classes:
            raise ValueError(
                f"Argument 'target' is floating point with shape {tuple(reference.shape)}; "
                f"expected a per-class map (N, {num_classes}, ...) or integer labels."
            )
        return reference
    labels = _squeeze_label_channel(reference, ndim)
    _check_label_range(labels, num_classes)
    onehot = F.one_hot(labels.long(), num_classes)  # (N, *spatial, K)
    return onehot.movedim(-1, 1).to(torch.float32)


def _squeeze_label_channel(labels: Tensor, ndim: int) -> Tensor:
    """Integer labels as ``(N, *spatial)`` given the logits' number of dims."""
    if labels.ndim == ndim and labels.shape[1] == 1:
        return labels[:, 0]
    if labels.ndim == ndim - 1:
        return labels
    raise ValueError(
        f"Argument 'target' has shape {tuple(labels.shape)}; integer labels must be "
        f"(N, *spatial) or (N, 1, *spatial) for logits with {ndim} dims."
    )


def _check_label_range(labels: Tensor, num_classes: int) -> None:
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"Argument 'target' holds labels in [{lo}, {hi}]; expected values in "
            f"[0, {num_classes - 1}] for {num_classes} classes."
        )


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"Argument 'logits' must be a torch.Tensor, got {type(logits).__name__}.")
    if logits.ndim < 3:
        raise ValueError(
            f"Argument 'logits' has shape {tuple(logits.shape)}; expected (N, K, *spatial)."
        )


def _prepare(logits: Tensor, target: Tensor, include_background: bool) -> tuple[Tensor, Tensor]:
    """Softmax probabilities and per-class reference, with background optionally dropped."""
    _check_logits(logits)
    probs = torch.softmax(logits, dim=1)
    ref = reference_to_onehot(target, logits.shape[1], logits.ndim).to(probs.dtype)
    if ref.shape[0] != probs.shape[0] or ref.shape[2:] != probs.shape[2:]:
        raise ValueError(
            f"Argument 'target' has shape {tuple(target.shape)} which does not match logits "
            f"shape {tuple(logits.shape)} in batch or spatial size."
        )
    if not include_background:
        if probs.shape[1] < 2:
            raise ValueError("include_background=False needs at least 2 classes in 'logits'.")
        probs, ref = probs[:, 1:], ref[:, 1:]
    return probs, ref


def _sum_dims(probs: Tensor, batch: bool) -> tuple[int, ...]:
    spatial = tuple(range(2, probs.ndim))
    return (0, *spatial) if batch else spatial


class SoftDiceLoss(nn.Module):
    """Multi-class soft Dice from logits: ``1 - mean_k (2·Σpg + ε) / (Σp + Σg + ε)``.

    Args:
        include_background: keep class 0 in the mean (False drops it, as lesions matter more).
        smooth: ε added to numerator and denominator so empty classes score 1, not NaN.
        batch: sum over the batch as well (one Dice per class) rather than per sample.
    """

    def __init__(self, include_background: bool = True, smooth: float = 1e-5, batch: bool = True):
        super().__init__()
        if smooth < 0:
            raise ValueError(f"Argument 'smooth' must be >= 0, got {smooth}.")
        self.include_background = include_background
        self.smooth = float(smooth)
        self.batch = batch

    def dice_per_class(self, logits: Tensor, target: Tensor) -> Tensor:
        """Soft Dice per class, shape ``(K,)`` (batch mode) or ``(N, K)``."""
        probs, ref = _prepare(logits, target, self.include_background)
        dims = _sum_dims(probs, self.batch)
        inter = (probs * ref).sum(dims)
        denom = probs.sum(dims) + ref.sum(dims)
        return (2.0 * inter + self.smooth) / (denom + self.smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return 1.0 - self.dice_per_class(logits, target).mean()


class ContinuousDiceLoss(nn.Module):
    """Continuous Dice loss (Shamir et al. 2019) for binary or continuous references.

    ``cDC = 2·Σab / (c·Σa + Σb)`` with ``c = Σab / Σa·sign(b)`` (``c = 1`` when
    ``Σa·sign(b) = 0``), ``a`` the softmax probabilities and ``b`` the reference. For a binary
    reference ``Σa·sign(b) = Σab`` so ``c = 1`` and cDC is the ordinary soft Dice; the same
    ``smooth`` as :class:`SoftDiceLoss` is used so the two agree exactly there. Gradients flow
    through ``c`` as well (it is part of the definition, not a constant).
    """

    def __init__(self, include_background: bool = True, smooth: float = 1e-5, batch: bool = True):
        super().__init__()
        if smooth < 0:
            raise ValueError(f"Argument 'smooth' must be >= 0, got {smooth}.")
        self.include_background = include_background
        self.smooth = float(smooth)
        self.batch = batch

    def dice_per_class(self, logits: Tensor, target: Tensor) -> Tensor:
        """Continuous Dice per class, shape ``(K,)`` (batch mode) or ``(N, K)``."""
        probs, ref = _prepare(logits, target, self.include_background)
        dims = _sum_dims(probs, self.batch)
        inter = (probs * ref).sum(dims)
        support = (probs * torch.sign(ref)).sum(dims)
        has_overlap = support > 0
        c = torch.where(has_overlap, inter / torch.where(has_overlap, support, 1.0), 1.0)
        denom = c * probs.sum(dims) + ref.sum(dims)
        return (2.0 * inter + self.smooth) / (denom + self.smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return 1.0 - self.dice_per_class(logits, target).mean()


class DiceCELoss(nn.Module):
    """Weighted sum ``λ_dice·Dice + λ_ce·CE``; CE takes labels or soft per-class targets.

    Args:
        dice: the Dice term (:class:`SoftDiceLoss` by default, or :class:`ContinuousDiceLoss`).
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        class_weights: optional per-class CE weights (length K), e.g. to up-weight lesions.
    """

    class_weights: Tensor | None

    def __init__(
        self,
        dice: nn.Module | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        class_weights: Sequence[float] | Tensor | None = None,
    ):
        super().__init__()
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(
                f"Arguments 'lambda_dice' and 'lambda_ce' must be >= 0, got "
                f"{lambda_dice} and {lambda_ce}."
            )
        self.dice = dice if dice is not None else SoftDiceLoss()
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
            if (weights < 0).any():
                raise ValueError(f"Argument 'class_weights' must be >= 0, got {weights.tolist()}.")
        self.register_buffer("class_weights", weights)

    def cross_entropy(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy against integer labels or a per-class probability map."""
        _check_logits(logits)
        k = logits.shape[1]
        weight = self.class_weights
        if weight is not None and weight.numel() != k:
            raise ValueError(
                f"Argument 'class_weights' has {weight.numel()} entries; logits have {k} classes."
            )
        if target.is_floating_point():
            soft = reference_to_onehot(target, k, logits.ndim).to(logits.dtype)
            return F.cross_entropy(logits, soft, weight=weight)
        labels = _squeeze_label_channel(target, logits.ndim)
        _check_label_range(labels, k)
        return F.cross_entropy(logits, labels.long(), weight=weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.lambda_dice * self.dice(logits, target) + self.lambda_ce * self.cross_entropy(
            logits, target
        )


_DICE_KWARGS = frozenset({"include_background", "smooth", "batch"})
_CE_KWARGS = frozenset({"lambda_dice", "lambda_ce", "class_weights"})


def build_supervised_loss(name: SupervisedLoss | str, **kwargs: Any) -> nn.Module:
    """Build a supervised loss by name ("dice", "dice_ce", "cdice", "cdice_ce").

    Dice options (``include_background``, ``smooth``, ``batch``) go to the Dice term; CE
    options (``lambda_dice``, ``lambda_ce``, ``class_weights``) only apply to ``*_ce`` names.
    """
    kind = SupervisedLoss.parse(name, "Argument 'name'")
    with_ce = kind in (SupervisedLoss.DICE_CE, SupervisedLoss.CDICE_CE)
    allowed = _DICE_KWARGS | (_CE_KWARGS if with_ce else frozenset())
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"build_supervised_loss('{kind.value}') got unexpected options {unknown}; "
            f"allowed: {sorted(allowed)}."
        )
    dice_kwargs = {k: v for k, v in kwargs.items() if k in _DICE_KWARGS}
    dice_cls = (
        ContinuousDiceLoss
        if kind in (SupervisedLoss.CDICE, SupervisedLoss.CDICE_CE)
        else SoftDiceLoss
    )
    dice = dice_cls(**dice_kwargs)
    if not with_ce:
        return dice
    ce_kwargs = {k: v for k, v in kwargs.items() if k in _CE_KWARGS}
    return DiceCELoss(dice=dice, **ce_kwargs)
