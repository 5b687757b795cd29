"""Assembly of the gateway process: spool, DICOM listener, worker, metrics and health.

:func:`run_gateway` is what ``pulmoseg pacs`` runs: it starts everything, waits for SIGTERM or
SIGINT and stops in the order that loses nothing (listener first, so no new instance is
acknowledged; then the worker after its current step; the spool needs no shutdown because
every acknowledged instance is already on disk).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field

from service.observability.logging_config import configure_logging
from service.pacs.listener import DicomListener
from service.pacs.metrics import HealthServer, PacsMetrics, start_health_server
from service.pacs.settings import PacsSettings
from service.pacs.spool import Spool
from service.pacs.worker import Segmenter, Worker

logger = logging.getLogger(__name__)


@dataclass
class PacsGateway:
    """A started gateway; ``port`` and ``metrics_port`` are the bound ports."""

    settings: PacsSettings
    spool: Spool
    metrics: PacsMetrics
    listener: DicomListener
    worker: Worker
    port: int
    health: HealthServer | None = field(default=None)

    @property
    def metrics_port(self) -> int | None:
        return self.health.port if self.health else None

    def healthy(self) -> bool:
        return self.listener.running and self.worker.alive

    def stop(self) -> None:
        self.listener.stop()
        self.worker.stop()
        if self.health is not None:
            self.health.stop()
        logger.info("PACS gateway stopped")


def start_gateway(settings: PacsSettings, segmenter: Segmenter | None = None) -> PacsGateway:
    """Open the spool (recovering what a previous run left), then start serving."""
    if not settings.allowed_calling_aets and not settings.allowed_hosts:
        logger.warning(
            "no allow-list set: any DICOM peer that can reach %s:%d may send studies",
            settings.host,
            settings.port,
        )
    spool = Spool(settings.spool.dir, settings.spool.dead_letter_path, settings.spool.max_bytes)
    metrics = PacsMetrics()
    metrics.spool_capacity.set(settings.spool.max_bytes)
    worker = Worker(settings, spool, metrics, segmenter=segmenter)
    listener = DicomListener(settings, spool, metrics)
    port = listener.start()
    worker.start()
    gateway = PacsGateway(settings, spool, metrics, listener, worker, port)
    if settings.metrics.enabled:
        try:
            gateway.health = start_health_server(
                metrics, settings.metrics.host, settings.metrics.port, gateway.healthy
            )
        except OSError:
            gateway.stop()
            raise
    logger.info(
        "PACS gateway %s ready: DICOM port %d, gRPC service %s, destinations %s",
        settings.ae_title,
        port,
        settings.grpc.target,
        ", ".join(settings.destination_names),
    )
    return gateway


def run_gateway(settings: PacsSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(settings.log.level, settings.log.format)
    # pynetdicom's INFO lines describe every association and message; keep them for --debug.
    if settings.log.level != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    gateway = start_gateway(settings)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    gateway.stop()
    return 0
