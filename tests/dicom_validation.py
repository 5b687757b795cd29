"""DICOM conformance checks for tests: ``dciodvfy`` (dicom3tools) with one policy.

Policy:

- An error is an output line that starts with ``Error``; warnings never fail a test.
- The only errors tolerated are known gaps of the installed tool, each one a named
  :class:`KnownToolGap` in :data:`KNOWN_TOOL_GAPS` with its reason. A gap applies only to its SOP
  class and only when the tool shows the gap's symptom, so a newer dicom3tools that knows the IOD
  validates the file fully. Call sites never filter errors themselves.
- A missing ``dciodvfy`` fails the test rather than skipping it: conformance is part of what the
  suite checks, and a skip would hide that it was not checked. ``scripts/setup.sh`` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"


@dataclass(frozen=True)
class KnownToolGap:
    """Errors that come from the validator not knowing a standard, not from the file."""

    name: str
    reason: str
    #: SOP Class UID of the files the gap concerns.
    sop_class_uid: str
    #: Substring of an error line that shows the installed tool has the gap.
    symptom: str
    #: Substrings of the error lines the gap accounts for (the symptom included).
    explains: tuple[str, ...]


KNOWN_TOOL_GAPS: tuple[KnownToolGap, ...] = (
    KnownToolGap(
        name="labelmap-seg-iod-unknown",
        reason=(
            "dicom3tools 2022 predates the Label Map Segmentation IOD (2024): it finds no IOD "
            "for the SOP class, and checks segment numbers by the binary SEG rule (from 1) "
            "although a LABELMAP SEG describes background as segment 0"
        ),
        sop_class_uid=LABEL_MAP_SEGMENTATION_STORAGE,
        symptom="Information Object Not found",
        explains=("Information Object Not found", "with SegmentNumber of 0"),
    ),
)


def unexplained_errors(output_lines: list[str], sop_class_uid: str) -> list[str]:
    """The ``Error`` lines of dciodvfy output that no applicable known tool gap accounts for."""
    errors = [line for line in output_lines if line.startswith("Error")]
    for gap in KNOWN_TOOL_GAPS:
        if gap.sop_class_uid == sop_class_uid and any(gap.symptom in e for e in errors):
            errors = [e for e in errors if not any(s in e for s in gap.explains)]
    return errors


def dciodvfy_errors(source: Path | bytes) -> list[str]:
    """Error lines of ``dciodvfy`` for a DICOM file, or for Part-10 bytes (via a temp file that
    is removed afterwards), under the policy above; ``[]`` means conformant."""
    if shutil.which("dciodvfy") is None:
        pytest.fail(
            "dciodvfy is not installed: run scripts/setup.sh (Debian package dicom3tools)",
            pytrace=False,
        )
    if isinstance(source, bytes):
        fd, name = tempfile.mkstemp(suffix=".dcm")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(source)
            return dciodvfy_errors(Path(name))
        finally:
            os.unlink(name)
    path = Path(source)
    run = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=120
    )
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    sop_class_uid = str(header.get("SOPClassUID", ""))
    return unexplained_errors((run.stdout + run.stderr).splitlines(), sop_class_uid)
