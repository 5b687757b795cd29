"""The gRPC server on loopback (port 0) with the real pipeline and the session's exported model."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pydicom
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import MRImageStorage, SegmentationStorage

from service.client.client import ClientError, SegmentationClient, upload_requests
from service.core.manifest import read_model_manifest
from service.core.progress import ProgressStage
from service.grpc_api import SERVICE_NAME
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.grpc_api.progress import stage_from_proto
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings

MIB = 1024 * 1024


def _settings(**overrides):
    base = {"port": 0, "metrics_port": 0, "max_workers": 6, "max_concurrent_studies": 2}
    return load_settings(env={}, **{**base, **overrides})


@pytest.fixture(scope="module")
def server(exported_model: Path) -> Iterator[RunningServer]:
    running = build_server(_settings(model_path=exported_model))
    assert running.wait_until_ready(120), f"model did not load: {running.load_error!r}"
    yield running
    running.stop(grace=1)


@pytest.fixture
def client(server: RunningServer) -> Iterator[SegmentationClient]:
    with SegmentationClient(server.address, timeout_s=120) as c:
        yield c


def _study_files(held_out_study) -> list[Path]:
    return sorted(p for p in held_out_study.dicom_dir.rglob("*") if p.is_file())


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _requests(port: int, method: str, code: str) -> float:
    key = (("code", code), ("method", method))
    return _scrape(port).get("pulmoseg_requests_total", {}).get(key, 0.0)


def _in_progress(running: RunningServer) -> float:
    return running.metrics.registry.get_sample_value("pulmoseg_studies_in_progress")


def _raw_call(
    address: str,
    messages: list[pb2.SegmentStudyRequest],
    *,
    requests: Iterator[pb2.SegmentStudyRequest] | None = None,
    timeout: float = 30,
) -> grpc.RpcError:
    """Send hand-made upload messages; returns the error the server answered with."""
    with grpc.insecure_channel(address) as channel:
        stub = pb2_grpc.SegmentationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.SegmentStudy(requests or iter(messages), timeout=timeout))
    return info.value


def _header(**kwargs) -> pb2.SegmentStudyRequest:
    return pb2.SegmentStudyRequest(header=pb2.StudyUploadHeader(client_name="test", **kwargs))


def _chunk(index: int, data: bytes, last: bool = True) -> pb2.SegmentStudyRequest:
    return pb2.SegmentStudyRequest(
        chunk=pb2.InstanceChunk(instance_index=index, data=data, last_chunk=last)
    )


def test_health_is_not_serving_until_the_model_loads(exported_model: Path) -> None:
    running = build_server(_settings(model_path=exported_model), autoload=False)
    try:
        with grpc.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE_NAME):
                status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with SegmentationClient(running.address, timeout_s=10) as c:
                with pytest.raises(ClientError, match="model is still loading") as info:
                    c.model_info()
                assert info.value.code is grpc.StatusCode.UNAVAILABLE
            assert _scrape(running.metrics_port)["pulmoseg_model_loaded"][()] == 0.0

            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=120)
            seen = [next(watch).status]
            running.start_loading()
            while seen[-1] != health_pb2.HealthCheckResponse.SERVING:
                seen.append(next(watch).status)
            watch.cancel()
        assert seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING
        metrics = _scrape(running.metrics_port)
        assert metrics["pulmoseg_model_loaded"][()] == 1.0
        [labels] = metrics["pulmoseg_model_info"]
        assert dict(labels)["provider"] == "CPUExecutionProvider"
    finally:
        running.stop(grace=0)


def test_failed_model_load_stays_not_serving(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.onnx"
    bogus.write_bytes(b"this is not ONNX")
    failures: list[BaseException] = []
    running = build_server(_settings(model_path=bogus), on_load_failed=failures.append)
    try:
        assert running.wait_until_ready(60) is False
        assert len(failures) == 1 and running.load_error is failures[0]
        with SegmentationClient(running.address, timeout_s=10) as c:
            assert c.health() == "NOT_SERVING"
            with pytest.raises(ClientError, match="loading it failed"):
                c.model_info()
    finally:
        running.stop(grace=0)


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    settings = _settings(model_path=tmp_path / "m.onnx", metrics_enabled=False)
    first = build_server(settings, autoload=False)
    try:
        with pytest.raises(OSError, match=rf"Could not bind the gRPC port 127.0.0.1:{first.port}"):
            build_server(settings.with_overrides(port=first.port), autoload=False)
        with pytest.raises(ValueError, match="'model_path' is required"):
            build_server(_settings(metrics_enabled=False))
    finally:
        first.stop(grace=0)


def test_a_failed_start_releases_what_it_opened(tmp_path: Path) -> None:
    """A step of build_server that fails (here: a busy metrics port) undoes the steps before it:
    the gRPC port it had bound is free again, so a retry on the same port starts."""
    first = build_server(_settings(model_path=tmp_path / "m.onnx"), autoload=False)
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = _settings(model_path=tmp_path / "m.onnx", port=port)
        with pytest.raises(OSError):
            build_server(settings.with_overrides(metrics_port=first.metrics_port), autoload=False)
        second = build_server(settings, autoload=False)
        try:
            assert second.port == port
        finally:
            second.stop(grace=0)
    finally:
        first.stop(grace=0)


def test_model_info_describes_the_manifest(
    client: SegmentationClient, exported_model: Path
) -> None:
    manifest = read_model_manifest(exported_model)
    info = client.model_info()
    assert (info["name"], info["version"]) == (manifest.name, manifest.version)
    assert info["provider"] == "CPUExecutionProvider"
    assert info["slice_context"] == manifest.slice_context
    assert (info["hu_window"]["min"], info["hu_window"]["max"]) == pytest.approx(manifest.hu_window)
    assert (info["input_size"]["rows"], info["input_size"]["columns"]) == manifest.input_size
    assert [c["name"] for c in info["classes"]] == [c.name for c in manifest.classes]
    ggo = next(c for c in info["classes"] if c["name"] == "ggo")
    assert ggo["property_type"] == {
        "scheme": "DCM",
        "value": "112120",
        "meaning": "Ground glass opacity",
    }
    assert info["validation_voldice"] == pytest.approx(manifest.validation_voldice)


def test_phantom_study_end_to_end(
    client: SegmentationClient, server: RunningServer, held_out_study, exported_model: Path
) -> None:
    progress: list[tuple[ProgressStage, float]] = []
    result = client.segment_directory(
        held_out_study.dicom_dir, lambda s, f: progress.append((s, f))
    )

    files = _study_files(held_out_study)
    ct = pydicom.dcmread(files[0])
    seg = pydicom.dcmread(io.BytesIO(result.seg_bytes))
    assert seg.SOPClassUID == SegmentationStorage and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == ct.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    manifest = read_model_manifest(exported_model)
    assert len(seg.SegmentSequence) == len(manifest.foreground_classes)

    summary = result.summary
    assert (
        summary["study_uid_hash"] == hashlib.sha256(ct.StudyInstanceUID.encode()).hexdigest()[:16]
    )
    assert summary["num_instances"] == len(files)
    assert summary["seg_size_bytes"] == len(result.seg_bytes)
    assert summary["seg_sha256"] == hashlib.sha256(result.seg_bytes).hexdigest()
    assert (summary["model_name"], summary["provider"]) == (manifest.name, "CPUExecutionProvider")
    assert set(summary["class_volumes_ml"]) == {c.name for c in manifest.foreground_classes}
    assert summary["class_volumes_ml"]["lung"] > 100.0  # phantom lungs are litres, not drops
    assert sorted(summary["stage_seconds"]) == sorted(
        [s.value for s in ProgressStage if s is not ProgressStage.DONE] + ["quality", "total"]
    )  # the proto map has no order; the stage names plus the quality step and "total"

    # The client reports ProgressStage members: every stage in order, ending at DONE / 1.0.
    assert all(isinstance(s, ProgressStage) for s, _ in progress)
    assert list(dict.fromkeys(s for s, _ in progress)) == list(ProgressStage)
    assert progress[-1] == (ProgressStage.DONE, 1.0)


def test_progress_events_of_a_real_upload(server: RunningServer, held_out_study) -> None:
    """The whole response stream, raw: stages declared and in order, fractions monotone."""
    files = _study_files(held_out_study)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb2_grpc.SegmentationServiceStub(channel)
        responses = list(
            stub.SegmentStudy(
                upload_requests(files, expected_count=len(files), chunk_bytes=16 * 1024),
                timeout=120,
            )
        )
    kinds = [r.WhichOneof("payload") for r in responses]
    assert kinds[-1] == "summary" and kinds.count("summary") == 1
    first_chunk = kinds.index("seg_chunk")
    # the SEG, then the SR (clinical summary, sent by default), then DONE, then the summary
    assert set(kinds[first_chunk:-3]) == {"seg_chunk"} and kinds[-3] == "report"
    events = [r.progress for r in responses if r.HasField("progress")]
    stages = [stage_from_proto(e.stage) for e in events]  # raises for an undeclared stage
    assert list(dict.fromkeys(stages)) == list(ProgressStage)  # every stage, in enum order
    order = [list(ProgressStage).index(s) for s in stages]
    assert order == sorted(order)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions), fractions  # monotone: never jumps back to 0
    assert fractions[0] >= 0.0 and fractions[-1] == 1.0
    assert (stages[-1], events[-1].stage_fraction) == (ProgressStage.DONE, 1.0)
    assert kinds[-2] == "progress" and stage_from_proto(responses[-2].progress.stage) is (
        ProgressStage.DONE
    )
    for stage in ProgressStage:
        own = [e.stage_fraction for e, s in zip(events, stages, strict=True) if s is stage]
        assert own == sorted(own) and own[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in own)
    assert 1 < stages.count(ProgressStage.RECEIVING) <= len(files) + 1  # the upload is tracked


def test_summary_total_is_the_metric_total_and_includes_the_upload(
    server: RunningServer, client: SegmentationClient, held_out_study
) -> None:
    def total_seconds() -> float:
        registry = server.metrics.registry
        value = registry.get_sample_value("pulmoseg_request_duration_seconds_sum")
        return value or 0.0

    before = total_seconds()
    seconds = client.segment_directory(held_out_study.dicom_dir).summary["stage_seconds"]
    assert total_seconds() - before == pytest.approx(seconds["total"], abs=1e-9)
    stages = [s.value for s in ProgressStage if s is not ProgressStage.DONE]
    assert seconds["receiving"] > 0.0
    assert seconds["total"] >= sum(seconds[s] for s in stages)


def test_highdicom_rejection_is_invalid_argument_naming_the_attribute(
    client: SegmentationClient, held_out_study, tmp_path: Path
) -> None:
    for path in _study_files(held_out_study):
        ds = pydicom.dcmread(path)
        ds.PatientSex = "X"  # a value highdicom cannot carry into the SEG
        ds.save_as(tmp_path / path.name)
    with pytest.raises(
        ClientError, match=r"rejected the study: .*PatientSex \(0010,0040\)"
    ) as info:
        client.segment_directory(tmp_path)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_non_dicom_is_invalid_argument_and_server_keeps_serving(
    client: SegmentationClient, held_out_study
) -> None:
    with pytest.raises(ClientError, match=r"rejected the study: .*DICOM") as info:
        client.segment_files([b"this is a text file, not DICOM" * 10])
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert client.segment_directory(held_out_study.dicom_dir).summary["num_instances"] > 0


def test_mr_series_is_rejected_naming_mr(
    client: SegmentationClient, held_out_study, tmp_path: Path
) -> None:
    for path in _study_files(held_out_study):
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.save_as(tmp_path / path.name)
    with pytest.raises(ClientError, match=r"rejected the study: .*\bMR\b") as info:
        client.segment_directory(tmp_path)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_instances_larger_than_the_4_mib_message_limit(
    client: SegmentationClient, held_out_study, tmp_path: Path
) -> None:
    files = _study_files(held_out_study)
    for path in files:
        shutil.copy(path, tmp_path / path.name)
    big = pydicom.dcmread(files[0])
    block = big.private_block(0x0011, "PULMOSEG TEST PADDING", create=True)
    block.add_new(0x01, "OB", bytes(5 * MIB))
    big.save_as(tmp_path / files[0].name)
    assert (tmp_path / files[0].name).stat().st_size > 5 * MIB  # one instance > 4 MiB
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) > 5 * MIB  # and the study too

    result = client.segment_directory(tmp_path)  # default limits on both ends
    assert result.summary["num_instances"] == len(files)


def test_upload_protocol_violations(server: RunningServer) -> None:
    address = server.address
    error = _raw_call(address, [_chunk(0, b"x")])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "first SegmentStudy message must be a StudyUploadHeader" in error.details()

    error = _raw_call(address, [_header()])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No DICOM instances were sent")

    error = _raw_call(address, [_header(), _chunk(0, b"a"), _chunk(2, b"b")])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "expected 1, got 2" in error.details()

    error = _raw_call(address, [_header(), _chunk(0, b"a", last=False)])
    assert "ended inside instance 0" in error.details()

    error = _raw_call(address, [_header(expected_instance_count=3), _chunk(0, b"a")])
    assert "expected_instance_count=3" in error.details()

    error = _raw_call(address, [_header(), _header()])
    assert "second StudyUploadHeader" in error.details()


def test_upload_size_limit_is_resource_exhausted(server: RunningServer) -> None:
    small = build_server(_settings(max_upload_bytes=1000, metrics_enabled=False), server.pipeline)
    try:
        error = _raw_call(small.address, [_header(), _chunk(0, bytes(600)), _chunk(1, bytes(600))])
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 1000 bytes" in error.details()
    finally:
        small.stop(grace=0)


def test_concurrent_study_limit(server: RunningServer) -> None:
    busy = build_server(
        _settings(max_concurrent_studies=1, max_workers=3, metrics_enabled=False, queue_length=0),
        server.pipeline,
    )
    release = threading.Event()

    def held_upload() -> Iterator[pb2.SegmentStudyRequest]:
        yield _header()
        release.wait(30)  # keeps the only study slot taken until the second call was answered

    try:
        with grpc.insecure_channel(busy.address) as channel:
            stub = pb2_grpc.SegmentationServiceStub(channel)
            first = stub.SegmentStudy(held_upload(), timeout=30)
            deadline = time.monotonic() + 10
            while _in_progress(busy) < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            error = _raw_call(busy.address, [_header(), _chunk(0, b"x")])
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_concurrent_studies=1" in error.details()
            release.set()
            with pytest.raises(grpc.RpcError) as info:
                list(first)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # it sent no instance
    finally:
        release.set()
        busy.stop(grace=0)


def _wait_until_idle(running: RunningServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _in_progress(running) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _in_progress(running) == 0


def test_deadline_exceeded_mid_upload_then_server_recovers(
    server: RunningServer, held_out_study
) -> None:
    release = threading.Event()

    def stalled_upload() -> Iterator[pb2.SegmentStudyRequest]:
        yield _header()
        yield _chunk(0, b"partial", last=False)
        release.wait(30)

    try:
        error = _raw_call(server.address, [], requests=stalled_upload(), timeout=0.5)
    finally:
        release.set()
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_until_idle(server)

    hasty = SegmentationClient(server.address, timeout_s=0.001)
    with hasty, pytest.raises(ClientError, match="within the 0.001 s deadline") as info:
        hasty.segment_directory(held_out_study.dicom_dir)
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    with SegmentationClient(server.address, timeout_s=120) as patient:
        assert patient.segment_directory(held_out_study.dicom_dir).summary["num_instances"] > 0


def test_cancelling_during_the_pipeline_stops_the_study(
    server: RunningServer, held_out_study
) -> None:
    cancelled_before = _requests(server.metrics_port, "SegmentStudy", "CANCELLED")
    files = _study_files(held_out_study)
    with grpc.insecure_channel(server.address) as channel:
        call = pb2_grpc.SegmentationServiceStub(channel).SegmentStudy(
            upload_requests(files, expected_count=len(files)), timeout=60
        )
        stages = []
        with pytest.raises(grpc.RpcError) as info:
            for response in call:
                stages.append(response.progress.stage)
                if response.progress.stage == pb2.STAGE_PARSING:  # the pipeline is running now
                    call.cancel()
    assert info.value.code() is grpc.StatusCode.CANCELLED
    assert pb2.STAGE_PARSING in stages and pb2.STAGE_WRITING not in stages
    _wait_until_idle(server)
    deadline = time.monotonic() + 10
    while _requests(server.metrics_port, "SegmentStudy", "CANCELLED") == cancelled_before:
        assert time.monotonic() < deadline, "the server never recorded the cancelled study"
        time.sleep(0.05)


def test_token_auth(server: RunningServer) -> None:
    secured = build_server(_settings(auth_token="s3cret", metrics_enabled=False), server.pipeline)
    try:
        for token, message in ((None, "none was sent"), ("wrong", "is not valid")):
            with SegmentationClient(secured.address, token=token, timeout_s=10) as c:
                assert c.health() == "SERVING"  # probes need no token
                with pytest.raises(ClientError, match=message) as info:
                    c.model_info()
                assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
        error = _raw_call(secured.address, [_header(), _chunk(0, b"x")])
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        with SegmentationClient(secured.address, token="s3cret", timeout_s=10) as c:
            assert c.model_info()["provider"] == "CPUExecutionProvider"
    finally:
        secured.stop(grace=0)


def test_reflection_lists_the_services(server: RunningServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    names = {s.name for s in answer.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_metrics_scraped_after_a_study(
    server: RunningServer, client: SegmentationClient, held_out_study
) -> None:
    before = _scrape(server.metrics_port)
    ok_before = _requests(server.metrics_port, "SegmentStudy", "OK")
    client.segment_directory(held_out_study.dicom_dir)
    after = _scrape(server.metrics_port)
    assert _requests(server.metrics_port, "SegmentStudy", "OK") == ok_before + 1
    sent = sum(p.stat().st_size for p in _study_files(held_out_study))
    uploaded = after["pulmoseg_upload_bytes_total"][()] - before["pulmoseg_upload_bytes_total"][()]
    assert uploaded == sent
    assert after["pulmoseg_request_duration_seconds_count"][()] >= 1
    counts = after["pulmoseg_stage_duration_seconds_count"]
    for stage in (s.value for s in ProgressStage if s is not ProgressStage.DONE):
        assert counts[(("stage", stage),)] >= 1, stage
    assert after["process_resident_memory_bytes"][()] > 0
    assert after["pulmoseg_studies_in_progress"][()] == 0.0
    assert after["pulmoseg_model_loaded"][()] == 1.0


def _serve_process(model_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PULMOSEG_MODEL_PATH": str(model_path),
        "PULMOSEG_PORT": "0",
        "PULMOSEG_METRICS_PORT": "0",
        "PULMOSEG_GRACE_PERIOD_S": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service.serving.server"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],  # the repository root
    )


def test_serve_exits_non_zero_when_the_model_cannot_load(tmp_path: Path) -> None:
    process = _serve_process(tmp_path / "missing.onnx")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "Could not load the model" in stderr and "does not exist" in stderr


def test_serve_stops_gracefully_on_sigterm(exported_model: Path) -> None:
    process = _serve_process(exported_model)
    try:
        address = None
        for line in process.stderr:  # the log names the bound port (we asked for port 0)
            match = re.search(r"gRPC server bound to (\S+)", line)
            if match:
                address = match.group(1)
                break
        assert address, "the server never logged its bound address"
        threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
        with SegmentationClient(address, timeout_s=10) as c:
            c.wait_until_serving(timeout_s=120)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
