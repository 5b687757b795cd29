"""Tests for training.methods.contrastive: NT-Xent values, G^D positives, local loss and the
BasicUNet helpers."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import BasicUNet
from torch import nn

from training.methods.contrastive import (
    BasicUNetFeatures,
    GlobalContrastiveModel,
    LocalContrastiveModel,
    freeze_encoder,
    local_contrastive_loss,
    nt_xent_loss,
    partition_ids_for,
    unfreeze_encoder,
)

FEATURES = (4, 4, 8, 8, 16, 4)


def _unet(seed: int = 0) -> BasicUNet:
    torch.manual_seed(seed)
    return BasicUNet(spatial_dims=2, in_channels=3, out_channels=4, features=FEATURES)


def _explicit_nt_xent(vectors: list[list[float]], positives: list[list[int]], tau: float) -> float:
    """Straight from the formula: mean over anchors of −mean_p log(e^{s_ip} / Σ_{a≠i} e^{s_ia})."""

    def cos(u: list[float], v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(u, v, strict=True))
        return dot / (math.hypot(*u) * math.hypot(*v))

    total = 0.0
    for i, u in enumerate(vectors):
        denom = sum(math.exp(cos(u, v) / tau) for a, v in enumerate(vectors) if a != i)
        terms = [-math.log(math.exp(cos(u, vectors[p]) / tau) / denom) for p in positives[i]]
        total += sum(terms) / len(terms)
    return total / len(vectors)


def test_nt_xent_known_value_two_by_two() -> None:
    z1 = [[1.0, 0.0], [0.0, 2.0]]
    z2 = [[1.0, 1.0], [-1.0, 3.0]]
    # Order of the 2N vectors: z1[0], z1[1], z2[0], z2[1]; positive of i is i ± N.
    expected = _explicit_nt_xent(z1 + z2, [[2], [3], [0], [1]], tau=0.5)
    got = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), temperature=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_partition_positives_known_value_and_effect() -> None:
    # Samples 0 and 1 come from the same partition and look alike; 2 and 3 likewise.
    z1 = [[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]
    z2 = [[1.0, 0.0], [0.9, -0.2], [0.0, 1.0], [-0.2, 0.9]]
    pids = torch.tensor([0, 0, 1, 1])
    # Positives of anchor i: every other vector of the same partition (both views).
    same = {0: [0, 1, 4, 5], 1: [0, 1, 4, 5], 2: [2, 3, 6, 7], 3: [2, 3, 6, 7]}
    positives = [[j for j in same[i % 4] if j != i] for i in range(8)]
    expected = _explicit_nt_xent(z1 + z2, positives, tau=0.1)
    with_pids = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), 0.1, partition_ids=pids)
    assert with_pids.item() == pytest.approx(expected, rel=1e-5)
    # Partition positives reward partition-mates that look alike: pairing unlike samples as
    # partition-mates costs far more (and the multi-positive loss is bounded below by log 3).
    crossed = nt_xent_loss(
        torch.tensor(z1), torch.tensor(z2), 0.1, partition_ids=torch.tensor([0, 1, 0, 1])
    )
    assert crossed.item() > with_pids.item() + 5.0
    assert with_pids.item() > math.log(3)
    plain = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), 0.1)
    assert plain.item() != pytest.approx(with_pids.item(), rel=1e-3)
    # All-distinct partition ids reduce to plain SimCLR.
    distinct = nt_xent_loss(
        torch.tensor(z1), torch.tensor(z2), 0.1, partition_ids=torch.tensor([3, 1, 0, 2])
    )
    assert distinct.item() == pytest.approx(plain.item(), rel=1e-6)


def test_nt_xent_identical_views_beat_random_and_scale_is_ignored() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 32, generator=g)
    z_rand = torch.randn(16, 32, generator=g)
    assert nt_xent_loss(z1, z1).item() < nt_xent_loss(z1, z_rand).item() - 1.0
    assert nt_xent_loss(3.0 * z1, z_rand).item() == pytest.approx(nt_xent_loss(z1, z_rand).item())


def test_nt_xent_gradients_and_validation() -> None:
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(4, 8, generator=g, requires_grad=True)
    z2 = torch.randn(4, 8, generator=g, requires_grad=True)
    nt_xent_loss(z1, z2, partition_ids=torch.tensor([0, 0, 1, 2])).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="must have the same shape"):
        nt_xent_loss(torch.zeros(4, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="'temperature' must be > 0, got 0"):
        nt_xent_loss(torch.ones(2, 2), torch.ones(2, 2), temperature=0)
    with pytest.raises(ValueError, match="'partition_ids' has 3 entries; expected one per sample"):
        nt_xent_loss(torch.ones(2, 2), torch.ones(2, 2), partition_ids=torch.tensor([0, 1, 2]))


def test_local_loss_shape_gradient_and_determinism() -> None:
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(2, 8, 16, 16, generator=g, requires_grad=True)
    f_noisy = (f1 + 0.05 * torch.randn(2, 8, 16, 16, generator=g)).detach()
    f_rand = torch.randn(2, 8, 16, 16, generator=g)
    loss = local_contrastive_loss(f1, f_noisy, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(f1.grad).all() and f1.grad.abs().sum() > 0
    again = local_contrastive_loss(f1, f_noisy, generator=torch.Generator().manual_seed(0))
    assert again.item() == pytest.approx(loss.item())
    rand = local_contrastive_loss(f1, f_rand, generator=torch.Generator().manual_seed(0))
    assert loss.item() < rand.item() - 1.0
    # 16x16 with 3x3 regions holds 25 cells: 13 fit, 26 do not.
    with pytest.raises(ValueError, match="holds 25 regions of 3x3, so expected 1..25"):
        local_contrastive_loss(f1, f_noisy, num_regions=26)


def test_local_loss_matches_explicit_region_pooling() -> None:
    g = torch.Generator().manual_seed(3)
    f1 = torch.randn(1, 4, 6, 6, generator=g)
    f2 = torch.randn(1, 4, 6, 6, generator=g)
    # 2x2 regions on a 6x6 map: 9 cells, all drawn, so the order does not matter.
    got = local_contrastive_loss(f1, f2, num_regions=9, region_size=2, temperature=0.2)
    v1 = [f1[0, :, r : r + 2, c : c + 2].mean((1, 2)) for r in (0, 2, 4) for c in (0, 2, 4)]
    v2 = [f2[0, :, r : r + 2, c : c + 2].mean((1, 2)) for r in (0, 2, 4) for c in (0, 2, 4)]
    expected = nt_xent_loss(torch.stack(v1), torch.stack(v2), temperature=0.2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_basic_unet_features_reproduce_the_network() -> None:
    unet = _unet().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    feats = BasicUNetFeatures(unet)
    assert [f.shape[1] for f in feats.encode(x)] == list(FEATURES[:5])
    assert feats(x).shape == (2, 16, 2, 2)
    assert feats.decoder_features(x, "upcat_2").shape == (2, 4, 16, 16)
    assert feats.decoder_features(x, "upcat_4").shape == (2, 8, 4, 4)
    full = unet.final_conv(feats.decoder_features(x, "upcat_1"))
    assert torch.allclose(full, unet(x), atol=1e-6)


def test_global_model_pools_deepest_encoder_stage() -> None:
    unet = _unet()
    model = GlobalContrastiveModel(unet, proj_dim=12)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert model(x).shape == (2, 12)
    x4 = unet.down_4(unet.down_3(unet.down_2(unet.down_1(unet.conv_0(x)))))
    assert torch.allclose(model.pooled(x), x4.mean(dim=(2, 3)), atol=1e-6)
    # The model shares the U-Net's weights, so pre-training updates the segmentation net.
    assert model.encoder.unet is unet
    generic = GlobalContrastiveModel(nn.Conv2d(3, 5, 3), proj_dim=7, feature_dim=5)
    assert generic(x).shape == (2, 7)
    with pytest.raises(ValueError, match="'feature_dim' is required"):
        GlobalContrastiveModel(nn.Conv2d(3, 5, 3))


def test_frozen_encoder_gets_no_grads_while_decoder_does() -> None:
    unet = _unet()
    assert freeze_encoder(unet) > 0
    model = LocalContrastiveModel(unet, decoder_stage="upcat_2", proj_channels=8)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 32, 32, generator=g)
    view2 = x + 0.1 * torch.randn(2, 3, 32, 32, generator=g)  # intensity-only: same geometry
    f1, f2 = model(x), model(view2)
    assert f1.shape == (2, 8, 16, 16)
    local_contrastive_loss(f1, f2, generator=g).backward()
    for stage in ("conv_0", "down_1", "down_2", "down_3", "down_4"):
        assert all(p.grad is None for p in getattr(unet, stage).parameters()), stage
    for stage in ("upcat_4", "upcat_3", "upcat_2"):
        grads = [p.grad for p in getattr(unet, stage).parameters()]
        assert all(gr is not None for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0
    assert all(p.grad is None for p in unet.upcat_1.parameters())  # beyond the chosen stage
    assert all(p.grad is not None for p in model.head.parameters())
    unfreeze_encoder(unet)
    assert all(p.requires_grad for p in unet.down_4.parameters())


def test_stage_typo_and_non_unet_are_rejected() -> None:
    with pytest.raises(ValueError, match="Did you mean 'upcat_2'"):
        LocalContrastiveModel(_unet(), decoder_stage="upcat2")
    with pytest.raises(TypeError, match="not a BasicUNet-like module; it lacks"):
        freeze_encoder(nn.Conv2d(1, 1, 1))


def test_partition_ids_for() -> None:
    got = [partition_ids_for(i, 10, 4) for i in range(10)]
    assert got == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    t = partition_ids_for(torch.tensor([0, 5, 63]), torch.tensor([8, 8, 64]))
    assert t.tolist() == [0, 2, 3]
    assert partition_ids_for(0, 1, 4) == 0
    with pytest.raises(ValueError, match=r"'slice_index' \(10\) must lie in \[0, num_slices\)"):
        partition_ids_for(10, 10)
    with pytest.raises(ValueError, match="'partitions' must be >= 1, got 0"):
        partition_ids_for(0, 10, 0)
