"""Tests for training.data.slice_augmentation: exact flips, intensity-only jitter, rotations."""

from __future__ import annotations

import pytest
import torch

from training.data.slice_augmentation import Augment2D, augment_batch


def test_augment_flips_are_exact_on_non_square_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 6 * 10, dtype=torch.float32).reshape(2, 1, 6, 10)
    y = (torch.arange(2 * 6 * 10).reshape(2, 6, 10) % 3).long()
    only_flips = Augment2D(
        flip_h_prob=1.0,
        flip_w_prob=1.0,
        max_rotation_deg=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
    )
    xa, ya = augment_batch(x, y, only_flips, gen)
    torch.testing.assert_close(xa, torch.flip(x, dims=(-2, -1)))
    assert torch.equal(ya, torch.flip(y, dims=(-2, -1)))  # type: ignore[arg-type]


def test_augment_brightness_contrast_only_touches_intensities() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.full((4, 1, 8, 8), 128.0)
    y = torch.ones((4, 8, 8), dtype=torch.int64)
    jitter = Augment2D(
        flip_h_prob=0.0,
        flip_w_prob=0.0,
        max_rotation_deg=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.2,
        contrast=0.2,
    )
    xa, ya = augment_batch(x, y, jitter, gen)
    assert torch.equal(ya, y)  # type: ignore[arg-type]
    shifts = xa[:, 0, 0, 0] - 128.0
    assert torch.all(shifts.abs() <= 0.2 * 255 + 1e-4) and shifts.abs().max() > 1.0
    assert torch.all(xa == xa[:, :, :1, :1])  # each image shifted uniformly


def test_augment_rotation_keeps_labels_valid_and_moves_pixels() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.zeros((3, 1, 32, 32))
    x[:, :, 8:24, 14:18] = 200.0
    y = (x[:, 0] > 0).long() * 2
    rot = Augment2D(
        flip_h_prob=0.0,
        flip_w_prob=0.0,
        max_rotation_deg=30.0,
        scale_range=(0.9, 1.1),
        brightness=0.0,
        contrast=0.0,
    )
    xa, ya = augment_batch(x, y, rot, gen)
    assert set(torch.unique(ya).tolist()) <= {0, 2}  # type: ignore[union-attr]
    assert not torch.equal(ya, y)  # type: ignore[arg-type]
    # Label area is preserved up to resampling and zoom (64 px bar, zoom within ±10 %).
    areas = (ya == 2).sum(dim=(1, 2)).float()  # type: ignore[union-attr]
    assert torch.all((areas > 64 * 0.75) & (areas < 64 * 1.3))


def test_augment_config_validation() -> None:
    with pytest.raises(ValueError, match="'flip_h_prob' must be in"):
        Augment2D(flip_h_prob=1.5)
    with pytest.raises(ValueError, match="'scale_range'"):
        Augment2D(scale_range=(1.2, 1.0))
    with pytest.raises(ValueError, match="'contrast' must be < 1"):
        Augment2D(contrast=1.0)
