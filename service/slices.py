"""2.5D input assembly shared by training and serving.

The network sees each axial slice together with its neighbours as channels. Training and the
service must build these stacks identically, so both call :func:`slice_context_stack`.
"""

from __future__ import annotations

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
    return np.clip(np.arange(num_slices)[:, None] + offsets[None, :], 0, num_slices - 1)


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
    return volume[idx]
