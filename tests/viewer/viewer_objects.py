"""The SEG and SR variants a viewer must show, made from a phantom study by pulmoseg's writers.

The labels are the phantom's ground truth, so every test knows exactly which segment lies on
which slice, and the objects come from the same functions the service calls
(``build_segmentation``/``segmentation_to_bytes``, ``build_summary_sr``).

The overlapping variant (the lung segment as the pleural envelope that contains the lesions,
DESIGN §6) is assembled here from the BINARY SEG's own segment descriptions with highdicom,
because ``service.dicom.seg_writer`` has no overlapping mode yet; when it gets one, this helper
should call it instead.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from service.core.classes import DEFAULT_CLASSES
from service.core.manifest import ModelManifest
from service.core.segmentation_metrics import class_volumes_ml
from service.dicom.seg_source import seg_source_images
from service.dicom.seg_writer import build_segmentation, segmentation_to_bytes
from service.dicom.study_input import load_instances_from_dir, select_ct_series
from service.dicom.volume import CTVolume, series_to_volume
from service.quality.clinical import clinical_summary
from service.quality.sr_writer import build_summary_sr
from training.data.volumes import load_nifti_zyx

SOFTWARE_VERSION = "viewer-test"


@dataclass(frozen=True)
class ViewerObjects:
    """A phantom study's CT files and the objects written for it (Part-10 files in ``root``)."""

    ct_files: list[Path]
    volume: CTVolume
    labels: np.ndarray
    manifest: ModelManifest
    binary: Path
    labelmap: Path
    labelmap_uncompressed: Path
    overlapping: Path
    sr: Path

    def expected(self) -> dict:
        """What a reader must find: per class, its label, the slices (by SOP Instance UID) it
        covers and its voxel count there; the envelope is the union of all foreground."""
        uids = [ds.SOPInstanceUID for ds in self.volume.datasets]
        classes = {}
        for info in self.manifest.foreground_classes:
            mask = self.labels == info.index
            classes[str(info.index)] = {
                "label": info.name,
                "rgb": list(info.color_rgb),
                "voxels_by_slice": {
                    uids[z]: int(mask[z].sum()) for z in range(mask.shape[0]) if mask[z].any()
                },
            }
        envelope = self.labels > 0
        return {
            "classes": classes,
            "envelope_by_slice": {
                uids[z]: int(envelope[z].sum())
                for z in range(envelope.shape[0])
                if envelope[z].any()
            },
        }


def phantom_manifest(rows: int, columns: int) -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-viewer-test",
        version="0.0.1",
        classes=list(DEFAULT_CLASSES),
        slice_context=3,
        hu_window=(-1000.0, 200.0),
        input_size=(rows, columns),
    )


def load_phantom(dicom_dir: Path, label_nifti: Path) -> tuple[list[Path], CTVolume, np.ndarray]:
    files = sorted(Path(dicom_dir).glob("*.dcm"))
    volume = series_to_volume(select_ct_series(load_instances_from_dir(dicom_dir)))
    labels, _ = load_nifti_zyx(label_nifti)
    if labels.shape != volume.hu.shape:
        raise AssertionError(f"label volume {labels.shape} does not match CT {volume.hu.shape}")
    return files, volume, np.asarray(labels).astype(np.uint8)


def overlapping_segmentation(
    binary: pydicom.Dataset, volume: CTVolume, labels: np.ndarray, manifest: ModelManifest
) -> hd.seg.Segmentation:
    """BINARY SEG whose lung segment is the envelope (all foreground), lesions inside it."""
    descriptions = [hd.seg.SegmentDescription.from_dataset(s) for s in binary.SegmentSequence]
    planes = []
    for info in manifest.foreground_classes:
        planes.append(labels > 0 if info.name == "lung" else labels == info.index)
    return hd.seg.Segmentation(
        source_images=seg_source_images(volume.datasets, volume.spacing_zyx[0]),
        pixel_array=np.stack(planes, axis=-1),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=302,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pulmoseg",
        manufacturer_model_name=manifest.name,
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        content_label="PULMOSEG",
        content_description="Lung envelope and lesions (overlapping)",
        series_description=f"pulmoseg {manifest.name} overlapping",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=True,
    )


def write_viewer_objects(dicom_dir: Path, label_nifti: Path, out: Path) -> ViewerObjects:
    """Write BINARY, LABELMAP (as the service writes it, and uncompressed), overlapping SEGs and
    the summary SR for the phantom study into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files, volume, labels = load_phantom(dicom_dir, label_nifti)
    manifest = phantom_manifest(*volume.hu.shape[1:])
    paths: dict[str, Path] = {}

    binary = build_segmentation(volume, labels, manifest, software_version=SOFTWARE_VERSION)
    paths["binary"] = out / "seg_binary.dcm"
    paths["binary"].write_bytes(segmentation_to_bytes(binary))
    labelmap = build_segmentation(
        volume, labels, manifest, software_version=SOFTWARE_VERSION, segmentation_type="LABELMAP"
    )
    paths["labelmap"] = out / "seg_labelmap.dcm"
    paths["labelmap"].write_bytes(segmentation_to_bytes(labelmap))
    plain = build_segmentation(
        volume,
        labels,
        manifest,
        software_version=SOFTWARE_VERSION,
        segmentation_type="LABELMAP",
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    paths["labelmap_uncompressed"] = out / "seg_labelmap_uncompressed.dcm"
    paths["labelmap_uncompressed"].write_bytes(segmentation_to_bytes(plain))
    overlapping = overlapping_segmentation(binary, volume, labels, manifest)
    paths["overlapping"] = out / "seg_overlapping.dcm"
    paths["overlapping"].write_bytes(segmentation_to_bytes(overlapping))

    foreground = manifest.foreground_classes
    volumes = class_volumes_ml(labels, volume.spacing_zyx, [c.index for c in foreground])
    summary = clinical_summary({c.name: float(volumes[c.index]) for c in foreground})
    seg_bytes = paths["binary"].read_bytes()
    paths["sr"] = out / "sr.dcm"
    paths["sr"].write_bytes(build_summary_sr(seg_bytes, summary, manifest, SOFTWARE_VERSION))
    return ViewerObjects(files, volume, labels, manifest, **paths)


def sr_expected_volumes(sr_path: Path) -> dict[str, float]:
    """The SR's volume measurements (mL) by tracking identifier, as highdicom reads them."""
    sr = hd.sr.srread(io.BytesIO(sr_path.read_bytes()))
    found: dict[str, float] = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        for measurement in group.get_measurements():
            if measurement.unit.value == "ml":
                found[group.tracking_identifier] = float(measurement.value)
    return found


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
