"""The dciodvfy helper: its error policy, the scope of known tool gaps, and a missing tool."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests import dicom_validation
from tests.dicom_validation import (
    LABEL_MAP_SEGMENTATION_STORAGE,
    dciodvfy_errors,
    unexplained_errors,
)
from training.phantom import write_ct_series

UNKNOWN_IOD = "Error - Information Object Not found"
SEGMENT_ZERO = "Error - SegmentNumber not monotonically increasing ... with SegmentNumber of 0"
BINARY_SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def test_only_error_lines_count() -> None:
    lines = ["Warning - Missing attribute", "CTImage", "Error - Missing attribute Type 1"]
    assert unexplained_errors(lines, "1.2.840.10008.5.1.4.1.1.2") == [lines[2]]


def test_labelmap_gap_applies_only_to_its_sop_class_and_symptom() -> None:
    assert unexplained_errors([SEGMENT_ZERO, UNKNOWN_IOD], LABEL_MAP_SEGMENTATION_STORAGE) == []
    # Other SOP class, or a tool that knows the IOD (no symptom): the same lines are errors.
    assert unexplained_errors([SEGMENT_ZERO, UNKNOWN_IOD], BINARY_SEG) == [
        SEGMENT_ZERO,
        UNKNOWN_IOD,
    ]
    assert unexplained_errors([SEGMENT_ZERO], LABEL_MAP_SEGMENTATION_STORAGE) == [SEGMENT_ZERO]
    # Errors the gap does not explain still count.
    other = "Error - Missing attribute Type 1 Required Element=<Rows>"
    assert unexplained_errors([UNKNOWN_IOD, other], LABEL_MAP_SEGMENTATION_STORAGE) == [other]


def test_reports_a_real_error_from_bytes_and_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (path,) = write_ct_series(
        np.zeros((1, 4, 4), np.int16),
        (1.0, 1.0, 1.0),
        tmp_path / "ct",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        patient_name="TEST^DCIODVFY",
        patient_id="T-1",
        seed=0,
    )
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    del ds.Modality  # Type 1 in the General Series module
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    errors = dciodvfy_errors(buffer.getvalue())
    assert any("Modality" in e for e in errors), errors
    assert list(scratch.iterdir()) == []


def test_missing_tool_fails_with_setup_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicom_validation.shutil, "which", lambda _name: None)
    with pytest.raises(pytest.fail.Exception, match="run scripts/setup.sh"):
        dciodvfy_errors(b"")
