"""Input assembly shared by training and serving: 2.5D slice context and the in-plane resize.

The network sees each axial slice together with its neighbours as channels, at the in-plane
size it was trained on. Training, training-time validation, ``pulmoseg evaluate`` and the
service must build these inputs identically, so all of them call the functions here.

The resize is bilinear with half-pixel centres (the convention of ``torch.nn.functional
.interpolate(mode="bilinear", align_corners=False)``), written as two small interpolation
matrices so it is exact, separable, cheap, and usable from numpy and torch alike
(:func:`interpolation_matrix` is what a torch caller multiplies with). Labels use nearest
neighbour (:func:`nearest_indices`, torch's ``mode="nearest"``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def context_indices(num_slices: int, slice_context: int) -> np.ndarray:
    """Indices of the neighbours of every slice, edge slices repeated at the volume borders.

    Returns an int array of shape (num_slices, slice_context); row z is centred on z.
    """
    if slice_context < 1 or slice_context % 2 == 0:
        raise ValueError(
            f"Argument 'slice_context' must be a positive odd number, got {slice_context}."
        )
    if num_slices < 1:
        raise ValueError(f"Argument 'num_slices' must be at least 1, got {num_slices}.")
    half = slice_context // 2
    offsets = np.arange(-half, half + 1)
    indices: np.ndarray = np.clip(
        np.arange(num_slices)[:, None] + offsets[None, :], 0, num_slices - 1
    )
    return indices


def slice_context_stack(
    volume: np.ndarray, slice_context: int, z: np.ndarray | None = None
) -> np.ndarray:
    """Stack neighbouring slices of a (z, y, x) volume as channels: (n, slice_context, y, x).

    ``z`` selects which centre slices to build (all when omitted).
    """
    if volume.ndim != 3:
        raise ValueError(f"Argument 'volume' must be 3-D (z, y, x), got shape {volume.shape}.")
    idx = context_indices(volume.shape[0], slice_context)
    if z is not None:
        idx = idx[np.asarray(z)]
    stack: np.ndarray = volume[idx]
    return stack


def _check_sizes(src: int, dst: int) -> None:
    if src < 1 or dst < 1:
        raise ValueError(f"Resize sizes must be at least 1, got {src} -> {dst}.")


@lru_cache(maxsize=64)
def interpolation_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) float32 weights of 1-D linear interpolation with half-pixel centres.

    Row i holds the weights of output sample i; rows sum to 1. Read-only (it is cached).
    """
    _check_sizes(src, dst)
    weights = np.zeros((dst, src), dtype=np.float64)
    position = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    position = np.clip(position, 0.0, src - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = position - lo
    rows = np.arange(dst)
    np.add.at(weights, (rows, lo), 1.0 - frac)
    np.add.at(weights, (rows, hi), frac)
    matrix = weights.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=64)
def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of every output sample for nearest-neighbour resizing (labels)."""
    _check_sizes(src, dst)
    indices: np.ndarray = np.minimum(
        np.floor(np.arange(dst) * (src / dst)).astype(np.int64), src - 1
    )
    indices.setflags(write=False)
    return indices


@lru_cache(maxsize=64)
def interpolation_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two non-zero entries of every row of :func:`interpolation_matrix`.

    Returns ``(lo, hi, w_lo, w_hi)``: output sample i is ``w_lo[i] * x[lo[i]] + w_hi[i] *
    x[hi[i]]`` (``hi = lo + 1`` except at the last source sample, where ``hi = lo``). The
    matrix has ``src`` columns of which at most two are non-zero per row; multiplying by it
    costs ``src / 2`` times more than these two taps. Read-only (cached).
    """
    _check_sizes(src, dst)
    position = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    position = np.clip(position, 0.0, src - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = position - lo
    w_lo = (1.0 - frac).astype(np.float32)
    w_hi = frac.astype(np.float32)
    for array in (lo, hi, w_lo, w_hi):
        array.setflags(write=False)
    return lo, hi, w_lo, w_hi


def _resize_axis(data: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear resize of one axis (-2 or -1) of a float32 array by its two taps."""
    lo, hi, w_lo, w_hi = interpolation_taps(data.shape[axis], size)
    shape = (-1, 1) if axis == -2 else (-1,)
    low = np.take(data, lo, axis=axis)
    low *= w_lo.reshape(shape)
    high = np.take(data, hi, axis=axis)
    high *= w_hi.reshape(shape)
    low += high
    return low


def resize_planes(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of ``array`` to ``size`` (float32 out).

    The same numbers as ``rows @ array @ cols.T`` with the matrices of
    :func:`interpolation_matrix` (up to float32 rounding), computed with the two taps of
    :func:`interpolation_taps`: rows first, then columns. The dense product cost 2·src
    multiply-adds per output sample where two suffice (P002, 133 slices: 25 s of a 47 s study
    on a loaded 2-core CPU). A no-op (the same array, as float32) when the size already matches.
    """
    if array.ndim < 2:
        raise ValueError(f"Argument 'array' must have at least 2 axes, got shape {array.shape}.")
    height, width = (int(s) for s in size)
    data = np.asarray(array, dtype=np.float32)
    if data.shape[-2:] == (height, width):
        return data
    if data.shape[-2] != height:
        data = _resize_axis(data, height, -2)
    if data.shape[-1] != width:
        data = _resize_axis(data, width, -1)
    return data


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes of an integer label array."""
    if labels.ndim < 2:
        raise ValueError(f"Argument 'labels' must have at least 2 axes, got shape {labels.shape}.")
    height, width = (int(s) for s in size)
    if labels.shape[-2:] == (height, width):
        return labels
    rows = nearest_indices(labels.shape[-2], height)
    cols = nearest_indices(labels.shape[-1], width)
    return labels[..., rows[:, None], cols[None, :]]
