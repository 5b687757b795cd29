"""Bring 8-bit slice folders to the geometry and intensities of a DICOM study.

Public lesion slices (COVID-SemiSeg) differ from what the service receives in three ways: they
are rotated, cropped to the body and stored in a display window instead of Hounsfield units.
A model that is to serve DICOM must see its training slices the way it will see a study, so
the slice data source applies, per ``data`` settings:

* ``rotate90`` quarter turns (to radiological orientation),
* ``harmonize_tissue_hu``: each slice re-windowed on its own lung and soft-tissue peaks,
* ``pad_square`` with air (a body-cropped slice keeps its aspect ratio when resized),
* ``lung_labels``: the lung class from :mod:`service.core.lung_field` on the slice in HU,
* ``pixel_window``: pixels back to HU (:func:`pixels_to_hu`) on every batch and validation
  image, so that the exported graph's HU window is the only intensity mapping there is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from scipy import ndimage

from service.core.lung_field import lung_field_slice
from training.config import DataConfig
from training.data.slice_folders import LoadedSlice

__all__ = [
    "harmonized",
    "pad_square",
    "pixels_to_hu",
    "prepare_slice",
    "slices_in_hu",
    "tissue_anchors",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def pixels_to_hu(pixels: ArrayT, window: tuple[float, float]) -> ArrayT:
    """Invert a display window: pixel 0 → ``lo`` HU, 255 → ``hi`` HU (linear)."""
    lo, hi = window
    return pixels * ((hi - lo) / 255.0) + lo


def hu_to_pixels(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Apply a display window: HU → 8-bit, ``lo`` → 0, ``hi`` → 255 (rounded, clipped)."""
    lo, hi = window
    return np.clip(np.rint((hu - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def pad_square(array: np.ndarray) -> np.ndarray:
    """``array`` (H, W) centred in a square of zeros (air in any lung window; background)."""
    h, w = array.shape
    size = max(h, w)
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(array, ((top, size - h - top), (left, size - w - left)))


#: Pixel ranges of the two anchors and the least pixel count a peak needs to be trusted.
_LUNG_PIXELS, _SOFT_PIXELS, _MIN_PIXELS = (4, 130), (185, 246), 2000
#: Least distance (pixels) between the anchors: closer peaks mean a window this cannot read.
_MIN_ANCHOR_GAP = 80


def _peak(values: np.ndarray) -> int | None:
    if values.size < _MIN_PIXELS:
        return None
    hist = ndimage.gaussian_filter1d(np.bincount(values, minlength=256).astype(float), 2.0)
    return int(np.argmax(hist))


def tissue_anchors(image: np.ndarray, label: np.ndarray) -> tuple[int, int] | None:
    """(normal-lung peak, soft-tissue peak) in pixels of one slice, or None if unreadable.

    Normal lung is read outside the annotated lesions, so diffuse disease cannot pass for it.
    """
    lo, hi = _LUNG_PIXELS
    lung = _peak(image[(label == 0) & (image >= lo) & (image < hi)])
    lo, hi = _SOFT_PIXELS
    soft = _peak(image[(image >= lo) & (image < hi)])
    if lung is None or soft is None or soft - lung < _MIN_ANCHOR_GAP:
        return None
    return lung, soft


def harmonized(
    image: np.ndarray,
    label: np.ndarray,
    window: tuple[float, float],
    tissue_hu: tuple[float, float],
) -> np.ndarray:
    """``image`` re-windowed so its lung and soft-tissue peaks sit at ``tissue_hu`` under the
    common ``window`` (unchanged when its anchors cannot be read)."""
    anchors = tissue_anchors(image, label)
    if anchors is None:
        return image
    (p_lung, p_soft), (hu_lung, hu_soft) = anchors, tissue_hu
    hu = hu_lung + (image.astype(np.float32) - p_lung) * ((hu_soft - hu_lung) / (p_soft - p_lung))
    return hu_to_pixels(hu, window)


def prepare_slice(item: LoadedSlice, data: DataConfig, class_names: Sequence[str]) -> LoadedSlice:
    """``item`` rotated, padded and given lung labels as ``data`` asks (pixels stay 8-bit)."""
    image, label = item.image, item.label
    if data.rotate90 % 4:
        image = np.ascontiguousarray(np.rot90(image, data.rotate90))
        label = None if label is None else np.ascontiguousarray(np.rot90(label, data.rotate90))
    if data.harmonize_tissue_hu is not None and label is not None and data.pixel_window:
        image = harmonized(image, label, data.pixel_window, data.harmonize_tissue_hu)
    if data.lung_labels and label is not None and data.pixel_window is not None:
        lung_index = list(class_names).index("lung")
        hu = pixels_to_hu(image.astype(np.float32), data.pixel_window)
        # Before padding: the crop edge of a body-cropped slice counts as body wall.
        field = lung_field_slice(hu, known_lesions=label > 0, border_is_body=True)
        label = np.where((label == 0) & field, lung_index, label)
    if data.pad_square:
        image = pad_square(image)  # pads with pixel 0: air in any lung window
        label = None if label is None else pad_square(label)
    return LoadedSlice(item.record, image, label)


def slices_in_hu(items: Sequence[LoadedSlice], window: tuple[float, float]) -> list[LoadedSlice]:
    """Copies of ``items`` with float32 HU images (validation sees what the service sees)."""
    return [
        LoadedSlice(s.record, pixels_to_hu(s.image.astype(np.float32), window), s.label)
        for s in items
    ]
