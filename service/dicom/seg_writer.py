"""Write the model's label volume as a DICOM Segmentation that any PACS or viewer can display.

Every foreground class of the manifest becomes a segment, even when the model found nothing of
it, so receivers always see the same segment list for one model (an empty GGO segment *is* the
answer "no GGO"). Codes, colours and the algorithm identification all come from the manifest:
the ONNX file is the only hand-over from training.
"""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from service.core.classes import ClassInfo, CodedConcept
from service.core.errors import InvalidStudyError
from service.core.manifest import ModelManifest
from service.core.options import SegmentationType
from service.dicom.seg_source import check_seg_dataset, seg_source_images
from service.dicom.sequence_encoding import sequences_pre_encoded
from service.dicom.volume import CTVolume

logger = logging.getLogger(__name__)

CONTENT_LABEL = "PULMOSEG"
CONTENT_DESCRIPTION = "Lung and lesion segmentation"
_LO_MAX = 64  # DICOM LO value representation: at most 64 characters
SEG_FILE_NAME = "seg.dcm"


def _segmentation_type(
    value: SegmentationType | hd.seg.SegmentationTypeValues | str,
) -> hd.seg.SegmentationTypeValues:
    """The option as highdicom's enum; FRACTIONAL is refused (the model outputs hard labels)."""
    if isinstance(value, hd.seg.SegmentationTypeValues):
        value = value.value
    kind = SegmentationType.parse(value, "Argument 'segmentation_type'")
    return hd.seg.SegmentationTypeValues(kind.value)


def default_transfer_syntax(kind: hd.seg.SegmentationTypeValues) -> str:
    """RLE Lossless for LABELMAP, whose frames are 8 bits a pixel and mostly runs of one
    label; BINARY stays uncompressed (1 bit a pixel already, read by every receiver).

    RLE rather than JPEG-LS (smaller still): RLE is the one compression that
    @cornerstonejs/adapters, which OHIF uses to read SEGs, decodes itself (docs/viewer.md).
    """
    return RLELossless if kind == hd.seg.SegmentationTypeValues.LABELMAP else ExplicitVRLittleEndian


def _code(concept: CodedConcept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(
        value=concept.value, scheme_designator=concept.scheme, meaning=concept.meaning
    )


def _segment_description(
    number: int, info: ClassInfo, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=info.name[:_LO_MAX],
        segmented_property_category=_code(info.category),
        segmented_property_type=_code(info.property_type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*info.color_rgb),
    )


def _check_labels(labels: np.ndarray, volume: CTVolume, n_classes: int) -> np.ndarray:
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"Argument 'labels' must be a numpy array, got {type(labels).__name__}.")
    if labels.shape != volume.hu.shape:
        raise ValueError(
            f"Argument 'labels' must have the volume's shape (z, y, x) {volume.hu.shape}, "
            f"got {labels.shape}."
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise TypeError(f"Argument 'labels' must hold integer class indices, got {labels.dtype}.")
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= n_classes:
            raise ValueError(
                f"Argument 'labels' must hold class indices 0..{n_classes - 1} of the manifest, "
                f"got values in [{low}, {high}]."
            )
    return labels.astype(np.uint8 if n_classes <= 256 else np.uint16, copy=False)


def build_segmentation(
    volume: CTVolume,
    labels: np.ndarray,
    manifest: ModelManifest,
    *,
    software_version: str,
    series_number: int = 300,
    instance_number: int = 1,
    segmentation_type: SegmentationType | hd.seg.SegmentationTypeValues | str = (
        SegmentationType.BINARY
    ),
    manufacturer: str = "pulmoseg",
    device_serial_number: str = "0",
    transfer_syntax_uid: str | None = None,
) -> hd.seg.Segmentation:
    """Encode ``labels`` (z, y, x class indices, same grid as ``volume``) as a DICOM-SEG.

    Segment number k is manifest class k (the manifest guarantees indices 0..N-1), so the label
    value *is* the segment number and the SEG reads back into the same label volume. BINARY is
    the widely supported default; LABELMAP (DICOM 2024) is smaller for receivers that read it.

    ``transfer_syntax_uid`` None picks per type (:func:`default_transfer_syntax`): a LABELMAP's
    8-bit frames are RLE Lossless; uncompressed they made it 4-8 times larger than BINARY's
    1-bit frames, compressed it is 6-10 times smaller (docs/benchmarks.md, "LABELMAP SEG").
    """
    if not isinstance(volume, CTVolume):
        raise TypeError(f"Argument 'volume' must be a CTVolume, got {type(volume).__name__}.")
    if not isinstance(manifest, ModelManifest):
        raise TypeError(
            f"Argument 'manifest' must be a ModelManifest, got {type(manifest).__name__}."
        )
    if not isinstance(software_version, str) or not software_version:
        raise ValueError(
            f"Argument 'software_version' must be a non-empty string, got {software_version!r}."
        )
    kind = _segmentation_type(segmentation_type)
    classes = manifest.foreground_classes
    if not classes:
        raise ValueError("Argument 'manifest' lists no foreground classes to write as segments.")
    pixels = _check_labels(labels, volume, len(manifest.classes))

    algorithm = hd.AlgorithmIdentificationSequence(
        name=manifest.name[:_LO_MAX],
        family=codes.cid7162.ArtificialIntelligence,
        version=manifest.version[:_LO_MAX],
    )
    descriptions = [_segment_description(c.index, c, algorithm) for c in classes]
    series_description = f"pulmoseg {manifest.name} {manifest.version}"[:_LO_MAX]

    sources = seg_source_images(volume.datasets, volume.spacing_zyx[0])
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=kind,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=instance_number,
            manufacturer=manufacturer,
            manufacturer_model_name=manifest.name[:_LO_MAX],
            software_versions=software_version[:_LO_MAX],
            device_serial_number=device_serial_number,
            content_label=CONTENT_LABEL,
            content_description=CONTENT_DESCRIPTION,
            series_description=series_description,
            transfer_syntax_uid=transfer_syntax_uid or default_transfer_syntax(kind),
            # Omitting empty frames keeps SEGs small; an all-empty result must keep them all.
            omit_empty_frames=bool(pixels.any()),
        )
    except (ValueError, AttributeError) as exc:
        # Our own arguments are checked above, so what highdicom still rejects is the source.
        raise InvalidStudyError(
            f"The CT series cannot be encoded as a {kind.value} DICOM-SEG: highdicom rejected "
            f"its source images ({type(exc).__name__}: {exc})."
        ) from exc
    check_seg_dataset(seg)
    logger.info(
        "built %s DICOM-SEG with %d segments and %d frames over %d source slices",
        kind.value,
        len(descriptions),
        int(seg.get("NumberOfFrames", 0)),
        len(volume.datasets),
    )
    return seg


def segmentation_to_bytes(seg: pydicom.Dataset) -> bytes:
    """Serialise a segmentation as a DICOM Part-10 file (preamble and file meta included)."""
    if not isinstance(seg, pydicom.Dataset):
        raise TypeError(f"Argument 'seg' must be a pydicom Dataset, got {type(seg).__name__}.")
    buffer = BytesIO()
    with sequences_pre_encoded(seg):  # pydicom's bytes, its slowest part done faster
        pydicom.dcmwrite(buffer, seg, enforce_file_format=True)
    return buffer.getvalue()


def write_study_seg(
    volume: CTVolume,
    labels: np.ndarray,
    manifest: ModelManifest,
    *,
    software_version: str,
    segmentation_type: SegmentationType | hd.seg.SegmentationTypeValues | str = (
        SegmentationType.BINARY
    ),
    output_folder: str | Path | None = None,
) -> bytes:
    """The study's SEG as Part-10 bytes; also written to ``output_folder/seg.dcm`` when given.

    The file appears atomically (written beside it, then renamed), so a reader of the output
    folder never sees half a SEG.
    """
    seg = build_segmentation(
        volume,
        labels,
        manifest,
        software_version=software_version,
        segmentation_type=segmentation_type,
    )
    data = segmentation_to_bytes(seg)
    if output_folder is not None:
        folder = Path(output_folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / SEG_FILE_NAME
        partial = target.with_suffix(".partial")
        try:
            partial.write_bytes(data)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return data
