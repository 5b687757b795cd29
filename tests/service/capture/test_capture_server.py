"""Opt-in capture through the real gRPC server on loopback (real ONNX Runtime, real SEGs):
off by default (nothing on disk), unlabeled capture that a reference turns labeled, and a
capture folder that cannot be written, which must not touch the study or the reference."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.client.client import SegmentationClient
from service.dicom.seg_reader import read_seg_labels
from service.serving.server import RunningServer
from tests.service.capture.capture_study import (
    Study,
    capture_of,
    files_under,
    hu_model,
    identifiers_found,
    reference_seg,
    start_server,
    write_study,
)

WAIT_S = 60.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hu_model(tmp_path_factory.mktemp("capture_model"))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return write_study(tmp_path_factory.mktemp("capture_study"), seed=5)


@pytest.fixture
def serve(model: Path) -> Iterator[Callable[..., RunningServer]]:
    servers: list[RunningServer] = []

    def start(**overrides: Any) -> RunningServer:
        servers.append(start_server(model, **overrides))
        return servers[-1]

    yield start
    for running in servers:
        running.stop(grace=1)


def _segment_and_refer(running: RunningServer, study: Study) -> tuple[dict, np.ndarray]:
    """Segment the study, then submit a reader's reference that differs from the prediction."""
    with SegmentationClient(running.address, timeout_s=120) as client:
        result = client.segment_directory(study.folder)
        uids = [str(ds.SOPInstanceUID) for ds in study.volume.datasets]
        reference = read_seg_labels(result.seg_bytes, uids).astype(np.uint8)
        reference[3:8, 20:34, 18:30] = 2  # the reader adds a GGO the model missed
        reference[5:7, 40:46, 36:44] = 3
        quality = client.submit_reference(
            result.summary["study_uid_hash"], reference_seg(study.volume, reference)
        )
    assert quality["voldice"], quality
    return result.summary, reference


def _sample(running: RunningServer, name: str, **labels: str) -> float | None:
    return running.metrics.registry.get_sample_value(name, labels)


def test_default_settings_keep_nothing_anywhere(serve, study, tmp_path, monkeypatch):
    workdir, tempdir = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    tempdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(tempfile, "tempdir", str(tempdir))
    running = serve()
    assert running.monitor is not None and running.monitor.capture is None
    summary, _ = _segment_and_refer(running, study)
    assert summary["study_uid_hash"]
    assert files_under(workdir) == [] and files_under(tempdir) == []
    assert _sample(running, "pulmoseg_captured_studies", kind="labeled") is None


def test_unlabeled_capture_then_the_reference_makes_it_labeled(serve, study, tmp_path):
    root = tmp_path / "capture"
    running = serve(capture_dir=root, capture_unlabeled=True)
    capture = capture_of(running)
    with SegmentationClient(running.address, timeout_s=120) as client:
        summary = client.segment_directory(study.folder).summary
    study_hash = summary["study_uid_hash"]
    assert capture.wait_idle(WAIT_S)

    entry = json.loads((root / "manifest.json").read_text())["studies"]
    assert [(s["id"], s["labeled"]) for s in entry] == [(study_hash, False)]
    assert entry[0]["model_version"] == summary["model_version"]
    with np.load(root / entry[0]["image"]) as data:
        assert data["volume"].dtype == np.int16
        np.testing.assert_array_equal(data["volume"], np.rint(study.volume.hu).astype(np.int16))
        np.testing.assert_allclose(data["spacing_zyx"], study.volume.spacing_zyx)
    assert not (root / "pending").exists()
    assert _sample(running, "pulmoseg_captured_studies", kind="unlabeled") == 1

    _, reference = _segment_and_refer(running, study)  # the same study again, then its reference
    assert capture.wait_idle(WAIT_S)
    studies = json.loads((root / "manifest.json").read_text())["studies"]
    assert [(s["id"], s["labeled"]) for s in studies] == [(study_hash, True)]
    assert studies[0]["reference_classes"] == ["lung", "ggo", "consolidation"]
    with np.load(root / studies[0]["label"]) as data:
        np.testing.assert_array_equal(data["volume"], reference)
    assert identifiers_found(root, study.identifiers) == []
    assert [p for p in files_under(root) if p.name.startswith(".tmp-")] == []
    assert _sample(running, "pulmoseg_captured_studies", kind="labeled") == 1
    assert _sample(running, "pulmoseg_captured_studies", kind="unlabeled") == 0
    assert _sample(running, "pulmoseg_capture_errors_total") == 0


def test_a_capture_folder_that_cannot_be_written_fails_only_the_capture(serve, study, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the capture folder's parent should be")
    running = serve(capture_dir=blocker / "capture", capture_unlabeled=True)
    capture = capture_of(running)
    assert capture.wait_idle(WAIT_S)
    assert _sample(running, "pulmoseg_capture_errors_total") == 0

    with SegmentationClient(running.address, timeout_s=120) as client:
        first = client.segment_directory(study.folder)
        assert capture.wait_idle(WAIT_S)
        assert _sample(running, "pulmoseg_capture_errors_total") == 1
        second = client.segment_directory(study.folder)  # still serving, same answer
    assert first.seg_bytes and first.summary["class_volumes_ml"]
    assert second.summary["class_volumes_ml"] == first.summary["class_volumes_ml"]
    assert capture.wait_idle(WAIT_S)
    assert _sample(running, "pulmoseg_capture_errors_total") == 2
    assert blocker.read_text().startswith("a file")
    assert files_under(tmp_path) == [blocker]
