"""training.nn.weak_losses: slice-level labels as a multiple-instance loss."""

from __future__ import annotations

import pytest
import torch

from training.nn.weak_losses import TopKLesionLoss, lesion_probability

LESIONS = [2, 3]  # background, lung, ggo, consolidation


def logits_with(
    lesion_pixels: int, size: int = 20, lesion_at: tuple[int, int] = (8, 8)
) -> torch.Tensor:
    """(1, 4, size, size) logits: confident lung, and a confident GGO patch of n pixels."""
    logits = torch.zeros(1, 4, size, size)
    logits[:, 1] = 8.0
    y0, x0 = lesion_at
    patch = torch.zeros(size * size, dtype=torch.bool)
    patch[:lesion_pixels] = True
    patch = patch.view(size, size).roll((y0, x0), dims=(0, 1))
    logits[0, 2][patch] = 16.0
    return logits


def test_a_negative_slice_with_a_confident_lesion_is_penalised() -> None:
    loss = TopKLesionLoss(LESIONS, top_k=4)
    region = torch.ones(1, 20, 20, dtype=torch.bool)
    negative = torch.zeros(1)
    clean, lesion = loss(logits_with(0), region, negative), loss(logits_with(6), region, negative)
    assert clean < 0.01
    assert lesion > 5.0  # -log(1 - p) with p close to 1


def test_a_positive_slice_needs_at_least_top_k_lesion_pixels() -> None:
    loss = TopKLesionLoss(LESIONS, top_k=4)
    region = torch.ones(1, 20, 20, dtype=torch.bool)
    positive = torch.ones(1)
    assert loss(logits_with(0), region, positive) > 5.0
    assert loss(logits_with(2), region, positive) > 0.5  # half of the top 4: not enough
    assert loss(logits_with(6), region, positive) < 0.01


def test_lesions_outside_the_region_do_not_count_but_are_penalised_as_not_background() -> None:
    loss = TopKLesionLoss(LESIONS, top_k=4)
    region = torch.zeros(1, 20, 20, dtype=torch.bool)
    region[:, :, 10:] = True  # the lesion patch at columns 0..5 lies outside
    logits = logits_with(6, lesion_at=(8, 0))
    parts = loss.terms(logits, region, torch.ones(1))
    assert parts["mil"] > 5.0  # no lesion where lesions can be
    assert parts["outside"] > 1.0  # lung and lesion outside the field


def test_the_gradient_reaches_the_network_and_training_removes_a_false_lesion() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)
    )
    x = torch.randn(2, 1, 16, 16)
    region = torch.ones(2, 16, 16, dtype=torch.bool)
    negative = torch.zeros(2)
    loss_fn = TopKLesionLoss(LESIONS, top_k=8)
    with torch.no_grad():  # start from a network that calls lesion everywhere
        net[2].bias.copy_(torch.tensor([0.0, 0.0, 4.0, 0.0]))
    before = loss_fn(net(x), region, negative)
    before.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(20):
        optimiser.zero_grad()
        loss_fn(net(x), region, negative).backward()
        optimiser.step()
    with torch.no_grad():
        after = loss_fn(net(x), region, negative)
        top = loss_fn.slice_scores(net(x), region)
    assert after < 0.5 * before and (top < 0.5).all()


def test_lesion_probability_sums_the_lesion_classes() -> None:
    logits = torch.zeros(1, 4, 2, 2)
    assert torch.allclose(lesion_probability(logits, LESIONS), torch.full((1, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        lesion_probability(torch.zeros(4, 2, 2), LESIONS)


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="lesion_indices"):
        TopKLesionLoss([])
    with pytest.raises(ValueError, match="top_k"):
        TopKLesionLoss(LESIONS, top_k=0)
    loss = TopKLesionLoss(LESIONS)
    with pytest.raises(ValueError, match="region"):
        loss(torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 4, dtype=torch.bool), torch.zeros(2))
    with pytest.raises(ValueError, match="positive"):
        loss(torch.zeros(2, 4, 8, 8), torch.ones(2, 8, 8, dtype=torch.bool), torch.zeros(3))
