"""Density bands and the under-reading flag in every study's outcome, through the quality step.

A phantom with diffuse ground glass in its lower lungs is written as DICOM, segmented by the
real (tiny, HU-threshold) ONNX model and assessed by ``assess_study``: its outcome carries the
density bands, and the same study with its lesion output erased (called lung) is flagged for
under-reading, with the reason, in ``review_required`` and in every outlet.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from service.app.study_result import summarise_study
from service.core.segmentation_metrics import class_volumes_ml
from service.core.study_outcome import StudyOutcome
from service.dicom.preview import caption_lines, render_preview
from service.dicom.seg_writer import write_study_seg
from service.dicom.volume import CTVolume, series_to_volume
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api.outcome_messages import from_message, to_message
from service.predictor import Predictor
from service.predictor.onnx_backend import load_onnx_predictor
from service.quality.assessment import QualityConfig, StudyQuality, assess_study
from service.quality.density import quantify_density
from service.quality.study_density import label_envelope, study_density
from service.quality.under_reading import DEFAULT_MARGIN, UNDER_READING
from tests.dicom_validation import dciodvfy_errors
from training.phantom import LUNG, synthesize_study, write_ct_series

SIZE = 64


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> CTVolume:
    """64×64×24 phantom whose lungs on slices 0-9 are diffuse ground glass (-520 HU)."""
    study = synthesize_study(5, size=SIZE, slices=24, with_lesions=False)
    hu = study.hu.astype(np.float32)
    lesion = (study.label == LUNG) & (np.arange(hu.shape[0]) < 10)[:, None, None]
    hu[lesion] = np.random.default_rng(1).normal(-520.0, 25.0, int(lesion.sum()))
    paths = write_ct_series(
        np.rint(hu).astype(np.int16),
        study.spacing_zyx,
        tmp_path_factory.mktemp("density_phantom"),
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Density",
        patient_id="PD0001",
        seed=5,
        origin_lps=study.origin_lps,
    )
    return series_to_volume([pydicom.dcmread(p) for p in paths])


@pytest.fixture(scope="module")
def predictor(hu_model: Path) -> Predictor:
    return load_onnx_predictor(hu_model, cpu_only=True)


def _assess(
    volume: CTVolume, labels: np.ndarray, predictor: Predictor
) -> tuple[StudyQuality, StudyOutcome, bytes]:
    manifest = predictor.manifest
    classes = manifest.foreground_classes
    volumes = class_volumes_ml(labels, volume.spacing_zyx, [c.index for c in classes])
    seg = write_study_seg(volume, labels, manifest, software_version="0.1.0")
    quality = assess_study(
        study_hash="ab12",
        volume=volume,
        labels=labels,
        seg_bytes=seg,
        class_volumes_ml={c.name: float(volumes[c.index]) for c in classes},
        manifest=manifest,
        predict=predictor.predict_labels,
        provider=predictor.provider,
        config=QualityConfig(consistency_fraction=0.0, severity_lesion_floor_ml=0.05),
        software_version="0.1.0",
    )
    result = summarise_study(volume, labels, seg, manifest, quality)
    return quality, result.outcome(manifest, predictor.provider, {"inference": 1.0}), seg


@pytest.fixture(scope="module")
def served(phantom: CTVolume, predictor: Predictor) -> np.ndarray:
    labels = predictor.predict_labels(phantom.hu)
    assert np.isin(labels, [2, 3]).sum() > 100, "the model should read the ground glass"
    return labels


def test_a_segmented_study_carries_density_bands_that_add_up(
    phantom: CTVolume, served: np.ndarray, predictor: Predictor
) -> None:
    quality, outcome, _ = _assess(phantom, served, predictor)
    density = outcome.density
    assert density is not None and density == quality.density_outcome
    assert density.abnormal_fraction > DEFAULT_MARGIN  # the phantom is diseased enough
    regions = {r.region: r for r in density.regions}
    whole = {b.band: b.fraction for b in regions["whole"].bands}
    assert whole["compromised"] == pytest.approx(whole["poorly_aerated"] + whole["non_aerated"])
    assert 0.2 < whole["well_aerated"] + whole["poorly_aerated"] + whole["non_aerated"] <= 1.0
    assert density.well_aerated_fraction == whole["well_aerated"]
    assert whole["poorly_aerated"] > 0.05  # the ground glass is in the poorly aerated band
    total = regions["whole"].envelope_ml
    assert total == pytest.approx(density.envelope_ml)
    assert regions["left"].envelope_ml + regions["right"].envelope_ml == pytest.approx(total)
    zones = sum(regions[z].envelope_ml for z in ("upper", "middle", "lower"))
    assert zones == pytest.approx(total)
    for region in density.regions:
        for band in region.bands:
            assert band.volume_ml == pytest.approx(band.fraction * region.envelope_ml, abs=0.01)
    # The envelope holds every lung and lesion voxel the model served.
    assert outcome.clinical is not None and outcome.clinical.lung_volume_ml is not None
    assert density.envelope_ml >= outcome.clinical.lung_volume_ml - 1e-6
    assert outcome.under_reading is not None and not outcome.under_reading.flagged
    assert outcome.under_reading.reason is None


def test_an_erased_lesion_output_is_flagged_for_review_with_its_reason(
    phantom: CTVolume, served: np.ndarray, predictor: Predictor
) -> None:
    erased = served.copy()
    erased[np.isin(erased, [2, 3])] = 1  # the lesions called lung: the model under-reads
    quality, outcome, seg = _assess(phantom, erased, predictor)
    verdict = outcome.under_reading
    assert verdict is not None and verdict.flagged and verdict.reason == UNDER_READING
    assert verdict.lesion_fraction == 0.0
    assert verdict.density_fraction - verdict.lesion_fraction > verdict.margin
    assert outcome.review_required
    assert not outcome.flagged  # the consistency check did not run: the flag is this one
    # Every outlet: the gRPC summary both ways and the SR's evaluation.
    message = to_message(outcome, pb2.StudySummary)
    assert message.under_reading.reason == UNDER_READING and message.review_required
    assert len(message.density.regions) == 12
    assert from_message(message, StudyOutcome) == outcome
    values = sr_values(quality.sr_bytes)
    assert values["UNDERREADING"] == "373066001"  # SNOMED CT "Yes"
    assert outcome.density is not None and outcome.clinical is not None
    whole = {b.band: b.fraction for b in outcome.density.regions[0].bands}
    assert float(values["WELLAERATED"]) == pytest.approx(round(100 * whole["well_aerated"], 2))
    assert float(values["ENVELOPEVOL"]) == pytest.approx(round(outcome.density.envelope_ml, 3))
    assert dciodvfy_errors(quality.sr_bytes) == []
    # The preview's caption: grade, the envelope's bands and the flag.
    captions = caption_lines(outcome.as_dict())
    assert captions[0].endswith(f"CT grade {outcome.clinical.severity_grade}")
    assert "well-aerated" in captions[1] and "compromised" in captions[1]
    assert captions[2].startswith("REVIEW") and "under-reading" in captions[2]
    image = render_preview(phantom, erased, pydicom.dcmread(io.BytesIO(seg)), outcome.as_dict())
    plain = render_preview(phantom, erased, pydicom.dcmread(io.BytesIO(seg)), {})
    assert image.height == plain.height + 20 * len(captions)


def sr_values(sr_bytes: bytes) -> dict[str, str]:
    """Concept name code -> coded value (CODE items) or numeric value (NUM items) of an SR."""
    out: dict[str, str] = {}

    def walk(dataset: pydicom.Dataset) -> None:
        for item in getattr(dataset, "ContentSequence", []):
            name = (
                item.ConceptNameCodeSequence[0].CodeValue
                if "ConceptNameCodeSequence" in item
                else ""
            )
            if item.ValueType == "CODE":
                out[name] = item.ConceptCodeSequence[0].CodeValue
            elif item.ValueType == "NUM" and "MeasuredValueSequence" in item:
                out[name] = str(item.MeasuredValueSequence[0].NumericValue)
            walk(item)

    walk(pydicom.dcmread(io.BytesIO(sr_bytes)))
    return out


def test_label_envelope_fills_holes_per_slice_only() -> None:
    labels = np.zeros((3, 9, 9), dtype=np.uint8)
    labels[1, 2:7, 2:7] = 1
    labels[1, 4, 4] = 0  # a vessel inside the lung: filled
    labels[1, 3, 4] = 2  # a lesion class: part of the envelope
    labels[2, 2:7, 0:3] = 1
    labels[2, 4, 0] = 0  # a notch open to the slice's edge: not a hole
    envelope = label_envelope(labels, [1, 2])
    assert envelope[1, 4, 4] and envelope[1, 3, 4]
    assert envelope[1].sum() == 25
    assert not envelope[2, 4, 0] and not envelope[0].any()
    assert not label_envelope(labels, [3]).any()


def test_large_studies_are_measured_at_stride_two_with_the_same_numbers() -> None:
    """A 300-pixel study on every second pixel: blocks aligned to the stride give the
    full-resolution bands exactly, and the cropped envelope does not change them."""
    hu = np.full((4, 300, 300), 40.0, dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[:, 40:200, 20:120] = 1
    labels[:, 40:200, 180:280] = 1
    hu[:, 40:200, 20:120] = -800.0
    hu[:, 40:200, 180:280] = -800.0
    hu[:, 100:140, 200:240] = -300.0
    labels[:, 100:140, 200:240] = 2
    spacing = (5.0, 0.7, 0.7)
    sampled = study_density(hu, labels, spacing, [1, 2], lesion_volume_ml=0.0)
    full = quantify_density(hu, labels > 0, spacing)
    assert sampled.stride == 2
    assert sampled.density.envelope_ml == pytest.approx(full.envelope_ml)
    for name in ("whole", "left", "right", "lower"):
        for band in ("well_aerated", "poorly_aerated"):
            assert sampled.density.region(name).band(band).fraction == pytest.approx(
                full.region(name).band(band).fraction
            )
    assert sampled.density.abnormal_fraction == pytest.approx(full.abnormal_fraction, rel=0.05)
    assert sampled.under_reading is not None and sampled.under_reading.flagged


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="'labels' has shape"):
        study_density(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), (1, 1, 1), [1], lesion_volume_ml=0)
