"""DICOM-SEG writer: round trip through highdicom, references, codes, and dciodvfy."""

from __future__ import annotations

import copy
import dataclasses
import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, generate_uid

from service.core.classes import DEFAULT_CLASSES
from service.core.manifest import ModelManifest
from service.dicom.seg_writer import build_segmentation, segmentation_to_bytes
from service.dicom.volume import CTVolume, series_to_volume
from tests.dicom_validation import dciodvfy_errors
from training.phantom import write_ct_series

SPACING = (2.5, 0.75, 0.8)
SHAPE = (6, 32, 36)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> CTVolume:
    writer = write_ct_series
    hu = np.random.default_rng(0).integers(-1000, 400, SHAPE).astype(np.float32)
    paths = writer(
        hu,
        SPACING,
        tmp_path_factory.mktemp("ct"),
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Seg",
        patient_id="PS0001",
        seed=0,
    )
    return series_to_volume([pydicom.dcmread(p) for p in reversed(paths)])


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-test-net",
        version="1.2.0",
        classes=list(DEFAULT_CLASSES),
        slice_context=3,
        hu_window=(-1000.0, 200.0),
        input_size=(32, 36),
    )


def lesion_labels(shape=SHAPE) -> np.ndarray:
    """Lung in slices 1-4, GGO inside it on slices 2-3; no consolidation (an empty class)."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[1:5, 4:28, 3:30] = 1
    labels[2:4, 10:16, 8:20] = 2
    return labels


def read_back(seg: hd.seg.Segmentation, volume: CTVolume) -> tuple[pydicom.Dataset, np.ndarray]:
    data = segmentation_to_bytes(seg)
    dataset = pydicom.dcmread(io.BytesIO(data))
    parsed = hd.seg.Segmentation.from_dataset(dataset)
    uids = [ds.SOPInstanceUID for ds in volume.datasets]
    labels = parsed.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False)
    return dataset, labels


@pytest.mark.parametrize("labels_kind", ["lesions", "all-background", "random"])
def test_binary_round_trip_and_dciodvfy_clean(volume, manifest, labels_kind):
    if labels_kind == "lesions":
        labels = lesion_labels()
    elif labels_kind == "all-background":
        labels = np.zeros(SHAPE, dtype=np.uint8)
    else:
        labels = np.random.default_rng(5).integers(0, 4, SHAPE).astype(np.uint8)
    seg = build_segmentation(volume, labels, manifest, software_version="0.1.0")
    dataset, back = read_back(seg, volume)
    np.testing.assert_array_equal(back, labels)
    assert dataset.SegmentationType == "BINARY"
    assert dciodvfy_errors(segmentation_to_bytes(seg)) == []


def test_every_foreground_class_is_a_segment_with_manifest_codes(volume, manifest):
    seg = build_segmentation(volume, lesion_labels(), manifest, software_version="0.1.0")
    segments = seg.SegmentSequence
    assert [s.SegmentNumber for s in segments] == [1, 2, 3]
    assert [s.SegmentLabel for s in segments] == ["lung", "ggo", "consolidation"]
    ggo = segments[1]
    assert ggo.SegmentedPropertyTypeCodeSequence[0].CodeValue == "112120"
    assert ggo.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert ggo.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segments[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    assert ggo.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = ggo.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "pulmoseg-test-net"
    assert algorithm.AlgorithmVersion == "1.2.0"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    lab = hd.color.CIELabColor.from_rgb(241, 214, 145)
    assert list(ggo.RecommendedDisplayCIELabValue) == list(lab.value)
    # The empty consolidation class has no frames; frames exist for lung and GGO slices only.
    numbers = [
        f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert sorted(set(numbers)) == [1, 2]
    assert seg.NumberOfFrames == 4 + 2


def test_series_attributes_and_references(volume, manifest):
    seg = build_segmentation(
        volume,
        lesion_labels(),
        manifest,
        software_version="0.1.0",
        series_number=301,
        instance_number=2,
    )
    source = volume.datasets[0]
    assert seg.SeriesDescription == "pulmoseg pulmoseg-test-net 1.2.0"
    assert seg.ContentLabel == "PULMOSEG"
    assert (seg.SeriesNumber, seg.InstanceNumber) == (301, 2)
    assert seg.Manufacturer == "pulmoseg"
    assert seg.SoftwareVersions == "0.1.0"
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in volume.datasets
    }


def test_labelmap_round_trip(volume, manifest):
    labels = np.random.default_rng(9).integers(0, 4, SHAPE).astype(np.uint8)
    seg = build_segmentation(
        volume, labels, manifest, software_version="0.1.0", segmentation_type="labelmap"
    )
    dataset, back = read_back(seg, volume)
    np.testing.assert_array_equal(back, labels)
    assert dataset.SegmentationType == "LABELMAP"
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    assert [s.SegmentLabel for s in dataset.SegmentSequence] == [
        "Background",
        "lung",
        "ggo",
        "consolidation",
    ]
    assert dciodvfy_errors(segmentation_to_bytes(seg)) == []


def test_compressed_binary_transfer_syntax(volume, manifest):
    pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg encodes JPEG 2000")
    labels = lesion_labels()
    seg = build_segmentation(
        volume, labels, manifest, software_version="0.1.0", transfer_syntax_uid=JPEG2000Lossless
    )
    dataset, back = read_back(seg, volume)
    assert dataset.file_meta.TransferSyntaxUID == JPEG2000Lossless
    np.testing.assert_array_equal(back, labels)
    assert dciodvfy_errors(segmentation_to_bytes(seg)) == []


def test_segmentation_to_bytes_is_part10(volume, manifest):
    data = segmentation_to_bytes(
        build_segmentation(volume, lesion_labels(), manifest, software_version="0.1.0")
    )
    assert data[128:132] == b"DICM"


def test_rejects_bad_labels_and_options(volume, manifest):
    with pytest.raises(
        ValueError,
        match=r"'labels' must have the volume's shape \(z, y, x\) "
        r"\(6, 32, 36\), got \(6, 32, 35\)",
    ):
        build_segmentation(volume, np.zeros((6, 32, 35), np.uint8), manifest, software_version="1")
    bad = lesion_labels()
    bad[0, 0, 0] = 4
    with pytest.raises(
        ValueError,
        match=r"class indices 0..3 of the manifest, got values in "
        r"\[0, 4\]",
    ):
        build_segmentation(volume, bad, manifest, software_version="1")
    with pytest.raises(TypeError, match="'labels' must hold integer class indices, got float32"):
        build_segmentation(volume, bad.astype(np.float32), manifest, software_version="1")
    with pytest.raises(ValueError, match="Did you mean 'BINARY'"):
        build_segmentation(
            volume, lesion_labels(), manifest, software_version="1", segmentation_type="binarry"
        )
    with pytest.raises(ValueError, match="got 'FRACTIONAL'"):
        build_segmentation(
            volume, lesion_labels(), manifest, software_version="1", segmentation_type="FRACTIONAL"
        )
    with pytest.raises(ValueError, match="'software_version' must be a non-empty string"):
        build_segmentation(volume, lesion_labels(), manifest, software_version="")


def _snapshot(datasets) -> list[list[tuple]]:
    return [
        [(e.tag, e.VR, str(e.value)) for e in ds if e.keyword != "PixelData"] for ds in datasets
    ]


def test_the_callers_datasets_are_never_modified(volume, manifest):
    """The first source is copied, the others share elements; repairs must stay in the SEG."""
    series = [copy.deepcopy(ds) for ds in volume.datasets]
    del series[0].SliceThickness  # the SEG gets the volume's spacing instead
    for ds in series:
        if ds is not series[0]:
            ds.SliceThickness = "0"  # unusable: the first slice's (the spacing) is used
        ds.SpacingBetweenSlices = "0"  # unusable: left out of the SEG
        ds.SOPClassUID = ""  # tolerated on input: the SEG references CT Image Storage
    series[0].PatientName = "\xc5\x81ukasz^Ana"  # UTF-8 bytes read as Latin-1: repaired
    broken = dataclasses.replace(volume, datasets=series)
    before = _snapshot(series)
    seg = build_segmentation(broken, lesion_labels(), manifest, software_version="0.1.0")
    assert _snapshot(series) == before
    dataset, back = read_back(seg, broken)
    np.testing.assert_array_equal(back, lesion_labels())
    assert str(dataset.PatientName) == "Łukasz^Ana"
    measures = dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(SPACING[0])
