"""The pulmoseg gRPC server: SegmentStudy/GetModelInfo, health, reflection, auth, TLS, metrics.

The servicer only receives, validates and emits; segmentation is ``StudyPipeline.segment`` (a
plain function) and status codes come from ``service.grpc_errors``. Everything stays in memory,
so a failed request leaves no files behind.

Model loading runs in a background thread after the port is bound, so probes see NOT_SERVING
while the model loads and SERVING once it is ready. If loading fails, the server logs why and
stays NOT_SERVING (calls get UNAVAILABLE); :func:`serve` then stops and returns exit code 1 so an
orchestrator shows the failure instead of a pod that is never ready.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.errors import InvalidStudyError, ServiceNotReadyError
from service.grpc_api import SERVICE_NAME
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.grpc_errors import (
    AuthenticationError,
    ResourceLimitError,
    UnsupportedRequestError,
    log_failure,
    status_for,
)
from service.metrics import MetricsServer, ServiceMetrics, start_metrics_server
from service.settings import ServiceSettings, load_settings

logger = logging.getLogger(__name__)

#: Pipeline stage names -> the progress stages of the API.
PROGRESS_STAGES = {
    "parse": "parsing",
    "volume": "parsing",
    "inference": "inference",
    "seg_write": "writing",
}
_SEG_TYPES = {
    pb2.SEGMENTATION_TYPE_UNSPECIFIED: "BINARY",
    pb2.SEGMENTATION_TYPE_BINARY: "BINARY",
    pb2.SEGMENTATION_TYPE_LABELMAP: "LABELMAP",
}
_PROGRESS_STEP = 0.05


@dataclass
class ReceivedUpload:
    header: pb2.StudyUploadHeader
    instances: list[bytes]
    total_bytes: int


class UploadReceiver:
    """Checks the order of upload messages and reassembles the instances in memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.header: pb2.StudyUploadHeader | None = None
        self.instances: list[bytes] = []
        self.total_bytes = 0
        self._parts: list[bytes] = []

    def add(self, request: pb2.SegmentStudyRequest) -> bool:
        """Take one message; True when it completed an instance."""
        kind = request.WhichOneof("payload")
        if kind is None:
            raise InvalidStudyError("A SegmentStudyRequest carried neither a header nor a chunk.")
        if self.header is None:
            if kind != "header":
                raise InvalidStudyError(
                    "The first SegmentStudy message must be a StudyUploadHeader, got an "
                    f"InstanceChunk (instance_index={request.chunk.instance_index})."
                )
            self.header = request.header
            return False
        if kind == "header":
            raise InvalidStudyError(
                "SegmentStudy got a second StudyUploadHeader; send exactly one."
            )
        chunk = request.chunk
        expected = len(self.instances)
        if chunk.instance_index != expected:
            raise InvalidStudyError(
                f"InstanceChunk.instance_index must run 0, 1, 2, ... without gaps: expected "
                f"{expected}, got {chunk.instance_index}."
            )
        self.total_bytes += len(chunk.data)
        if self.total_bytes > self.max_bytes:
            raise ResourceLimitError(
                f"The upload exceeds the server's limit of {self.max_bytes} bytes "
                f"(max_upload_bytes) at instance {expected}."
            )
        self._parts.append(chunk.data)
        if not chunk.last_chunk:
            return False
        data = b"".join(self._parts)
        self._parts = []
        if not data:
            raise InvalidStudyError(f"Instance {expected} of the upload is empty (0 bytes).")
        self.instances.append(data)
        return True

    def finish(self) -> ReceivedUpload:
        if self.header is None or (not self.instances and not self._parts):
            raise InvalidStudyError(
                "No DICOM instances were sent: the upload held no InstanceChunk."
            )
        if self._parts:
            raise InvalidStudyError(
                f"The upload ended inside instance {len(self.instances)}: its last chunk never "
                "came (last_chunk=true)."
            )
        want = (
            self.header.expected_instance_count
            if self.header.HasField("expected_instance_count")
            else None
        )
        if want is not None and want != len(self.instances):
            raise InvalidStudyError(
                f"The header announced expected_instance_count={want}, but "
                f"{len(self.instances)} instances arrived."
            )
        return ReceivedUpload(self.header, self.instances, self.total_bytes)


class _ServingState:
    """The loaded pipeline, or why there is none; shared by servicer and RunningServer."""

    def __init__(self) -> None:
        self.pipeline: Any = None
        self.load_error: BaseException | None = None
        self.settled = threading.Event()

    def require(self) -> Any:
        if self.pipeline is None:
            why = "the model failed to load" if self.load_error else "the model is still loading"
            raise ServiceNotReadyError(f"The server is not ready: {why}; retry later.")
        return self.pipeline


def _progress(stage: str, fraction: float) -> pb2.SegmentStudyResponse:
    return pb2.SegmentStudyResponse(progress=pb2.Progress(stage=stage, fraction=fraction))


class SegmentationServicer(pb2_grpc.SegmentationServiceServicer):
    """Thin adapter: every method runs under :meth:`_guard`, the one place errors are mapped."""

    def __init__(
        self, settings: ServiceSettings, metrics: ServiceMetrics, state: _ServingState
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._state = state
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_studies)
        self._studies = ThreadPoolExecutor(
            settings.max_concurrent_studies, thread_name_prefix="pulmoseg-study"
        )

    def shutdown(self) -> None:
        self._studies.shutdown(wait=False, cancel_futures=True)

    # -- error mapping and request metrics ---------------------------------------------------
    def _abort(self, method: str, exc: Exception, context: grpc.ServicerContext) -> grpc.StatusCode:
        code, details = status_for(exc)
        remaining = context.time_remaining()
        if code is grpc.StatusCode.CANCELLED and remaining is not None and remaining <= 0:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        log_failure(method, exc, code)
        return code

    def GetModelInfo(
        self, request: pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb2.ModelInfo:
        code = grpc.StatusCode.OK
        try:
            return self._model_info(self._state.require())
        except Exception as exc:
            code = self._abort("GetModelInfo", exc, context)
            context.abort(code, status_for(exc)[1])
        finally:
            self._metrics.record_request("GetModelInfo", code.name)

    def SegmentStudy(
        self, request_iterator: Iterator[pb2.SegmentStudyRequest], context: grpc.ServicerContext
    ) -> Iterator[pb2.SegmentStudyResponse]:
        code = grpc.StatusCode.OK
        try:
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
    def _model_info(self, pipeline: Any) -> pb2.ModelInfo:
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
        )

    def _segment_study(
        self, requests: Iterator[pb2.SegmentStudyRequest], context: grpc.ServicerContext
    ) -> Iterator[pb2.SegmentStudyResponse]:
        pipeline = self._state.require()
        if not self._slots.acquire(blocking=False):
            n = self._settings.max_concurrent_studies
            raise ResourceLimitError(
                f"The server is busy: {n} studies are in progress (max_concurrent_studies={n}); "
                "retry later."
            )
        self._metrics.in_progress.inc()
        started = time.perf_counter()
        try:
            receiver = UploadReceiver(self._settings.max_upload_bytes)
            sent = 0.0
            for request in requests:
                before = receiver.total_bytes
                completed = receiver.add(request)
                self._metrics.record_upload(receiver.total_bytes - before)
                header = receiver.header
                if completed and header is not None and header.expected_instance_count:
                    fraction = min(len(receiver.instances) / header.expected_instance_count, 1.0)
                    if fraction - sent >= _PROGRESS_STEP:
                        sent = fraction
                        yield _progress("receiving", fraction)
            upload = receiver.finish()
            if sent < 1.0:
                yield _progress("receiving", 1.0)
            seg_type = _SEG_TYPES.get(upload.header.segmentation_type)
            if seg_type is None:
                raise UnsupportedRequestError(
                    f"segmentation_type {upload.header.segmentation_type} is not supported; "
                    "use SEGMENTATION_TYPE_BINARY or SEGMENTATION_TYPE_LABELMAP."
                )
            client = upload.header.client_name or "unnamed client"
            logger.info(
                "study received from %s: %d instances, %d bytes",
                client,
                len(upload.instances),
                upload.total_bytes,
            )
            result = yield from self._run_pipeline(pipeline, upload.instances, seg_type, context)
            seg = result.seg_bytes
            step = self._settings.chunk_bytes
            for offset in range(0, len(seg), step):
                yield pb2.SegmentStudyResponse(
                    seg_chunk=pb2.SegChunk(data=seg[offset : offset + step], offset=offset)
                )
            total = time.perf_counter() - started
            stage_seconds = {k: float(v) for k, v in result.timings.items()}
            stage_seconds.setdefault("total", total)
            yield pb2.SegmentStudyResponse(
                summary=pb2.StudySummary(
                    study_uid_hash=result.study_uid_hash,
                    class_volumes_ml=result.class_volumes_ml,
                    num_instances=result.num_instances,
                    model_name=pipeline.manifest.name,
                    model_version=pipeline.manifest.version,
                    provider=pipeline.provider,
                    stage_seconds=stage_seconds,
                    seg_size_bytes=len(seg),
                    seg_sha256=hashlib.sha256(seg).hexdigest(),
                )
            )
            self._metrics.record_study(total, result.timings)
            logger.info(
                "study %s answered: %d instances, %.2f s, provider %s",
                result.study_uid_hash,
                result.num_instances,
                total,
                pipeline.provider,
            )
        finally:
            self._metrics.in_progress.dec()
            self._slots.release()

    def _run_pipeline(
        self, pipeline: Any, instances: list[bytes], seg_type: str, context: grpc.ServicerContext
    ) -> Iterator[pb2.SegmentStudyResponse]:
        """Run ``segment`` on a study thread and relay its progress; returns the StudyResult."""
        events: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        future = self._studies.submit(
            pipeline.segment,
            instances,
            segmentation_type=seg_type,
            on_progress=lambda stage, fraction: events.put((stage, fraction)),
            is_cancelled=lambda: not context.is_active(),
        )
        last: tuple[str, float] = ("", -1.0)
        try:
            while not (future.done() and events.empty()):
                try:
                    stage, fraction = events.get(timeout=0.05)
                except queue.Empty:
                    continue
                name = PROGRESS_STAGES.get(stage, stage)
                if name != last[0] or fraction - last[1] >= _PROGRESS_STEP or fraction >= 1.0:
                    last = (name, fraction)
                    yield _progress(name, float(fraction))
            return future.result()
        finally:
            # Keep the study slot until the pipeline has really stopped (it polls is_cancelled).
            wait_futures([future])


class _TokenAuthInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on pulmoseg calls; health and reflection stay open."""

    def __init__(self, token: str, metrics: ServiceMetrics) -> None:
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics
        self._prefix = f"/{SERVICE_NAME}/"

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if not details.method.startswith(self._prefix):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization")
        if given is not None and hmac.compare_digest(str(given).encode(), self._expected):
            return continuation(details)
        error = AuthenticationError(
            "This server requires metadata 'authorization: Bearer <token>'; none was sent."
            if given is None
            else "The bearer token in the 'authorization' metadata is not valid."
        )
        code, message = status_for(error)
        method = details.method.rsplit("/", 1)[-1]
        log_failure(method, error, code)
        self._metrics.record_request(method, code.name)

        def deny(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(code, message)

        handler = continuation(details)
        if handler is not None and handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


@dataclass
class RunningServer:
    """A started server; ``port``/``metrics_port`` are the bound ports (useful with port 0)."""

    server: grpc.Server
    settings: ServiceSettings
    port: int
    metrics: ServiceMetrics
    metrics_server: MetricsServer | None
    health: health.HealthServicer
    servicer: SegmentationServicer
    state: _ServingState = field(repr=False)
    on_load_failed: Callable[[BaseException], None] | None = None

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.port if self.metrics_server else None

    @property
    def pipeline(self) -> Any:
        return self.state.pipeline

    @property
    def load_error(self) -> BaseException | None:
        return self.state.load_error

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """True once the model is loaded; False on timeout or when loading failed."""
        self.state.settled.wait(timeout)
        return self.state.pipeline is not None

    def _set_pipeline(self, pipeline: Any) -> None:
        self.state.pipeline = pipeline
        self.metrics.set_model(pipeline.manifest.name, pipeline.manifest.version, pipeline.provider)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.state.settled.set()
        logger.info(
            "model %s %s loaded on %s; serving at %s",
            pipeline.manifest.name,
            pipeline.manifest.version,
            pipeline.provider,
            self.address,
        )

    def _load(self) -> None:
        model_path = self.settings.model_path
        try:
            from service.pipeline import StudyPipeline  # heavy import, only where a model loads

            pipeline = StudyPipeline.load(model_path, require_gpu=self.settings.require_gpu)
        except Exception as exc:
            self.state.load_error = exc
            self.state.settled.set()
            logger.error(
                "Could not load the model '%s' (%s: %s); the server stays NOT_SERVING.",
                model_path,
                type(exc).__name__,
                exc,
            )
            if self.on_load_failed is not None:
                self.on_load_failed(exc)
            return
        self._set_pipeline(pipeline)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, then stop."""
        self.health.enter_graceful_shutdown()
        grace = self.settings.grace_period_s if grace is None else grace
        self.server.stop(grace).wait()
        self.servicer.shutdown()
        if self.metrics_server is not None:
            self.metrics_server.stop()


def _read(path: Any, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(
            f"Cannot read TLS file '{path}' (setting '{setting}'): {exc.strerror}."
        ) from exc


def _bind(server: grpc.Server, settings: ServiceSettings) -> int:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.port}"
    try:
        if settings.tls_enabled:
            ca = _read(settings.tls_client_ca, "tls_client_ca") if settings.tls_client_ca else None
            creds = grpc.ssl_server_credentials(
                [(_read(settings.tls_key, "tls_key"), _read(settings.tls_cert, "tls_cert"))],
                root_certificates=ca,
                require_client_auth=ca is not None,
            )
            return server.add_secure_port(address, creds)
        return server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(
            f"Could not bind the gRPC port {address}; is another process using it? ({exc})"
        ) from exc


def build_server(
    settings: ServiceSettings,
    pipeline: Any = None,
    *,
    on_load_failed: Callable[[BaseException], None] | None = None,
) -> RunningServer:
    """Bind, start and return the server; loads ``settings.model_path`` unless given ``pipeline``."""
    if pipeline is None and settings.model_path is None:
        raise ValueError("Setting 'model_path' is required to load a model (PULMOSEG_MODEL_PATH).")
    metrics = ServiceMetrics()
    interceptors = (
        [_TokenAuthInterceptor(settings.auth_token, metrics)] if settings.auth_token else []
    )
    server = grpc.server(
        ThreadPoolExecutor(settings.max_workers, thread_name_prefix="pulmoseg-grpc"),
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 0)],  # a second server must not share our port silently
    )
    state = _ServingState()
    servicer = SegmentationServicer(settings, metrics, state)
    pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = _bind(server, settings)
    metrics_server = None
    if settings.metrics_enabled:
        try:
            metrics_server = start_metrics_server(
                metrics, settings.metrics_host, settings.metrics_port
            )
        except OSError:
            server.stop(None)
            raise
    server.start()
    running = RunningServer(
        server,
        settings,
        port,
        metrics,
        metrics_server,
        health_servicer,
        servicer,
        state,
        on_load_failed,
    )
    logger.info(
        "gRPC server bound to %s (%s)",
        running.address,
        "TLS" if settings.tls_enabled else "plaintext",
    )
    if pipeline is not None:
        running._set_pipeline(pipeline)
    else:
        threading.Thread(target=running._load, name="pulmoseg-model-load", daemon=True).start()
    return running


def serve(settings: ServiceSettings) -> int:
    """Run until SIGTERM/SIGINT (graceful stop) or a model load failure; returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    stop = threading.Event()
    failed: list[BaseException] = []

    def load_failed(exc: BaseException) -> None:
        failed.append(exc)
        stop.set()

    running = build_server(settings, on_load_failed=load_failed)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, _frame: stop.set())
    try:
        stop.wait()
    finally:
        logger.info("stopping: %d s grace for in-flight calls", settings.grace_period_s)
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m service.server [SETTINGS.yaml]``: settings from the file and PULMOSEG_*."""
    args = sys.argv[1:] if argv is None else argv
    return serve(load_settings(args[0] if args else None))


if __name__ == "__main__":
    raise SystemExit(main())
