"""The fast sequence encoder writes exactly pydicom's bytes, on real SEGs and on odd values."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from service.core.classes import DEFAULT_CLASSES
from service.core.manifest import ModelManifest
from service.dicom.seg_writer import build_segmentation, segmentation_to_bytes
from service.dicom.sequence_encoding import encode_sequence, sequences_pre_encoded
from service.dicom.volume import CTVolume, series_to_volume
from training.phantom import write_ct_series

SHAPE = (5, 24, 20)


def ct_volume(folder, shape: tuple[int, int, int], seed: int) -> CTVolume:
    hu = np.random.default_rng(seed).integers(-1000, 400, shape).astype(np.float32)
    paths = write_ct_series(
        hu,
        (2.0, 0.7, 0.7),
        folder,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Encoding",
        patient_id="PE0001",
        seed=seed,
    )
    return series_to_volume([pydicom.dcmread(p) for p in paths])


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> CTVolume:
    return ct_volume(tmp_path_factory.mktemp("ct"), SHAPE, seed=1)


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-encoding-test",
        version="0.0.1",
        classes=list(DEFAULT_CLASSES),
        slice_context=1,
        hu_window=(-1000.0, 200.0),
        input_size=SHAPE[1:],
    )


def pydicom_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def fast_bytes(dataset: Dataset, min_items: int = 1) -> bytes:
    with sequences_pre_encoded(dataset, min_items=min_items):
        return pydicom_bytes(dataset)


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
@pytest.mark.parametrize("labels_kind", ["random", "empty"])
def test_a_real_seg_is_written_byte_for_byte_as_pydicom_writes_it(
    volume, manifest, kind, labels_kind
):
    labels = np.zeros(SHAPE, dtype=np.uint8)
    if labels_kind == "random":
        labels = np.random.default_rng(2).integers(0, 4, SHAPE).astype(np.uint8)
    seg = build_segmentation(volume, labels, manifest, software_version="1", segmentation_type=kind)
    reference = pydicom_bytes(seg)
    assert fast_bytes(seg) == reference  # every sequence pre-encoded
    assert segmentation_to_bytes(seg) == reference  # the writer's own use


def element_types(dataset: Dataset) -> dict:
    # ``keys()``: iterating a Dataset yields elements (raw ones converted), not tags.
    return {tag: type(dataset.get_item(tag)) for tag in dataset.keys()}  # noqa: SIM118


def test_the_dataset_is_unchanged_after_the_block(volume, manifest):
    labels = np.random.default_rng(3).integers(0, 4, SHAPE).astype(np.uint8)
    seg = build_segmentation(volume, labels, manifest, software_version="1")
    before = element_types(seg)
    encoding = seg.original_encoding
    with sequences_pre_encoded(seg, min_items=1) as inside:
        assert element_types(inside) != before  # the sequences are raw inside the block
    assert element_types(seg) == before
    assert seg.original_encoding == encoding
    assert len(seg.PerFrameFunctionalGroupsSequence) == int(seg.NumberOfFrames)


def odd_item(index: int) -> Dataset:
    """Values the fast path encodes itself and values it must leave to pydicom."""
    item = Dataset()
    item.CodeValue = "C" * (index % 3 + 1)  # SH, odd and even lengths
    item.CodeMeaning = "Größe" if index % 2 else "size"  # LO, non-ASCII under UTF-8
    item.ReferencedSOPInstanceUID = f"1.2.3.{index}"  # UI, padded with NUL
    item.ImagePositionPatient = [DSfloat("-0.50"), 1.25, index]  # DS, original strings kept
    item.InstanceNumber = str(index)  # IS
    item.ReferencedFrameNumber = [1, index + 1]  # IS, multi-valued
    item.ReferencedSegmentNumber = [1, 2, 3]  # US, multi-valued
    item.DimensionIndexValues = [index, 7]  # UL
    item.RealWorldValueFirstValueMapped = index  # US or SS: ambiguous
    item.StudyDate = "20200102"  # DA as a string
    item.ContentDate = pydicom.valuerep.DA("20201231")  # DA object
    item.PersonName = "Doe^Jane"  # PN
    item.SliceThickness = None  # empty DS
    item.add(DataElement(0x00189219, "FD", [0.5, 2.0]))  # FD, multi-valued
    nested = Dataset()
    nested.CodingSchemeDesignator = "DCM"
    if index == 3:  # an item pydicom writes with a delimiter, not a length
        nested.is_undefined_length_sequence_item = True
    item.PurposeOfReferenceCodeSequence = Sequence([nested])
    return item


def odd_dataset(charset: str | None, *, ambiguous: bool) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    dataset.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    if charset is not None:
        dataset.SpecificCharacterSet = charset
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.PixelRepresentation = 1
    dataset.ReferencedImageSequence = Sequence([odd_item(i) for i in range(20)])
    for item in dataset.ReferencedImageSequence:
        if charset is None:  # non-ASCII text needs a character set to be written at all
            item.CodeMeaning = "size"
        if not ambiguous:
            del item.RealWorldValueFirstValueMapped
    return dataset


@pytest.mark.parametrize("ambiguous", [False, True])
@pytest.mark.parametrize("charset", [None, "ISO_IR 192", "ISO_IR 100"])
def test_odd_values_fall_back_to_pydicom_and_the_bytes_still_match(charset, ambiguous):
    fresh = odd_dataset(charset, ambiguous=ambiguous)  # nothing resolved by a write yet
    raw = encode_sequence(fresh["ReferencedImageSequence"], [charset or "iso8859"])
    assert (raw is None) == ambiguous  # else encoded here, with per-element fallbacks inside
    fast = fast_bytes(fresh)
    assert fast == pydicom_bytes(odd_dataset(charset, ambiguous=ambiguous))
    back = pydicom.dcmread(io.BytesIO(fast))
    assert back.ReferencedImageSequence[5].InstanceNumber == 5
    if ambiguous:  # resolved by pydicom against the parent's Pixel Representation: signed
        assert back.ReferencedImageSequence[5].get_item(0x00409216).VR == "SS"


def test_a_sequence_of_undefined_length_is_left_to_pydicom():
    element = DataElement(0x00081140, "SQ", Sequence([Dataset()]), is_undefined_length=True)
    assert encode_sequence(element, ["iso8859"]) is None


def test_seg_writing_leaves_small_sequences_and_the_result_readable(volume, manifest):
    labels = np.random.default_rng(4).integers(0, 4, SHAPE).astype(np.uint8)
    seg = build_segmentation(volume, labels, manifest, software_version="1")
    back = pydicom.dcmread(io.BytesIO(segmentation_to_bytes(seg)))
    assert len(back.PerFrameFunctionalGroupsSequence) == int(seg.NumberOfFrames)
    assert [s.SegmentLabel for s in back.SegmentSequence] == [
        s.SegmentLabel for s in seg.SegmentSequence
    ]


def test_a_compressed_seg_is_written_byte_for_byte_as_pydicom_writes_it(tmp_path, manifest):
    pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg encodes JPEG 2000")
    shape = (3, 40, 36)  # JPEG 2000 needs 32 pixels along a side
    volume = ct_volume(tmp_path, shape, seed=5)
    labels = np.random.default_rng(6).integers(0, 4, shape).astype(np.uint8)
    seg = build_segmentation(
        volume, labels, manifest, software_version="1", transfer_syntax_uid=JPEG2000Lossless
    )
    reference = pydicom_bytes(seg)  # encapsulated pixel data, explicit VR little endian elsewhere
    assert segmentation_to_bytes(seg) == reference
    assert fast_bytes(seg) == reference


def test_a_dataset_written_in_another_encoding_is_left_to_pydicom():
    dataset = odd_dataset(None, ambiguous=False)
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    before = element_types(dataset)
    with sequences_pre_encoded(dataset, min_items=1) as inside:
        assert element_types(inside) == before  # nothing pre-encoded for implicit VR
    assert (
        pydicom.dcmread(io.BytesIO(pydicom_bytes(dataset)))
        .ReferencedImageSequence[7]
        .InstanceNumber
        == 7
    )
