"""Overlap and volume metrics shared by the service (per-study monitoring) and training (eval).

Pure numpy so that training evaluation and the serving quality monitor compute the very same
numbers. Conventions: a non-zero voxel is foreground; two empty masks agree perfectly (Dice 1.0),
so a study without lesions that the model also finds lesion-free does not drag averages down.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_array(value: object, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list | tuple):
        return np.asarray(value)
    raise TypeError(f"Argument '{name}' must be a numpy array, got {type(value).__name__}.")


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"Arguments '{name_a}' and '{name_b}' must have the same shape, got {a.shape} "
            f"and {b.shape}."
        )


def _dice_counts(intersection: int, size_a: int, size_b: int) -> float:
    total = size_a + size_b
    return 1.0 if total == 0 else 2.0 * intersection / total


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice of two masks of any shape; both empty gives 1.0."""
    pred = _as_array(pred_mask, "pred_mask").astype(bool, copy=False)
    ref = _as_array(ref_mask, "ref_mask").astype(bool, copy=False)
    _same_shape(pred, ref, "pred_mask", "ref_mask")
    return _dice_counts(int(np.count_nonzero(pred & ref)), int(pred.sum()), int(ref.sum()))


def _label_arrays(pred_labels: object, ref_labels: object) -> tuple[np.ndarray, np.ndarray]:
    pred = _as_array(pred_labels, "pred_labels")
    ref = _as_array(ref_labels, "ref_labels")
    _same_shape(pred, ref, "pred_labels", "ref_labels")
    for name, arr in (("pred_labels", pred), ("ref_labels", ref)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise TypeError(f"Argument '{name}' must hold integer class labels, got {arr.dtype}.")
    return pred, ref


def per_class_dice(
    pred_labels: np.ndarray, ref_labels: np.ndarray, classes: Sequence[int]
) -> dict[int, float]:
    """Dice of each class over the arrays as given (a 2D slice gives slice Dice)."""
    pred, ref = _label_arrays(pred_labels, ref_labels)
    return {int(k): dice(pred == k, ref == k) for k in classes}


def _require_3d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 3:
        raise ValueError(f"Argument '{name}' must be a 3D (z, y, x) volume, got shape {arr.shape}.")


def vol_dice(pred_labels: np.ndarray, ref_labels: np.ndarray, class_index: int) -> float:
    """VolDice: Dice of one class over the whole 3D study taken as a single object.

    Unlike a mean of slice Dice, small lesions weigh by their voxels, and slices where both
    agree there is nothing do not inflate the score.
    """
    pred, ref = _label_arrays(pred_labels, ref_labels)
    _require_3d(pred, "pred_labels")
    return dice(pred == class_index, ref == class_index)


def per_class_vol_dice(
    pred_labels: np.ndarray, ref_labels: np.ndarray, classes: Sequence[int]
) -> dict[int, float]:
    """VolDice of each class in ``classes``."""
    pred, ref = _label_arrays(pred_labels, ref_labels)
    _require_3d(pred, "pred_labels")
    return {int(k): dice(pred == k, ref == k) for k in classes}


def mean_slice_dice(pred_labels: np.ndarray, ref_labels: np.ndarray, class_index: int) -> float:
    """Mean of per-slice Dice over the slices (axis 0) where either volume has the class.

    Slices where both are empty are skipped, otherwise every lesion-free slice would add a
    perfect 1.0; a volume where the class appears nowhere scores 1.0.
    """
    pred, ref = _label_arrays(pred_labels, ref_labels)
    _require_3d(pred, "pred_labels")
    p = (pred == class_index).reshape(pred.shape[0], -1)
    r = (ref == class_index).reshape(ref.shape[0], -1)
    inter = np.count_nonzero(p & r, axis=1)
    sizes_p, sizes_r = p.sum(axis=1), r.sum(axis=1)
    present = (sizes_p + sizes_r) > 0
    if not present.any():
        return 1.0
    scores = 2.0 * inter[present] / (sizes_p[present] + sizes_r[present])
    return float(scores.mean())


def continuous_dice(prob: np.ndarray, ref: np.ndarray) -> float:
    """Continuous Dice (Shamir et al. 2019) of a probability map against a reference.

    With A the reference and B the probability map: cDC = 2·Σ a·b / (c·Σ a + Σ b), where
    c = Σ a·b / Σ a·sign(b) is the mean probability inside the overlap (c = 1 without overlap).
    The factor c makes a map that is uniformly but not fully confident on exactly the right
    support score 1, as the paper requires, whereas soft Dice would penalise it. Equals Dice for
    binary inputs; both empty gives 1.0.
    """
    b = _as_array(prob, "prob").astype(np.float64)
    a = _as_array(ref, "ref").astype(np.float64)
    _same_shape(b, a, "prob", "ref")
    for name, arr in (("prob", b), ("ref", a)):
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                f"Argument '{name}' must hold values in [0, 1], got range "
                f"[{np.nanmin(arr):g}, {np.nanmax(arr):g}]."
            )
    overlap = float(np.sum(a * b))
    support = float(np.sum(a * np.sign(b)))
    c = overlap / support if support > 0 else 1.0
    denominator = c * float(a.sum()) + float(b.sum())
    return 1.0 if denominator == 0 else 2.0 * overlap / denominator


def class_volumes_ml(
    labels: np.ndarray, spacing_zyx: Sequence[float], classes: Sequence[int]
) -> dict[int, float]:
    """Volume in millilitres of each class, from voxel counts and the (z, y, x) mm spacing."""
    arr = _as_array(labels, "labels")
    _require_3d(arr, "labels")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"Argument 'spacing_zyx' must be three positive millimetre values, got {spacing_zyx!r}."
        )
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    return {int(k): int(np.count_nonzero(arr == k)) * voxel_ml for k in classes}
