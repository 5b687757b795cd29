"""Density bands and the under-reading check of one served study, cheap enough for every study.

The quality step runs this on the labels the model served, not on ``lung_envelope`` (24-77 s
per study): the envelope here is the union of the served lung and lesion classes with each
slice's enclosed holes filled (vessels, nodules and ground glass the lung class went around).
A study wider than ``SUBSAMPLE_ABOVE_PX`` is quantified on every second row and column, with
the voxel size doubled in-plane and the abnormal-density opening halved (the same size in mm),
and everything is cropped to the envelope's bounding box: a 512×512×133 study costs about a
second on one core (``docs/quantification.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from service.quality.density import (
    ABNORMAL_OPENING,
    DensityQuantification,
    quantify_density,
    volume_orientation,
)
from service.quality.under_reading import UnderReading, under_reading

__all__ = ["SUBSAMPLE_ABOVE_PX", "StudyDensity", "label_envelope", "study_density"]

#: In-plane size (pixels, the larger side) above which the study is quantified at stride 2.
SUBSAMPLE_ABOVE_PX = 256
#: Connects pixels within a slice only, so one labelling pass fills every slice's holes.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class StudyDensity:
    """The study's density bands, its under-reading verdict (None when the model has no
    lesion volume to compare) and the in-plane stride they were measured at."""

    density: DensityQuantification
    under_reading: UnderReading | None
    stride: int


def label_envelope(labels: np.ndarray, class_ids: Iterable[int]) -> np.ndarray:
    """The voxels of ``class_ids`` in ``labels`` (D, H, W), each slice's enclosed holes filled.

    A hole is a background region of a slice that does not reach the slice's edge; all slices
    are labelled in one pass with an in-plane structure (no per-slice Python loop)."""
    if labels.ndim != 3:
        raise ValueError(f"Argument 'labels' must be a (D, H, W) volume, got {labels.shape}.")
    ids = sorted({int(i) for i in class_ids})
    if labels.dtype == np.uint8 and all(0 <= i < 256 for i in ids):
        member = np.zeros(256, dtype=bool)  # a table lookup: one pass over the labels
        member[ids] = True
        envelope = member[labels]
    else:
        envelope = np.isin(labels, ids)
    if not envelope.any():
        return envelope
    regions, count = ndimage.label(~envelope, structure=_IN_PLANE)
    edge = np.zeros(count + 1, dtype=bool)
    for border in (regions[:, 0, :], regions[:, -1, :], regions[:, :, 0], regions[:, :, -1]):
        edge[np.unique(border)] = True
    edge[0] = True  # label 0 is the envelope itself
    return envelope | ~edge[regions]


def study_density(
    hu: np.ndarray,
    labels: np.ndarray,
    spacing_zyx: Sequence[float],
    envelope_classes: Iterable[int],
    *,
    lesion_volume_ml: float | None,
    row_cosine: Sequence[float] = (1.0, 0.0, 0.0),
    slice_normal: Sequence[float] = (0.0, 0.0, 1.0),
) -> StudyDensity:
    """Quantify ``hu`` inside the served labels' envelope and check the lesions against it.

    ``envelope_classes``: the label values of the lung and lesion classes. ``lesion_volume_ml``:
    the model's lesion volume (full resolution); None skips the under-reading check.
    ``row_cosine`` / ``slice_normal``: the volume's direction cosines (LPS), for left/right and
    upper/lower (see :func:`service.quality.density.volume_orientation`).
    """
    if hu.shape != labels.shape:
        raise ValueError(f"Argument 'labels' has shape {labels.shape}; 'hu' has {hu.shape}.")
    stride = 2 if max(hu.shape[1:]) > SUBSAMPLE_ABOVE_PX else 1
    spacing = (
        float(spacing_zyx[0]),
        float(spacing_zyx[1]) * stride,
        float(spacing_zyx[2]) * stride,
    )
    sampled = labels[:, ::stride, ::stride]
    box = _bounding_box(sampled > 0)
    envelope = label_envelope(sampled[box], envelope_classes)
    superior_is_last, left_is_high = volume_orientation(row_cosine, slice_normal)
    density = quantify_density(
        hu[:, ::stride, ::stride][box],
        envelope,
        spacing,
        superior_is_last=superior_is_last,
        left_is_high_column=left_is_high,
        opening=max(1, ABNORMAL_OPENING // stride),
    )
    verdict = None if lesion_volume_ml is None else under_reading(density, lesion_volume_ml)
    return StudyDensity(density, verdict, stride)


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The smallest box holding ``mask`` (one voxel when it is empty). Cropping is exact for
    the envelope: background at the box's edge reaches the slice's edge outside it."""
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        bounds.append(slice(int(present[0]), int(present[-1]) + 1) if present.size else slice(0, 1))
    return bounds[0], bounds[1], bounds[2]
