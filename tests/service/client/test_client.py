"""SegmentationClient: what it sends, and the one-sentence errors users see."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import grpc
import pydicom
import pytest

from service.client.client import ClientError, SegmentationClient, study_files, upload_requests
from service.client.retry import RetryPolicy
from service.grpc_api import segmentation_pb2 as pb2
from service.serving.server import build_server
from service.serving.settings import load_settings

MIB = 1024 * 1024


def test_study_files_skips_dicomdir_and_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "series" / "sub").mkdir(parents=True)
    for name in ("series/b.dcm", "series/sub/IM0001", "a", "DICOMDIR", ".DS_Store"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.dcm").write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in study_files(tmp_path)]
    assert found == ["a", "series/b.dcm", "series/sub/IM0001"]


def test_study_files_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="does not exist or is not a folder"):
        study_files(tmp_path / "missing")
    (tmp_path / "DICOMDIR").write_bytes(b"x")
    with pytest.raises(ClientError, match="holds no files to send"):
        study_files(tmp_path)


def test_upload_requests_chunks_every_instance_below_the_message_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    big.write_bytes(bytes(range(256)) * (10 * MIB // 256 + 3))  # 10 MiB + 768 bytes
    messages = list(
        upload_requests(
            [big, b"small", b""], client_name="ci", expected_count=3, segmentation_type="labelmap"
        )
    )
    header = messages[0].header
    assert (header.client_name, header.expected_instance_count) == ("ci", 3)
    assert header.segmentation_type == pb2.SEGMENTATION_TYPE_LABELMAP
    chunks = [m.chunk for m in messages[1:]]
    assert [c.instance_index for c in chunks] == [0] * 11 + [1, 2]
    assert [c.last_chunk for c in chunks] == [False] * 10 + [True, True, True]
    assert max(len(c.data) for c in chunks) == MIB
    assert max(m.ByteSize() for m in messages) < MIB + 64
    assert b"".join(c.data for c in chunks[:11]) == big.read_bytes()
    assert (chunks[11].data, chunks[12].data) == (b"small", b"")


def test_upload_requests_rejects_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match="'segmentation_type' must be one of 'BINARY', 'LABELMAP', got 'RGB'."
    ):
        next(upload_requests([b"x"], segmentation_type="RGB"))
    with pytest.raises(ValueError, match="got 'labelmpa'. Did you mean 'LABELMAP'"):
        next(upload_requests([b"x"], segmentation_type="labelmpa"))
    with pytest.raises(ValueError, match="'chunk_bytes' must be 1..3145728, got 0"):
        next(upload_requests([b"x"], chunk_bytes=0))


def test_client_argument_checks() -> None:
    with pytest.raises(TypeError, match="'target' must be a 'host:port' string"):
        SegmentationClient("")
    with pytest.raises(ValueError, match="'timeout_s' must be > 0 seconds, got 0"):
        SegmentationClient("127.0.0.1:1", timeout_s=0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_dicom(path: Path, series_uid: str = "1.2.3.4") -> Path:
    """A header-only DICOM file: enough for the client to decide it is an instance to send."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def test_unreachable_server_is_one_clear_sentence(tmp_path: Path) -> None:
    """Also after the study's retries (UNAVAILABLE is retried, whatever its wording)."""
    port = _closed_port()
    _tiny_dicom(tmp_path / "a.dcm")
    fast = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    with SegmentationClient(f"127.0.0.1:{port}", timeout_s=5, retry=fast) as client:
        for call in (client.model_info, client.health, lambda: client.segment_directory(tmp_path)):
            with pytest.raises(ClientError) as info:
                call()
            assert str(info.value) == (
                f"Could not reach the pulmoseg server at 127.0.0.1:{port}: connection refused."
            )
            assert info.value.code is grpc.StatusCode.UNAVAILABLE


def test_wait_until_serving_times_out_while_no_model_is_loaded(tmp_path: Path) -> None:
    settings = load_settings(
        env={}, port=0, metrics_enabled=False, model_path=tmp_path / "model.onnx"
    )
    running = build_server(settings, autoload=False)  # never loads: stays NOT_SERVING
    try:
        with SegmentationClient(running.address, timeout_s=5) as client:
            assert client.health() == "NOT_SERVING"
            with pytest.raises(
                ClientError, match=r"was not SERVING after 0.5 s \(last status: NOT_SERVING\)"
            ):
                client.wait_until_serving(timeout_s=0.5, poll_s=0.1)
            with pytest.raises(ClientError, match="answered UNAVAILABLE: .*still loading") as info:
                client.segment_files([b"x"])
            assert info.value.code is grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace=0)


def test_segment_files_round_trip(exported_model: Path, held_out_study) -> None:
    """The client's happy path: reassembled SEG verified against the summary."""
    settings = load_settings(env={}, port=0, metrics_enabled=False, model_path=exported_model)
    running = build_server(settings)
    try:
        with SegmentationClient(running.address, timeout_s=120, chunk_bytes=4096) as client:
            client.wait_until_serving(timeout_s=120)
            files = sorted(p for p in held_out_study.dicom_dir.rglob("*") if p.is_file())
            result = client.segment_files(files)
        assert result.seg_bytes[128:132] == b"DICM"
        assert result.summary["seg_size_bytes"] == len(result.seg_bytes)
        assert result.summary["num_instances"] == len(files)
    finally:
        running.stop(grace=0)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_server_and_client(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = load_settings(
        env={}, port=0, metrics_enabled=False, model_path=tmp_path / "m.onnx",
        tls_cert=cert, tls_key=key,
    )  # fmt: skip
    running = build_server(settings, autoload=False)
    try:
        with SegmentationClient(running.address, tls_ca=cert, timeout_s=5) as secure:
            assert secure.health() == "NOT_SERVING"
        with SegmentationClient(running.address, timeout_s=5) as plaintext:
            with pytest.raises(ClientError) as info:
                plaintext.health()
            assert info.value.code is grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace=0)
