"""Classical lung-field extraction from CT in Hounsfield units: lung labels for training, and
the anatomical constraint that keeps a served model's labels inside the lungs.

Lesion datasets such as COVID-SemiSeg annotate only the infection, yet the product reports
involvement as a fraction of the lung, so the model must learn the lung too. Its labels come
from the conventional threshold pipeline of the pre-deep-learning literature (Hu, Hoffman and
Reinhardt, IEEE TMI 2001; Armato and Sensakovic, Acad. Radiol. 2004), one axial slice at a
time:

1. **body**: the largest connected region above ``body_threshold_hu`` (soft tissue and bone),
   holes filled — it separates the air around the patient from the air inside;
2. **air inside the body**: below ``lung_threshold_hu`` and inside the filled body, opened by a
   small disc so that one-pixel bridges (through fissures or a thin trachea wall) break;
3. **airway and bowel-gas removal**: components smaller than ``min_component_fraction`` of
   the body area go (trachea, main bronchi, oesophageal and bowel gas); of the rest the two
   largest are kept, the second only when it is at least ``second_lung_fraction`` of the
   first (one lung, or both fused, otherwise);
   Air along the image border (the outside of the patient in a cropped slice) goes too.
4. **hole filling**: vessels, nodules and the lesions are tissue-dense holes inside the lung
   field; they are filled per component, and ``known_lesions`` (annotated infection) are added
   before filling so that dense consolidation at the pleura stays inside the lung.

A slice whose crop cuts through the body wall (as many COVID-SemiSeg slices do) has no closed
body outline; the body is then closed against the image border (the crop edge counts as body
wall), which is why ``border_is_body`` exists.

At serving time :func:`confine_to_lung_field` uses the same thresholds in 3D: a model trained on
lung slices only has never seen the abdomen or the CT table, so its lung and lesion labels are
kept only near the aerated lungs (the model's manifest says how near).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from service.core.manifest import ModelManifest

__all__ = [
    "LungFieldConfinement",
    "LungFieldParams",
    "aerated_lung_volume",
    "confine_as_manifest_says",
    "confine_to_lung_field",
    "lung_field_confinement",
    "lung_field_slice",
    "lung_field_volume",
    "manifest_confinement",
]


#: Classes that belong inside the lung field (names of the class catalogue).
LUNG_FIELD_CLASSES = ("lung", "ggo", "consolidation")


@dataclass(frozen=True)
class LungFieldParams:
    """Thresholds of the classical pipeline (HU and area fractions)."""

    body_threshold_hu: float = -500.0
    lung_threshold_hu: float = -400.0
    #: Components below this fraction of the body's area are airways or gas, not lung.
    min_component_fraction: float = 0.01
    #: The second-largest component is a lung when at least this fraction of the largest.
    second_lung_fraction: float = 0.1
    #: Radius (pixels) of the opening that separates lungs from the trachea.
    opening_radius: int = 2
    #: Air touching the image border along more than this fraction of the border is the air
    #: around the patient (in a body-cropped slice the corners are closed as body), not lung.
    max_border_contact: float = 0.1


def _disc(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return np.asarray(labels == (int(np.argmax(sizes)) + 1))


def _outside_air(labels: np.ndarray, count: int, max_contact: float) -> np.ndarray:
    """Component indices (0-based) whose contact with the image border is too long."""
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    contact = np.bincount(border, minlength=count + 1)[1:]
    return np.flatnonzero(contact > max_contact * border.size)


def _body(hu: np.ndarray, params: LungFieldParams, border_is_body: bool) -> np.ndarray:
    dense = hu > params.body_threshold_hu
    if border_is_body:
        # A crop edge through the chest wall leaves the body open: frame it with body.
        framed = np.pad(dense, 1, constant_values=True)
        return np.asarray(ndimage.binary_fill_holes(framed))[1:-1, 1:-1]
    return np.asarray(ndimage.binary_fill_holes(_largest(dense)))


def lung_field_slice(
    hu: np.ndarray,
    params: LungFieldParams | None = None,
    *,
    known_lesions: np.ndarray | None = None,
    border_is_body: bool = False,
) -> np.ndarray:
    """The lung field of one axial slice (H, W) in HU as a boolean mask (see module doc)."""
    params = params or LungFieldParams()
    if hu.ndim != 2:
        raise ValueError(f"Argument 'hu' must be one (H, W) slice, got shape {hu.shape}.")
    body = _body(hu, params, border_is_body)
    air = (hu < params.lung_threshold_hu) & body
    if params.opening_radius > 0:
        air = ndimage.binary_opening(air, structure=_disc(params.opening_radius))
    labels, count = ndimage.label(air)
    lung = np.zeros(hu.shape, dtype=bool)
    if count:
        sizes = ndimage.sum_labels(air, labels, index=np.arange(1, count + 1))
        sizes[_outside_air(labels, count, params.max_border_contact)] = 0
        order = np.argsort(sizes)[::-1]
        min_size = params.min_component_fraction * max(int(body.sum()), 1)
        keep = [order[0]] if sizes[order[0]] >= min_size else []
        if (
            keep
            and count > 1
            and sizes[order[1]] >= min_size
            and sizes[order[1]] >= params.second_lung_fraction * sizes[order[0]]
        ):
            keep.append(order[1])
        for index in keep:
            lung |= ndimage.binary_fill_holes(labels == index + 1)
    if known_lesions is not None:
        lung |= known_lesions.astype(bool)
    return ndimage.binary_fill_holes(lung) & body if lung.any() else lung


def lung_field_volume(
    hu: np.ndarray, params: LungFieldParams | None = None, *, border_is_body: bool = False
) -> np.ndarray:
    """The lung field of an axial volume (D, H, W), slice by slice."""
    if hu.ndim != 3:
        raise ValueError(f"Argument 'hu' must be a (D, H, W) volume, got shape {hu.shape}.")
    return np.stack([lung_field_slice(s, params, border_is_body=border_is_body) for s in hu])


def aerated_lung_volume(
    hu: np.ndarray,
    params: LungFieldParams | None = None,
    *,
    keep_fraction: float = 0.1,
    max_hole_px: float | None = None,
) -> np.ndarray:
    """The aerated lungs of a (D, H, W) HU volume: air inside the body, connected in 3D.

    Per slice, air below ``lung_threshold_hu`` inside the filled body; then 3D connected
    components, of which those at least ``keep_fraction`` of the largest stay (both lungs and
    the airways joined to them). Gas in the bowel or stomach is a separate 3D component, far
    smaller than a lung, and goes; the air around the patient and the table are outside the body.
    Holes of up to ``max_hole_px`` pixels (vessels, nodules) are filled per slice; a larger
    island of soft tissue (the liver dome or the heart cut by the slice) stays outside.
    """
    params = params or LungFieldParams()
    if hu.ndim != 3:
        raise ValueError(f"Argument 'hu' must be a (D, H, W) volume, got shape {hu.shape}.")
    air = np.zeros(hu.shape, dtype=bool)
    for z, plane in enumerate(hu):
        body = _body(plane, params, border_is_body=False)
        air[z] = (plane < params.lung_threshold_hu) & body
    labels, count = ndimage.label(air)
    if count == 0:
        return air
    sizes = ndimage.sum_labels(air, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(sizes >= keep_fraction * sizes.max()) + 1
    lungs = np.isin(labels, keep)
    for z in range(lungs.shape[0]):
        if lungs[z].any():
            lungs[z] = _fill_small_holes(lungs[z], max_hole_px)
    return lungs


def _fill_small_holes(mask: np.ndarray, max_hole_px: float | None) -> np.ndarray:
    """Holes up to ``max_hole_px`` filled (vessels, nodules); all of them when None."""
    filled = np.asarray(ndimage.binary_fill_holes(mask))
    if max_hole_px is None:
        return filled
    holes, count = ndimage.label(filled & ~mask)
    if count == 0:
        return filled
    sizes = ndimage.sum_labels(np.ones_like(mask), holes, index=np.arange(1, count + 1))
    small = np.flatnonzero(sizes <= max_hole_px) + 1
    return np.asarray(mask | np.isin(holes, small))


@dataclass(frozen=True)
class LungFieldConfinement:
    """Where a study's lung and lesion labels may be: computed once per study, applied to any
    label volume on the study's grid (the served labels, and the consistency check's
    prediction once mapped back to that grid).

    ``allowed`` is the (D, ⌈H/stride⌉, ⌈W/stride⌉) mask on every ``stride``-th pixel;
    :meth:`confine` sets ``confined_classes`` to background where it is False, pixel (y, x)
    taking the value of coarse pixel (y // stride, x // stride).
    """

    allowed: np.ndarray
    stride: int
    shape: tuple[int, int, int]
    confined_classes: tuple[int, ...]

    def confine(self, labels: np.ndarray) -> np.ndarray:
        """A copy of ``labels`` (on this study's grid) with the confined classes outside the
        field set to background (0)."""
        if tuple(labels.shape) != self.shape:
            raise ValueError(
                f"Argument 'labels' has shape {labels.shape}; this lung field was found on a "
                f"study of shape {self.shape}."
            )
        out = labels.copy()
        if not self.confined_classes:
            return out
        confined = np.zeros(max(256, int(labels.max(initial=0)) + 1), dtype=bool)
        confined[list(self.confined_classes)] = True
        stride, (_, height, width) = self.stride, self.shape
        for z in range(self.shape[0]):
            allowed = self.allowed[z]
            if allowed.all():
                continue
            plane = out[z]
            drop = confined[plane]
            if allowed.any():
                full = np.repeat(np.repeat(allowed, stride, axis=0), stride, axis=1)
                drop &= ~full[:height, :width]
            plane[drop] = 0
        return out


def lung_field_confinement(
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    margin_mm: float,
    confined_classes: Sequence[int],
    *,
    stride: int = 4,
    max_hole_mm2: float | None = 400.0,
) -> LungFieldConfinement:
    """The field of :func:`confine_to_lung_field` for the study ``hu``, to apply later."""
    if hu.ndim != 3:
        raise ValueError(f"Argument 'hu' must be a (D, H, W) volume, got shape {hu.shape}.")
    if margin_mm < 0:
        raise ValueError(f"Argument 'margin_mm' must be >= 0, got {margin_mm}.")
    coarse = hu[:, ::stride, ::stride]
    sampling = (spacing_zyx[1] * stride, spacing_zyx[2] * stride)
    max_hole_px = None if max_hole_mm2 is None else max_hole_mm2 / (sampling[0] * sampling[1])
    lungs = aerated_lung_volume(coarse, max_hole_px=max_hole_px)
    allowed = np.zeros(coarse.shape, dtype=bool)
    for z in range(coarse.shape[0]):
        if lungs[z].any():
            allowed[z] = ndimage.distance_transform_edt(~lungs[z], sampling=sampling) <= margin_mm
    shape = (int(hu.shape[0]), int(hu.shape[1]), int(hu.shape[2]))
    return LungFieldConfinement(allowed, stride, shape, tuple(int(c) for c in confined_classes))


def confine_to_lung_field(
    labels: np.ndarray,
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    margin_mm: float,
    confined_classes: Sequence[int],
    *,
    stride: int = 4,
    max_hole_mm2: float | None = 400.0,
) -> np.ndarray:
    """``labels`` with ``confined_classes`` set to background farther than ``margin_mm``
    (in-plane) from the aerated lungs of :func:`aerated_lung_volume`.

    For models trained on lung slices only: they have never seen the abdomen or the table and
    may call bowel "consolidation" or the table "lung". Dense consolidation fills the lung but is
    not air; the margin keeps it where it borders aerated lung. Enclosed soft tissue larger than
    ``max_hole_mm2`` (the liver dome or the heart seen inside the lung outline near the
    diaphragm) is not lung; smaller holes (vessels, nodules) are. The field is found on every
    ``stride``-th pixel (a 512² slice at 128², about 1/16 of the work) and the distance is
    measured in millimetres there. To apply one study's field to several label volumes, use
    :func:`lung_field_confinement` once.
    """
    if labels.shape != hu.shape:
        raise ValueError(f"labels {labels.shape} and hu {hu.shape} must have the same shape.")
    field = lung_field_confinement(
        hu, spacing_zyx, margin_mm, confined_classes, stride=stride, max_hole_mm2=max_hole_mm2
    )
    return field.confine(labels)


def manifest_confinement(
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    manifest: ModelManifest | None,
) -> LungFieldConfinement | None:
    """The lung field the model's ``lung_field_margin_mm`` asks for; None when it asks none."""
    if manifest is None or manifest.lung_field_margin_mm is None:
        return None
    confined = [c.index for c in manifest.classes if c.name in LUNG_FIELD_CLASSES]
    if not confined:
        return None
    return lung_field_confinement(hu, spacing_zyx, manifest.lung_field_margin_mm, confined)


def confine_as_manifest_says(
    labels: np.ndarray,
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    manifest: ModelManifest | None,
) -> np.ndarray:
    """Apply the model's ``lung_field_margin_mm`` (if any) to its lung and lesion classes."""
    field = manifest_confinement(hu, spacing_zyx, manifest)
    return labels if field is None else field.confine(labels)
