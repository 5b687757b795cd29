"""A reference SEG as another tool (a reader's workstation) would write it, for the tests that
submit references: BINARY, its own segment numbering, MANUAL algorithm type."""

from __future__ import annotations

import io
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from service.core.classes import DEFAULT_CLASSES

CLASSES = {c.name: c for c in DEFAULT_CLASSES}


def reader_seg(
    sources: Sequence[pydicom.Dataset],
    labels: np.ndarray,
    names: Sequence[str],
    *,
    omit_empty_frames: bool = True,
) -> bytes:
    """A SEG of the exclusive class-index volume ``labels`` with segments ``names`` numbered
    1.. in that order."""
    masks = np.stack([labels == CLASSES[n].index for n in names], axis=-1)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"reader {name}",
            segmented_property_category=hd.sr.CodedConcept(
                CLASSES[name].category.value,
                CLASSES[name].category.scheme,
                CLASSES[name].category.meaning,
            ),
            segmented_property_type=hd.sr.CodedConcept(
                CLASSES[name].property_type.value,
                CLASSES[name].property_type.scheme,
                CLASSES[name].property_type.meaning,
            ),
            algorithm_type="MANUAL",
        )
        for i, name in enumerate(names)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=masks,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=77,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reader Workstation",
        manufacturer_model_name="Editor",
        software_versions="3.1",
        device_serial_number="42",
        omit_empty_frames=omit_empty_frames,
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()
