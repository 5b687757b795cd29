"""Writing an HU volume as a DICOM CT series: one conformant CT Image file per slice.

Reusable for any HU volume (service tests build variants from it); ``dciodvfy`` reports no
errors on its output. Geometry: arrays are ``(z, y, x)``; slice ``k`` sits at LPS
``origin + (0, 0, k * dz)`` with ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]`` (columns towards
patient left, rows towards posterior).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from training.phantom.checks import check_int, check_volume

#: Lung window: what a reader opens a chest CT with.
LUNG_WINDOW = (-600, 1500)
RESCALE_INTERCEPT = -1024


def default_origin_lps(
    shape_zyx: Sequence[int], spacing_zyx: Sequence[float]
) -> tuple[float, float, float]:
    """LPS position of voxel (0, 0, 0) that centres the volume on the scanner isocentre."""
    nz, ny, nx = shape_zyx
    dz, dy, dx = spacing_zyx
    return (-(nx - 1) / 2 * dx, -(ny - 1) / 2 * dy, -(nz - 1) / 2 * dz)


def write_ct_series(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    out_dir: Path,
    *,
    study_uid: str,
    series_uid: str,
    patient_name: str,
    patient_id: str,
    seed: int,
    origin_lps: Sequence[float] | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "Synthetic chest CT phantom",
    study_id: str = "1",
) -> list[Path]:
    """Write ``hu`` (z, y, x) as one CT Image file per slice, ``IM_0001.dcm`` …

    Float input is rounded to whole HU (what a CT stores); it must be finite.

    Stored values are ``HU + 1024`` (RescaleIntercept -1024): 12-bit unsigned when they fit,
    otherwise 16-bit (signed if any HU < -1024). UIDs of instances derive from ``series_uid``
    and ``seed``, dates from ``seed``, so rewriting gives byte-identical files.
    """
    hu = _integer_hu(hu)
    spacing = _check_spacing(spacing_zyx)
    for name, value in (
        ("study_uid", study_uid),
        ("series_uid", series_uid),
        ("patient_name", patient_name),
        ("patient_id", patient_id),
    ):
        if not isinstance(value, str) or not value:
            raise TypeError(f"Argument '{name}' must be a non-empty str, got {value!r}")
    check_int("seed", seed, minimum=0)
    stored, bits_stored, signed = _stored_pixels(hu)
    origin = tuple(float(v) for v in (origin_lps or default_origin_lps(hu.shape, spacing)))
    if len(origin) != 3:
        raise ValueError(f"Argument 'origin_lps' must have 3 values (x, y, z), got {origin}")
    frame_uid = frame_of_reference_uid or generate_uid(entropy_srcs=[study_uid, "frame"])
    date, time = _acquisition_datetime(seed)
    dz, dy, dx = spacing
    nz, ny, nx = hu.shape
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    common = Dataset()
    _patient_and_study(common, patient_name, patient_id, study_uid, study_id, date, time)
    _series_and_equipment(
        common, series_uid, series_number, series_description, frame_uid, date, time
    )
    common.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    common.PixelSpacing = [_ds(dy), _ds(dx)]
    common.SliceThickness = _ds(dz)
    common.SpacingBetweenSlices = _ds(dz)
    common.ReconstructionDiameter = _ds(max(nx * dx, ny * dy))
    common.SamplesPerPixel = 1
    common.PhotometricInterpretation = "MONOCHROME2"
    common.Rows, common.Columns = ny, nx
    common.BitsAllocated = 16
    common.BitsStored = bits_stored
    common.HighBit = bits_stored - 1
    common.PixelRepresentation = 1 if signed else 0
    common.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    common.RescaleSlope = _ds(1)
    common.RescaleType = "HU"
    common.WindowCenter = _ds(LUNG_WINDOW[0])
    common.WindowWidth = _ds(LUNG_WINDOW[1])
    common.WindowCenterWidthExplanation = "LUNG"

    paths = []
    for k in range(nz):
        ds = Dataset()
        ds.update(common)
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(seed), "instance", str(k)])
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        position = (origin[0], origin[1], origin[2] + k * dz)
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position[2])
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.file_meta = _file_meta(sop_uid)
        path = out_dir / f"IM_{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _integer_hu(hu: object) -> np.ndarray:
    hu = check_volume("hu", hu)
    if np.issubdtype(hu.dtype, np.integer):
        return hu
    if not np.issubdtype(hu.dtype, np.floating):
        raise TypeError(f"Argument 'hu' must hold integer or float HU, got dtype {hu.dtype}")
    if not np.isfinite(hu).all():
        raise ValueError("Argument 'hu' must be finite, got NaN or infinite values")
    return np.rint(hu).astype(np.int64)


def _check_spacing(spacing_zyx: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(v) for v in spacing_zyx)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"Argument 'spacing_zyx' must be 3 positive mm values (dz, dy, dx), "
            f"got {tuple(spacing_zyx)}"
        )
    return values


def _stored_pixels(hu: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """Stored values and (BitsStored, signed) for RescaleIntercept -1024."""
    lo, hi = int(hu.min()) - RESCALE_INTERCEPT, int(hu.max()) - RESCALE_INTERCEPT
    if lo >= 0 and hi <= 4095:
        return (hu.astype(np.int32) - RESCALE_INTERCEPT).astype("<u2"), 12, False
    if lo >= 0 and hi <= 65535:
        return (hu.astype(np.int32) - RESCALE_INTERCEPT).astype("<u2"), 16, False
    if lo >= -32768 and hi <= 32767:
        return (hu.astype(np.int32) - RESCALE_INTERCEPT).astype("<i2"), 16, True
    raise ValueError(
        f"Argument 'hu' range [{hu.min()}, {hu.max()}] HU does not fit 16-bit "
        "storage with RescaleIntercept -1024: expected within [-1024, 64511] or "
        "[-33792, 31743]"
    )


def _ds(value: float) -> DSfloat:
    """A DS of ``value`` that fits the 16 characters of the VR (what ``DS(...)`` makes for a
    number, typed)."""
    return DSfloat(value, auto_format=True)


def _acquisition_datetime(seed: int) -> tuple[str, str]:
    """A fixed, plausible date/time per seed (never the wall clock: reruns must be identical)."""
    moment = dt.datetime(2020, 1, 1, 8, 0, 0) + dt.timedelta(
        days=seed % 1461, seconds=(seed // 1461) % 36000
    )
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def _patient_and_study(
    ds: Dataset,
    patient_name: str,
    patient_id: str,
    study_uid: str,
    study_id: str,
    date: str,
    time: str,
) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic chest CT"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom, no patient data"
    ds.StudyInstanceUID = study_uid
    ds.StudyID = study_id


def _series_and_equipment(
    ds: Dataset,
    series_uid: str,
    series_number: int,
    description: str,
    frame_uid: str,
    date: str,
    time: str,
) -> None:
    ds.Modality = "CT"
    ds.Manufacturer = "pulmoseg"
    ds.ManufacturerModelName = "pulmoseg phantom"
    ds.SoftwareVersions = "1"
    ds.SeriesDescription = description
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.KVP = _ds(120)
    ds.ConvolutionKernel = "STANDARD"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PULMOSEG_1"
    return meta


__all__ = ["default_origin_lps", "write_ct_series"]
