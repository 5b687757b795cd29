"""Label-free signals that a study's lesion segmentation may be wrong, one function each.

Each signal is a number computed from what serving already has — the served labels, the
prediction on the consistency check's transformed copy, the class probabilities of that pass and
the study's aerated lungs found by the applicability check — so none costs another inference.
``service.quality.quality_score`` combines them; ``bench/quality_score_eval.py`` measures how
well each one ranks studies by their true lesion VolDice. Pure numpy: tested on constructed
arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "QualitySignals",
    "lesion_consistency",
    "lesion_entropy",
    "lesion_outside_lung",
    "lesion_lung_ratio",
    "lung_field_dice",
    "normalised_entropy",
    "study_signals",
]


@dataclass(frozen=True)
class QualitySignals:
    """The candidate signals of one study; None when the study gives no value for one.

    ``consistency_lesion_voldice`` and ``lesion_entropy`` need the consistency pass (on a GPU
    by default, ``consistency_fraction`` on the CPU); the others need no inference.
    """

    #: VolDice of the lesion union (GGO + consolidation) between the served labels and the
    #: prediction on the transformed copy mapped back (1 = the model agrees with itself).
    consistency_lesion_voldice: float | None = None
    #: Mean predictive entropy (normalised to [0, 1] by log K) over the voxels the transformed
    #: pass calls lesion: how unsure the model is of its own lesion call.
    lesion_entropy: float | None = None
    #: Dice of the model's lungs (lung + lesions) with the classical aerated lung field.
    lung_field_dice: float | None = None
    #: Share of lesion voxels farther than a few mm from the aerated lungs (implausible).
    lesion_outside_lung: float | None = None
    #: Lesion volume over lung volume (lung + lesions): 1 means everything is "lesion".
    lesion_lung_ratio: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (they agree on "nothing")."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"Arguments '{name_a}' and '{name_b}' must have the same shape, got {a.shape} and "
            f"{b.shape}."
        )


def lesion_consistency(
    labels: np.ndarray, transformed_back: np.ndarray, lesion_classes: Sequence[int]
) -> float:
    """VolDice of the lesion union between ``labels`` and T⁻¹(f(T(x))) (same grid).

    The union, not per class: a model that calls a lesion GGO on one copy and consolidation on
    the other has found the lesion both times; the per-class consistency says the rest.
    """
    _check_same_shape(labels, transformed_back, "labels", "transformed_back")
    classes = list(lesion_classes)
    return _dice(np.isin(labels, classes), np.isin(transformed_back, classes))


def lesion_entropy(entropy_sum: float, lesion_voxels: int) -> float | None:
    """Mean normalised entropy over lesion voxels from the sums a pass accumulated; None (no
    lesion called, nothing to be unsure of) when ``lesion_voxels`` is 0."""
    if lesion_voxels < 0 or entropy_sum < 0:
        raise ValueError(
            f"Arguments 'entropy_sum' and 'lesion_voxels' must be >= 0, got {entropy_sum} and "
            f"{lesion_voxels}."
        )
    return None if lesion_voxels == 0 else float(entropy_sum) / lesion_voxels


def normalised_entropy(probabilities: np.ndarray, axis: int = 1) -> np.ndarray:
    """Per-voxel entropy of class probabilities over ``axis``, divided by log K (so in [0, 1])."""
    k = probabilities.shape[axis]
    p = np.clip(probabilities, 1e-7, 1.0)
    entropy: np.ndarray = -(p * np.log(p)).sum(axis=axis) / np.log(k)
    return entropy


def _coarse(labels: np.ndarray, aerated: np.ndarray) -> np.ndarray:
    """``labels`` on the grid of ``aerated`` (every stride-th pixel in-plane)."""
    if labels.ndim != 3 or aerated.ndim != 3 or labels.shape[0] != aerated.shape[0]:
        raise ValueError(
            f"Arguments 'labels' {labels.shape} and 'aerated_lungs' {aerated.shape} must be "
            "(D, H, W) volumes with the same number of slices."
        )
    stride = int(round(labels.shape[1] / aerated.shape[1]))
    coarse = labels[:, :: max(stride, 1), :: max(stride, 1)]
    if coarse.shape != aerated.shape:
        raise ValueError(
            f"Argument 'aerated_lungs' {aerated.shape} is not an in-plane subsampling of "
            f"'labels' {labels.shape}."
        )
    return coarse


def lung_field_dice(
    labels: np.ndarray,
    aerated_lungs: np.ndarray,
    lung_classes: Sequence[int],
) -> float | None:
    """Dice of the model's lungs (``lung_classes``: lung and lesions) with the aerated lungs,
    holes filled per slice (vessels and lesions inside the lung are lung); None without lungs.

    ``aerated_lungs`` may be on a coarser in-plane grid (every stride-th pixel, as the
    applicability check finds it); ``labels`` are subsampled to it.
    """
    coarse = _coarse(labels, aerated_lungs)
    if not aerated_lungs.any():
        return None
    filled = np.stack([ndimage.binary_fill_holes(s) for s in aerated_lungs])
    return _dice(np.isin(coarse, list(lung_classes)), filled)


def lesion_outside_lung(
    labels: np.ndarray,
    aerated_lungs: np.ndarray,
    lesion_classes: Sequence[int],
    pixel_mm: float,
    margin_mm: float = 5.0,
) -> float | None:
    """Share of lesion voxels farther than ``margin_mm`` (in-plane) from the aerated lungs
    (holes filled); None when no lesion is called. ``pixel_mm``: pixel size of ``aerated_lungs``.
    """
    if not pixel_mm > 0 or margin_mm < 0:
        raise ValueError(
            f"Arguments 'pixel_mm' must be > 0 and 'margin_mm' >= 0, got {pixel_mm} and "
            f"{margin_mm}."
        )
    lesion = np.isin(_coarse(labels, aerated_lungs), list(lesion_classes))
    count = int(lesion.sum())
    if count == 0:
        return None
    outside = 0
    for z in np.flatnonzero(lesion.any(axis=(1, 2))):
        lungs = ndimage.binary_fill_holes(aerated_lungs[z])
        if not lungs.any():
            outside += int(lesion[z].sum())
            continue
        distance = ndimage.distance_transform_edt(~lungs) * pixel_mm
        outside += int((lesion[z] & (distance > margin_mm)).sum())
    return outside / count


def lesion_lung_ratio(lesion_volume_ml: float | None, lung_volume_ml: float | None) -> float | None:
    """Lesion volume over lung volume (lung + lesions); None without a lung."""
    if lesion_volume_ml is None or lung_volume_ml is None or lung_volume_ml <= 0:
        return None
    return float(lesion_volume_ml) / float(lung_volume_ml)


def study_signals(
    *,
    labels: np.ndarray,
    spacing_zyx: Sequence[float],
    lung_classes: Sequence[int],
    lesion_classes: Sequence[int],
    lesion_volume_ml: float | None,
    lung_volume_ml: float | None,
    aerated_lungs: np.ndarray | None,
    lung_stride: int = 1,
    transformed_back: np.ndarray | None = None,
    entropy_sum: float = 0.0,
    entropy_voxels: int = 0,
) -> QualitySignals:
    """Every signal of one study from what the pipeline already holds.

    ``aerated_lungs`` (every ``lung_stride``-th pixel) is the applicability check's lung field;
    ``transformed_back`` and the entropy sums come from the consistency pass, when it ran.
    """
    consistency = entropy = field_dice = outside = None
    if transformed_back is not None:
        consistency = lesion_consistency(labels, transformed_back, lesion_classes)
        entropy = lesion_entropy(entropy_sum, entropy_voxels)
    if aerated_lungs is not None and lesion_classes:
        field_dice = lung_field_dice(labels, aerated_lungs, lung_classes)
        pixel_mm = float(min(spacing_zyx[1], spacing_zyx[2])) * max(int(lung_stride), 1)
        outside = lesion_outside_lung(labels, aerated_lungs, lesion_classes, pixel_mm)
    return QualitySignals(
        consistency_lesion_voldice=consistency,
        lesion_entropy=entropy,
        lung_field_dice=field_dice,
        lesion_outside_lung=outside,
        lesion_lung_ratio=lesion_lung_ratio(lesion_volume_ml, lung_volume_ml),
    )
