"""Tests for training.methods.invertible_transforms: exact inverses, rotation algebra, per-sample
batches."""

from __future__ import annotations

import itertools

import pytest
import torch

from training.methods.invertible_transforms import (
    SpatialTransform,
    add_gaussian_noise,
    apply,
    invert,
    sample_transform,
    sample_transforms,
    valid_region,
)


def _block_mask(n: int = 2, size: int = 64, block: int = 8, seed: int = 0) -> torch.Tensor:
    """Integer masks (N, 1, H, W) of random 4-class blocks: coarse, so nearest resampling of a
    mild zoom only disturbs block edges."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 4, (n, 1, size // block, size // block), generator=g)
    return coarse.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)


TINY = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])


@pytest.mark.parametrize(
    ("k", "flip_h", "flip_w"), list(itertools.product(range(4), [False, True], [False, True]))
)
def test_rot_flip_round_trip_is_exact_on_integer_masks(k: int, flip_h: bool, flip_w: bool) -> None:
    g = torch.Generator().manual_seed(k)
    mask = torch.randint(0, 4, (2, 1, 9, 9), generator=g)
    t = SpatialTransform(k, flip_h, flip_w, 1.0)
    out = apply(mask, t, mode="nearest")
    assert out.dtype == mask.dtype
    assert torch.equal(invert(out, t, mode="nearest"), mask)


def test_known_small_cases() -> None:
    # torch.rot90 convention: counter-clockwise in the (H, W) plane.
    assert apply(TINY, SpatialTransform(1)).tolist() == [[[[2.0, 4.0], [1.0, 3.0]]]]
    assert apply(TINY, SpatialTransform(flip_h=True)).tolist() == [[[[3.0, 4.0], [1.0, 2.0]]]]
    assert apply(TINY, SpatialTransform(flip_w=True)).tolist() == [[[[2.0, 1.0], [4.0, 3.0]]]]
    # rotate first, then flip rows: [[2,4],[1,3]] -> [[1,3],[2,4]]
    assert apply(TINY, SpatialTransform(1, flip_h=True)).tolist() == [[[[1.0, 3.0], [2.0, 4.0]]]]


def test_rotations_compose() -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    r1 = SpatialTransform(1)
    assert torch.equal(apply(apply(x, r1), r1), apply(x, SpatialTransform(2)))
    assert torch.equal(apply(apply(x, SpatialTransform(2)), r1), apply(x, SpatialTransform(3)))
    four = x
    for _ in range(4):
        four = apply(four, r1)
    assert torch.equal(four, x)
    assert torch.equal(apply(x, SpatialTransform(-1)), apply(x, SpatialTransform(3)))
    assert torch.equal(invert(x, r1), apply(x, SpatialTransform(3)))


def test_scale_one_is_exact_identity_on_whole_image() -> None:
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(apply(x, SpatialTransform(scale=1.0)), x)


@pytest.mark.parametrize("k", [0, 1, 3])
def test_zoom_in_round_trip_exact_in_central_region(k: int) -> None:
    mask = _block_mask()
    t = SpatialTransform(k, flip_h=True, flip_w=False, scale=1.15)
    back = invert(apply(mask, t), t)
    # Source pixels within 1/1.15 of the half-width (~27.8 px of 32) stay in view.
    assert torch.equal(back[..., 6:58, 6:58], mask[..., 6:58, 6:58])
    # ...while the cropped-away border is lost (filled with background 0).
    assert (back[..., :2, :] == 0).all()


def test_zoom_out_round_trip_only_disturbs_block_edges() -> None:
    mask = _block_mask()
    t = SpatialTransform(2, False, True, scale=0.9)
    out = apply(mask, t)
    assert (out[..., :2, :] == 0).all()  # zoomed-out border is padding
    agree = (invert(out, t) == mask).float().mean().item()
    assert agree > 0.97


def test_bilinear_scaling_keeps_constant_image_constant_in_view() -> None:
    x = torch.full((1, 2, 16, 16), 0.25)
    out = apply(x, SpatialTransform(scale=0.8))
    inside = valid_region(SpatialTransform(scale=0.8), out.shape).bool().expand_as(out)
    assert torch.allclose(out[inside], torch.tensor(0.25))
    assert inside.sum() < out.numel()
    border = apply(x, SpatialTransform(scale=0.8), padding_mode="border")
    assert torch.allclose(border, x)


def test_per_sample_transforms_match_individual_applies() -> None:
    x = torch.randn(3, 2, 12, 12, generator=torch.Generator().manual_seed(5))
    ts = [
        SpatialTransform(1, True, False, 1.1),
        SpatialTransform(0, False, True, 0.9),
        SpatialTransform(3, False, False, 1.0),
    ]
    batched = apply(x, ts)
    for i, t in enumerate(ts):
        single = apply(x[i : i + 1], t)
        assert torch.allclose(batched[i : i + 1], single, atol=1e-6)
    masks = _block_mask(n=3, size=32, block=4, seed=1)
    rot_flip = [SpatialTransform(t.k_rot90, t.flip_h, t.flip_w) for t in ts]
    assert torch.equal(invert(apply(masks, rot_flip), rot_flip), masks)


def test_nhw_masks_are_accepted() -> None:
    masks = _block_mask(n=2, size=16, block=4)[:, 0]
    t = SpatialTransform(1, True, True, 1.0)
    out = apply(masks, t)
    assert out.shape == masks.shape
    assert torch.equal(invert(out, t), masks)


def test_bad_arguments_raise_clear_errors() -> None:
    x = torch.zeros(2, 1, 8, 6)
    with pytest.raises(ValueError, match="mixes odd and even rotations on non-square"):
        apply(x, [SpatialTransform(1), SpatialTransform(2)])
    with pytest.raises(ValueError, match="has 3 transforms but the batch has 2"):
        apply(x, [SpatialTransform()] * 3)
    with pytest.raises(ValueError, match="'scale' must be a finite number > 0, got 0"):
        SpatialTransform(scale=0)
    with pytest.raises(TypeError, match="'k_rot90' must be an int"):
        SpatialTransform(k_rot90=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Did you mean 'bilinear'"):
        apply(x, SpatialTransform(), mode="bilinaer")
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\)"):
        apply(torch.zeros(8, 8), SpatialTransform())
    with pytest.raises(TypeError, match=r"'t\[1\]' must be a SpatialTransform"):
        apply(x, [SpatialTransform(), "rot"])  # type: ignore[list-item]


def test_sample_transform_is_seeded_and_in_range() -> None:
    a = sample_transforms(50, torch.Generator().manual_seed(7), max_scale_delta=0.1)
    b = sample_transforms(50, torch.Generator().manual_seed(7), max_scale_delta=0.1)
    assert a == b
    assert {t.k_rot90 for t in a} == {0, 1, 2, 3}
    assert {t.flip_h for t in a} == {False, True}
    assert all(0.9 <= t.scale <= 1.1 for t in a)
    fixed = sample_transform(torch.Generator().manual_seed(1), max_scale_delta=0.0)
    assert fixed.scale == 1.0
    with pytest.raises(ValueError, match=r"'max_scale_delta' must be in \[0, 1\), got 1.5"):
        sample_transform(None, max_scale_delta=1.5)


def test_gaussian_noise_is_seeded_and_has_requested_std() -> None:
    x = torch.zeros(4, 1, 64, 64)
    a = add_gaussian_noise(x, 0.05, torch.Generator().manual_seed(9))
    b = add_gaussian_noise(x, 0.05, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert a.std().item() == pytest.approx(0.05, rel=0.05)
    assert add_gaussian_noise(x, 0.0) is x
    with pytest.raises(ValueError, match="'std' must be >= 0, got -1"):
        add_gaussian_noise(x, -1)
