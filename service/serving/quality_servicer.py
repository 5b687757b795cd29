"""The QualityService servicer: reference upload, one record, a page of records.

A thin adapter like the segmentation servicer: it receives and validates, calls the
``QualityMonitor`` (``service.quality.monitor``) and maps errors with
``service.serving.errors.status_for`` only. The reference SEG arrives in chunks (a BINARY SEG of a
large study is tens of MiB), is held in memory, and is bounded by ``max_upload_bytes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import grpc

from service.core.errors import InvalidArgumentError, InvalidReferenceError, ResourceLimitError
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.grpc_api.quality_messages import from_timestamp, record_message, reference_message
from service.observability.metrics import ServiceMetrics
from service.quality.monitor import QualityMonitor
from service.serving.errors import handled_call
from service.serving.settings import ServiceSettings

if TYPE_CHECKING:
    from service.serving.servicer import ServingState

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
_HASH_CHARS = set("0123456789abcdef")


def check_study_hash(value: str) -> str:
    """Study hashes are hex (``StudySummary.study_uid_hash``); anything else is a mistake."""
    text = value.strip().lower()
    if not text or len(text) > 64 or not set(text) <= _HASH_CHARS:
        raise InvalidArgumentError(
            f"Argument 'study_hash' must be the hex study hash from a segmentation summary "
            f"(e.g. 'a1b2c3d4e5f60718'), got {value!r}."
        )
    return text


class QualityServicer(pb2_grpc.QualityServiceServicer):
    """Every method runs through :meth:`_call`, the one place errors become status codes."""

    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        monitor: QualityMonitor,
        state: ServingState,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._monitor = monitor
        self._state = state

    def _call(self, method: str, context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        with handled_call(method, context, self._metrics), self._state.drain.call():
            return work()  # refused (UNAVAILABLE) once the server drains
        raise AssertionError("grpc.ServicerContext.abort returned")  # pragma: no cover

    def SubmitReference(
        self, request_iterator: Iterator[pb2.SubmitReferenceRequest], context: grpc.ServicerContext
    ) -> pb2.ReferenceQuality:
        return self._call(
            "SubmitReference", context, lambda: self._submit_reference(request_iterator)
        )

    def GetStudyQuality(
        self, request: pb2.GetStudyQualityRequest, context: grpc.ServicerContext
    ) -> pb2.StudyQualityRecord:
        return self._call(
            "GetStudyQuality",
            context,
            lambda: record_message(self._monitor.store.get(check_study_hash(request.study_hash))),
        )

    def ListStudyQuality(
        self, request: pb2.ListStudyQualityRequest, context: grpc.ServicerContext
    ) -> pb2.ListStudyQualityResponse:
        return self._call("ListStudyQuality", context, lambda: self._list(request))

    # -- the work ------------------------------------------------------------------------------
    def _submit_reference(
        self, requests: Iterator[pb2.SubmitReferenceRequest]
    ) -> pb2.ReferenceQuality:
        pipeline = self._state.require()
        header: pb2.ReferenceHeader | None = None
        parts: list[bytes] = []
        size = 0
        for request in requests:
            kind = request.WhichOneof("payload")
            if kind == "header":
                if header is not None:
                    raise InvalidReferenceError("The reference upload sent a second header.")
                header = request.header
            elif kind == "chunk":
                if header is None:
                    raise InvalidReferenceError(
                        "The reference upload must start with a header naming the study hash."
                    )
                size += len(request.chunk)
                if size > self._settings.limits.max_upload_bytes:
                    raise ResourceLimitError(
                        f"The reference SEG exceeds max_upload_bytes "
                        f"({self._settings.limits.max_upload_bytes} bytes)."
                    )
                parts.append(request.chunk)
        if header is None:
            raise InvalidReferenceError("The reference upload was empty: no header, no SEG.")
        study_hash = check_study_hash(header.study_hash)
        outcome = self._monitor.submit_reference(study_hash, b"".join(parts), pipeline.manifest)
        return reference_message(study_hash, outcome.scores, outcome.record)

    def _list(self, request: pb2.ListStudyQualityRequest) -> pb2.ListStudyQualityResponse:
        try:
            records, token = self._monitor.store.list(
                since=from_timestamp(request.since) if request.HasField("since") else None,
                until=from_timestamp(request.until) if request.HasField("until") else None,
                model_version=request.model_version,
                flagged_only=request.flagged_only,
                page_size=request.page_size or DEFAULT_PAGE_SIZE,
                page_token=request.page_token,
            )
        except ValueError as exc:  # a bad page size or token is the caller's input
            raise InvalidArgumentError(str(exc)) from exc
        return pb2.ListStudyQualityResponse(
            records=[record_message(r) for r in records], next_page_token=token
        )
