"""A synthetic study through the whole graph before a model serves.

A model file can load and still be unable to segment anything: a manifest that does not match
the network's output, a GPU provider that fails only when it first runs (missing cuDNN), a
lung-field step the manifest asks for that breaks. Without this, such a version reports
SERVING and fails every caller. The server runs this small synthetic CT (a body with two
aerated lungs, in memory, no patient) through the same
:class:`~service.app.study_runner.StudyRunner` before it reports SERVING or swaps in a reloaded
version; a failure refuses the version with the reason, and the old one keeps serving. It also
moves some one-time costs (highdicom's standard tables, the network planned for its input
size) from the first caller to load time; measured on a 300-slice study, most of a fresh
process's first-study slowness is memory growth, which a small study does not remove.
"""

from __future__ import annotations

import logging
import time
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from service.core.dicom_uids import CT_IMAGE_STORAGE
from service.core.errors import ModelError
from service.core.options import ApplicabilityPolicy

if TYPE_CHECKING:
    from service.app.study_runner import StudyRunner

log = logging.getLogger(__name__)

#: Small enough to cost little beyond the one-time work; the network still runs at its own
#: input size (the predictor resizes to it).
WARM_UP_SLICES = 4
WARM_UP_SIZE = 64
_SPACING_MM = 5.0  # 64 × 5 mm: a 32 cm field of view, an adult chest


def synthetic_chest(size: int = WARM_UP_SIZE) -> np.ndarray:
    """HU image of one axial slice: air, a soft-tissue body, two aerated lungs."""
    y, x = np.mgrid[:size, :size] / size - 0.5
    hu = np.full((size, size), -1000.0)
    hu[(x / 0.45) ** 2 + (y / 0.32) ** 2 <= 1] = 40.0
    for centre in (-0.2, 0.2):
        hu[((x - centre) / 0.16) ** 2 + (y / 0.24) ** 2 <= 1] = -850.0
    return hu


def warm_up_instances(slices: int = WARM_UP_SLICES, size: int = WARM_UP_SIZE) -> list[bytes]:
    """A synthetic CT series as DICOM Part-10 files, ready for ``StudyRunner.segment``."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = (synthetic_chest(size) + 1024).astype(np.uint16)  # rescale intercept -1024
    blobs = []
    for index in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID, ds.StudyID = "", "", ""
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        corner = -size * _SPACING_MM / 2
        ds.ImagePositionPatient = [corner, corner, index * _SPACING_MM]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [_SPACING_MM, _SPACING_MM]
        ds.SliceThickness = _SPACING_MM
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels.tobytes()
        buffer = BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        blobs.append(buffer.getvalue())
    return blobs


def warm_up(runner: StudyRunner) -> float:
    """Segment the synthetic study with ``runner``; seconds taken. ModelError if it fails."""
    started = time.perf_counter()
    try:
        # The synthetic study is no chest CT; it tests the model, not the input: never refused.
        runner.segment(
            warm_up_instances(), applicability_policy=ApplicabilityPolicy.SEGMENT_AND_FLAG
        )
    except Exception as exc:
        raise ModelError(
            f"The model could not segment the warm-up study ({WARM_UP_SLICES} synthetic "
            f"{WARM_UP_SIZE}² CT slices): {type(exc).__name__}: {exc}"
        ) from exc
    seconds = time.perf_counter() - started
    log.info("warm-up study segmented in %.2f s", seconds)
    return seconds
