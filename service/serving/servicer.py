"""The SegmentationService servicer: a thin adapter between gRPC and ``StudyRunner``.

It receives and validates the upload (``service.serving.upload``), runs ``segment`` on a study
thread while relaying its progress, and streams back the SEG and a summary. Status codes are
picked only by ``service.serving.errors.status_for``; the runner is seen through the
:class:`~service.serving.pipeline.SegmentationPipeline` protocol (``manifest``, ``provider``,
``segment``), so this module does not import the heavy inference stack.

Progress goes out through :class:`~service.grpc_api.progress.ProgressRelay`: stages in
``ProgressStage`` order (RECEIVING is timed and reported here, the pipeline stages come from the
runner, DONE closes the stream before the summary) with a monotone overall fraction. The
summary's ``stage_seconds["total"]`` and ``pulmoseg_request_duration_seconds`` are one number:
the whole call, upload included.

With a :class:`~service.quality.monitor.QualityMonitor`, each answered study is recorded (quality
record + metrics) and its DICOM SR is sent as a ``report`` message between the SEG and the
summary. A failure to record is logged and counted, never turned into a failed study: the SEG
is the product, the record its bookkeeping.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, NoReturn

import grpc

from service.core.errors import ModelError, ServiceNotReadyError, StudyNotApplicableError
from service.core.options import SegmentationType
from service.core.progress import ProgressStage
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.grpc_api.outcome_messages import to_message
from service.grpc_api.progress import ProgressRelay, stage_to_proto
from service.observability.metrics import ServiceMetrics
from service.serving.admission import AdmissionQueue, DrainGate, Ticket
from service.serving.errors import (
    ResourceLimitError,
    UnsupportedRequestError,
    error_reason,
    log_failure,
    status_for,
)
from service.serving.model_versions import list_model_versions
from service.serving.pipeline import SegmentationPipeline
from service.serving.settings import ServiceSettings
from service.serving.upload import ReceivedUpload, UploadReceiver

if TYPE_CHECKING:
    from service.app.study_result import StudyResult
    from service.core.study_outcome import StudyOutcome
    from service.quality.monitor import QualityMonitor

logger = logging.getLogger(__name__)

#: How often a queued study checks for its turn, a departed client and its maximum wait.
_QUEUE_POLL_S = 0.1


def _abort_call(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """``context.abort`` always raises; saying so lets the type checker follow the control flow."""
    context.abort(code, details)
    raise AssertionError("grpc.ServicerContext.abort returned")  # pragma: no cover


_SEG_TYPES = {
    pb2.SEGMENTATION_TYPE_UNSPECIFIED: SegmentationType.BINARY,
    pb2.SEGMENTATION_TYPE_BINARY: SegmentationType.BINARY,
    pb2.SEGMENTATION_TYPE_LABELMAP: SegmentationType.LABELMAP,
}


def _segmentation_type(requested: int) -> SegmentationType:
    """The SEG type a header asks for; an unknown enum value is the client's error."""
    seg_type = _SEG_TYPES.get(requested)  # type: ignore[call-overload]
    if seg_type is None:
        raise UnsupportedRequestError(
            f"segmentation_type {requested} is not supported; "
            "use SEGMENTATION_TYPE_BINARY or SEGMENTATION_TYPE_LABELMAP."
        )
    return seg_type


class ServingState:
    """The loaded pipeline, or why there is none; shared by servicer and RunningServer."""

    def __init__(self) -> None:
        self.pipeline: SegmentationPipeline | None = None
        self.load_error: BaseException | None = None
        self.settled = threading.Event()
        #: Name of the served version in the model directory, and why a reload kept it.
        self.serving_version = ""
        self.reload_error = ""
        #: Refuses new work (UNAVAILABLE) once the server drains; counts the calls still going.
        self.drain = DrainGate()

    def require(self) -> SegmentationPipeline:
        if self.pipeline is None:
            if self.load_error is not None:
                raise ServiceNotReadyError(
                    "The server has no model: loading it failed (the server log says why)."
                )
            raise ServiceNotReadyError("The server is not ready: the model is still loading.")
        return self.pipeline


def _progress(
    relay: ProgressRelay, stage: ProgressStage, fraction: float
) -> list[pb2.SegmentStudyResponse]:
    """The response to send for this event: none when the relay skips it, else one."""
    event = relay.event(stage, fraction)
    return [] if event is None else [pb2.SegmentStudyResponse(progress=event)]


class SegmentationServicer(pb2_grpc.SegmentationServiceServicer):
    """Thin adapter: every method runs under :meth:`_guard`, the one place errors are mapped."""

    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        state: ServingState,
        monitor: QualityMonitor | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._state = state
        self._monitor = monitor
        self._admission = AdmissionQueue(
            settings.limits.max_concurrent_studies, settings.limits.queue_length
        )
        self._studies = ThreadPoolExecutor(
            settings.limits.max_concurrent_studies, thread_name_prefix="pulmoseg-study"
        )

    def shutdown(self) -> None:
        self._studies.shutdown(wait=False, cancel_futures=True)

    # -- error mapping and request metrics ---------------------------------------------------
    def _abort(self, method: str, exc: Exception, context: grpc.ServicerContext) -> grpc.StatusCode:
        """Log ``exc`` and return the code it ends the call with (for the metrics)."""
        code, _ = status_for(exc)
        if not context.is_active():
            # The client cancelled or its deadline passed; whatever failed afterwards (the pipeline
            # noticing, or gRPC's request iterator raising) is a consequence, not a server fault.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            logger.info("%s ended early: %s (%s)", method, code.name, type(exc).__name__)
            self._metrics.record_error(method, code.name.lower())
            return code
        log_failure(method, exc, code)
        self._metrics.record_error(method, error_reason(exc))
        return code

    def GetModelInfo(
        self, request: pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb2.ModelInfo:
        code = grpc.StatusCode.OK
        try:
            return self._model_info(self._state.require())
        except Exception as exc:
            code = self._abort("GetModelInfo", exc, context)
            _abort_call(context, code, status_for(exc)[1])
        finally:
            self._metrics.record_request("GetModelInfo", code.name)

    def SegmentStudy(
        self, request_iterator: Iterator[pb2.SegmentStudyRequest], context: grpc.ServicerContext
    ) -> Iterator[pb2.SegmentStudyResponse]:
        code = grpc.StatusCode.OK
        try:
            # Draining: refused here (UNAVAILABLE); admitted calls are waited for by the stop.
            with self._state.drain.call():
                yield from self._segment_study(request_iterator, context)
        except GeneratorExit:  # gRPC closed the stream: the client went away
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = self._abort("SegmentStudy", exc, context)
            context.abort(code, status_for(exc)[1])
        finally:
            self._metrics.record_request("SegmentStudy", code.name)

    # -- the work ------------------------------------------------------------------------------
    def _model_info(self, pipeline: SegmentationPipeline) -> pb2.ModelInfo:
        m = pipeline.manifest
        classes = [
            pb2.ClassInfo(
                index=c.index,
                name=c.name,
                category=pb2.CodedConcept(
                    scheme=c.category.scheme, value=c.category.value, meaning=c.category.meaning
                ),
                property_type=pb2.CodedConcept(
                    scheme=c.property_type.scheme,
                    value=c.property_type.value,
                    meaning=c.property_type.meaning,
                ),
                color=pb2.Color(r=c.color_rgb[0], g=c.color_rgb[1], b=c.color_rgb[2]),
            )
            for c in m.classes
        ]
        return pb2.ModelInfo(
            name=m.name,
            version=m.version,
            provider=pipeline.provider,
            classes=classes,
            slice_context=m.slice_context,
            hu_window=pb2.HuWindow(min=m.hu_window[0], max=m.hu_window[1]),
            validation_voldice=m.validation_voldice,
            input_size=pb2.InputSize(rows=m.input_size[0], columns=m.input_size[1]),
            orientation=m.orientation,
            serving_version=self._state.serving_version,
            available_versions=self._available_versions(),
            last_reload_error=self._state.reload_error,
        )

    def _available_versions(self) -> list[str]:
        if self._settings.model_path is None:
            return []
        try:
            return [v.version for v in list_model_versions(self._settings.model_path)]
        except ModelError:  # the directory went away: the served model still answers
            return []

    def _segment_study(
        self, requests: Iterator[pb2.SegmentStudyRequest], context: grpc.ServicerContext
    ) -> Iterator[pb2.SegmentStudyResponse]:
        """Admission, upload, pipeline, SEG/SR chunks, then the summary: one step each."""
        pipeline = self._state.require()
        ticket = self._admission.enter()  # ResourceLimitError when the wait queue is full
        try:
            yield from self._wait_for_slot(ticket, context)
        except BaseException:
            self._admission.release(ticket)
            raise
        self._metrics.in_progress.inc()
        started = time.perf_counter()
        relay = ProgressRelay()
        try:
            upload = yield from self._receive(requests, relay)
            receiving_s = time.perf_counter() - started
            seg_type = _segmentation_type(upload.header.segmentation_type)
            logger.info(
                "study received from %s: %d instances, %d bytes",
                upload.header.client_name or "unnamed client",
                len(upload.instances),
                upload.total_bytes,
            )
            try:
                result = yield from self._run_pipeline(
                    pipeline, upload.instances, seg_type, context, relay
                )
            except StudyNotApplicableError as exc:  # policy "refuse": counted, then mapped
                self._observe_applicability(pipeline, exc.applicability)
                raise
            self._observe_applicability(pipeline, result.applicability)
            yield from self._send_products(result, relay)
            total = time.perf_counter() - started  # one number: the summary and the metric
            stage_seconds = {
                ProgressStage.RECEIVING.value: receiving_s,
                **{k: float(v) for k, v in result.stage_seconds.items()},
                "total": total,
            }
            outcome = result.outcome(pipeline.manifest, pipeline.provider, stage_seconds)
            self._record_quality(result, outcome, pipeline)
            yield pb2.SegmentStudyResponse(summary=to_message(outcome, pb2.StudySummary))
            self._metrics.record_study(total, stage_seconds)
            logger.info(
                "study %s answered: %d instances, %.2f s, provider %s",
                outcome.study_uid_hash,
                outcome.num_instances,
                total,
                pipeline.provider,
            )
        finally:
            self._metrics.in_progress.dec()
            self._admission.release(ticket)

    def _receive(
        self, requests: Iterator[pb2.SegmentStudyRequest], relay: ProgressRelay
    ) -> Generator[pb2.SegmentStudyResponse, None, ReceivedUpload]:
        """Take the client-streamed upload, relaying RECEIVING progress; returns the upload."""
        receiver = UploadReceiver(self._settings.limits.max_upload_bytes)
        for request in requests:
            before = receiver.total_bytes
            completed = receiver.add(request)
            self._metrics.record_upload(receiver.total_bytes - before)
            header = receiver.header
            if header is None:
                continue
            if not completed:  # the header, or a chunk inside an instance
                yield from _progress(relay, ProgressStage.RECEIVING, 0.0)
            elif header.expected_instance_count:
                fraction = len(receiver.instances) / header.expected_instance_count
                yield from _progress(relay, ProgressStage.RECEIVING, min(fraction, 0.99))
        upload = receiver.finish()
        yield from _progress(relay, ProgressStage.RECEIVING, 1.0)
        return upload

    def _send_products(
        self, result: StudyResult, relay: ProgressRelay
    ) -> Iterator[pb2.SegmentStudyResponse]:
        """The SEG in chunks, the SR when the quality step wrote one, then DONE."""
        seg = result.seg_bytes
        step = self._settings.limits.chunk_bytes
        for offset in range(0, len(seg), step):
            yield pb2.SegmentStudyResponse(
                seg_chunk=pb2.SegChunk(data=seg[offset : offset + step], offset=offset)
            )
        sr = result.quality.sr_bytes if result.quality is not None else b""
        if sr:
            yield pb2.SegmentStudyResponse(report=pb2.StructuredReport(data=sr))
        yield from _progress(relay, ProgressStage.DONE, 1.0)

    def _observe_applicability(self, pipeline: SegmentationPipeline, applicability: object) -> None:
        """Count the study's applicability (flagged or refused) on /metrics, by reason."""
        reasons = getattr(applicability, "reason_values", None)
        if reasons is not None:
            self._metrics.quality.observe_applicability(pipeline.manifest.version, reasons)

    def _record_quality(
        self, result: StudyResult, outcome: StudyOutcome, pipeline: SegmentationPipeline
    ) -> None:
        """Record the study's quality; a records failure is logged and counted, not raised."""
        study = result.segmented(outcome)
        if self._monitor is None or study is None:
            return
        try:
            self._monitor.record_study(study, pipeline.manifest)
        except Exception as exc:
            logger.error(
                "could not record quality of study %s (%s)",
                outcome.study_uid_hash,
                type(exc).__name__,
                exc_info=exc,
            )
            self._metrics.record_error("RecordQuality", error_reason(exc))

    def _wait_for_slot(
        self, ticket: Ticket, context: grpc.ServicerContext
    ) -> Iterator[pb2.SegmentStudyResponse]:
        """Wait in the admission queue, telling the client its position while it changes."""
        if ticket.admitted:
            return
        limit_s = self._settings.limits.queue_max_wait_s
        deadline = time.monotonic() + limit_s
        last = -1
        receiving = stage_to_proto(ProgressStage.RECEIVING)
        logger.info("study queued: %d waiting", self._admission.waiting)
        while not ticket.wait(_QUEUE_POLL_S):
            if not context.is_active():
                raise CancelledError("the client went away while its study was queued")
            position = self._admission.position(ticket)
            if position != last and position > 0:
                last = position
                yield pb2.SegmentStudyResponse(
                    progress=pb2.Progress(stage=receiving, queue_position=position)
                )
            if time.monotonic() > deadline:
                raise ResourceLimitError(
                    f"The study waited {limit_s:g} s (queue_max_wait_s) without a free study "
                    "slot; the server is overloaded, retry later."
                )
        if last > 0:  # the client showed a position: tell it the study runs now
            yield pb2.SegmentStudyResponse(progress=pb2.Progress(stage=receiving, queue_position=0))

    def _run_pipeline(
        self,
        pipeline: SegmentationPipeline,
        instances: list[bytes],
        seg_type: SegmentationType,
        context: grpc.ServicerContext,
        relay: ProgressRelay,
    ) -> Generator[pb2.SegmentStudyResponse, None, StudyResult]:
        """Run ``segment`` on a study thread and relay its progress; returns the StudyResult."""
        events: queue.SimpleQueue[tuple[ProgressStage, float]] = queue.SimpleQueue()
        future = self._studies.submit(
            pipeline.segment,
            instances,
            segmentation_type=seg_type,
            on_progress=lambda stage, fraction: events.put((stage, fraction)),
            is_cancelled=lambda: not context.is_active(),
        )
        try:
            while not (future.done() and events.empty()):
                try:
                    stage, fraction = events.get(timeout=0.05)
                except queue.Empty:
                    continue
                yield from _progress(relay, stage, fraction)
            return future.result()
        finally:
            # Keep the study slot until the pipeline has really stopped (it polls is_cancelled).
            wait_futures([future])
