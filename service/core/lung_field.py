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
from scipy.spatial import ConvexHull, QhullError

from service.core.manifest import ModelManifest

__all__ = [
    "EnvelopeParams",
    "LungFieldConfinement",
    "LungFieldParams",
    "aerated_lung_volume",
    "confine_as_manifest_says",
    "confine_to_lung_field",
    "lung_field_confinement",
    "lung_field_slice",
    "lung_envelope",
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


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` of a 2D mask (same 4-connected background), by labelling
    the background once instead of dilating from the border pixel by pixel (~20x faster)."""
    mask = np.asarray(mask, dtype=bool)
    background, _count = ndimage.label(~mask)
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    return np.asarray(mask | ((background > 0) & ~np.isin(background, np.unique(edges))))


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
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
        return _fill_holes(framed)[1:-1, 1:-1]
    return _fill_holes(_largest(dense))


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
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
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
            lung |= _fill_holes(labels == index + 1)
    if known_lesions is not None:
        lung |= known_lesions.astype(bool)
    return _fill_holes(lung) & body if lung.any() else lung


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
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = np.flatnonzero(sizes >= keep_fraction * sizes.max()) + 1
    lungs = np.isin(labels, keep)
    for z in range(lungs.shape[0]):
        if lungs[z].any():
            lungs[z] = _fill_small_holes(lungs[z], max_hole_px)
    return lungs


def _fill_small_holes(mask: np.ndarray, max_hole_px: float | None) -> np.ndarray:
    """Holes up to ``max_hole_px`` filled (vessels, nodules); all of them when None."""
    filled = _fill_holes(mask)
    if max_hole_px is None:
        return filled
    holes, count = ndimage.label(filled & ~mask)
    if count == 0:
        return filled
    sizes = np.bincount(holes.ravel(), minlength=count + 1)[1:]
    small = np.flatnonzero(sizes <= max_hole_px) + 1
    return np.asarray(mask | np.isin(holes, small))


#: Holes of the classical aerated field filled by the serving confinement (vessels, nodules).
CLASSICAL_MAX_HOLE_MM2 = 400.0


@dataclass(frozen=True)
class EnvelopeParams:
    """How :func:`lung_envelope` closes the aerated lungs over their disease (mm, HU)."""

    #: Radius of the in-plane closing of each lung: notches of the aerated lung up to about
    #: twice this wide (subpleural consolidation, a nodule at the pleura) are closed.
    closing_radius_mm: float = 30.0
    #: The closing never adds voxels at or above this (ribs, spine) nor outside the body.
    bone_hu: float = 300.0
    #: An enclosed hole larger than this (mm², in its most caudal slice) that continues
    #: caudally into soft tissue is the diaphragm's dome seen through the lung, not lung.
    dome_min_area_mm2: float = 400.0
    #: The closing runs on every n-th pixel, n the most that keeps pixels under this size
    #: (a 512² slice of 0.7 mm pixels at 256², a quarter of the work).
    coarse_pixel_mm: float = 2.0


def lung_envelope(
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    params: EnvelopeParams | None = None,
    *,
    superior_is_last: bool = True,
) -> np.ndarray:
    """The pleural envelope of a (D, H, W) HU volume: aerated lung plus the disease inside it.

    The classical field follows air, so ground glass at the pleura, consolidation and tumour
    carve it out. Here, slice by slice, each aerated component (:func:`aerated_lung_volume`,
    no holes filled) is closed by a disc of ``closing_radius_mm`` (additions kept inside the
    body and below ``bone_hu``) and each pocket it filled is taken on to the chord between
    the notch's lips (the pleura), then every enclosed hole is filled. What was added is
    dropped where it is the diaphragm's dome: a 3D component of additions larger than
    ``dome_min_area_mm2`` in its most caudal slice and resting there, for more than half of
    its footprint, on non-aerated tissue of the next caudal slice (``superior_is_last``:
    slice index grows towards the head). The result
    contains the classical field (all holes up to 400 mm² filled), so a lung volume measured
    on it is never smaller. Not recovered: disease that opens widely onto the mediastinum
    (a juxtamediastinal tumour) or a dense band along the whole dependent wall, which leave
    no notch in the aerated outline (see ``docs/quantification.md``).
    """
    params = params or EnvelopeParams()
    if hu.ndim != 3:
        raise ValueError(f"Argument 'hu' must be a (D, H, W) volume, got shape {hu.shape}.")
    if params.closing_radius_mm < 0 or params.coarse_pixel_mm <= 0:
        raise ValueError(f"Argument 'params' must hold sizes >= 0 (pixel > 0), got {params}.")
    if len(spacing_zyx) != 3 or not all(float(v) > 0 for v in spacing_zyx):
        raise ValueError(f"Argument 'spacing_zyx' must be 3 positive mm, got {spacing_zyx}.")
    field_params = LungFieldParams()
    air = aerated_lung_volume(hu, field_params, max_hole_px=0)
    stride = max(1, int(params.coarse_pixel_mm // max(spacing_zyx[1], spacing_zyx[2])))
    sampling = (spacing_zyx[1] * stride, spacing_zyx[2] * stride)
    closed = air.copy()
    body = np.zeros(hu.shape, dtype=bool)
    for z in np.flatnonzero(air.any(axis=(1, 2))):
        body[z] = _body(hu[z], field_params, border_is_body=False)
        coarse = _closed_components(air[z, ::stride, ::stride], params.closing_radius_mm, sampling)
        full = np.repeat(np.repeat(coarse, stride, axis=0), stride, axis=1)
        full = full[: hu.shape[1], : hu.shape[2]]
        closed[z] |= full & body[z] & (hu[z] < params.bone_hu)
    filled = np.stack([_fill_holes(s) for s in closed])
    domes = _dome_holes(filled & ~air, air, body, spacing_zyx, params, superior_is_last)
    classical = _fill_small_holes_3d(
        air, CLASSICAL_MAX_HOLE_MM2 / (spacing_zyx[1] * spacing_zyx[2])
    )
    return np.asarray((filled & ~domes) | classical)


def _fill_small_holes_3d(air: np.ndarray, max_hole_px: float) -> np.ndarray:
    """:func:`aerated_lung_volume`'s hole filling on its unfilled result."""
    out = air.copy()
    for z in np.flatnonzero(air.any(axis=(1, 2))):
        out[z] = _fill_small_holes(air[z], max_hole_px)
    return out


def _closed_components(
    mask: np.ndarray, radius_mm: float, sampling: tuple[float, float]
) -> np.ndarray:
    """Each connected component of ``mask`` closed by a disc (distance transforms, in mm)."""
    out = mask.copy()
    if radius_mm <= 0:
        return out
    labels, _count = ndimage.label(mask)
    pad = int(np.ceil(radius_mm / min(sampling))) + 2
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        window = tuple(slice(max(0, b.start - pad), b.stop + pad) for b in box)
        component = np.pad(labels[window] == index, pad)
        grown = ndimage.distance_transform_edt(~component, sampling=sampling) <= radius_mm
        shut = ndimage.distance_transform_edt(grown, sampling=sampling) > radius_mm
        pockets = _notches(shut & ~component, sampling)
        pockets |= _pocket_chords(component, pockets, sampling, radius_mm)
        out[window] |= (component | pockets)[pad:-pad, pad:-pad]
    return out


#: Least (thickness² / area) of a filled pocket: a lesion's notch is about as deep as it is
#: wide (half a disc: 0.64); a closed-over gentle concavity of the mediastinal border is a
#: long thin sliver (5 mm by 100 mm: 0.05) and no lung.
MIN_NOTCH_SHAPE = 0.15


def _notches(pockets: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """The pockets a closing filled that are notches (see ``MIN_NOTCH_SHAPE``)."""
    labels, count = ndimage.label(pockets)
    if count == 0:
        return pockets
    depth = ndimage.distance_transform_edt(pockets, sampling=sampling)
    thickness = 2.0 * ndimage.maximum(depth, labels, index=np.arange(1, count + 1))
    area = np.bincount(labels.ravel(), minlength=count + 1)[1:] * sampling[0] * sampling[1]
    keep = np.flatnonzero(thickness**2 >= MIN_NOTCH_SHAPE * area) + 1
    return np.isin(labels, keep)


def _pocket_chords(
    component: np.ndarray, pockets: np.ndarray, sampling: tuple[float, float], radius_mm: float
) -> np.ndarray:
    """Each pocket the closing filled, extended to the convex hull of itself and the lung
    around it, no farther than ``radius_mm / 2`` from the pocket.

    A disc closes a notch only down to the arc it sags along, short of the chord between the
    notch's lips; the lesion that made the notch reaches the pleura, i.e. the chord."""
    out = np.zeros_like(component)
    labels, _count = ndimage.label(pockets)
    margin = int(np.ceil(radius_mm / min(sampling)))
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(0, b.start - margin), min(n, b.stop + margin))
            for b, n in zip(box, component.shape, strict=True)
        )
        pocket = labels[window] == index
        points = np.argwhere(pocket | component[window])
        try:
            hull = ConvexHull(points)
        except QhullError:  # a pocket in one row or column: nothing to extend
            continue
        rows, cols = np.indices(pocket.shape)
        grid = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(float)
        inside = np.all(grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9, axis=1)
        near = ndimage.distance_transform_edt(~pocket, sampling=sampling) <= radius_mm / 2
        out[window] |= inside.reshape(pocket.shape) & near
    # The pleura is an arc over the chord: one pixel more reaches it (as far as 1 pixel
    # of sagitta, e.g. a 30 mm chord on a lung wall of 80 mm radius of curvature).
    return np.asarray(ndimage.binary_dilation(out)) if out.any() else out


def _dome_holes(
    holes: np.ndarray,
    lung: np.ndarray,
    body: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    params: EnvelopeParams,
    superior_is_last: bool,
) -> np.ndarray:
    """The 3D components of ``holes`` (what the envelope adds to the aerated ``lung``) that
    are the diaphragm's dome (see :func:`lung_envelope`): their floor (the caudal faces that
    leave the component) rests on more tissue than lung, and on more than
    ``dome_min_area_mm2`` of it. A lesion inside the lung rests on lung."""
    labels, count = ndimage.label(holes)
    if count == 0:
        return holes
    caudal = -1 if superior_is_last else 1
    below = np.roll(labels, -caudal, axis=0)  # below[z] = labels[z + caudal]
    aerated_below = np.roll(lung, -caudal, axis=0)
    end = 0 if superior_is_last else -1  # the most caudal slice rests on what lies beyond
    below[end] = 0
    aerated_below[end] = False
    floor = (labels > 0) & (below != labels)
    pixel_mm2 = spacing_zyx[1] * spacing_zyx[2]
    on_lung = np.bincount(labels[floor & aerated_below], minlength=count + 1) * pixel_mm2
    on_tissue = np.bincount(labels[floor & ~aerated_below], minlength=count + 1) * pixel_mm2
    dome = (on_tissue > on_lung) & (on_tissue > params.dome_min_area_mm2)
    dome[0] = False
    return np.asarray(dome[labels])


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
