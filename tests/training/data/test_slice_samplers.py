"""Tests for training.data.slice_samplers: batch shapes, resizing, lesion oversampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.slice_images import slice_folder, write_image, write_palette_mask
from training.data.slice_augmentation import Augment2D
from training.data.slice_folders import LoadedSlice, list_slice_folder, load_slice
from training.data.slice_samplers import LabeledSliceSampler, UnlabeledSliceSampler


def load_folder(images: Path, masks: Path | None = None) -> list[LoadedSlice]:
    """Every slice of a folder, read as a training run reads them (``training.data.sources``)."""
    return [load_slice(record) for record in list_slice_folder(images, masks)]


def test_labeled_sampler_shapes_and_resize(tmp_path: Path) -> None:
    images, masks = slice_folder(tmp_path, {"0": (20, 24), "1": (30, 18)})
    slices = load_folder(images, masks)
    sampler = LabeledSliceSampler(slices, input_size=(16, 16), seed=0)
    x, y = sampler.sample(5)
    assert x.shape == (5, 1, 16, 16) and x.dtype == torch.float32
    assert y.shape == (5, 16, 16) and y.dtype == torch.int64
    # No augmentation: a constant image stays exactly 100 after bilinear resizing.
    assert torch.all(x == 100.0)
    assert set(torch.unique(y).tolist()) <= {0, 1, 2}
    assert (y == 1).any() and (y == 2).any()

    aug = LabeledSliceSampler(slices, input_size=(16, 16), augment=Augment2D(), seed=0)
    xa, ya = aug.sample(8)
    assert xa.shape == (8, 1, 16, 16) and ya.shape == (8, 16, 16)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 255.0
    assert set(torch.unique(ya).tolist()) <= {0, 1, 2}


def test_lesion_oversampling_weights(tmp_path: Path) -> None:
    images, masks = slice_folder(tmp_path, {"0": (12, 12)})
    write_image(images / "1.jpg", np.zeros((12, 12), dtype=np.uint8))
    write_palette_mask(masks / "1.png", np.zeros((12, 12), dtype=np.uint8))
    slices = load_folder(images, masks)
    sampler = LabeledSliceSampler(slices, input_size=(8, 8), lesion_oversampling=3.0)
    assert sampler.weights is not None
    np.testing.assert_allclose(sampler.weights, [0.75, 0.25])


def test_unlabeled_sampler(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    rng = np.random.default_rng(0)
    for name, shape in (("a_1", (20, 30)), ("a_2", (25, 25)), ("b_1", (40, 22))):
        write_image(folder / f"{name}.png", rng.integers(0, 256, shape))
    sampler = UnlabeledSliceSampler(load_folder(folder), input_size=(24, 16), seed=3)
    x = sampler.sample(4)
    assert x.shape == (4, 1, 24, 16) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 255.0
    with pytest.raises(ValueError, match="'batch_size' must be at least 1"):
        sampler.sample(0)
    with pytest.raises(ValueError, match="needs at least one slice"):
        UnlabeledSliceSampler([], input_size=(8, 8))


def test_negatives_take_their_share_of_the_draws_however_many(tmp_path: Path) -> None:
    images, masks = slice_folder(tmp_path / "lesions", {"0": (12, 12), "1": (12, 12)})
    lesion_slices = load_folder(images, masks)
    negative_dir = tmp_path / "negatives"
    for i in range(6):
        write_image(negative_dir / "images" / f"n{i}.png", np.full((12, 12), 7, np.uint8))
        write_palette_mask(negative_dir / "masks" / f"n{i}.png", np.zeros((12, 12), np.uint8))
    negatives = load_folder(negative_dir / "images", negative_dir / "masks")
    sampler = LabeledSliceSampler(
        lesion_slices, input_size=(8, 8), seed=0, negatives=negatives, negatives_share=0.25
    )
    assert sampler.weights is not None
    np.testing.assert_allclose(sampler.weights[:2].sum(), 0.75)
    np.testing.assert_allclose(sampler.weights[2:], 0.25 / 6)
    x, _ = sampler.sample(4000)
    from_negatives = (x.flatten(1) == 7.0).all(dim=1).float().mean().item()
    assert 0.22 < from_negatives < 0.28
    with pytest.raises(ValueError, match="'negatives_share' must be in \\(0, 1\\)"):
        LabeledSliceSampler(lesion_slices, input_size=(8, 8), negatives=negatives)
