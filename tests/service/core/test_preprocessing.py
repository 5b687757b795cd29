"""The in-plane resize: two taps per output sample, the numbers of the interpolation matrices."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.preprocessing import interpolation_matrix, interpolation_taps, resize_planes


@pytest.mark.parametrize(("src", "dst"), [(160, 512), (512, 160), (7, 7), (1, 4), (5, 2), (3, 11)])
def test_taps_are_the_non_zero_entries_of_the_interpolation_matrix(src: int, dst: int) -> None:
    lo, hi, w_lo, w_hi = interpolation_taps(src, dst)
    dense = np.zeros((dst, src), dtype=np.float64)
    np.add.at(dense, (np.arange(dst), lo), w_lo)
    np.add.at(dense, (np.arange(dst), hi), w_hi)
    np.testing.assert_allclose(dense, interpolation_matrix(src, dst), atol=1e-7)
    assert ((hi == lo + 1) | (hi == lo)).all()


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((3, 4, 40, 40), (128, 128)),  # network output up to the slice size
        ((2, 3, 128, 96), (40, 40)),  # slices down to the network
        ((5, 9), (5, 3)),  # one axis only
        ((2, 1, 1), (4, 6)),  # a single pixel
        ((4, 7, 5), (11, 2)),
    ],
)
def test_resize_equals_the_dense_matrix_product(
    shape: tuple[int, ...], size: tuple[int, int]
) -> None:
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    rows = interpolation_matrix(shape[-2], size[0])
    cols = interpolation_matrix(shape[-1], size[1])
    expected = np.matmul(np.matmul(rows, data), cols.T)
    resized = resize_planes(data, size)
    assert resized.dtype == np.float32 and resized.shape == (*shape[:-2], *size)
    np.testing.assert_allclose(resized, expected, rtol=0, atol=2e-6)


def test_resize_keeps_an_array_of_the_right_size_and_does_not_touch_its_input() -> None:
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert resize_planes(data, (3, 4)) is data
    before = data.copy()
    resize_planes(data, (6, 8))
    np.testing.assert_array_equal(data, before)
    integers = np.arange(16, dtype=np.int16).reshape(4, 4)
    np.testing.assert_allclose(resize_planes(integers, (2, 2)), [[2.5, 4.5], [10.5, 12.5]])
