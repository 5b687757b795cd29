"""Applicability checks on real DICOM: each reason from a real data path, the corpus, the policy.

Chest CTs are phantom series written as DICOM files and read back by the service's own volume
builder (``series_to_volume``): a complete chest at 0.91 mm / 4 mm (inside the default range),
the same chest cut to six slices, written with 15 mm slices, at 2.7 mm pixels, and shifted by
+/-150 HU. Non-chest series come from pydicom's DICOM test files (the suite's corpus): every CT
series there is a head or an odd single slice and must be flagged, each with its reason.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from service.core.errors import StudyNotApplicableError
from service.core.manifest import ModelManifest
from service.dicom.volume import CTVolume, series_to_volume
from service.quality.applicability import (
    AIR_TOLERANCE_HU,
    MIN_LUNG_AREA_CM2,
    MIN_LUNG_EXTENT_MM,
    Applicability,
    ApplicabilityReason,
    applicability_error,
    check_applicability,
    check_volume,
)
from training.phantom import synthesize_study, write_ct_series

R = ApplicabilityReason
#: Non-chest CT series of pydicom's test data and the reasons each must carry (at least).
CORPUS_CT = {
    "CT_small.dcm": {R.NO_AERATED_LUNG, R.PARTIAL_THORAX, R.HU_CALIBRATION},
    "J2K_pixelrep_mismatch.dcm": {R.NO_AERATED_LUNG, R.PARTIAL_THORAX},
    "693_J2KI.dcm": {R.NO_AERATED_LUNG, R.PARTIAL_THORAX},
}


def _write(tmp: Path, hu: np.ndarray, spacing: tuple[float, float, float]) -> list[Path]:
    return write_ct_series(
        hu,
        spacing,
        tmp,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Applicability",
        patient_id="PA0001",
        seed=1,
    )


def _volume(paths: list[Path]) -> CTVolume:
    return series_to_volume([pydicom.dcmread(p) for p in paths])


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> dict[str, list[Path]]:
    """Phantom chest CT series on disk, one per variant."""
    full = synthesize_study(21, size=384, slices=60)
    thick = synthesize_study(21, size=384, slices=16)
    coarse = synthesize_study(21, size=128, slices=48)
    hu = full.hu.astype(np.int32)
    variants = {
        "complete": (hu, full.spacing_zyx),
        "few_slices": (hu[27:33], full.spacing_zyx),
        "thick": (thick.hu, thick.spacing_zyx),
        "coarse_pixels": (coarse.hu, coarse.spacing_zyx),
        "hu_plus_150": (hu + 150, full.spacing_zyx),
        "hu_minus_150": (hu - 150, full.spacing_zyx),
    }
    return {
        name: _write(tmp_path_factory.mktemp(name), values, spacing)
        for name, (values, spacing) in variants.items()
    }


def _corpus_instance(name: str) -> pydicom.Dataset:
    """A corpus file as the service would receive it; one lacks the FrameOfReferenceUID the
    volume builder needs (the service answers INVALID_ARGUMENT for it), so it gets one here to
    reach the checks with its real pixels."""
    ds = pydicom.dcmread(get_testdata_file(name))
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = generate_uid()
    return ds


def test_a_complete_chest_ct_within_the_default_range_is_applicable(chest):
    result = check_volume(_volume(chest["complete"]))
    assert result.applicable and result.reasons == ()
    m = result.measurements
    assert m["max_lung_area_cm2"] > 2 * MIN_LUNG_AREA_CM2
    assert m["lung_extent_mm"] > MIN_LUNG_EXTENT_MM
    assert abs(m["air_peak_hu"] + 1000) <= AIR_TOLERANCE_HU


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("few_slices", R.PARTIAL_THORAX),
        ("thick", R.SLICE_THICKNESS_OUT_OF_RANGE),
        ("coarse_pixels", R.SPACING_OUT_OF_RANGE),
        ("hu_plus_150", R.HU_CALIBRATION),
        ("hu_minus_150", R.HU_CALIBRATION),
    ],
)
def test_each_shifted_chest_series_is_flagged_with_exactly_its_reason(chest, variant, reason):
    result = check_volume(_volume(chest[variant]))
    assert result.reasons == (reason,), result.describe()
    assert not result.applicable
    assert reason.value in result.describe()
    assert set(result.details) == {reason.value}


def test_the_manifest_declared_range_decides_thickness_and_spacing(chest):
    manifest = ModelManifest.from_json(
        json_manifest(slice_thickness_mm_range=[0.5, 16.0], pixel_spacing_mm_range=[0.4, 3.0])
    )
    assert check_volume(_volume(chest["thick"]), manifest).applicable
    assert check_volume(_volume(chest["coarse_pixels"]), manifest).applicable
    narrow = ModelManifest.from_json(json_manifest(slice_thickness_mm_range=[0.5, 2.0]))
    assert check_volume(_volume(chest["complete"]), narrow).reasons == (
        R.SLICE_THICKNESS_OUT_OF_RANGE,
    )


def json_manifest(**fields) -> str:
    from hu_model import hu_model_manifest

    manifest = hu_model_manifest(64)
    return dataclasses.replace(manifest, **fields).to_json()


def test_a_malformed_declared_range_is_refused_with_the_field_named():
    from service.core.errors import ModelError

    with pytest.raises(ModelError, match="'slice_thickness_mm_range' must be \\[min, max\\]"):
        ModelManifest.from_json(json_manifest(slice_thickness_mm_range=[5.0, 1.0]))


def test_every_non_chest_ct_series_of_the_corpus_is_flagged_with_its_reason():
    # The files pydicom ships (no download): every CT among them is listed above, none missed.
    corpus = Path(get_testdata_file("CT_small.dcm")).parent
    ct_names = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(corpus.glob("*.dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # deliberately broken files of pydicom's own tests
                continue
            if getattr(ds, "Modality", "") == "CT":
                ct_names.append(path.name)
    assert sorted(ct_names) == sorted(CORPUS_CT)
    for name in ct_names:
        result = check_volume(series_to_volume([_corpus_instance(name)]))
        assert not result.applicable, name
        assert CORPUS_CT[name] <= set(result.reasons), (name, result.describe())
        for reason in result.reasons:
            assert result.details[reason.value], (name, reason)


def test_the_corpus_head_ct_names_what_it_measured():
    result = check_volume(series_to_volume([_corpus_instance("J2K_pixelrep_mismatch.dcm")]))
    assert result.measurements["max_lung_area_cm2"] < MIN_LUNG_AREA_CM2 / 2
    assert abs(result.measurements["air_peak_hu"] + 1000) <= AIR_TOLERANCE_HU  # HU are fine
    assert "cm²" in result.details["no_aerated_lung"]


def test_the_refuse_error_names_every_reason_and_the_model():
    result = check_volume(series_to_volume([_corpus_instance("CT_small.dcm")]))
    error = applicability_error(result, "pulmoseg-real-ct")
    assert isinstance(error, StudyNotApplicableError) and error.applicability is result
    text = str(error)
    assert "pulmoseg-real-ct" in text and "refuse" in text
    for reason in result.reasons:
        assert reason.value in text


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="must be a non-empty \\(D, H, W\\) volume"):
        check_applicability(np.zeros((4, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="'spacing_zyx' must be positive mm"):
        check_applicability(np.zeros((2, 4, 4)), (0.0, 1.0, 1.0))


def test_a_volume_without_air_or_tissue_peaks_is_a_calibration_problem():
    """Stored values without the rescale (air at +24, tissue at +1064): no peak where CT has one."""
    hu = np.full((40, 64, 64), 24.0 + 1024, dtype=np.float32)
    result = check_applicability(hu, (5.0, 0.8, 0.8))
    assert R.HU_CALIBRATION in result.reasons


def test_reasons_and_results_are_plain_values():
    result = Applicability()
    assert result.applicable and result.reason_values == []
    assert result.describe() == "within the model's declared range"
    assert [r.value for r in R] == [
        "no_aerated_lung",
        "partial_thorax",
        "slice_thickness_out_of_range",
        "spacing_out_of_range",
        "hu_calibration",
    ]


def test_sr_of_a_flagged_study_carries_the_reasons_and_passes_dciodvfy(ct_volume, manifest):
    import highdicom as hd
    from conftest import study_labels

    from service.core.segmentation_metrics import class_volumes_ml
    from service.dicom.seg_writer import write_study_seg
    from service.quality.clinical import clinical_summary
    from service.quality.sr_writer import build_summary_sr, reason_code
    from tests.dicom_validation import dciodvfy_errors

    labels = study_labels()
    seg = write_study_seg(ct_volume, labels, manifest, software_version="0.1.0")
    volumes = class_volumes_ml(labels, ct_volume.spacing_zyx, [1, 2, 3])
    names = {1: "lung", 2: "ggo", 3: "consolidation"}
    summary = clinical_summary({names[k]: v for k, v in volumes.items()}, lesion_floor_ml=0.1)
    applicability = check_volume(ct_volume, manifest)
    assert not applicability.applicable  # 8 slices of noise: no lungs, partial
    sr_bytes = build_summary_sr(seg, summary, manifest, "0.1.0", applicability)
    assert dciodvfy_errors(sr_bytes) == []
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(sr_bytes)))
    values = {
        item.ConceptCodeSequence[0].CodeValue
        for item in _content_items(sr)
        if getattr(item, "ValueType", "") == "CODE"
    }
    assert "373067005" in values  # SNOMED "No": not within the model's range
    for reason in applicability.reasons:
        assert reason_code(reason).value in values
    assert len(sr.content.get_volumetric_roi_measurement_groups()) == 3  # the volumes stay


def _content_items(dataset: pydicom.Dataset):
    for item in getattr(dataset, "ContentSequence", []):
        yield item
        yield from _content_items(item)


def test_declared_ranges_follow_the_manifest_schema_and_round_trip():
    import json

    import jsonschema

    schema_path = Path(__file__).resolve().parents[3] / "protos/pulmoseg/v1"
    schema = json.loads((schema_path / "model_manifest.schema.json").read_text())
    for fields in (
        {},
        {"slice_thickness_mm_range": [0.5, 3.0], "pixel_spacing_mm_range": [0.4, 1.2]},
    ):
        text = json_manifest(**fields)
        jsonschema.validate(json.loads(text), schema)
        again = ModelManifest.from_json(text)
        assert again.slice_thickness_mm_range == (
            tuple(fields["slice_thickness_mm_range"]) if fields else None
        )
