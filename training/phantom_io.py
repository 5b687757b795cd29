"""Writing phantom studies as real files: a DICOM CT series, NIfTI volumes and a manifest.

The training code reads real formats only, so the phantom goes through the same doors a user's
archive does. The DICOM series is a conformant CT Image IOD (``dciodvfy`` reports no errors)
and :func:`write_ct_series` is reusable for any HU volume (service tests build variants from it).

Geometry: arrays are ``(z, y, x)``; slice ``k`` sits at LPS ``origin + (0, 0, k * dz)`` with
ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]`` (columns towards patient left, rows towards
posterior). The NIfTI files hold the same voxels transposed to ``(x, y, z)`` with an affine in
RAS, so both formats map each voxel to the same physical point.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DS
from tqdm import tqdm

from training.phantom import (
    LesionMix,
    is_lesion_free,
    phantom_spacing,
    study_seed,
    synthesize_study,
)
from training.phantom_grid import check_fraction, check_int

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "pulmoseg-phantom"
MANIFEST_VERSION = 1
#: Lung window: what a reader opens a chest CT with.
LUNG_WINDOW = (-600, 1500)
RESCALE_INTERCEPT = -1024
_CLASS_NAMES = {0: "background", 1: "lung", 2: "ggo", 3: "consolidation"}


def study_uids(seed: int, index: int, size: int, slices: int) -> tuple[str, str]:
    """(StudyInstanceUID, SeriesInstanceUID), reproducible from what determines the pixels."""
    base = ["pulmoseg-phantom", str(seed), str(index), str(size), str(slices)]
    return (
        generate_uid(entropy_srcs=[*base, "study"]),
        generate_uid(entropy_srcs=[*base, "series"]),
    )


def default_origin_lps(
    shape_zyx: Sequence[int], spacing_zyx: Sequence[float]
) -> tuple[float, float, float]:
    """LPS position of voxel (0, 0, 0) that centres the volume on the scanner isocentre."""
    nz, ny, nx = shape_zyx
    dz, dy, dx = spacing_zyx
    return (-(nx - 1) / 2 * dx, -(ny - 1) / 2 * dy, -(nz - 1) / 2 * dz)


def nifti_affine(spacing_zyx: Sequence[float], origin_lps: Sequence[float]) -> np.ndarray:
    """RAS affine for data stored as ``(x, y, z)``: LPS (x, y) flip sign, z stays."""
    dz, dy, dx = (float(v) for v in spacing_zyx)
    x0, y0, z0 = (float(v) for v in origin_lps)
    return np.array(
        [[-dx, 0.0, 0.0, -x0], [0.0, -dy, 0.0, -y0], [0.0, 0.0, dz, z0], [0.0, 0.0, 0.0, 1.0]]
    )


def write_nifti(
    volume_zyx: np.ndarray, spacing_zyx: Sequence[float], origin_lps: Sequence[float], path: Path
) -> Path:
    """Write a ``(z, y, x)`` volume as NIfTI-1 (dtype kept) with scanner-frame q/s-forms."""
    _check_volume("volume_zyx", volume_zyx)
    image = nib.Nifti1Image(
        np.ascontiguousarray(np.transpose(volume_zyx, (2, 1, 0))),
        nifti_affine(spacing_zyx, origin_lps),
    )
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


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


def generate_dataset(
    out_dir: Path,
    studies: int,
    seed: int,
    size: int = 128,
    slices: int = 48,
    labeled_fraction: float = 1.0,
    lesion_free_fraction: float = 0.2,
    progress: bool = True,
    lesion_mix: LesionMix | None = None,
) -> Path:
    """Generate ``studies`` phantom studies under ``out_dir`` and return the manifest path.

    Study ``i`` depends only on (seed, i, size, slices, lesion_free_fraction, lesion_mix; None
    is the default :class:`LesionMix`), so a larger
    data set extends a smaller one. ``labeled`` marks the first
    ``round(labeled_fraction * studies)`` studies of a seeded permutation: the ones training
    may use labels of (label files are written for all, for evaluation).
    """
    check_int("studies", studies, minimum=1)
    check_int("seed", seed, minimum=0)
    spacing = phantom_spacing(size, slices)
    check_fraction("labeled_fraction", labeled_fraction)
    check_fraction("lesion_free_fraction", lesion_free_fraction)
    if not isinstance(out_dir, str | os.PathLike):
        raise TypeError(f"Argument 'out_dir' must be a path, got {type(out_dir).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    mix = LesionMix() if lesion_mix is None else lesion_mix
    n_labeled = math.floor(labeled_fraction * studies + 0.5)
    order = np.random.default_rng([seed, 0x1ABE1]).permutation(studies)
    labeled = {int(i) for i in order[:n_labeled]}
    records = []
    for i in tqdm(range(studies), desc="phantom", unit="study", disable=not progress):
        records.append(
            _write_study(out_dir, seed, i, size, slices, lesion_free_fraction, i in labeled, mix)
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "seed": seed,
        "num_studies": studies,
        "size": size,
        "slices": slices,
        "spacing_zyx": list(spacing),
        "labeled_fraction": labeled_fraction,
        "lesion_free_fraction": lesion_free_fraction,
        "lesion_mix": mix.to_dict(),
        "classes": {str(k): v for k, v in _CLASS_NAMES.items()},
        "axes": "NIfTI (x, y, z) RAS affine; DICOM LPS, slice index grows towards superior",
        "studies": records,
    }
    path = out_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    logger.info(
        "phantom data set written: %d studies (%d labeled, %d with lesions) in %s",
        studies,
        n_labeled,
        sum(r["has_lesions"] for r in records),
        out_dir,
    )
    return path


def read_phantom_manifest(path: Path) -> dict[str, Any]:
    """Load a phantom manifest, resolving each study's relative paths against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Argument 'path': no phantom manifest at {path}")
    data = json.loads(path.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"Argument 'path': {path} is not a {MANIFEST_FORMAT} manifest "
            f"(format={data.get('format')!r})"
        )
    for record in data["studies"]:
        for key in ("image", "label", "dicom"):
            record[f"{key}_path"] = str(path.parent / record[key])
    return data


# --------------------------------------------------------------------------------------------


def _write_study(
    out_dir: Path,
    seed: int,
    index: int,
    size: int,
    slices: int,
    lesion_free_fraction: float,
    labeled: bool,
    lesion_mix: LesionMix,
) -> dict[str, Any]:
    sseed = study_seed(seed, index)
    lesion_free = is_lesion_free(seed, index, lesion_free_fraction)
    study = synthesize_study(
        sseed, size, slices, with_lesions=not lesion_free, lesion_mix=lesion_mix
    )
    study_id = f"phantom_{index:04d}"
    study_uid, series_uid = study_uids(seed, index, size, slices)
    folder = out_dir / study_id
    write_ct_series(
        study.hu,
        study.spacing_zyx,
        folder / "dicom",
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=f"PHANTOM^{index:04d}",
        patient_id=f"PHANTOM-{index:04d}",
        seed=sseed,
        origin_lps=study.origin_lps,
        study_id=f"{index:04d}",
    )
    write_nifti(study.hu, study.spacing_zyx, study.origin_lps, folder / "image.nii.gz")
    write_nifti(study.label, study.spacing_zyx, study.origin_lps, folder / "label.nii.gz")
    return {
        "id": study_id,
        "image": f"{study_id}/image.nii.gz",
        "label": f"{study_id}/label.nii.gz",
        "dicom": f"{study_id}/dicom",
        "labeled": labeled,
        "has_lesions": study.has_lesions,
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "lesion_voxels": study.lesion_voxels(),
        "lung_voxels": int(np.count_nonzero(study.label == 1)),
        "num_lesions": len(study.lesions),
        "shape_zyx": list(study.hu.shape),
        "spacing_zyx": list(study.spacing_zyx),
        "origin_lps": list(study.origin_lps),
        "noise_std_hu": study.noise_std_hu,
        "seed": sseed,
    }


def _check_volume(name: str, volume: object) -> np.ndarray:
    if not isinstance(volume, np.ndarray):
        raise TypeError(f"Argument '{name}' must be a numpy array, got {type(volume).__name__}")
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(
            f"Argument '{name}' must be a non-empty 3-D (z, y, x) array, got shape {volume.shape}"
        )
    return volume


def _integer_hu(hu: object) -> np.ndarray:
    hu = _check_volume("hu", hu)
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
    return values  # type: ignore[return-value]


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


def _ds(value: float) -> DS:
    return DS(value, auto_format=True)


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
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PULMOSEG_1"
    return meta


__all__ = [
    "MANIFEST_NAME",
    "default_origin_lps",
    "generate_dataset",
    "nifti_affine",
    "read_phantom_manifest",
    "study_uids",
    "write_ct_series",
    "write_nifti",
]
