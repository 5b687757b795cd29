"""Reference SEGs written independently with highdicom, read back onto the study grid.

Each reference differs from pulmoseg's own SEG layout in one way a real tool's output does:
segment order, codes order, omitted frames, a subset of source instances, FRACTIONAL and
LABELMAP encodings; wrong geometry must fail with a message that says what differs.
"""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import SPACING, study_labels
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from service.core.classes import DEFAULT_CLASSES
from service.core.errors import InvalidReferenceError, ReferenceGeometryError
from service.core.segmentation_metrics import dice
from service.quality.geometry import StudyGeometry
from service.quality.reference import read_reference, score_reference
from training.phantom import write_ct_series

CLASSES = {c.name: c for c in DEFAULT_CLASSES}


def _description(number: int, name: str, kind: str = "MANUAL") -> hd.seg.SegmentDescription:
    c = CLASSES[name]
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"ref {name}",
        segmented_property_category=hd.sr.CodedConcept(
            c.category.value, c.category.scheme, c.category.meaning
        ),
        segmented_property_type=hd.sr.CodedConcept(
            c.property_type.value, c.property_type.scheme, c.property_type.meaning
        ),
        algorithm_type=kind,
    )


def _reference(
    sources: list[pydicom.Dataset],
    masks: np.ndarray,
    names: list[str],
    *,
    kind: str = "BINARY",
    omit_empty_frames: bool = True,
) -> bytes:
    """A reference SEG with segments ``names`` (numbered 1..n in that order)."""
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=kind,
        segment_descriptions=[_description(i + 1, n) for i, n in enumerate(names)],
        series_instance_uid=generate_uid(),
        series_number=40,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Other Tool",
        manufacturer_model_name="Editor",
        software_versions="9",
        device_serial_number="1",
        omit_empty_frames=omit_empty_frames,
        **(
            {"fractional_type": "PROBABILITY", "max_fractional_value": 200}
            if kind == "FRACTIONAL"
            else {}
        ),
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def geometry(ct_volume) -> StudyGeometry:
    return StudyGeometry.from_volume(ct_volume)


def _stack(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """(z, y, x, n) boolean masks of classes ``names`` from a label volume."""
    return np.stack([labels == CLASSES[n].index for n in names], axis=-1)


def test_other_segment_order_matches_by_code(ct_volume, geometry):
    labels = study_labels()
    names = ["consolidation", "lung", "ggo"]  # neither pulmoseg's numbering nor its order
    data = _reference(ct_volume.datasets, _stack(labels, names), names)
    ref = read_reference(data, geometry, DEFAULT_CLASSES)
    assert ref.segmentation_type == "BINARY" and ref.unmatched_segments == []
    scores = score_reference(labels, ref, DEFAULT_CLASSES)
    assert scores.voldice == {"lung": 1.0, "ggo": 1.0, "consolidation": 1.0}
    assert scores.continuous_dice == {}


def test_sources_in_reverse_order_still_place_frames_by_position(ct_volume, geometry):
    """The other tool lists the slices head-first: frames land by position, not by index."""
    labels = study_labels()
    names = ["ggo", "lung"]
    data = _reference(list(reversed(ct_volume.datasets)), _stack(labels[::-1], names), names)
    ref = read_reference(data, geometry, DEFAULT_CLASSES)
    assert set(ref.masks) == {1, 2}
    np.testing.assert_array_equal(ref.masks[2] >= 0.5, labels == 2)
    np.testing.assert_array_equal(ref.masks[1] >= 0.5, labels == 1)


def test_eroded_reference_scores_expected_dice(ct_volume, geometry):
    labels = study_labels()
    eroded = labels.copy()
    eroded[:, 8, :] = np.where(labels[:, 8, :] == 2, 1, labels[:, 8, :])  # one row of GGO gone
    names = ["lung", "ggo", "consolidation"]
    data = _reference(ct_volume.datasets, _stack(eroded, names), names)
    scores = score_reference(
        labels, read_reference(data, geometry, DEFAULT_CLASSES), DEFAULT_CLASSES
    )
    assert scores.voldice["ggo"] == pytest.approx(dice(labels == 2, eroded == 2))
    assert scores.voldice["ggo"] == pytest.approx(2 * 7 / (8 + 7))
    assert scores.voldice["consolidation"] == 1.0


def test_subset_of_source_instances_and_unknown_segment(ct_volume, geometry):
    """A reference made on slices 2-4 only, with an extra segment no class matches."""
    labels = study_labels()
    sources = ct_volume.datasets[2:5]
    masks = np.stack([labels[2:5] == 2, np.zeros_like(labels[2:5], dtype=bool)], axis=-1)
    masks[0, 0, 0, 1] = True
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type="BINARY",
        segment_descriptions=[
            _description(1, "ggo"),
            hd.seg.SegmentDescription(
                segment_number=2,
                segment_label="nodule",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Nodule,
                algorithm_type="MANUAL",
            ),
        ],
        series_instance_uid=generate_uid(),
        series_number=41,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Other Tool",
        manufacturer_model_name="Editor",
        software_versions="9",
        device_serial_number="1",
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    ref = read_reference(buffer.getvalue(), geometry, DEFAULT_CLASSES)
    assert list(ref.masks) == [2]
    assert len(ref.unmatched_segments) == 1 and "Nodule" in ref.unmatched_segments[0]
    np.testing.assert_array_equal(ref.masks[2] >= 0.5, labels == 2)  # GGO is only on 2-4


def test_fractional_reference_gives_continuous_dice(ct_volume, geometry):
    labels = study_labels()
    soft = np.where(labels == 2, 0.5, 0.0).astype(np.float32)  # half-confident, right support
    data = _reference(ct_volume.datasets, soft[..., None], ["ggo"], kind="FRACTIONAL")
    ref = read_reference(data, geometry, DEFAULT_CLASSES)
    assert ref.fractional
    scores = score_reference(labels, ref, DEFAULT_CLASSES)
    assert scores.voldice == {"ggo": 1.0}  # binarised at 0.5
    assert scores.continuous_dice["ggo"] == pytest.approx(1.0, abs=1e-6)
    quarter = np.where(labels == 2, 0.25, 0.0).astype(np.float32)
    data = _reference(ct_volume.datasets, quarter[..., None], ["ggo"], kind="FRACTIONAL")
    scores = score_reference(
        labels, read_reference(data, geometry, DEFAULT_CLASSES), DEFAULT_CLASSES
    )
    assert scores.voldice == {"ggo": 0.0}


def test_labelmap_reference(ct_volume, geometry):
    labels = study_labels()
    names = ["ggo", "consolidation", "lung"]
    relabelled = np.zeros_like(labels)
    for number, name in enumerate(names, start=1):
        relabelled[labels == CLASSES[name].index] = number
    data = _reference(ct_volume.datasets, relabelled, names, kind="LABELMAP")
    ref = read_reference(data, geometry, DEFAULT_CLASSES)
    assert ref.segmentation_type == "LABELMAP"
    scores = score_reference(labels, ref, DEFAULT_CLASSES)
    assert scores.voldice == {"lung": 1.0, "ggo": 1.0, "consolidation": 1.0}


def _other_series(tmp_path, ct_volume, **kwargs) -> list[pydicom.Dataset]:
    args = {
        "spacing_zyx": SPACING,
        "origin_lps": ct_volume.origin.tolist(),
        "frame_of_reference_uid": ct_volume.frame_of_reference_uid,
    } | kwargs
    hu = (
        np.zeros(ct_volume.shape, np.float32)
        if "shape" not in args
        else np.zeros(args.pop("shape"), np.float32)
    )
    paths = write_ct_series(
        hu,
        args.pop("spacing_zyx"),
        tmp_path,
        study_uid=str(ct_volume.datasets[0].StudyInstanceUID),
        series_uid=generate_uid(),
        patient_name="Phantom^Quality",
        patient_id="PQ0001",
        seed=1,
        **args,
    )
    return [pydicom.dcmread(p) for p in paths]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"spacing_zyx": (2.5, 0.7, 0.8)},
            r"PixelSpacing is 0\.7\\0\.8 mm, the study's 0\.75\\0\.8",
        ),
        ({"shape": (8, 30, 36)}, r"frames are 30×36 .*study's slices 32×36"),
        ({"origin_lps": "half-slice"}, r"frame \d+ .* is not on a slice of the study"),
        ({"frame_of_reference_uid": "other"}, r"another frame of reference"),
    ],
)
def test_wrong_geometry_is_an_error_naming_the_difference(
    tmp_path, ct_volume, geometry, kwargs, message
):
    if kwargs.get("origin_lps") == "half-slice":
        kwargs = {"origin_lps": (ct_volume.origin + ct_volume.slice_normal * 1.25).tolist()}
    if kwargs.get("frame_of_reference_uid") == "other":
        kwargs = {"frame_of_reference_uid": generate_uid()}
    sources = _other_series(tmp_path, ct_volume, **kwargs)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    masks = np.zeros((*shape, 1), bool)
    masks[2, 5:9, 5:9, 0] = True
    data = _reference(sources, masks, ["ggo"])
    with pytest.raises(ReferenceGeometryError, match=message):
        read_reference(data, geometry, DEFAULT_CLASSES)


def test_not_a_seg_and_no_matching_segment(ct_series, ct_volume, geometry):
    buffer = io.BytesIO()
    ct_series[0].save_as(buffer)
    with pytest.raises(InvalidReferenceError, match="must be a DICOM Segmentation, got SOP Class"):
        read_reference(buffer.getvalue(), geometry, DEFAULT_CLASSES)
    with pytest.raises(InvalidReferenceError, match="not a readable DICOM file"):
        read_reference(b"not dicom at all", geometry, DEFAULT_CLASSES)
    lung_only = [c for c in DEFAULT_CLASSES if c.name in ("background", "lung")]
    data = _reference(ct_volume.datasets, _stack(study_labels(), ["ggo"]), ["ggo"])
    with pytest.raises(
        InvalidReferenceError, match=r"No segment .*DCM 112120.*expected one of: SCT 39607008"
    ):
        read_reference(data, geometry, lung_only)
