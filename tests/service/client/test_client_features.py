"""The client people use: folders as exported, progress, preview, LABELMAP, mTLS, retries.

Real files (phantom CT series, a gzip'd NIfTI stand-in, a README, a DICOMDIR), a real server on
loopback with the session model for the end-to-end CLI run, real openssl certificates.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from service.cli.main import main
from service.client.client import ClientError, SegmentationClient, method_config
from service.client.progress_bar import ProgressBar, render_bar
from service.client.retry import RetryPolicy
from service.dicom.study_folder import scan_study_folder
from service.serving.server import build_server
from service.serving.settings import load_settings
from tests.dicom_validation import dciodvfy_errors
from training.phantom import write_ct_series

LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"


def _dicomdir(path: Path) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.DirectoryRecordSequence = pydicom.Sequence()
    ds.save_as(path, enforce_file_format=True)


def export_like_folder(dicom_dir: Path, target: Path, *, extra_series: bool = False) -> Path:
    """A study folder as users have them: DICOM plus a NIfTI, a README and a DICOMDIR."""
    shutil.copytree(dicom_dir, target / "CT")
    (target / "study.nii.gz").write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + bytes(344)))
    (target / "README").write_text("exported by the PACS on Monday\n")
    _dicomdir(target / "DICOMDIR")
    if extra_series:
        write_ct_series(
            np.full((2, 8, 8), -1000.0, np.float32),
            (2.0, 1.0, 1.0),
            target / "SCOUT",
            study_uid=generate_uid(),
            series_uid=generate_uid(),
            patient_name="Other^Series",
            patient_id="OS1",
            seed=3,
        )
    return target


def test_scan_uploads_dicom_and_lists_what_it_skips(held_out_study, tmp_path: Path) -> None:
    folder = export_like_folder(held_out_study.dicom_dir, tmp_path / "study", extra_series=True)
    scan = scan_study_folder(folder)
    skipped = {s.path: s.reason for s in scan.skipped}
    assert skipped == {
        "DICOMDIR": "DICOMDIR index",
        "README": "not DICOM",
        "study.nii.gz": "not DICOM",
    }
    assert len(scan.series_uids) == 2
    ct_uid = pydicom.dcmread(next((folder / "CT").rglob("*.dcm"))).SeriesInstanceUID
    only_ct = scan_study_folder(folder, series_uid=ct_uid)
    assert all(p.is_relative_to(folder / "CT") for p in only_ct.files)
    assert sum(s.reason == "another series" for s in only_ct.skipped) == 2
    with pytest.raises(
        ValueError, match=rf"no instance of series 1\.2\.3; series found: .*{ct_uid}"
    ):
        scan_study_folder(folder, series_uid="1.2.3")


def test_progress_bar_lines_follow_the_events() -> None:
    assert render_bar("inference", 0.5, 3.25) == (
        "[" + "#" * 15 + "." * 15 + "]  50% inference                 3.2 s"
    )
    assert "queued (position 2)" in render_bar("receiving", 0.0, 0.0, queue_position=2)
    out = io.StringIO()
    bar = ProgressBar(out, interactive=False)
    for stage, fraction in [
        ("receiving", 0.1),
        ("receiving", 0.2),
        ("inference", 0.6),
        ("done", 1.0),
    ]:
        bar(stage, fraction)
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["receiving", "inference", "done"]


def test_retry_configuration() -> None:
    # gRPC's own retries stay off: the client's RetryPolicy is the only layer.
    for wait in (False, True):
        config = method_config(wait_for_ready=wait)
        assert config["waitForReady"] is wait and "retryPolicy" not in config
    assert SegmentationClient("127.0.0.1:1").retry == RetryPolicy()
    fast = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.01)
    client = SegmentationClient("127.0.0.1:1", retry=fast, max_attempts=2)
    assert client.retry == RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.01)
    with pytest.raises(ValueError, match="'max_attempts' must be 1..10, got 0"):
        SegmentationClient("127.0.0.1:1", max_attempts=0)
    with pytest.raises(TypeError, match="'retry' must be a RetryPolicy, got int"):
        SegmentationClient("127.0.0.1:1", retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'tls_cert' and 'tls_key' go together"):
        SegmentationClient("127.0.0.1:1", tls_cert="c.pem")


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed to make test certificates", pytrace=False)
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_mutual_tls_needs_the_client_certificate(tmp_path: Path) -> None:
    server_cert, server_key = _certificate(tmp_path, "server")
    client_cert, client_key = _certificate(tmp_path, "client")
    settings = load_settings(
        env={}, port=0, metrics_enabled=False, model_path=tmp_path / "m.onnx",
        tls_cert=server_cert, tls_key=server_key, tls_client_ca=client_cert,
    )  # fmt: skip
    running = build_server(settings, autoload=False)
    try:
        with SegmentationClient(
            running.address, tls_ca=server_cert, tls_cert=client_cert, tls_key=client_key,
            timeout_s=5,
        ) as client:  # fmt: skip
            assert client.health() == "NOT_SERVING"
        with SegmentationClient(running.address, tls_ca=server_cert, timeout_s=5) as anonymous:
            with pytest.raises(ClientError) as info:
                anonymous.health()
            assert info.value.code is grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace=0)


def test_segment_cli_with_preview_labelmap_and_a_messy_folder(
    exported_model: Path, held_out_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = export_like_folder(held_out_study.dicom_dir, tmp_path / "study")
    settings = load_settings(env={}, port=0, metrics_enabled=False, model_path=exported_model)
    running = build_server(settings)
    try:
        assert running.wait_until_ready(120)
        out, preview, summary = tmp_path / "seg.dcm", tmp_path / "preview.png", tmp_path / "s.json"
        code = main(
            ["segment", str(folder), "--server", running.address, "--out", str(out),
             "--segmentation-type", "labelmap", "--preview", str(preview),
             "--summary-json", str(summary)]
        )  # fmt: skip
    finally:
        running.stop(grace=1)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipped 3 file(s)" in captured.out and "study.nii.gz (not DICOM)" in captured.out
    stages = [line.split()[2] for line in captured.err.splitlines() if line.startswith("[")]
    assert stages[0] == "receiving" and stages[-1] == "done" and "inference" in stages
    seg = pydicom.dcmread(out)
    assert seg.SOPClassUID == LABELMAP_SOP_CLASS
    assert dciodvfy_errors(out) == []
    image = np.asarray(Image.open(preview).convert("RGB")).astype(int)
    assert image.shape[0] > 300 and image.shape[1] >= 480
    colourful = np.abs(image[..., 0] - image[..., 1]) + np.abs(image[..., 1] - image[..., 2])
    assert (colourful > 40).sum() > 500  # the overlay is there, not only grey CT
    assert json.loads(summary.read_text())["num_instances"] == len(
        list((folder / "CT").rglob("*.dcm"))
    )
