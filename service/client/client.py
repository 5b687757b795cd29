"""Python client of the pulmoseg gRPC API: send a study folder, get the DICOM-SEG back.

Files are read lazily while they stream, in chunks well under gRPC's 4 MiB message limit; the
returned SEG is reassembled and checked against the size and SHA-256 in the server's summary.
Progress arrives as ``(ProgressStage, overall fraction)``: the stages the proto declares, in order,
with a fraction that never goes back. Every failure becomes a :class:`ClientError` whose message
is one sentence a CLI can print. A study refused with "not now" (UNAVAILABLE, RESOURCE_EXHAUSTED)
is sent again under the one :class:`~service.client.retry.RetryPolicy`; other calls are asked
once (their answer, e.g. "the model is still loading", is the information).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client.errors import ClientError
from service.client.retry import RetryPolicy
from service.client.training_calls import TrainingCalls
from service.core.options import Option, SegmentationType
from service.core.progress import ProgressStage
from service.core.study_outcome import StudyOutcome
from service.dicom.study_folder import (
    SkippedFile,
    is_dicomdir_name,
    scan_study_folder,
    walk_study_folder,
)
from service.grpc_api import MAX_CHUNK_BYTES, SERVICE_NAME
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.grpc_api.outcome_messages import from_message
from service.grpc_api.progress import stage_from_proto

logger = logging.getLogger(__name__)

#: ``on_progress(stage, fraction)``: ``stage`` is a ``ProgressStage`` (a ``str``, e.g.
#: "inference"); ``fraction`` is the overall progress of the call, 0..1 and monotone.
ProgressCallback = Callable[[ProgressStage, float], None]
_SEG_TYPES = {
    SegmentationType.BINARY: pb2.SEGMENTATION_TYPE_BINARY,
    SegmentationType.LABELMAP: pb2.SEGMENTATION_TYPE_LABELMAP,
}


class LoadBalancing(Option):
    """gRPC's client-side load-balancing policy over the addresses a target resolves to.

    One HTTP/2 connection carries every call of a channel, and a Kubernetes ClusterIP Service
    balances connections, not calls: with ``pick_first`` (gRPC's default) all studies of a
    client go to one pod. ``round_robin`` connects to every address of the target (e.g.
    ``dns:///pulmoseg-headless.imaging.svc:50051``, a headless Service) and spreads calls.
    """

    PICK_FIRST = "pick_first"
    ROUND_ROBIN = "round_robin"


_SERVICES = ("pulmoseg.v1.SegmentationService", "pulmoseg.v1.QualityService")


def method_config(wait_for_ready: bool) -> dict[str, Any]:
    """gRPC service-config entry of the pulmoseg services: wait for a connection or not.

    It sets no ``retryPolicy``: gRPC's own retries would be a second layer under the client's
    :class:`~service.client.retry.RetryPolicy`, multiplying the attempts (and they cannot replay
    an upload bigger than their buffer anyway). gRPC still re-sends, transparently, a call that
    never reached the server; no server sees that as an attempt.
    """
    return {"name": [{"service": name} for name in _SERVICES], "waitForReady": wait_for_ready}


@dataclass
class ClientResult:
    seg_bytes: bytes
    #: The study's typed outcome (service.core.study_outcome), as the server summarised it.
    outcome: StudyOutcome
    #: The DICOM SR (TID 1500) with the clinical summary; b"" when the server sends none.
    sr_bytes: bytes = b""
    #: Files of the study folder that were not uploaded, with the reason (segment_directory).
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The outcome in plain Python values, keyed as summary.json and ``StudySummary``."""
        return self.outcome.as_dict()


def study_files(folder: str | Path) -> list[Path]:
    """Regular files under ``folder`` (recursively, sorted), minus DICOMDIR and hidden files.

    Content is not checked here (the checks of the study-folder rule that need no reading):
    the server validates what is DICOM and which series is CT.
    """
    root = Path(folder)
    try:
        walked, _hidden = walk_study_folder(root)
    except ValueError as exc:  # InvalidStudyError: no such folder
        raise ClientError(str(exc)) from None
    files = [p for p in walked if not is_dicomdir_name(p.name)]
    if not files:
        raise ClientError(f"Study folder '{root}' holds no files to send.")
    return files


def upload_requests(
    instances: Iterable[Path | bytes],
    *,
    client_name: str = "pulmoseg-client",
    segmentation_type: SegmentationType | str = SegmentationType.BINARY,
    expected_count: int | None = None,
    chunk_bytes: int = MAX_CHUNK_BYTES,
) -> Iterator[pb2.SegmentStudyRequest]:
    """The request stream of SegmentStudy: a header, then every instance in chunks."""
    seg_type = _SEG_TYPES[SegmentationType.parse(segmentation_type, "Argument 'segmentation_type'")]
    if not 1 <= chunk_bytes <= 3 * MAX_CHUNK_BYTES:
        raise ValueError(
            f"Argument 'chunk_bytes' must be 1..{3 * MAX_CHUNK_BYTES}, got {chunk_bytes}."
        )
    header = pb2.StudyUploadHeader(client_name=client_name, segmentation_type=seg_type)
    if expected_count is not None:
        header.expected_instance_count = expected_count
    yield pb2.SegmentStudyRequest(header=header)
    for index, item in enumerate(instances):
        data = item if isinstance(item, bytes) else Path(item).read_bytes()
        # An empty instance still sends one (empty, last) chunk so the server names it.
        starts = range(0, len(data), chunk_bytes) if data else [0]
        for start in starts:
            end = start + chunk_bytes
            yield pb2.SegmentStudyRequest(
                chunk=pb2.InstanceChunk(
                    instance_index=index, data=data[start:end], last_chunk=end >= len(data)
                )
            )


class SegmentationClient:
    """Talks to one pulmoseg server. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        timeout_s: float = 600.0,
        client_name: str = "pulmoseg-client",
        chunk_bytes: int = MAX_CHUNK_BYTES,
        load_balancing: LoadBalancing | str = LoadBalancing.PICK_FIRST,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        max_attempts: int | None = None,
        wait_for_ready: bool = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``retry`` is the policy of :meth:`segment_files` (default :class:`RetryPolicy`());
        ``max_attempts`` (1..10) replaces its attempt budget, so ``max_attempts=1`` never
        retries. ``wait_for_ready`` makes each attempt wait, within the deadline, for an
        unreachable server to accept connections instead of failing at once."""
        if not isinstance(target, str) or not target:
            raise TypeError(f"Argument 'target' must be a 'host:port' string, got {target!r}.")
        if timeout_s <= 0:
            raise ValueError(f"Argument 'timeout_s' must be > 0 seconds, got {timeout_s}.")
        self.target = target
        self.timeout_s = timeout_s
        self.client_name = client_name
        self.chunk_bytes = chunk_bytes
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.load_balancing = LoadBalancing.parse(load_balancing, "Argument 'load_balancing'")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"Argument 'retry' must be a RetryPolicy, got {type(retry).__name__}.")
        self.retry = retry if retry is not None else RetryPolicy()
        if max_attempts is not None:
            if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 10:
                raise ValueError(f"Argument 'max_attempts' must be 1..10, got {max_attempts!r}.")
            self.retry = dataclasses.replace(self.retry, max_attempts=max_attempts)
        self.wait_for_ready = wait_for_ready
        config = {
            "loadBalancingConfig": [{self.load_balancing.value: {}}],
            "methodConfig": [method_config(wait_for_ready)],
        }
        options = [("grpc.service_config", json.dumps(config))]
        if (tls_cert is None) != (tls_key is None):
            raise ValueError(
                "Arguments 'tls_cert' and 'tls_key' go together (mutual TLS needs both), got "
                f"only {'tls_cert' if tls_key is None else 'tls_key'}."
            )
        if tls_ca is not None or tls_cert is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(tls_ca).read_bytes() if tls_ca is not None else None,
                private_key=Path(tls_key).read_bytes() if tls_key is not None else None,
                certificate_chain=Path(tls_cert).read_bytes() if tls_cert is not None else None,
            )
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb2_grpc.SegmentationServiceStub(self._channel)
        self._quality = pb2_grpc.QualityServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        #: TrainingService calls (jobs, promotion): ``client.training.submit(...)``.
        self.training = TrainingCalls(self._channel, self._metadata, self.timeout_s, self._error)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SegmentationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------------------
    def segment_directory(
        self,
        path: str | Path,
        on_progress: ProgressCallback | None = None,
        *,
        segmentation_type: SegmentationType | str = SegmentationType.BINARY,
        series_uid: str | None = None,
        on_queue_position: Callable[[int], None] | None = None,
    ) -> ClientResult:
        """Send the DICOM instances of a study folder (of one series when ``series_uid`` is
        given); DICOMDIR, non-DICOM files and other series are skipped and listed in the
        result's ``skipped`` (see :func:`service.dicom.study_folder.scan_study_folder`)."""
        try:
            folder = scan_study_folder(path, series_uid=series_uid)
        except (FileNotFoundError, ValueError) as exc:
            raise ClientError(str(exc)) from None
        result = self.segment_files(
            folder.files,
            on_progress,
            segmentation_type=segmentation_type,
            on_queue_position=on_queue_position,
        )
        result.skipped = folder.skipped
        return result

    def segment_files(
        self,
        paths: Sequence[str | Path | bytes],
        on_progress: ProgressCallback | None = None,
        *,
        segmentation_type: SegmentationType | str = SegmentationType.BINARY,
        on_queue_position: Callable[[int], None] | None = None,
    ) -> ClientResult:
        """Send the given files (or raw Part-10 bytes) as one study and return the SEG.

        ``on_queue_position(n)`` hears the study's place in the server's wait queue (1 = next;
        0 once it runs); it is called only when the server had to queue the study.

        A call the server refused before answering anything with a retryable code (see
        :data:`~service.client.retry.RETRYABLE_CODES`: unreachable, restarting, draining, wait
        queue full) is sent again after the policy's back-off, within ``timeout_s`` in all and
        up to its attempt budget; the upload is re-read, so nothing is held in memory for it.
        """
        kind = SegmentationType.parse(segmentation_type, "Argument 'segmentation_type'")
        items = [p if isinstance(p, bytes) else Path(p) for p in paths]
        return self.retry.run(
            lambda seconds_left: self._segment_once(
                items, on_progress, kind, seconds_left, on_queue_position
            ),
            timeout_s=self.timeout_s,
            what=f"SegmentStudy at {self.target}",
        )

    def _segment_once(
        self,
        items: list[Path | bytes],
        on_progress: ProgressCallback | None,
        segmentation_type: SegmentationType,
        timeout_s: float,
        on_queue_position: Callable[[int], None] | None = None,
    ) -> ClientResult:
        """One SegmentStudy call with ``timeout_s`` left; a failure after the server's first
        answer is marked ``answered`` (the study was accepted: it is not sent again)."""
        requests = upload_requests(
            items,
            client_name=self.client_name,
            segmentation_type=segmentation_type,
            expected_count=len(items),
            chunk_bytes=self.chunk_bytes,
        )
        parts: list[bytes] = []
        received = 0
        summary: pb2.StudySummary | None = None
        sr = b""
        answered = False
        try:
            responses = self._stub.SegmentStudy(
                requests,
                timeout=max(timeout_s, 0.0),
                metadata=self._metadata,
                wait_for_ready=self.wait_for_ready,
            )
            for response in responses:
                answered = True
                kind = response.WhichOneof("payload")
                if kind == "progress" and response.progress.HasField("queue_position"):
                    if on_queue_position is not None:
                        on_queue_position(response.progress.queue_position)
                elif kind == "progress" and on_progress is not None:
                    progress = response.progress
                    try:
                        stage = stage_from_proto(progress.stage)
                    except ValueError:  # a newer server's stage: keep the fraction, skip it
                        logger.debug("unknown progress stage %d ignored", progress.stage)
                        continue
                    on_progress(stage, progress.fraction)
                elif kind == "seg_chunk":
                    if response.seg_chunk.offset != received:
                        raise ClientError(
                            f"Server at {self.target} sent a SEG chunk at offset "
                            f"{response.seg_chunk.offset}, expected {received}."
                        )
                    parts.append(response.seg_chunk.data)
                    received += len(response.seg_chunk.data)
                elif kind == "report":
                    sr = response.report.data
                elif kind == "summary":
                    summary = response.summary
        except grpc.RpcError as exc:
            error = self._error(exc, "rejected the study")
            error.answered = answered
            raise error from None
        except OSError as exc:  # a file vanished or is unreadable while streaming
            raise ClientError(f"Could not read a study file: {exc}.") from exc
        if summary is None:
            raise ClientError(f"Server at {self.target} ended the call without a study summary.")
        seg = b"".join(parts)
        digest = hashlib.sha256(seg).hexdigest()
        if len(seg) != summary.seg_size_bytes or digest != summary.seg_sha256:
            raise ClientError(
                f"The SEG from {self.target} is corrupt: got {len(seg)} bytes with SHA-256 "
                f"{digest[:12]}…, the summary says {summary.seg_size_bytes} bytes with "
                f"{summary.seg_sha256[:12]}…."
            )
        if summary.sr_size_bytes and (
            len(sr) != summary.sr_size_bytes or hashlib.sha256(sr).hexdigest() != summary.sr_sha256
        ):
            raise ClientError(
                f"The SR from {self.target} is corrupt or missing: got {len(sr)} bytes, the "
                f"summary says {summary.sr_size_bytes}."
            )
        return ClientResult(seg_bytes=seg, outcome=from_message(summary, StudyOutcome), sr_bytes=sr)

    # -- quality --------------------------------------------------------------------------------
    def submit_reference(self, study_hash: str, reference: str | Path | bytes) -> dict[str, Any]:
        """Send a reference DICOM-SEG for a segmented study; returns ReferenceQuality as a dict."""
        data = reference if isinstance(reference, bytes) else Path(reference).read_bytes()

        def requests() -> Iterator[pb2.SubmitReferenceRequest]:
            yield pb2.SubmitReferenceRequest(
                header=pb2.ReferenceHeader(study_hash=study_hash, client_name=self.client_name)
            )
            for offset in range(0, len(data), self.chunk_bytes):
                yield pb2.SubmitReferenceRequest(chunk=data[offset : offset + self.chunk_bytes])

        try:
            answer = self._quality.SubmitReference(
                requests(), timeout=self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc, "rejected the reference") from None
        return _as_dict(answer)

    def study_quality(self, study_hash: str) -> dict[str, Any]:
        """The quality record of one study (StudyQualityRecord as a dict)."""
        try:
            record = self._quality.GetStudyQuality(
                pb2.GetStudyQualityRequest(study_hash=study_hash),
                timeout=self.timeout_s,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise self._error(exc, "has no such record") from None
        return _as_dict(record)

    def list_study_quality(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model_version: str = "",
        flagged_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of quality records, newest first, and the next page's token ("" at the end)."""
        request = pb2.ListStudyQualityRequest(
            model_version=model_version,
            flagged_only=flagged_only,
            page_size=page_size,
            page_token=page_token,
        )
        if since is not None:
            request.since.FromDatetime(since.astimezone(UTC))
        if until is not None:
            request.until.FromDatetime(until.astimezone(UTC))
        try:
            page = self._quality.ListStudyQuality(
                request, timeout=self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc, "could not list quality records") from None
        return [_as_dict(r) for r in page.records], page.next_page_token

    def model_info(self) -> dict[str, Any]:
        """ModelInfo as a dict with the proto's field names."""
        try:
            info = self._stub.GetModelInfo(
                pb2.GetModelInfoRequest(), timeout=self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc, "could not describe its model") from None
        return _as_dict(info)

    def health(self, service: str = "") -> str:
        """Health status name ("SERVING", "NOT_SERVING", ...) of ``service`` ("" = the server)."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=min(self.timeout_s, 10.0)
            )
        except grpc.RpcError as exc:
            raise self._error(exc, "failed the health check") from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        """Block until the server reports SERVING; ClientError if it does not within timeout_s."""
        deadline = time.monotonic() + timeout_s
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            try:
                status = self.health(SERVICE_NAME)
            except ClientError as exc:
                status = str(exc)
            if status == "SERVING":
                return
            time.sleep(poll_s)
        raise ClientError(
            f"The pulmoseg server at {self.target} was not SERVING after {timeout_s:g} s "
            f"(last status: {status})."
        )

    # -- errors ---------------------------------------------------------------------------------
    def _error(self, exc: grpc.RpcError, action: str) -> ClientError:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
        text = details.lower()
        if code is grpc.StatusCode.UNAVAILABLE and (
            "connect" in text or "resolution" in text or "refused" in text or "dns" in text
        ):
            reason = "connection refused" if "refused" in text else details
            message = f"Could not reach the pulmoseg server at {self.target}: {reason}"
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = (
                f"The pulmoseg server at {self.target} did not answer within the "
                f"{self.timeout_s:g} s deadline"
            )
        elif code is grpc.StatusCode.UNAUTHENTICATED:
            message = f"Server at {self.target} refused the credentials: {details}"
        elif code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.NOT_FOUND,
        ):
            message = f"Server at {self.target} {action}: {details}"
        else:
            name = code.name if code is not None else "an error"
            message = f"Server at {self.target} answered {name}: {details}"
        logger.debug("call to %s failed with %s: %s", self.target, code, details)
        return ClientError(message.rstrip(".") + ".", code)


def _as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
