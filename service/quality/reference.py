"""Read a reference DICOM-SEG (e.g. a radiologist's correction) onto a segmented study's grid.

A reference comes from another tool, so nothing about its layout is assumed:

* segments are matched to the model's classes by their coded **property type** (SNOMED "SRT"
  and "SCT" are one scheme), never by segment number or order; unknown segments are reported;
* BINARY, FRACTIONAL and LABELMAP encodings are read; frames may be omitted where a segment is
  empty, and may reference any subset of the source slices: a slice without a frame is empty;
* every frame is placed by its ImagePositionPatient on the study's grid. Nothing is resampled:
  rows, columns, pixel spacing, orientation, frame of reference or a frame between slices that
  differ from the study raise :class:`~service.core.errors.ReferenceGeometryError` naming what
  differs and both values.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from service.core.classes import ClassInfo
from service.core.dicom_uids import LABEL_MAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE
from service.core.errors import InvalidReferenceError, ReferenceGeometryError
from service.core.identifiers import uid_hash
from service.core.segmentation_metrics import continuous_dice, dice
from service.quality.geometry import StudyGeometry

_SCHEME_ALIASES = {"SRT": "SCT"}
#: Tolerances as fractions of a voxel: DS values carry 16 characters, not exact floats.
POSITION_TOL = 0.05
SPACING_RTOL = 1e-3
ORIENTATION_ATOL = 1e-3


@dataclass(frozen=True)
class ReferenceMasks:
    """Reference masks by class index on the study grid, values in [0, 1]."""

    masks: dict[int, np.ndarray] = field(repr=False)
    segmentation_type: str
    unmatched_segments: list[str]
    frames_placed: int

    @property
    def fractional(self) -> bool:
        return self.segmentation_type == "FRACTIONAL"


@dataclass(frozen=True)
class ReferenceScores:
    """Per class name: VolDice (reference binarised at 0.5) and, for FRACTIONAL, cDice."""

    voldice: dict[str, float]
    continuous_dice: dict[str, float]
    segmentation_type: str
    unmatched_segments: list[str]


def _code_key(scheme: str, value: str) -> tuple[str, str]:
    scheme = str(scheme).strip().upper()
    return (_SCHEME_ALIASES.get(scheme, scheme), str(value).strip())


def _match_segments(ds: Dataset, classes: Sequence[ClassInfo]) -> tuple[dict[int, int], list[str]]:
    """Segment number -> class index, and descriptions of the segments no class matches."""
    by_code = {
        _code_key(c.property_type.scheme, c.property_type.value): c.index
        for c in classes
        if c.index != 0
    }
    matched: dict[int, int] = {}
    unmatched: list[str] = []
    seen: dict[int, int] = {}
    for item in ds.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        codes = item.get("SegmentedPropertyTypeCodeSequence") or []
        if not codes:
            unmatched.append(f"segment {number} (no property type code)")
            continue
        code = codes[0]
        key = _code_key(code.get("CodingSchemeDesignator", ""), code.get("CodeValue", ""))
        index = by_code.get(key)
        if index is None:
            unmatched.append(
                f"segment {number} ({key[0]} {key[1]} '{code.get('CodeMeaning', '')}')"
            )
            continue
        if index in seen:
            raise InvalidReferenceError(
                f"Reference SEG segments {seen[index]} and {number} both have property type "
                f"{key[0]} {key[1]}; each class must be one segment."
            )
        seen[index] = number
        matched[number] = index
    if not matched:
        known = ", ".join(
            f"{c.property_type.scheme} {c.property_type.value} ({c.name})"
            for c in classes
            if c.index != 0
        )
        raise InvalidReferenceError(
            "No segment of the reference SEG has the property type of a model class "
            f"(found: {'; '.join(unmatched) or 'no segments'}; expected one of: {known})."
        )
    return matched, unmatched


def _first(ds: Dataset, sequence: str, item: str, frame: int | None = None) -> object:
    """An attribute from the shared or (when ``frame`` is given) the per-frame groups."""
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        groups.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if "SharedFunctionalGroupsSequence" in ds:
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        seq = group.get(sequence)
        if seq and item in seq[0]:
            return seq[0].get(item)
    return None


def _check_grid(ds: Dataset, geometry: StudyGeometry) -> None:
    _, rows, cols = geometry.shape
    if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
        raise ReferenceGeometryError(
            f"The reference SEG's frames are {int(ds.Rows)}×{int(ds.Columns)} (rows×columns), "
            f"the study's slices {rows}×{cols}; resample the reference onto the CT series."
        )
    spacing = _first(ds, "PixelMeasuresSequence", "PixelSpacing")
    if spacing is None:
        raise InvalidReferenceError("The reference SEG has no PixelSpacing (0028,0030).")
    expected = geometry.spacing_zyx[1:]
    got = tuple(float(v) for v in spacing)  # type: ignore[attr-defined]
    if not np.allclose(got, expected, rtol=SPACING_RTOL, atol=0):
        raise ReferenceGeometryError(
            f"The reference SEG's PixelSpacing is {got[0]:g}\\{got[1]:g} mm, the study's "
            f"{expected[0]:g}\\{expected[1]:g} mm; resample the reference onto the CT series."
        )
    orientation = _first(ds, "PlaneOrientationSequence", "ImageOrientationPatient", 0)
    want = np.array(geometry.row_cosine + geometry.column_cosine)
    if orientation is not None:
        have = np.array([float(v) for v in orientation])  # type: ignore[attr-defined]
        if not np.allclose(have, want, atol=ORIENTATION_ATOL):
            raise ReferenceGeometryError(
                f"The reference SEG's ImageOrientationPatient is {np.round(have, 4).tolist()}, "
                f"the study's {np.round(want, 4).tolist()}."
            )
    frame_uid = str(ds.get("FrameOfReferenceUID") or "")
    if frame_uid and uid_hash(frame_uid) != geometry.frame_of_reference_hash:
        raise ReferenceGeometryError(
            "The reference SEG is in another frame of reference than the study (its "
            f"FrameOfReferenceUID hashes to {uid_hash(frame_uid)}, the study's to "
            f"{geometry.frame_of_reference_hash}); was it made on another series?"
        )


def _slice_index(position: Sequence[float], geometry: StudyGeometry, frame: int) -> int:
    offset = np.asarray(position, dtype=np.float64) - np.asarray(geometry.origin)
    dz, dy, dx = geometry.spacing_zyx
    along = float(offset @ np.asarray(geometry.slice_normal)) / dz
    k = int(round(along))
    in_row = float(offset @ np.asarray(geometry.row_cosine)) / dx
    in_col = float(offset @ np.asarray(geometry.column_cosine)) / dy
    if abs(along - k) > POSITION_TOL or abs(in_row) > POSITION_TOL or abs(in_col) > POSITION_TOL:
        raise ReferenceGeometryError(
            f"Reference SEG frame {frame + 1} at ImagePositionPatient "
            f"{np.round(np.asarray(position, dtype=float), 3).tolist()} is not on a slice of the "
            f"study (it lies {along:.3f} slices along the normal and {in_row:.3f}/{in_col:.3f} "
            "pixels in-plane from the first slice's origin)."
        )
    if not 0 <= k < geometry.shape[0]:
        raise ReferenceGeometryError(
            f"Reference SEG frame {frame + 1} lies at slice {k}, outside the study's "
            f"{geometry.shape[0]} slices."
        )
    return k


def read_reference(
    data: bytes, geometry: StudyGeometry, classes: Sequence[ClassInfo]
) -> ReferenceMasks:
    """The reference SEG in ``data`` as masks by class index on ``geometry``'s grid."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise InvalidReferenceError("The reference SEG is empty; send a DICOM Part-10 file.")
    try:
        ds = pydicom.dcmread(io.BytesIO(bytes(data)))
    except Exception as exc:
        raise InvalidReferenceError(f"The reference is not a readable DICOM file: {exc}") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE):
        raise InvalidReferenceError(
            f"The reference must be a DICOM Segmentation, got SOP Class UID '{sop_class}' "
            f"(modality {ds.get('Modality', '?')})."
        )
    kind = str(ds.get("SegmentationType", "")).upper()
    if kind not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise InvalidReferenceError(f"Reference SegmentationType '{kind}' is not supported.")
    matched, unmatched = _match_segments(ds, classes)
    _check_grid(ds, geometry)
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise InvalidReferenceError(
            f"The reference SEG's pixel data cannot be read: {exc}"
        ) from exc
    n_frames = int(ds.get("NumberOfFrames", 1))
    pixels = pixels.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    scale = float(ds.get("MaximumFractionalValue", 1)) if kind == "FRACTIONAL" else 1.0
    masks = {index: np.zeros(geometry.shape, np.float32) for index in matched.values()}
    for frame in range(n_frames):
        position = _first(ds, "PlanePositionSequence", "ImagePositionPatient", frame)
        if position is None:
            raise InvalidReferenceError(
                f"Reference SEG frame {frame + 1} has no ImagePositionPatient."
            )
        k = _slice_index([float(v) for v in position], geometry, frame)  # type: ignore[attr-defined]
        if kind == "LABELMAP":
            for number, index in matched.items():
                masks[index][k] = np.maximum(masks[index][k], pixels[frame] == number)
            continue
        segment = _first(ds, "SegmentIdentificationSequence", "ReferencedSegmentNumber", frame)
        target = matched.get(int(str(segment))) if segment is not None else None
        if target is None:
            continue
        values = pixels[frame].astype(np.float32) / scale if scale > 0 else pixels[frame]
        masks[target][k] = np.maximum(masks[target][k], np.clip(values, 0.0, 1.0))
    return ReferenceMasks(masks, kind, unmatched, n_frames)


def score_reference(
    labels: np.ndarray, reference: ReferenceMasks, classes: Sequence[ClassInfo]
) -> ReferenceScores:
    """VolDice of the model's ``labels`` against each matched reference class."""
    names = {c.index: c.name for c in classes}
    if labels.shape != next(iter(reference.masks.values())).shape:
        raise ReferenceGeometryError(
            f"The stored prediction has shape {labels.shape}, the reference grid "
            f"{next(iter(reference.masks.values())).shape}."
        )
    voldice: dict[str, float] = {}
    cdice: dict[str, float] = {}
    for index, mask in sorted(reference.masks.items()):
        predicted = labels == index
        voldice[names[index]] = dice(predicted, mask >= 0.5)
        if reference.fractional:
            # The reference is the soft map here; the model's binary mask is the ground set.
            cdice[names[index]] = continuous_dice(mask, predicted.astype(np.float32))
    return ReferenceScores(
        voldice, cdice, reference.segmentation_type, reference.unmatched_segments
    )
