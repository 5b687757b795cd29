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

from service.errors import InvalidStudyError


def read_seg_labels(seg: bytes | str | Path, source_sop_instance_uids: Sequence[str]) -> np.ndarray:
    """Label volume (z, y, x) with z in the order of ``source_sop_instance_uids``.

    Segment number k becomes label value k (pulmoseg writes segment k for model class k);
    where segments overlap, the higher segment number wins.
    """
    data = seg if isinstance(seg, bytes) else Path(seg).read_bytes()
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        segmentation = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as exc:
        raise InvalidStudyError(f"Not a readable DICOM Segmentation: {exc}") from exc
    numbers = sorted(segmentation.segment_numbers)
    pixels = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=list(source_sop_instance_uids),
        segment_numbers=numbers,
        combine_segments=False,
        skip_overlap_checks=True,
        ignore_spatial_locations=True,
    )
    labels = np.zeros(pixels.shape[:3], dtype=np.uint8)
    for channel, number in enumerate(numbers):
        labels[pixels[..., channel] > 0] = number
    return labels
