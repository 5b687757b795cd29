"""The shared core's in-plane resize, applied to torch batches.

Training batches, training-time validation, evaluation and the service must resample slices the
same way, so this module multiplies by the very interpolation matrices of
:mod:`service.core.preprocessing` instead of calling ``F.interpolate`` (whose result it equals
to float rounding, with half-pixel centres, ``align_corners=False``).
"""

from __future__ import annotations

import torch

from service.core.preprocessing import interpolation_matrix, nearest_indices


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two axes of a float tensor (a no-op when sizes match)."""
    height, width = (int(s) for s in size)
    if tuple(x.shape[-2:]) == (height, width):
        return x
    rows = torch.from_numpy(interpolation_matrix(x.shape[-2], height).copy()).to(x.device, x.dtype)
    cols = torch.from_numpy(interpolation_matrix(x.shape[-1], width).copy()).to(x.device, x.dtype)
    return rows @ x @ cols.T


def resize_labels(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of the last two axes of an integer label tensor."""
    height, width = (int(s) for s in size)
    if tuple(y.shape[-2:]) == (height, width):
        return y
    rows = torch.from_numpy(nearest_indices(y.shape[-2], height).copy()).to(y.device)
    cols = torch.from_numpy(nearest_indices(y.shape[-1], width).copy()).to(y.device)
    return y[..., rows[:, None], cols[None, :]]
