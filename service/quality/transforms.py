"""Exact, invertible transforms of a (z, y, x) volume for the label-free consistency check.

These are the TCSM transformations (flips and 90-degree in-plane rotations) that the model was
trained to be consistent under. Serving must not import training, so the few numpy one-liners it
needs live here. Each transform permutes voxels only (no interpolation), so mapping a prediction
back with :meth:`ConsistencyTransform.invert` is exact and any disagreement is the model's.
"""

from __future__ import annotations

import numpy as np

from service.core.options import Option


class ConsistencyTransform(Option):
    """Transforms of the (z, y, x) axes; rotations turn the axial plane (y, x).

    ``ConsistencyTransform.parse("rot90")`` accepts the enum or its value (see
    :class:`~service.core.options.Option`).
    """

    FLIP_X = "flip_x"
    FLIP_Y = "flip_y"
    FLIP_Z = "flip_z"
    ROT90 = "rot90"
    ROT180 = "rot180"
    ROT270 = "rot270"

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """T(volume) for an array whose last three axes are (z, y, x)."""
        return _apply(self, volume, inverse=False)

    def invert(self, volume: np.ndarray) -> np.ndarray:
        """T⁻¹(volume): maps a prediction made on T(x) back onto x's grid."""
        return _apply(self, volume, inverse=True)


_ROT_K = {
    ConsistencyTransform.ROT90: 1,
    ConsistencyTransform.ROT180: 2,
    ConsistencyTransform.ROT270: 3,
}
_FLIP_AXIS = {
    ConsistencyTransform.FLIP_Z: -3,
    ConsistencyTransform.FLIP_Y: -2,
    ConsistencyTransform.FLIP_X: -1,
}


def _apply(transform: ConsistencyTransform, volume: np.ndarray, *, inverse: bool) -> np.ndarray:
    if not isinstance(volume, np.ndarray) or volume.ndim < 3:
        raise ValueError(
            "Argument 'volume' must be an array with (z, y, x) as its last axes, got "
            f"{getattr(volume, 'shape', type(volume).__name__)}."
        )
    if transform in _FLIP_AXIS:
        return np.ascontiguousarray(np.flip(volume, axis=_FLIP_AXIS[transform]))
    k = _ROT_K[transform]
    return np.ascontiguousarray(np.rot90(volume, k=-k if inverse else k, axes=(-2, -1)))
