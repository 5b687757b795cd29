"""Bursts, a full queue, clients that leave, and a draining server — on loopback, bounded.

Real server (port 0) with the session model and the real pipeline; real clients in threads.
Study slots and queue lengths are small so every situation is reached in seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client.client import ClientError, SegmentationClient, upload_requests
from service.grpc_api import SERVICE_NAME
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings


@pytest.fixture(scope="module")
def pipeline(exported_model: Path) -> Iterator[object]:
    """One loaded pipeline shared by the servers of this module (loading is the slow part)."""
    running = build_server(
        load_settings(env={}, port=0, metrics_enabled=False, model_path=exported_model)
    )
    assert running.wait_until_ready(120), running.load_error
    yield running.pipeline
    running.stop(grace=0)


def _server(pipeline: object, **overrides: object) -> RunningServer:
    settings = load_settings(env={}, port=0, metrics_enabled=False, **overrides)
    return build_server(settings, pipeline)


def _count(running: RunningServer, code: str) -> float:
    value = running.metrics.registry.get_sample_value(
        "pulmoseg_requests_total", {"method": "SegmentStudy", "code": code}
    )
    return value or 0.0


def _health(running: RunningServer) -> int:
    """The health servicer's own answer (it keeps answering while draining; a stopped server
    rejects every call, probes included)."""
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    return running.health.Check(request, None).status


def _files(held_out_study) -> list[Path]:
    return sorted(p for p in held_out_study.dicom_dir.rglob("*") if p.is_file())


class HeldSlot:
    """A call that takes a study slot and keeps it (its upload never ends) until released."""

    def __init__(self, address: str) -> None:
        self._release = threading.Event()
        self._channel = grpc.insecure_channel(address)
        stub = pb2_grpc.SegmentationServiceStub(self._channel)
        self.call = stub.SegmentStudy(self._requests(), timeout=60)
        self._responses = threading.Thread(target=self._drain, daemon=True)
        self._responses.start()

    def _requests(self) -> Iterator[pb2.SegmentStudyRequest]:
        yield pb2.SegmentStudyRequest(header=pb2.StudyUploadHeader(client_name="holder"))
        self._release.wait(60)

    def _drain(self) -> None:
        try:
            for _ in self.call:
                pass
        except grpc.RpcError:
            pass

    def release(self) -> None:
        self._release.set()
        self._responses.join(30)
        self._channel.close()


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_burst_of_24_studies_from_8_clients_with_default_settings(pipeline, held_out_study) -> None:
    running = _server(pipeline)  # default max_concurrent_studies and queue_length
    files = _files(held_out_study)
    positions: list[int] = []

    def client_run(_: int) -> list[int]:
        sizes = []
        with SegmentationClient(running.address, timeout_s=300) as client:
            for _ in range(3):
                result = client.segment_files(files, on_queue_position=positions.append)
                sizes.append(result.summary["num_instances"])
        return sizes

    try:
        with ThreadPoolExecutor(8) as pool:
            results = [n for sizes in pool.map(client_run, range(8)) for n in sizes]
        assert results == [len(files)] * 24
        assert _count(running, "OK") == 24 and _count(running, "RESOURCE_EXHAUSTED") == 0
        assert max(positions) >= 1 and positions[-1] == 0  # studies waited and were told so
        admission = running.servicer._admission
        assert (admission.active, admission.waiting) == (0, 0)
    finally:
        running.stop(grace=0)


def test_full_queue_is_refused_and_the_client_retries_until_served(
    pipeline, held_out_study
) -> None:
    running = _server(pipeline, max_concurrent_studies=1, queue_length=0)
    holder = HeldSlot(running.address)
    try:
        _wait_for(lambda: running.servicer._admission.active == 1)
        with SegmentationClient(running.address, timeout_s=60, max_attempts=1) as impatient:
            with pytest.raises(ClientError, match=r"busy: .*queue_length=0") as info:
                impatient.segment_files(_files(held_out_study))
            assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        threading.Timer(1.5, holder.release).start()
        with SegmentationClient(running.address, timeout_s=60, max_attempts=8) as patient:
            result = patient.segment_files(_files(held_out_study))
        assert result.summary["num_instances"] == len(_files(held_out_study))
        assert _count(running, "RESOURCE_EXHAUSTED") >= 2  # the impatient one and >= 1 retry
    finally:
        holder.release()
        running.stop(grace=0)


def test_cancel_while_queued_gives_the_place_back(pipeline, held_out_study) -> None:
    running = _server(pipeline, max_concurrent_studies=1, queue_length=1)
    holder = HeldSlot(running.address)
    admission = running.servicer._admission
    try:
        _wait_for(lambda: admission.active == 1)
        with grpc.insecure_channel(running.address) as channel:
            stub = pb2_grpc.SegmentationServiceStub(channel)
            queued = stub.SegmentStudy(upload_requests(_files(held_out_study)), timeout=60)
            first = next(queued)
            assert first.progress.queue_position == 1
            queued.cancel()
        _wait_for(lambda: admission.waiting == 0)
        assert admission.active == 1  # the holder still runs; nothing leaked
    finally:
        holder.release()
        running.stop(grace=0)
    assert (admission.active, admission.waiting) == (0, 0)


def test_queue_wait_limit_ends_in_resource_exhausted(pipeline, held_out_study) -> None:
    running = _server(pipeline, max_concurrent_studies=1, queue_length=2, queue_max_wait_s=0.5)
    holder = HeldSlot(running.address)
    try:
        _wait_for(lambda: running.servicer._admission.active == 1)
        client = SegmentationClient(running.address, timeout_s=60, max_attempts=1)
        with (
            client,
            pytest.raises(ClientError, match=r"waited 0\.5 s \(queue_max_wait_s\)") as info,
        ):
            client.segment_files(_files(held_out_study))
        assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert running.servicer._admission.waiting == 0
    finally:
        holder.release()
        running.stop(grace=0)


class GatedStudy:
    """A real study whose upload stops after the header until :meth:`release`: it holds the
    study slot for as long as a test needs, then finishes like any other."""

    def __init__(self, address: str, files: list[Path]) -> None:
        self._gate = threading.Event()
        self._channel = grpc.insecure_channel(address)
        stub = pb2_grpc.SegmentationServiceStub(self._channel)
        self._call = stub.SegmentStudy(self._requests(files), timeout=300)
        next(self._call)  # the first answer: admitted, header read (an event, no polling)

    def _requests(self, files: list[Path]) -> Iterator[pb2.SegmentStudyRequest]:
        requests = upload_requests(files, client_name="gated", expected_count=len(files))
        yield next(requests)  # the header
        assert self._gate.wait(300), "the gated study was never released"
        yield from requests

    def release(self) -> pb2.StudySummary:
        """Send the rest of the study and return its summary."""
        self._gate.set()
        try:
            summaries = [r.summary for r in self._call if r.WhichOneof("payload") == "summary"]
        finally:
            self._channel.close()
        assert len(summaries) == 1
        return summaries[0]

    def abandon(self) -> None:
        """Let the upload go on and close the channel (a failed test's clean-up)."""
        self._gate.set()
        self._channel.close()


def test_draining_server_finishes_running_and_queued_studies_and_refuses_new_ones(
    pipeline, held_out_study
) -> None:
    """Every wait is on an event or a bounded condition with a generous deadline (no sleeps),
    so the outcome does not depend on how fast a loaded machine runs the studies."""
    running = _server(pipeline, max_concurrent_studies=1, queue_length=4)
    files = _files(held_out_study)
    admission = running.servicer._admission
    drain = running.state.drain
    queued = [threading.Event(), threading.Event()]

    def queued_study(index: int) -> int:
        with SegmentationClient(running.address, timeout_s=300, max_attempts=1) as client:
            summary = client.segment_files(
                files, on_queue_position=lambda position: queued[index].set()
            ).summary
        return summary["num_instances"]

    stopper = threading.Thread(target=running.stop, kwargs={"grace": 300}, daemon=True)
    pool = ThreadPoolExecutor(2)
    first: GatedStudy | None = None
    try:
        first = GatedStudy(running.address, files)  # runs: holds the only study slot
        studies = [pool.submit(queued_study, i) for i in range(2)]
        for event in queued:  # each was told its queue position: both wait behind it
            assert event.wait(120), "a study was never queued"
        assert (admission.active, admission.waiting, drain.active) == (1, 2, 3)

        stopper.start()
        _wait_for(lambda: _health(running) == health_pb2.HealthCheckResponse.NOT_SERVING, 120)
        assert drain.draining

        # New work is refused by the service itself, UNAVAILABLE (retryable elsewhere).
        late = SegmentationClient(running.address, timeout_s=120, max_attempts=1)
        with late, pytest.raises(ClientError, match="draining; retry on another") as info:
            late.segment_files(files)
        assert info.value.code is grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(running.address) as channel:
            quality = pb2_grpc.QualityServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                quality.ListStudyQuality(pb2.ListStudyQualityRequest(), timeout=120)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "draining" in refused.value.details()
            # Health keeps answering over the network while the server drains.
            probe = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=120
            )
            assert probe.status == health_pb2.HealthCheckResponse.NOT_SERVING

        # Nothing admitted was dropped and gRPC has not been stopped under it.
        assert stopper.is_alive()
        assert (admission.active, admission.waiting, drain.active) == (1, 2, 3)

        assert first.release().num_instances == len(files)
        assert [s.result(timeout=300) for s in studies] == [len(files)] * 2
        stopper.join(300)
        assert not stopper.is_alive()
        assert _count(running, "OK") == 3 and _count(running, "UNAVAILABLE") == 1
        assert (admission.active, admission.waiting, drain.active) == (0, 0, 0)
    finally:  # on a failure: free the gated upload and end every call before leaving
        if first is not None:
            first.abandon()
        if not stopper.is_alive() and not drain.draining:
            running.stop(grace=0)
        elif stopper.is_alive():
            running.server.stop(0)
            stopper.join(60)
        pool.shutdown(wait=True, cancel_futures=True)
