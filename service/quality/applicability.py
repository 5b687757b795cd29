"""Applicability checks: is a CT study inside what the model was made for? Run before inference.

A segmentation model answers every input, a head CT included (a single head slice once came
back with 148 mL of "lung" and a CT-1 grade). These checks say, per study and with a named
reason, when the input lies outside the model's domain, so that the answer is flagged (policy
``segment_and_flag``) or refused (policy ``refuse``, gRPC FAILED_PRECONDITION). They look only
at the CT volume in HU and its grid, never at the model's output, so they cost no inference:

* **no_aerated_lung** (body region): the aerated lungs found by the classical lung field
  (:func:`service.core.lung_field.aerated_lung_volume`: air inside the body, connected in 3D)
  must reach a plausible cross-section somewhere. Head, neck, abdomen and extremity series hold
  sinus, airway or bowel gas of a few cm² at most; a mid-chest slice holds 100-350 cm² of lung.
* **partial_thorax** (coverage): the lungs must span a plausible cranio-caudal extent and the
  series must not end inside them. Involvement (lesion share of the lungs) and the severity
  grade are meaningless on a few slices.
* **slice_thickness_out_of_range** and **spacing_out_of_range**: the model declares the ranges
  it was trained for in its manifest (defaults: thin-to-standard chest reconstructions); a
  2.5D model fed 10 mm slices sees neighbours it has never seen.
* **hu_calibration**: the air peak outside the lungs must sit near -1000 HU and the body's
  soft-tissue peak near fat/muscle. A wrong rescale (missing intercept, vendor offsets, a
  phantom shifted in HU) moves every threshold the model learned.

Contrast is told only from what the header states (ContrastBolusAgent); it is reported, not a
reason, because enhancement does not by itself move the lungs' HU much and the header is often
empty. All thresholds are named constants below; ``docs/monitoring.md`` explains them.

Everything here is a pure function of arrays and numbers (plus :func:`check_volume`, which reads
the grid and a few header fields of a ``CTVolume``), so it is tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from service.core.errors import StudyNotApplicableError
from service.core.lung_field import aerated_lung_volume
from service.core.manifest import (
    DEFAULT_PIXEL_SPACING_MM_RANGE,
    DEFAULT_SLICE_THICKNESS_MM_RANGE,
    ModelManifest,
)
from service.core.study_outcome import ApplicabilityOutcome

__all__ = [
    "Applicability",
    "ApplicabilityReason",
    "applicability_error",
    "check_applicability",
    "check_volume",
]


class ApplicabilityReason(StrEnum):
    """Why a study is outside the model's domain; the values are the metric and API labels."""

    NO_AERATED_LUNG = "no_aerated_lung"
    PARTIAL_THORAX = "partial_thorax"
    SLICE_THICKNESS_OUT_OF_RANGE = "slice_thickness_out_of_range"
    SPACING_OUT_OF_RANGE = "spacing_out_of_range"
    HU_CALIBRATION = "hu_calibration"


# --- body region and coverage -------------------------------------------------------------
#: In-plane pixel size (mm) at which the lung field is found: about 1/16 of the work of a
#: 512² slice at 0.7 mm, still 30+ pixels across a lung. Finer grids are strided to it.
ANALYSIS_PIXEL_MM = 2.5
#: The largest aerated-lung cross-section must reach this (cm²). Adult mid-chest: 200-350 cm²
#: for both lungs, a small child's about 80; paranasal sinuses plus nasal cavity or bowel gas
#: stay well under it (a head CT slice of the DICOM corpus: about 10 cm²).
MIN_LUNG_AREA_CM2 = 50.0
#: A slice belongs to the lungs' cranio-caudal extent when its lung area is at least this
#: share of the largest (the apex and the costophrenic recesses taper to nothing).
EXTENT_AREA_FRACTION = 0.1
#: The lungs must span at least this (mm) from apex to base. Adults: 200-300 mm at inspiration;
#: 150 leaves room for expiration and small patients, and fails any series of a few slices.
MIN_LUNG_EXTENT_MM = 150.0
#: The series ends inside the lungs (cut apex or base) when its first or last slice holds this
#: share of the largest lung area; a complete chest CT ends where the lungs have tapered off.
MAX_END_AREA_FRACTION = 0.5

# --- HU calibration ---------------------------------------------------------------------------
#: Stored values at or below this are padding outside the reconstruction circle (-2000, -3024),
#: not air; they take no part in the peaks.
PADDING_HU = -1500.0
AIR_HU = -1000.0
#: The air peak (mode of voxels in AIR_SEARCH_HU outside the lungs) may differ this much from
#: -1000 HU. Scanners keep water at 0 +/- 5 HU and air within about +/- 20; 60 tolerates noise
#: and the clipping of air at -1024 while catching a rescale offset of 100 HU or more.
AIR_TOLERANCE_HU = 60.0
AIR_SEARCH_HU = (-1300.0, -600.0)
#: The air peak is judged only when air outside the lungs is at least this share of the
#: (non-padding) voxels: a field of view cropped to the body has none, and that is no error.
MIN_AIR_FRACTION = 0.02
#: The soft-tissue peak (mode of voxels in TISSUE_SEARCH_HU) lies between fat (about -100) and
#: muscle/blood (about +40 to +60); a peak outside TISSUE_PEAK_RANGE_HU means shifted HU.
TISSUE_SEARCH_HU = (-300.0, 400.0)
TISSUE_PEAK_RANGE_HU = (-150.0, 110.0)
#: The tissue peak is judged only when that many (non-padding) voxels lie in TISSUE_SEARCH_HU.
MIN_TISSUE_FRACTION = 0.05
#: Histogram bin (HU) and smoothing (bins) for the peaks: noise of 10-30 HU spreads a peak over
#: a few bins; a 3-bin moving average finds its centre.
HISTOGRAM_BIN_HU = 10.0


@dataclass(frozen=True)
class Applicability:
    """The result of the checks: the reasons (empty when applicable), why, and what was measured.

    ``details`` maps each reason to one sentence with the measured value and the limit;
    ``measurements`` holds every number the checks looked at (None when not measurable).
    No patient data: the values describe the volume, not the person.
    """

    reasons: tuple[ApplicabilityReason, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)
    measurements: Mapping[str, float | None] = field(default_factory=dict)
    #: ContrastBolusAgent as the header states it ("" when absent); reported, not a reason.
    contrast_agent: str = ""
    #: The aerated lungs the checks found, on every ``lung_stride``-th pixel in-plane (the
    #: quality score reuses them: one lung field per study). Not persisted.
    aerated_lungs: np.ndarray | None = field(default=None, repr=False, compare=False)
    lung_stride: int = field(default=1, repr=False, compare=False)

    @property
    def applicable(self) -> bool:
        return not self.reasons

    @property
    def reason_values(self) -> list[str]:
        return [r.value for r in self.reasons]

    def outcome(self) -> ApplicabilityOutcome:
        """The study outcome's ``applicability`` part (unmeasured values left out)."""
        return ApplicabilityOutcome(
            applicable=self.applicable,
            reasons=self.reason_values,
            details={str(k): str(v) for k, v in self.details.items()},
            measurements={str(k): float(v) for k, v in self.measurements.items() if v is not None},
            contrast_agent=self.contrast_agent,
        )

    def describe(self) -> str:
        """One line naming every reason and its measured value, for logs and error details."""
        if not self.reasons:
            return "within the model's declared range"
        return "; ".join(
            f"{r.value}: {self.details.get(r.value, '')}".rstrip(": ") for r in self.reasons
        )


def check_applicability(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    *,
    slice_thickness_mm: float | None = None,
    manifest: ModelManifest | None = None,
    contrast_agent: str = "",
) -> Applicability:
    """Run every check on a (D, H, W) HU volume with voxel size ``spacing_zyx`` (mm).

    ``slice_thickness_mm`` is the reconstructed thickness from the header (SliceThickness);
    when absent the slice spacing stands for it. The ranges come from ``manifest`` (its
    ``slice_thickness_mm_range`` and ``pixel_spacing_mm_range``, defaults when unset).
    """
    if hu.ndim != 3 or 0 in hu.shape:
        raise ValueError(f"Argument 'hu' must be a non-empty (D, H, W) volume, got {hu.shape}.")
    dz, dy, dx = (float(v) for v in spacing_zyx)
    if not min(dz, dy, dx) > 0:
        raise ValueError(f"Argument 'spacing_zyx' must be positive mm, got {tuple(spacing_zyx)}.")
    reasons: list[ApplicabilityReason] = []
    details: dict[str, str] = {}
    measurements: dict[str, float | None] = {}

    def flag(reason: ApplicabilityReason, why: str) -> None:
        reasons.append(reason)
        details[reason.value] = why

    thickness_range = _range(manifest, "slice_thickness_mm_range", DEFAULT_SLICE_THICKNESS_MM_RANGE)
    spacing_range = _range(manifest, "pixel_spacing_mm_range", DEFAULT_PIXEL_SPACING_MM_RANGE)

    stride = max(1, int(round(ANALYSIS_PIXEL_MM / max(min(dy, dx), 1e-6))))
    coarse = np.asarray(hu[:, ::stride, ::stride], dtype=np.float32)
    pixel_mm2 = dy * stride * dx * stride
    lungs = aerated_lung_volume(coarse)
    areas_cm2 = lungs.sum(axis=(1, 2)) * pixel_mm2 / 100.0
    max_area = float(areas_cm2.max())
    measurements["aerated_lung_ml"] = float(areas_cm2.sum() * dz / 10.0)
    measurements["max_lung_area_cm2"] = max_area
    extent_mm = _extent_mm(areas_cm2, dz)
    measurements["lung_extent_mm"] = extent_mm
    ends = float(max(areas_cm2[0], areas_cm2[-1])) / max_area if max_area > 0 else 0.0
    measurements["end_area_fraction"] = ends

    # Body region first: without lungs, coverage has nothing to measure.
    if max_area < MIN_LUNG_AREA_CM2:
        flag(
            ApplicabilityReason.NO_AERATED_LUNG,
            f"largest aerated-lung cross-section {max_area:.1f} cm², at least "
            f"{MIN_LUNG_AREA_CM2:g} cm² expected in a chest CT",
        )
    if extent_mm < MIN_LUNG_EXTENT_MM or ends >= MAX_END_AREA_FRACTION:
        flag(
            ApplicabilityReason.PARTIAL_THORAX,
            f"lungs span {extent_mm:.0f} mm over {hu.shape[0]} slice(s) (at least "
            f"{MIN_LUNG_EXTENT_MM:g} mm expected) and the series ends at {ends:.0%} of the "
            f"largest lung area (under {MAX_END_AREA_FRACTION:.0%} expected)",
        )

    thickness = float(slice_thickness_mm) if slice_thickness_mm else dz
    measurements["slice_thickness_mm"] = thickness
    measurements["slice_spacing_mm"] = dz
    low, high = thickness_range
    # A single slice has no spacing of its own (the volume builder takes its thickness).
    worst = max(thickness, dz) if hu.shape[0] > 1 else thickness
    if not (low <= thickness and worst <= high):
        flag(
            ApplicabilityReason.SLICE_THICKNESS_OUT_OF_RANGE,
            f"slice thickness {thickness:g} mm, spacing {dz:g} mm; the model is declared for "
            f"{low:g}-{high:g} mm",
        )
    pixel = max(dy, dx)
    measurements["pixel_spacing_mm"] = pixel
    low, high = spacing_range
    if not (low <= min(dy, dx) and pixel <= high):
        flag(
            ApplicabilityReason.SPACING_OUT_OF_RANGE,
            f"pixel spacing {dy:g} x {dx:g} mm; the model is declared for {low:g}-{high:g} mm",
        )

    air, tissue = hu_peaks(coarse, lungs)
    measurements["air_peak_hu"] = air
    measurements["tissue_peak_hu"] = tissue
    problems = []
    if air is not None and abs(air - AIR_HU) > AIR_TOLERANCE_HU:
        problems.append(
            f"air peak at {air:.0f} HU (expected {AIR_HU:.0f} +/- {AIR_TOLERANCE_HU:g})"
        )
    if tissue is not None and not TISSUE_PEAK_RANGE_HU[0] <= tissue <= TISSUE_PEAK_RANGE_HU[1]:
        problems.append(
            f"soft-tissue peak at {tissue:.0f} HU (expected {TISSUE_PEAK_RANGE_HU[0]:g} to "
            f"{TISSUE_PEAK_RANGE_HU[1]:g})"
        )
    if air is None and tissue is None:
        problems.append("neither an air nor a soft-tissue peak was found")
    if problems:
        flag(ApplicabilityReason.HU_CALIBRATION, "; ".join(problems))
    return Applicability(
        tuple(reasons), details, measurements, contrast_agent.strip(), lungs, stride
    )


def hu_peaks(hu: np.ndarray, lungs: np.ndarray) -> tuple[float | None, float | None]:
    """The air peak (outside the lungs) and the soft-tissue peak in HU; None when too few voxels.

    Lung parenchyma (about -850 HU) would pull the air peak up, so the aerated lungs are left
    out of it; padding outside the reconstruction circle is left out of both.
    """
    valid = hu > PADDING_HU
    total = max(int(valid.sum()), 1)
    air_values = hu[valid & ~lungs]
    air_values = air_values[(air_values >= AIR_SEARCH_HU[0]) & (air_values <= AIR_SEARCH_HU[1])]
    air = _mode(air_values, AIR_SEARCH_HU) if air_values.size >= MIN_AIR_FRACTION * total else None
    tissue_values = hu[valid]
    tissue_values = tissue_values[
        (tissue_values >= TISSUE_SEARCH_HU[0]) & (tissue_values <= TISSUE_SEARCH_HU[1])
    ]
    enough = tissue_values.size >= MIN_TISSUE_FRACTION * total
    tissue = _mode(tissue_values, TISSUE_SEARCH_HU) if enough else None
    return air, tissue


def check_volume(volume: Any, manifest: ModelManifest | None = None) -> Applicability:
    """:func:`check_applicability` of a ``CTVolume`` (HU, grid and the header's thickness)."""
    first = volume.datasets[0] if volume.datasets else None
    thickness = _header_float(first, "SliceThickness")
    agent = str(getattr(first, "ContrastBolusAgent", "") or "") if first is not None else ""
    return check_applicability(
        volume.hu,
        volume.spacing_zyx,
        slice_thickness_mm=thickness,
        manifest=manifest,
        contrast_agent=agent,
    )


def applicability_error(result: Applicability, model_name: str) -> StudyNotApplicableError:
    """The error of the ``refuse`` policy: names every reason and its measured value."""
    return StudyNotApplicableError(
        f"The study is outside what model '{model_name}' was made for "
        f"({', '.join(result.reason_values)}): {result.describe()}. The server's "
        "applicability_policy is 'refuse'; send a chest CT within the model's range.",
        result,
    )


def _range(
    manifest: ModelManifest | None, name: str, default: tuple[float, float]
) -> tuple[float, float]:
    value = getattr(manifest, name, None) if manifest is not None else None
    return (float(value[0]), float(value[1])) if value is not None else default


def _extent_mm(areas_cm2: np.ndarray, dz: float) -> float:
    """Cranio-caudal extent (mm) of the slices holding at least EXTENT_AREA_FRACTION of the
    largest lung area; each slice counts its full spacing."""
    top = float(areas_cm2.max())
    if top <= 0:
        return 0.0
    inside = np.flatnonzero(areas_cm2 >= EXTENT_AREA_FRACTION * top)
    return float((inside[-1] - inside[0] + 1) * dz)


def _mode(values: np.ndarray, bounds: tuple[float, float]) -> float:
    """Centre (HU) of the most populated histogram bin after a 3-bin moving average."""
    edges = np.arange(bounds[0], bounds[1] + HISTOGRAM_BIN_HU, HISTOGRAM_BIN_HU)
    counts, edges = np.histogram(values, bins=edges)
    smooth = np.convolve(counts, np.ones(3) / 3.0, mode="same")
    index = int(np.argmax(smooth))
    return float((edges[index] + edges[index + 1]) / 2.0)


def _header_float(dataset: Any, keyword: str) -> float | None:
    if dataset is None:
        return None
    try:
        value = float(getattr(dataset, keyword))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value > 0 else None
