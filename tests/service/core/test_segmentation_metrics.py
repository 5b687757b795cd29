"""Quality metrics against hand-computed values on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.segmentation_metrics import (
    class_volumes_ml,
    continuous_dice,
    dice,
    mean_slice_dice,
    per_class_dice,
    per_class_vol_dice,
    vol_dice,
)


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ([1, 1, 0, 0], [1, 0, 1, 0], 0.5),  # 2*1 / (2+2)
        ([1, 1, 1, 0], [1, 1, 1, 0], 1.0),
        ([1, 0, 0, 0], [0, 1, 0, 0], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),  # both empty agree
        ([0, 0, 0, 0], [0, 1, 1, 0], 0.0),
        ([[1, 1], [1, 0]], [[1, 0], [0, 0]], 0.5),  # 2*1 / (3+1)
    ],
)
def test_dice_known_values(pred, ref, expected):
    assert dice(np.array(pred), np.array(ref)) == pytest.approx(expected)


def test_dice_rejects_shape_mismatch_and_non_arrays():
    with pytest.raises(ValueError, match=r"same shape.*\(3,\).*\(4,\)"):
        dice(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="'pred_mask' must be a numpy array, got str"):
        dice("mask", np.zeros(4))


def test_per_class_dice_on_label_slice():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    ref = np.array([[0, 1, 2], [2, 0, 0]])
    scores = per_class_dice(pred, ref, classes=[0, 1, 2, 3])
    assert scores == pytest.approx({0: 0.8, 1: 2 / 3, 2: 0.5, 3: 1.0})


def test_per_class_dice_rejects_float_labels():
    with pytest.raises(TypeError, match="'pred_labels' must hold integer class labels"):
        per_class_dice(np.zeros((2, 2)), np.zeros((2, 2), dtype=int), [1])


def _three_slices() -> tuple[np.ndarray, np.ndarray]:
    pred = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[1, 0, 0, 0]]], dtype=np.uint8)
    ref = np.array([[[1, 1, 1, 1]], [[0, 0, 0, 0]], [[0, 1, 0, 0]]], dtype=np.uint8)
    return pred, ref


def test_vol_dice_differs_from_mean_slice_dice():
    pred, ref = _three_slices()
    # Whole volume: intersection 2, sizes 3 + 5.
    assert vol_dice(pred, ref, 1) == pytest.approx(0.5)
    # Slices: 2*2/(2+4) = 2/3, the empty slice is skipped, 0 on the last: mean 1/3.
    assert mean_slice_dice(pred, ref, 1) == pytest.approx(1 / 3)
    assert mean_slice_dice(pred, ref, 2) == 1.0


def test_per_class_vol_dice_and_empty_class():
    pred, ref = _three_slices()
    pred[2, 0, 3] = 2
    scores = per_class_vol_dice(pred, ref, [1, 2, 3])
    assert scores == pytest.approx({1: 0.5, 2: 0.0, 3: 1.0})


def test_vol_dice_requires_3d():
    with pytest.raises(ValueError, match=r"'pred_labels' must be a 3D \(z, y, x\) volume"):
        vol_dice(np.zeros((4, 4), dtype=np.uint8), np.zeros((4, 4), dtype=np.uint8), 1)


def test_continuous_dice_known_value():
    ref = np.array([1, 1, 1, 1, 0, 0], dtype=float)
    prob = np.array([0.8, 0.6, 0.0, 0.0, 0.4, 0.0])
    # overlap 1.4, c = 1.4 / 2 = 0.7, denominator 0.7*4 + 1.8 = 4.6
    assert continuous_dice(prob, ref) == pytest.approx(2.8 / 4.6)


def test_continuous_dice_is_one_for_uniformly_unsure_but_correct_support():
    ref = np.array([1, 1, 0, 0], dtype=float)
    prob = np.array([0.5, 0.5, 0.0, 0.0])
    assert continuous_dice(prob, ref) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("prob", "ref", "expected"),
    [
        ([0.0, 0.5], [1, 0], 0.0),  # no overlap: c = 1, cDC = 0
        ([0.0, 0.0], [0, 0], 1.0),  # both empty
        ([0.3, 0.0], [0, 0], 0.0),  # prediction on an empty reference
    ],
)
def test_continuous_dice_edge_cases(prob, ref, expected):
    assert continuous_dice(np.array(prob), np.array(ref, dtype=float)) == pytest.approx(expected)


def test_continuous_dice_equals_dice_for_binary_inputs():
    rng = np.random.default_rng(7)
    for _ in range(20):
        a = rng.random((6, 7, 5)) < 0.3
        b = rng.random((6, 7, 5)) < 0.4
        assert continuous_dice(a.astype(float), b.astype(float)) == pytest.approx(dice(a, b))


def test_continuous_dice_rejects_values_outside_unit_interval():
    with pytest.raises(
        ValueError, match=r"'prob' must hold values in \[0, 1\], got range \[0, 1.5\]"
    ):
        continuous_dice(np.array([0.0, 1.5]), np.array([1.0, 0.0]))


def test_class_volumes_ml():
    labels = np.zeros((2, 3, 4), dtype=np.uint8)
    labels[0, :, :2] = 1  # 6 voxels
    labels[1, 0, 0] = 1  # 7 in all
    labels[1, 2, 3] = 3
    # voxel = 5 * 2 * 1 mm^3 = 0.01 ml
    volumes = class_volumes_ml(labels, (5.0, 2.0, 1.0), [1, 2, 3])
    assert volumes == pytest.approx({1: 0.07, 2: 0.0, 3: 0.01})


def test_class_volumes_rejects_bad_spacing():
    with pytest.raises(ValueError, match="'spacing_zyx' must be three positive"):
        class_volumes_ml(np.zeros((1, 1, 1), dtype=np.uint8), (1.0, 0.0, 1.0), [1])
