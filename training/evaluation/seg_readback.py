"""Read a BINARY DICOM-SEG back into a label volume with pydicom alone.

The demo and training-side checks score what the service returned without using the service's
own SEG code (training must not import it, and an independent reader is the stronger check):
frames are placed by the SOP Instance UID each one references, classes are recognised by the
segment's coded property type (from the class catalogue), never by segment number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from service.core.classes import catalogue_class


def _series_order(study_dir: Path) -> list[str]:
    """SOP Instance UIDs of the CT slices in ``study_dir``, ordered along the slice normal."""
    slices = []
    for path in sorted(study_dir.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if getattr(ds, "Modality", "") != "CT" or "ImagePositionPatient" not in ds:
            continue
        cosines = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        normal = np.cross(cosines[:3], cosines[3:])
        along = float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), normal))
        slices.append((along, str(ds.SOPInstanceUID)))
    if not slices:
        raise ValueError(f"Folder '{study_dir}' holds no CT slices to place the SEG on.")
    return [uid for _, uid in sorted(slices)]


def read_seg_labels(seg_path: Path, study_dir: Path, class_names: Sequence[str]) -> np.ndarray:
    """(z, y, x) uint8 labels, index = position of the class name in ``class_names``."""
    seg = pydicom.dcmread(seg_path)
    if seg.SegmentationType != "BINARY":
        raise ValueError(f"SEG '{seg_path}' is {seg.SegmentationType}; this reader needs BINARY.")
    code_to_index = {}
    for index, name in enumerate(class_names):
        if index:
            code = catalogue_class(name).property_type
            code_to_index[(code.scheme, code.value)] = index
    segment_index = {}
    for item in seg.SegmentSequence:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        key = (str(code.CodingSchemeDesignator), str(code.CodeValue))
        if key in code_to_index:
            segment_index[int(item.SegmentNumber)] = code_to_index[key]
    order = {uid: z for z, uid in enumerate(_series_order(study_dir))}
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    labels = np.zeros((len(order), int(seg.Rows), int(seg.Columns)), dtype=np.uint8)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        z = order[str(source.ReferencedSOPInstanceUID)]
        if number in segment_index:
            labels[z][frame.astype(bool)] = segment_index[number]
    return labels
