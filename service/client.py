"""Python client of the pulmoseg gRPC API: send a study folder, get the DICOM-SEG back.

Files are read lazily while they stream, in chunks well under gRPC's 4 MiB message limit; the
returned SEG is reassembled and checked against the size and SHA-256 in the server's summary.
Progress arrives as ``(ProgressStage, overall fraction)``: the stages the proto declares, in order,
with a fraction that never goes back. Every failure becomes a :class:`ClientError` whose message
is one sentence a CLI can print.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.core.progress import ProgressStage
from service.grpc_api import MAX_CHUNK_BYTES, SERVICE_NAME
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.grpc_api.progress import stage_from_proto

logger = logging.getLogger(__name__)

#: ``on_progress(stage, fraction)``: ``stage`` is a ``ProgressStage`` (a ``str``, e.g.
#: "inference"); ``fraction`` is the overall progress of the call, 0..1 and monotone.
ProgressCallback = Callable[[ProgressStage, float], None]
_SEG_TYPES = {
    "BINARY": pb2.SEGMENTATION_TYPE_BINARY,
    "LABELMAP": pb2.SEGMENTATION_TYPE_LABELMAP,
}
_SKIPPED_NAMES = {"DICOMDIR"}


class ClientError(Exception):
    """A call failed; ``str(error)`` is one sentence for the user, ``code`` the gRPC status."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ClientResult:
    seg_bytes: bytes
    #: StudySummary as a dict with the proto's field names (study_uid_hash, class_volumes_ml, ...).
    summary: dict[str, Any]


def study_files(folder: str | Path) -> list[Path]:
    """Regular files under ``folder`` (recursively, sorted), minus DICOMDIR and hidden files.

    Content is not checked here: the server validates what is DICOM and which series is CT.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ClientError(f"Study folder '{root}' does not exist or is not a folder.")
    files = [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name.upper() not in _SKIPPED_NAMES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not files:
        raise ClientError(f"Study folder '{root}' holds no files to send.")
    return files


def upload_requests(
    instances: Iterable[Path | bytes],
    *,
    client_name: str = "pulmoseg-client",
    segmentation_type: str = "BINARY",
    expected_count: int | None = None,
    chunk_bytes: int = MAX_CHUNK_BYTES,
) -> Iterator[pb2.SegmentStudyRequest]:
    """The request stream of SegmentStudy: a header, then every instance in chunks."""
    seg_type = _SEG_TYPES.get(segmentation_type.upper())
    if seg_type is None:
        raise ValueError(
            f"Argument 'segmentation_type' must be BINARY or LABELMAP, got {segmentation_type!r}."
        )
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
    ) -> None:
        if not isinstance(target, str) or not target:
            raise TypeError(f"Argument 'target' must be a 'host:port' string, got {target!r}.")
        if timeout_s <= 0:
            raise ValueError(f"Argument 'timeout_s' must be > 0 seconds, got {timeout_s}.")
        self.target = target
        self.timeout_s = timeout_s
        self.client_name = client_name
        self.chunk_bytes = chunk_bytes
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self._channel = grpc.secure_channel(target, creds)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = pb2_grpc.SegmentationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

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
        segmentation_type: str = "BINARY",
    ) -> ClientResult:
        """Send every file of a study folder; see :func:`study_files` for what is sent."""
        return self.segment_files(
            study_files(path), on_progress, segmentation_type=segmentation_type
        )

    def segment_files(
        self,
        paths: Sequence[str | Path | bytes],
        on_progress: ProgressCallback | None = None,
        *,
        segmentation_type: str = "BINARY",
    ) -> ClientResult:
        """Send the given files (or raw Part-10 bytes) as one study and return the SEG."""
        items = [p if isinstance(p, bytes) else Path(p) for p in paths]
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
        try:
            responses = self._stub.SegmentStudy(
                requests, timeout=self.timeout_s, metadata=self._metadata
            )
            for response in responses:
                kind = response.WhichOneof("payload")
                if kind == "progress" and on_progress is not None:
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
                elif kind == "summary":
                    summary = response.summary
        except grpc.RpcError as exc:
            raise self._error(exc, "rejected the study") from None
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
        return ClientResult(seg_bytes=seg, summary=_summary_dict(summary))

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
        elif code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            message = f"Server at {self.target} {action}: {details}"
        else:
            name = code.name if code is not None else "an error"
            message = f"Server at {self.target} answered {name}: {details}"
        logger.debug("call to %s failed with %s: %s", self.target, code, details)
        return ClientError(message.rstrip(".") + ".", code)


def _summary_dict(summary: pb2.StudySummary) -> dict[str, Any]:
    """Plain Python types (MessageToDict would turn the uint64 size into a string)."""
    return {
        "study_uid_hash": summary.study_uid_hash,
        "class_volumes_ml": dict(summary.class_volumes_ml),
        "num_instances": summary.num_instances,
        "model_name": summary.model_name,
        "model_version": summary.model_version,
        "provider": summary.provider,
        "stage_seconds": dict(summary.stage_seconds),
        "seg_size_bytes": summary.seg_size_bytes,
        "seg_sha256": summary.seg_sha256,
    }


def _as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
