"""Read a DICOM-SEG back into a label volume aligned with its source series.

Used by the demo, ``pulmoseg evaluate`` and the tests to check what a receiver would see:
the labels as encoded in the file, not the array we meant to write.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from service.core.errors import InvalidStudyError


def read_seg_labels(seg: bytes | str | Path, source_sop_instance_uids: Sequence[str]) -> np.ndarray:
    """Label volume (z, y, x) with z in the order of ``source_sop_instance_uids``.

    Segment number k becomes label value k (pulmoseg writes segment k for model class k), for
    BINARY and LABELMAP segmentations alike.
    """
    data = seg if isinstance(seg, bytes) else Path(seg).read_bytes()
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        segmentation = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as exc:
        raise InvalidStudyError(f"Not a readable DICOM Segmentation: {exc}") from exc
    labels = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=list(source_sop_instance_uids),
        combine_segments=True,
        relabel=False,
        skip_overlap_checks=True,
    )
    return np.asarray(labels, dtype=np.uint8)
