"""An upload over gRPC follows the study-folder rule: stray items are skipped, not fatal.

A client that sends a whole export (``segment_files`` with every file, or another client that
does not scan the folder) gets the same study the folder would give: the README, the DICOMDIR
and an empty item are skipped, and a study made only of such items is INVALID_ARGUMENT naming
them. Real server on loopback, real pipeline, the session's exported model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.client.client import ClientError, SegmentationClient
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings
from tests.service.dicom.test_study_folder import write_fileset


@pytest.fixture(scope="module")
def server(exported_model: Path) -> Iterator[RunningServer]:
    settings = load_settings(
        env={}, port=0, metrics_port=0, max_concurrent_studies=1, model_path=exported_model
    )
    running = build_server(settings)
    assert running.wait_until_ready(120), f"model did not load: {running.load_error!r}"
    yield running
    running.stop(grace=1)


@pytest.fixture
def client(server: RunningServer) -> Iterator[SegmentationClient]:
    with SegmentationClient(server.address, timeout_s=120, max_attempts=1) as c:
        yield c


def test_non_dicom_items_of_an_upload_are_skipped_like_in_a_folder(
    client: SegmentationClient, held_out_study, tmp_path: Path
) -> None:
    ct = sorted(held_out_study.dicom_dir.iterdir())
    dicomdir = write_fileset(ct, tmp_path / "export").read_bytes()
    clean = client.segment_files(ct)
    stray = client.segment_files([b"Exported by the PACS on Monday.\n", dicomdir, *ct, b""])
    assert stray.summary["num_instances"] == clean.summary["num_instances"] == len(ct)
    assert stray.summary["class_volumes_ml"] == clean.summary["class_volumes_ml"]


def test_an_upload_of_only_stray_items_names_them(
    client: SegmentationClient, held_out_study, tmp_path: Path
) -> None:
    dicomdir = write_fileset(sorted(held_out_study.dicom_dir.iterdir()), tmp_path / "export")
    with pytest.raises(
        ClientError,
        match=r"The upload holds no DICOM instances; skipped 3 items: instance #0 \(not DICOM\), "
        r"instance #1 \(DICOMDIR index\), instance #2 \(not DICOM\)\.",
    ) as info:
        client.segment_files([b"README\n", dicomdir.read_bytes(), b""])
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
