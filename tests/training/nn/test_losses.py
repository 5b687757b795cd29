"""Tests for training.nn.losses: hand-computed values, cDice = Dice on binary refs, hints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.config import SupervisedLoss
from training.nn.losses import (
    ContinuousDiceLoss,
    DiceCELoss,
    SoftDiceLoss,
    build_supervised_loss,
)


def _logits_from_probs(probs: list[list[float]]) -> torch.Tensor:
    """(K, P) probabilities → logits (1, K, 1, P) whose softmax is exactly those probs."""
    return torch.tensor(probs, dtype=torch.float64).log()[None, :, None, :]


# Two pixels, two classes: p(class 1) = [0.8, 0.3], labels [1, 0].
PROBS_2PX = [[0.2, 0.7], [0.8, 0.3]]
LABELS_2PX = torch.tensor([[[1, 0]]])


def test_soft_dice_known_value() -> None:
    logits = _logits_from_probs(PROBS_2PX)
    dice_fg = 2 * 0.8 / (0.8 + 0.3 + 1.0)
    dice_bg = 2 * 0.7 / (0.2 + 0.7 + 1.0)
    loss = SoftDiceLoss(smooth=0.0)(logits, LABELS_2PX)
    assert loss.item() == pytest.approx(1 - (dice_fg + dice_bg) / 2, abs=1e-9)
    loss_fg = SoftDiceLoss(include_background=False, smooth=0.0)(logits, LABELS_2PX)
    assert loss_fg.item() == pytest.approx(1 - dice_fg, abs=1e-9)


def test_soft_dice_accepts_channel_dim_labels_and_per_sample_mode() -> None:
    logits = _logits_from_probs(PROBS_2PX)
    a = SoftDiceLoss(smooth=0.0)(logits, LABELS_2PX)
    b = SoftDiceLoss(smooth=0.0)(logits, LABELS_2PX[:, None])
    c = SoftDiceLoss(smooth=0.0, batch=False)(logits, LABELS_2PX)
    assert a.item() == pytest.approx(b.item()) == pytest.approx(c.item())


def test_continuous_dice_known_value_with_soft_reference() -> None:
    # Class 1: a = [0.8, 0.3, 0.5], b = [0.5, 0.0, 1.0]; class 0: a = 1 - a1, b = 1 - b1.
    logits = _logits_from_probs([[0.2, 0.7, 0.5], [0.8, 0.3, 0.5]])
    ref = torch.tensor([[0.5, 1.0, 0.0], [0.5, 0.0, 1.0]], dtype=torch.float64)[None, :, None, :]
    # class 1: Σab = 0.4 + 0.5 = 0.9, Σa·sign(b) = 0.8 + 0.5 = 1.3, Σa = 1.6, Σb = 1.5
    c1 = 0.9 / 1.3
    cdc1 = 2 * 0.9 / (c1 * 1.6 + 1.5)
    # class 0: Σab = 0.1 + 0.7 = 0.8, Σa·sign(b) = 0.2 + 0.7 = 0.9, Σa = 1.4, Σb = 1.5
    c0 = 0.8 / 0.9
    cdc0 = 2 * 0.8 / (c0 * 1.4 + 1.5)
    loss = ContinuousDiceLoss(smooth=0.0)(logits, ref)
    assert loss.item() == pytest.approx(1 - (cdc0 + cdc1) / 2, abs=1e-9)
    # For this soft reference cDice differs from plain soft Dice (2·0.9 / (1.6 + 1.5)).
    assert cdc1 != pytest.approx(2 * 0.9 / 3.1)


def test_continuous_dice_c_is_one_for_empty_reference() -> None:
    logits = _logits_from_probs([[0.6, 0.9], [0.4, 0.1]])
    labels = torch.zeros(1, 1, 2, dtype=torch.long)  # class 1 absent: Σa·sign(b) = 0
    per_class = ContinuousDiceLoss(smooth=1.0).dice_per_class(logits, labels)
    # class 1: (0 + 1) / (1·(0.4 + 0.1) + 0 + 1)
    assert per_class[1].item() == pytest.approx(1.0 / 1.5, abs=1e-9)
    assert torch.isfinite(per_class).all()


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_continuous_dice_equals_dice_for_binary_reference(
    batch: bool, include_background: bool
) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 8, 8), generator=g)
    kw = {"batch": batch, "include_background": include_background}
    cdice = ContinuousDiceLoss(**kw)(logits, labels)
    dice = SoftDiceLoss(**kw)(logits, labels)
    assert cdice.item() == pytest.approx(dice.item(), abs=1e-12)
    onehot = F.one_hot(labels, 4).movedim(-1, 1).double()  # binary float reference
    assert ContinuousDiceLoss(**kw)(logits, onehot).item() == pytest.approx(dice.item(), abs=1e-12)


@pytest.mark.parametrize("name", ["dice", "dice_ce", "cdice", "cdice_ce"])
def test_gradients_are_finite_including_empty_classes(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    labels = torch.randint(0, 2, (2, 6, 6), generator=g)  # classes 2 and 3 empty
    loss = build_supervised_loss(name)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_continuous_dice_gradient_finite_with_soft_reference() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 5, generator=g, requires_grad=True)
    ref = torch.softmax(torch.randn(2, 3, 5, 5, generator=g), dim=1)
    ref[:, 2] = 0.0  # one class with no reference at all
    ContinuousDiceLoss()(logits, ref).backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_ce_weights_and_class_weights() -> None:
    logits = _logits_from_probs(PROBS_2PX).float()
    dice = SoftDiceLoss(smooth=0.0)(logits, LABELS_2PX).item()
    # Weighted CE = Σ w_y·(−log p_y) / Σ w_y; pixel 0 is class 1 (p=0.8), pixel 1 class 0 (p=0.7)
    w = [1.0, 3.0]
    ce = (3.0 * -math.log(0.8) + 1.0 * -math.log(0.7)) / 4.0
    loss = DiceCELoss(SoftDiceLoss(smooth=0.0), lambda_dice=0.5, lambda_ce=2.0, class_weights=w)
    assert loss(logits, LABELS_2PX).item() == pytest.approx(0.5 * dice + 2.0 * ce, abs=1e-6)


def test_dice_ce_with_soft_target_uses_probability_cross_entropy() -> None:
    logits = _logits_from_probs([[0.2, 0.7], [0.8, 0.3]]).float()
    ref = torch.tensor([[0.25, 1.0], [0.75, 0.0]])[None, :, None, :]
    ce = -(0.25 * math.log(0.2) + 0.75 * math.log(0.8) + 1.0 * math.log(0.7)) / 2
    loss = DiceCELoss(lambda_dice=0.0)(logits, ref)
    assert loss.item() == pytest.approx(ce, abs=1e-6)


def test_factory_builds_expected_types_and_forwards_options() -> None:
    assert isinstance(build_supervised_loss("dice"), SoftDiceLoss)
    assert isinstance(build_supervised_loss(SupervisedLoss.CDICE), ContinuousDiceLoss)
    loss = build_supervised_loss("CDICE_CE", include_background=False, lambda_ce=0.25)
    assert isinstance(loss, DiceCELoss) and isinstance(loss.dice, ContinuousDiceLoss)
    assert loss.dice.include_background is False and loss.lambda_ce == 0.25


def test_typo_gets_did_you_mean_hint() -> None:
    # The project's one option message (service.core.options.Option.parse).
    with pytest.raises(ValueError) as typo:
        build_supervised_loss("dice_cee")
    assert str(typo.value) == (
        "Argument 'name' must be one of 'dice', 'dice_ce', 'cdice', 'cdice_ce', got 'dice_cee'."
        " Did you mean 'dice_ce'?"
    )
    with pytest.raises(ValueError, match=r"must be one of 'dice', .*got 'hausdorff'\.$"):
        build_supervised_loss("hausdorff")
    with pytest.raises(TypeError, match="Argument 'name' must be a SupervisedLoss or str, got int"):
        build_supervised_loss(3)  # type: ignore[arg-type]


def test_factory_rejects_options_that_do_not_apply() -> None:
    with pytest.raises(TypeError, match=r"unexpected options \['lambda_ce'\]"):
        build_supervised_loss("dice", lambda_ce=1.0)


def test_bad_targets_raise_clear_errors() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match=r"labels in \[0, 5\]; expected values in \[0, 2\]"):
        SoftDiceLoss()(logits, torch.tensor([[[0, 5], [1, 2]]]))
    with pytest.raises(ValueError, match="does not match logits shape"):
        SoftDiceLoss()(logits, torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected a per-class map \(N, 3"):
        ContinuousDiceLoss()(logits, torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"labels in \[0, 7\]"):
        DiceCELoss(lambda_dice=0.0)(logits, torch.tensor([[[0, 7], [1, 2]]]))
    with pytest.raises(ValueError, match="'class_weights' has 2 entries; logits have 3"):
        DiceCELoss(class_weights=[1.0, 2.0])(logits, torch.zeros(1, 2, 2, dtype=torch.long))
