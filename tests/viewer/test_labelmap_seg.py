"""The LABELMAP SEG (Label Map Segmentation Storage, DICOM 2024 / Supplement 243) as pulmoseg
writes it: RLE Lossless frames, smaller than BINARY, and the module's rules checked here with
pydicom, because the installed dciodvfy does not know the SOP class ("Information Object Not
found") and so cannot validate it.

Rules checked (PS3.3 C.8.20.2 Segmentation Image Module and the Labelmap Segmentation IOD):
one sample of 8 or 16 unsigned bits (Bits Stored = Bits Allocated, High Bit one less),
MONOCHROME2 (or PALETTE COLOR), Segmentation Type LABELMAP, no overlapping segments, every
pixel value that occurs described by exactly one segment (Segment Numbers unique; 0 may be
described, as the background), no per-frame Segment Identification and no segment dimension
(a frame holds all segments), one functional group per frame with its position and source
image, lossless transfer syntax.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from service.dicom.seg_reader import read_seg_labels

LABELMAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEGMENT_IDENTIFICATION = pydicom.tag.Tag("SegmentIdentificationSequence")
REFERENCED_SEGMENT_NUMBER = pydicom.tag.Tag("ReferencedSegmentNumber")


def labelmap_rule_violations(ds: pydicom.Dataset) -> list[str]:
    """What breaks the Labelmap Segmentation IOD's rules in ``ds`` (empty when none)."""
    errors = []

    def expect(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    expect(ds.SOPClassUID == LABELMAP_SEG_STORAGE, f"SOP Class UID is {ds.SOPClassUID}")
    expect(ds.Modality == "SEG", f"Modality is {ds.Modality}")
    expect(ds.SegmentationType == "LABELMAP", f"Segmentation Type is {ds.SegmentationType}")
    expect(ds.SamplesPerPixel == 1, f"Samples per Pixel is {ds.SamplesPerPixel}")
    expect(ds.BitsAllocated in (8, 16), f"Bits Allocated is {ds.BitsAllocated}")
    expect(ds.BitsStored == ds.BitsAllocated, "Bits Stored differs from Bits Allocated")
    expect(ds.HighBit == ds.BitsStored - 1, f"High Bit is {ds.HighBit}")
    expect(ds.PixelRepresentation == 0, "Pixel Representation is not unsigned")
    expect(
        ds.PhotometricInterpretation in ("MONOCHROME2", "PALETTE COLOR"),
        f"Photometric Interpretation is {ds.PhotometricInterpretation}",
    )
    expect("MaximumFractionalValue" not in ds, "Maximum Fractional Value is present")
    expect(ds.get("SegmentsOverlap", "NO") == "NO", "Segments Overlap is not NO")
    expect(ds.get("LossyImageCompression", "00") == "00", "lossy compression")
    expect(
        not ds.file_meta.TransferSyntaxUID.is_compressed
        or ds.file_meta.TransferSyntaxUID in (RLELossless, "1.2.840.10008.1.2.4.80"),
        f"transfer syntax {ds.file_meta.TransferSyntaxUID} is not lossless",
    )

    numbers = [int(s.SegmentNumber) for s in ds.SegmentSequence]
    expect(len(numbers) == len(set(numbers)), f"Segment Numbers repeat: {numbers}")
    expect(all(0 <= n < 2**ds.BitsStored for n in numbers), f"Segment Numbers {numbers}")
    for item in ds.SegmentSequence:
        for keyword in (
            "SegmentLabel",
            "SegmentAlgorithmType",
            "SegmentedPropertyCategoryCodeSequence",
            "SegmentedPropertyTypeCodeSequence",
        ):
            expect(keyword in item, f"segment {item.SegmentNumber} lacks {keyword}")

    frames = int(ds.NumberOfFrames)
    groups = ds.PerFrameFunctionalGroupsSequence
    expect(len(groups) == frames, f"{len(groups)} functional groups for {frames} frames")
    for index, group in enumerate(groups):
        expect(SEGMENT_IDENTIFICATION not in group, f"frame {index + 1} names a segment")
        expect("PlanePositionSequence" in group, f"frame {index + 1} has no plane position")
        expect("DerivationImageSequence" in group, f"frame {index + 1} has no source image")
    pointers = [item.DimensionIndexPointer for item in ds.DimensionIndexSequence]
    expect(REFERENCED_SEGMENT_NUMBER not in pointers, "segment number is a dimension")

    values = np.unique(ds.pixel_array)
    undescribed = sorted(set(values.tolist()) - set(numbers))
    expect(not undescribed, f"pixel values {undescribed} have no segment")
    return errors


def test_labelmap_seg_follows_the_module_rules(viewer_objects) -> None:
    for path in (viewer_objects.labelmap, viewer_objects.labelmap_uncompressed):
        assert labelmap_rule_violations(pydicom.dcmread(path)) == [], path.name


def test_the_rule_check_catches_broken_labelmaps(viewer_objects) -> None:
    """The checker fails on the faults it is for (so its silence above means something)."""
    ds = pydicom.dcmread(viewer_objects.labelmap_uncompressed)
    ds.SegmentSequence = ds.SegmentSequence[:-1]  # consolidation's pixels lose their segment
    ds.PerFrameFunctionalGroupsSequence[0].SegmentIdentificationSequence = [pydicom.Dataset()]
    ds.HighBit = 6
    found = "\n".join(labelmap_rule_violations(ds))
    assert "pixel values [3] have no segment" in found
    assert "frame 1 names a segment" in found
    assert "High Bit is 6" in found


def test_labelmap_is_rle_compressed_smaller_than_binary_and_reads_back(viewer_objects) -> None:
    ds = pydicom.dcmread(viewer_objects.labelmap)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    plain = pydicom.dcmread(viewer_objects.labelmap_uncompressed)
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    sizes = {
        name: getattr(viewer_objects, name).stat().st_size
        for name in ("binary", "labelmap", "labelmap_uncompressed")
    }
    assert sizes["labelmap"] < sizes["binary"] < sizes["labelmap_uncompressed"], sizes
    uids = [str(d.SOPInstanceUID) for d in viewer_objects.volume.datasets]
    for path in (viewer_objects.labelmap, viewer_objects.binary):
        assert np.array_equal(read_seg_labels(path, uids), viewer_objects.labels), path.name
