"""The monitor's hooks on a real capture folder (no server): what a reference must annotate to
make a labeled case, and a full queue that drops a capture without blocking the caller."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.capture import CaptureSettings, StudyCapture
from service.capture import capture as capture_module
from service.core.classes import DEFAULT_CLASSES
from service.core.manifest import ModelManifest
from service.core.study_outcome import StudyOutcome
from service.quality.geometry import StudyGeometry
from service.quality.monitor import SegmentedStudy
from tests.service.capture.capture_study import files_under

SHAPE = (4, 6, 6)
MANIFEST = ModelManifest(
    name="net",
    version="2.0.0",
    classes=list(DEFAULT_CLASSES),
    slice_context=3,
    hu_window=(-1000.0, 200.0),
    input_size=(6, 6),
)


def _result(study_hash: str) -> SegmentedStudy:
    geometry = StudyGeometry(
        shape=SHAPE,
        spacing_zyx=(2.0, 0.8, 0.8),
        origin=(0.0, 0.0, 0.0),
        row_cosine=(1.0, 0.0, 0.0),
        column_cosine=(0.0, 1.0, 0.0),
        slice_normal=(0.0, 0.0, 1.0),
        frame_of_reference_hash="f0",
    )
    return SegmentedStudy(
        outcome=StudyOutcome(study_uid_hash=study_hash),
        labels=np.zeros(SHAPE, np.uint8),
        geometry=geometry,
        hu=np.full(SHAPE, -800.0, np.float32),
    )


def _masks(*indices: int) -> SimpleNamespace:
    masks = {}
    for index in indices:
        mask = np.zeros(SHAPE, np.float32)
        mask[index] = 1.0  # slice k holds class k
        masks[index] = mask
    return SimpleNamespace(masks=masks)


def test_only_a_reference_of_every_class_makes_a_labeled_case(tmp_path: Path) -> None:
    capture = StudyCapture(CaptureSettings(dir=tmp_path))
    try:
        capture.study_segmented(_result("aa11"), MANIFEST)
        capture.reference_submitted("aa11", _masks(2), MANIFEST)  # lesions only: no label
        assert capture.wait_idle(30)
        assert [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path)] == [
            "pending/aa11.npz"
        ]
        capture.reference_submitted("aa11", _masks(1, 2, 3), MANIFEST)
        assert capture.wait_idle(30)
        assert capture.dataset.counts() == {"labeled": 1, "unlabeled": 0}
        with np.load(tmp_path / "cases" / "aa11" / "label.npz") as data:
            assert [int(data["volume"][k].max()) for k in range(4)] == [0, 1, 2, 3]
    finally:
        capture.close()


def test_a_full_queue_drops_the_capture_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture_module, "QUEUE_SIZE", 1)
    release = threading.Event()
    registry = CollectorRegistry()
    capture = StudyCapture(CaptureSettings(dir=tmp_path, unlabeled=True), registry)
    try:
        assert capture.wait_idle(30)
        started = threading.Event()

        def blocked() -> None:
            started.set()
            release.wait(30)

        capture._submit("-", "test", blocked)  # occupies the writer
        assert started.wait(30)
        capture.study_segmented(_result("bb22"), MANIFEST)  # fills the queue of one
        capture.study_segmented(_result("cc33"), MANIFEST)  # dropped at once
        assert registry.get_sample_value("pulmoseg_capture_errors_total") == 1
        release.set()
        assert capture.wait_idle(30)
        assert [s["id"] for s in capture.dataset.studies()] == ["bb22"]
    finally:
        release.set()
        capture.close()
