"""The pulmoseg gRPC server: SegmentStudy/GetModelInfo, the quality service (references and
study records), health, reflection, auth, TLS, metrics.

The servicer only receives, validates and emits; segmentation is ``StudyRunner.segment`` (the
same MONAI Deploy ``LungSegmentationApp`` that ``python -m service.app`` runs, as a plain call)
and status codes come from ``service.serving.errors``. Everything stays in memory, so a failed
request leaves no files behind.

Model loading runs in a background thread after the port is bound, so probes see NOT_SERVING
while the model loads and SERVING once it is ready. If loading fails, the server logs why and
stays NOT_SERVING (calls get UNAVAILABLE); :func:`serve` then stops and returns exit code 1 so an
orchestrator shows the failure instead of a pod that is never ready.

Stopping drains (:meth:`RunningServer.stop`): the servicers refuse new work with UNAVAILABLE
while running and queued studies finish, and only then does gRPC's own shutdown run.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.capture import open_capture
from service.core.errors import ModelError
from service.grpc_api import QUALITY_SERVICE_NAME, SERVICE_NAME, training_pb2_grpc
from service.grpc_api import segmentation_pb2_grpc as pb2_grpc
from service.observability.logging_config import configure_logging
from service.observability.metrics import MetricsServer, ServiceMetrics, start_metrics_server
from service.quality.monitor import QualityMonitor
from service.quality.records import QualityStore
from service.records.database import database_url
from service.serving.access import (
    TRAINING_SERVICE_NAME,
    AccessInterceptor,
    check_training_access,
    describe_training,
)
from service.serving.model_versions import ModelVersion, newest_model_version
from service.serving.model_watch import ModelFolderWatch
from service.serving.pipeline import SegmentationPipeline
from service.serving.quality_servicer import QualityServicer
from service.serving.servicer import SegmentationServicer, ServingState
from service.serving.settings import ServiceSettings, load_settings
from service.serving.training_servicer import TrainingServicer, open_job_manager
from service.training_jobs.audit import AuditLog
from service.training_jobs.manager import JobManager

logger = logging.getLogger(__name__)

#: How often the main thread checks whether a model load replaced its signal handlers.
ARM_POLL_S = 0.1
#: After a drain, how long gRPC's own stop waits (at most) for calls it still holds: the final
#: status of studies that just ended and quick calls the drain does not count.
FINISH_S = 5.0


@dataclass
class RunningServer:
    """A started server; ``port``/``metrics_port`` are the bound ports (useful with port 0).

    Built once by :func:`build_server`, with everything it runs; it wires the reload of the
    training service and the model-folder watch to itself.
    """

    server: grpc.Server
    settings: ServiceSettings
    port: int
    metrics: ServiceMetrics
    health: health.HealthServicer
    servicer: SegmentationServicer
    state: ServingState = field(repr=False)
    #: Per-study quality records and metrics (None only for servers built without one).
    monitor: QualityMonitor | None = None
    metrics_server: MetricsServer | None = None
    #: Training jobs (TrainingService), when the setting 'training.enabled' is on.
    jobs: JobManager | None = None
    #: The TrainingService; a promoted model is served through :meth:`reload`.
    training: TrainingServicer | None = field(default=None, repr=False)
    on_load_failed: Callable[[BaseException], None] | None = None
    #: Called after a model is in place and before health turns SERVING; :func:`serve` uses it
    #: to re-arm its signal handlers (Holoscan replaces them when a model loads) first, so a
    #: SIGHUP or SIGTERM sent as soon as a probe sees SERVING is never lost.
    before_serving: Callable[[SegmentationPipeline], None] | None = None
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Polls the model folder for a newer version, when the setting 'model_poll_s' is set
    #: (started by :func:`build_server`).
    model_watch: ModelFolderWatch | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.training is not None:
            self.training.reload = self.reload
        if self.settings.model_poll_s > 0 and self.settings.model_path is not None:
            self.model_watch = ModelFolderWatch(
                self.settings.model_path,
                self.settings.model_poll_s,
                lambda: self.state.serving_version,
                self.reload,
            )

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.port if self.metrics_server else None

    @property
    def pipeline(self) -> SegmentationPipeline | None:
        return self.state.pipeline

    @property
    def load_error(self) -> BaseException | None:
        return self.state.load_error

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """True once the model is loaded; False on timeout or when loading failed."""
        self.state.settled.wait(timeout)
        return self.state.pipeline is not None

    def _set_pipeline(self, pipeline: SegmentationPipeline) -> None:
        self.state.pipeline = pipeline
        self.metrics.set_model(pipeline.manifest.name, pipeline.manifest.version, pipeline.provider)
        if self.before_serving is not None:
            self.before_serving(pipeline)
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
            if model_path is None:
                raise ModelError(
                    "No model given: pass --model MODEL.onnx or set PULMOSEG_MODEL_PATH."
                )
            chosen = newest_model_version(model_path)
            pipeline = self._load_version(chosen)
        except Exception as exc:
            self.state.load_error = exc
            logger.error(
                "Could not load the model '%s' (%s: %s); the server stays NOT_SERVING.",
                model_path,
                type(exc).__name__,
                exc,
            )
            try:
                if self.on_load_failed is not None:
                    self.on_load_failed(exc)
            finally:  # waiters wake only after the failure has been fully reported
                self.state.settled.set()
            return
        self.state.serving_version = chosen.version
        self._set_pipeline(pipeline)

    def _load_version(self, chosen: ModelVersion) -> SegmentationPipeline:
        from service.app.study_runner import StudyRunner  # heavy: only where a model loads
        from service.app.warm_up import warm_up

        runner = StudyRunner.load(
            chosen.path,
            require_gpu=self.settings.require_gpu,
            quality=self.settings.quality,
            applicability_policy=self.settings.applicability_policy,
        )
        warm_up(runner)  # a model that cannot segment a study is refused here, with the reason
        return runner

    def reload(self) -> bool:
        """Serve the newest version of the model directory without failing a call in flight.

        The new version is loaded (its ONNX Runtime session created) beside the old one, then
        swapped in with one assignment: calls already running keep the pipeline they started
        with, new calls get the new one. A version that cannot be loaded is refused with the
        reason (log, ``GetModelInfo.last_reload_error``) and the old one keeps serving.
        """
        logger.info("reload requested: looking for the newest model version")
        with self._reload_lock:
            try:
                if self.settings.model_path is None:
                    raise ModelError("No model path is set, so there is nothing to reload.")
                chosen = newest_model_version(self.settings.model_path)
                if chosen.version == self.state.serving_version and self.pipeline is not None:
                    logger.info("reload: version %s is already served", chosen.version)
                    self.state.reload_error = ""
                    return True
                pipeline = self._load_version(chosen)
            except Exception as exc:
                self.state.reload_error = f"{type(exc).__name__}: {exc}"
                logger.error(
                    "reload refused; version %s keeps serving: %s",
                    self.state.serving_version or "(none)",
                    self.state.reload_error,
                )
                return False
            self.state.serving_version = chosen.version
            self.state.reload_error = ""
            self._set_pipeline(pipeline)
            return True

    def start_loading(self) -> threading.Thread:
        """Load ``settings.model_path`` in a background thread (build_server does this unless
        ``autoload=False``); health turns SERVING when it is done."""
        thread = threading.Thread(target=self._load, name="pulmoseg-model-load", daemon=True)
        thread.start()
        return thread

    def stop(self, grace: float | None = None) -> None:
        """Drain for up to ``grace`` seconds, then stop the gRPC server.

        From the first moment the service itself refuses new work (UNAVAILABLE, "draining;
        retry on another replica", which clients retry elsewhere) and health reports
        NOT_SERVING; health and reflection keep answering. Running and queued studies finish.
        Only when they have (or the grace period ends) is gRPC's ``server.stop`` called, so its
        shutdown never races a new call into a CANCELLED that a client would treat as final.
        """
        grace = self.settings.grace_period_s if grace is None else grace
        deadline = time.monotonic() + grace
        drain = self.state.drain
        drain.start_draining()  # before NOT_SERVING: whoever sees NOT_SERVING is refused
        self.health.enter_graceful_shutdown()
        if drain.wait_idle(grace):
            logger.info("drained: no call in flight")
        else:
            logger.warning(
                "grace period of %g s ended with %d call(s) in flight; they are cancelled",
                grace,
                drain.active,
            )
        # What is left: trailers of calls that just ended, quick untracked calls (health,
        # reflection, model info) and open health watches, which only the stop ends.
        remaining = max(0.0, deadline - time.monotonic())
        if self.model_watch is not None:
            self.model_watch.stop()
        self.server.stop(min(remaining, FINISH_S)).wait()
        self.servicer.shutdown()
        if self.jobs is not None:  # stops scheduling only: jobs run on and are resumed later
            self.jobs.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.monitor is not None:
            self.monitor.close()


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
    tls = settings.tls
    try:
        if tls.enabled:
            ca = _read(tls.client_ca, "tls.client_ca") if tls.client_ca else None
            creds = grpc.ssl_server_credentials(
                [(_read(tls.key, "tls.key"), _read(tls.cert, "tls.cert"))],
                root_certificates=ca,
                require_client_auth=ca is not None,
            )
            return server.add_secure_port(address, creds)
        return server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(
            f"Could not bind the gRPC port {address}; is another process using it? ({exc})"
        ) from exc


def open_quality_monitor(settings: ServiceSettings, metrics: ServiceMetrics) -> QualityMonitor:
    """Open (and migrate) the records database named by the settings."""
    store = QualityStore(database_url(settings.records.db_url, settings.records.db_path))
    logger.info("quality records at %s", store.url)
    return QualityMonitor(store, metrics.quality, open_capture(settings.capture, metrics.registry))


def build_server(
    settings: ServiceSettings,
    pipeline: SegmentationPipeline | None = None,
    *,
    on_load_failed: Callable[[BaseException], None] | None = None,
    autoload: bool = True,
) -> RunningServer:
    """Bind, start and return the server.

    Loads ``settings.model_path`` in a background thread unless ``pipeline`` is given;
    ``on_load_failed`` is called (from that thread) with the exception if loading fails.
    With ``autoload=False`` the server stays NOT_SERVING until :meth:`RunningServer.start_loading`
    (lets tests and embedders observe the loading phase deterministically).
    If a step fails, what the steps before it opened is closed again (in reverse order).
    """
    if pipeline is None and settings.model_path is None:
        raise ValueError("Setting 'model_path' is required to load a model (PULMOSEG_MODEL_PATH).")
    check_training_access(settings)
    metrics = ServiceMetrics()
    state = ServingState()
    with ExitStack() as undo:
        monitor = open_quality_monitor(settings, metrics)
        undo.callback(monitor.close)
        audit = AuditLog(monitor.store.engine) if settings.training.enabled else None
        server = _new_grpc_server(settings, metrics, audit)
        services = _add_services(server, settings, metrics, state, monitor, audit)
        metrics_server = _start_metrics(settings, metrics)
        if metrics_server is not None:
            undo.callback(metrics_server.stop)
        port = _bind(server, settings)
        undo.callback(_release_port, server)
        if services.jobs is not None:
            services.jobs.start()  # reconciles jobs left by a previous server, then schedules
            undo.callback(services.jobs.stop)
        server.start()
        undo.pop_all()  # started: from here on RunningServer.stop cleans up
    running = RunningServer(
        server=server,
        settings=settings,
        port=port,
        metrics=metrics,
        health=services.health,
        servicer=services.segmentation,
        state=state,
        monitor=monitor,
        metrics_server=metrics_server,
        jobs=services.jobs,
        training=services.training,
        on_load_failed=on_load_failed,
    )
    _start_serving(running, pipeline, autoload)
    return running


def _release_port(server: grpc.Server) -> None:
    """Free the port of a server that was bound but never started: gRPC closes its listeners
    only when it stops, and ``stop`` does nothing before ``start`` (health is NOT_SERVING and
    no model is loaded, so no call is served in between)."""
    server.start()
    server.stop(None).wait()


def _new_grpc_server(
    settings: ServiceSettings, metrics: ServiceMetrics, audit: AuditLog | None = None
) -> grpc.Server:
    """The gRPC server with its thread pool and, with a token or training, the access check."""
    limits = settings.limits
    interceptors = (
        [AccessInterceptor(settings, metrics, audit)] if AccessInterceptor.needed(settings) else []
    )
    return grpc.server(
        # Queued studies each hold a thread while they wait: they get their own, so health checks
        # and model info never starve behind a full queue.
        ThreadPoolExecutor(
            limits.max_workers + limits.queue_length, thread_name_prefix="pulmoseg-grpc"
        ),
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 0)],  # a second server must not share our port silently
    )


@dataclass(frozen=True)
class _Services:
    """The servicers :func:`_add_services` registered that the running server holds."""

    segmentation: SegmentationServicer
    training: TrainingServicer
    health: health.HealthServicer
    jobs: JobManager | None


def _add_services(
    server: grpc.Server,
    settings: ServiceSettings,
    metrics: ServiceMetrics,
    state: ServingState,
    monitor: QualityMonitor,
    audit: AuditLog | None = None,
) -> _Services:
    """Register segmentation, quality, training, health (NOT_SERVING until a model loads) and
    reflection."""
    segmentation = SegmentationServicer(settings, metrics, state, monitor)
    pb2_grpc.add_SegmentationServiceServicer_to_server(segmentation, server)
    pb2_grpc.add_QualityServiceServicer_to_server(
        QualityServicer(settings, metrics, monitor, state), server
    )
    jobs = open_job_manager(settings, monitor.store.engine)
    training = TrainingServicer(settings, metrics, state, jobs, audit)
    training_pb2_grpc.add_TrainingServiceServicer_to_server(training, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            QUALITY_SERVICE_NAME,
            TRAINING_SERVICE_NAME,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return _Services(segmentation, training, health_servicer, jobs)


def _start_metrics(settings: ServiceSettings, metrics: ServiceMetrics) -> MetricsServer | None:
    """The Prometheus endpoint, unless the setting 'metrics.enabled' is off."""
    if not settings.metrics.enabled:
        return None
    return start_metrics_server(metrics, settings.metrics.host, settings.metrics.port)


def _start_serving(
    running: RunningServer, pipeline: SegmentationPipeline | None, autoload: bool
) -> None:
    """Start the model-folder watch, then serve ``pipeline`` or start loading the model."""
    if running.model_watch is not None:
        running.model_watch.start()
    logger.info(
        "gRPC server bound to %s (%s)",
        running.address,
        "TLS" if running.settings.tls.enabled else "plaintext",
    )
    level, text = describe_training(running.settings)
    logger.log(level, text)
    if pipeline is not None:
        running._set_pipeline(pipeline)
    elif autoload:
        running.start_loading()


def serve(settings: ServiceSettings) -> int:
    """Run until SIGTERM/SIGINT (graceful stop) or a model load failure; returns the exit code."""
    configure_logging(settings.log.level, settings.log.format)  # replaces any provisional set-up
    stop = threading.Event()
    failed: list[BaseException] = []

    def load_failed(exc: BaseException) -> None:
        failed.append(exc)
        stop.set()

    running = build_server(settings, on_load_failed=load_failed)
    previous: dict[int, Any] = {}

    def reload_in_background(signum: int, _frame: object) -> None:
        threading.Thread(target=running.reload, name="pulmoseg-model-reload", daemon=True).start()

    handlers = {
        signal.SIGTERM: lambda signum, _frame: stop.set(),
        signal.SIGINT: lambda signum, _frame: stop.set(),
        # SIGHUP: serve the newest version of the model directory (loads in the background).
        signal.SIGHUP: reload_in_background,
    }
    in_main_thread = threading.current_thread() is threading.main_thread()
    armed_for: list[SegmentationPipeline | None] = [
        None
    ]  # the pipeline whose load our handlers were re-armed after
    if in_main_thread:
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}

        def wait_until_armed(pipeline: SegmentationPipeline) -> None:
            deadline = time.monotonic() + 5.0  # the main loop re-arms within ARM_POLL_S
            while armed_for[0] is not pipeline and time.monotonic() < deadline:
                time.sleep(ARM_POLL_S / 4)

        running.before_serving = wait_until_armed
    try:
        while not stop.wait(ARM_POLL_S):
            # Loading a model starts Holoscan, which installs native handlers of its own: put
            # ours back (from the main thread, the only one allowed to) after every load.
            pipeline = running.pipeline
            if in_main_thread and pipeline is not armed_for[0]:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
                armed_for[0] = pipeline
    finally:
        logger.info("stopping: %d s grace for in-flight calls", settings.grace_period_s)
        running.stop()
        for number, old_handler in previous.items():
            signal.signal(number, old_handler)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m service.serving.server [SETTINGS.yaml]``: settings from the file, PULMOSEG_*."""
    args = sys.argv[1:] if argv is None else argv
    return serve(load_settings(args[0] if args else None))


if __name__ == "__main__":
    raise SystemExit(main())
