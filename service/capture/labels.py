"""A reference SEG's masks as one label volume in the model's class indices.

Training labels are exclusive (one class per voxel: 0 background, 1 lung, 2 GGO, ...), while a
reference's segments may overlap (a reader's lung usually contains the lesions). Classes are
painted in index order, so where segments overlap the higher index wins: lesions stay lesions
inside the lung. A FRACTIONAL reference is binarised at 0.5, as for its VolDice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from service.core.classes import ClassInfo


def reference_label_volume(masks: Mapping[int, np.ndarray]) -> np.ndarray:
    """``masks`` (class index -> mask in [0, 1] on the study grid) as a uint8 label volume."""
    if not masks:
        raise ValueError("Argument 'masks' is empty: the reference matched no model class.")
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) != 1:
        raise ValueError(f"Argument 'masks' holds masks of different shapes: {sorted(shapes)}.")
    label = np.zeros(shapes.pop(), dtype=np.uint8)
    for index in sorted(masks):
        if not 0 < index < 256:
            raise ValueError(f"Class index {index} does not fit a uint8 label volume (1..255).")
        label[np.asarray(masks[index]) >= 0.5] = index
    return label


def reference_class_names(indices: Sequence[int], classes: Sequence[ClassInfo]) -> list[str]:
    """The names of the classes the reference annotated (others are unknown, not absent)."""
    names = {c.index: c.name for c in classes}
    return [names[i] for i in sorted(indices) if i in names]
