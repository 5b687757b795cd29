"""The TID 1500 SR: conformant (dciodvfy), references the SEG's segments, carries the numbers."""

from __future__ import annotations

import io

import highdicom as hd
import pydicom
import pytest
from conftest import study_labels

from service.core.segmentation_metrics import class_volumes_ml
from service.dicom.seg_writer import write_study_seg
from service.quality.clinical import clinical_summary
from service.quality.sr_writer import build_summary_sr
from tests.dicom_validation import dciodvfy_errors


@pytest.fixture(scope="module")
def seg_and_sr(ct_volume, manifest):
    labels = study_labels()
    seg = write_study_seg(ct_volume, labels, manifest, software_version="0.1.0")
    volumes = class_volumes_ml(labels, ct_volume.spacing_zyx, [1, 2, 3])
    names = {1: "lung", 2: "ggo", 3: "consolidation"}
    summary = clinical_summary({names[k]: v for k, v in volumes.items()}, lesion_floor_ml=0.1)
    return seg, summary, build_summary_sr(seg, summary, manifest, "0.1.0")


def test_sr_passes_dciodvfy(seg_and_sr):
    _, _, sr = seg_and_sr
    assert dciodvfy_errors(sr) == []


def test_sr_references_each_segment_and_holds_volumes_involvement_grade(seg_and_sr):
    seg_bytes, summary, sr_bytes = seg_and_sr
    seg = pydicom.dcmread(io.BytesIO(seg_bytes))
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(sr_bytes)))
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    assert sr.PatientID == seg.PatientID  # same patient and study: a viewer files them together
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 3
    by_name = {}
    for group in groups:
        assert group.reference_type == hd.sr.CodedConcept("121191", "DCM", "Referenced Segment")
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        volume = next(m for m in group.get_measurements() if m.name.value == "118565006")
        by_name[group.tracking_identifier] = (ref.referenced_segment_numbers[0], volume.value)
    # segment k is class k in pulmoseg's SEG; each group references its own class's segment
    assert {name: number for name, (number, _) in by_name.items()} == {
        "lung": 1,
        "ggo": 2,
        "consolidation": 3,
    }
    for name, (_, volume) in by_name.items():
        assert float(volume) == pytest.approx(round(summary.class_volumes_ml[name], 3))
    lung = next(g for g in groups if g.tracking_identifier == "lung")
    involvement = next(m for m in lung.get_measurements() if m.name.value == "INVOLVEMENT")
    assert float(involvement.value) == pytest.approx(round(summary.involvement_percent, 2))
    grade = lung.get_qualitative_evaluations()[0]
    assert grade.value.value == summary.severity_grade.value == "CT-1"


def _seg_marked_deidentified(seg_bytes: bytes, method: str | None, with_code: bool) -> bytes:
    """The SEG as a SEG from elsewhere could come: identity removed, the method as given."""
    seg = pydicom.dcmread(io.BytesIO(seg_bytes))
    seg.PatientIdentityRemoved = "YES"
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in seg:
            delattr(seg, keyword)
    if method is not None:
        seg.DeidentificationMethod = method
    if with_code:
        item = pydicom.Dataset()
        item.CodeValue = "113100"
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = "Basic Application Confidentiality Profile"
        seg.DeidentificationMethodCodeSequence = [item]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, seg, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("method", "with_code", "expected"),
    [
        (None, False, "Source marked identity removed; method not recorded"),
        ("", False, "Source marked identity removed; method not recorded"),
        ("CTP DICOM Anonymizer", False, "CTP DICOM Anonymizer"),
        (None, True, None),
        ("CTP DICOM Anonymizer", True, "CTP DICOM Anonymizer"),
    ],
    ids=["no-method", "empty-method", "method", "code-only", "method-and-code"],
)
def test_sr_of_deidentified_patient_carries_the_method(
    seg_and_sr, manifest, method, with_code, expected
):
    """Patient Identity Removed YES makes the method (or its code sequence) Type 1C."""
    seg_bytes, summary, _ = seg_and_sr
    seg = _seg_marked_deidentified(seg_bytes, method, with_code)
    sr_bytes = build_summary_sr(seg, summary, manifest, "0.1.0")
    assert dciodvfy_errors(sr_bytes) == []
    sr = pydicom.dcmread(io.BytesIO(sr_bytes))
    assert sr.PatientIdentityRemoved == "YES"
    assert sr.get("DeidentificationMethod") == expected
    assert ("DeidentificationMethodCodeSequence" in sr) == with_code
