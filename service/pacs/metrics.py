"""Prometheus metrics and a health endpoint of the PACS gateway, on their own HTTP port.

The gateway is a separate process from the gRPC server, so it has its own registry and port
(default 9091). ``/healthz`` answers 200 while the DICOM listener and the worker are running
and 503 otherwise, for probes that cannot speak C-ECHO. Labels stay low-cardinality: outcome
names and destination names from the settings, never study identifiers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

logger = logging.getLogger(__name__)


class PacsMetrics:
    """All gateway metrics; methods record events so callers never touch label names."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.associations = Counter(
            "pulmoseg_pacs_associations_total",
            "DICOM associations requested, by result (accepted, rejected).",
            ["result"],
            registry=r,
        )
        self.instances = Counter(
            "pulmoseg_pacs_instances_received_total",
            "Instances stored in the spool (a Success status was sent).",
            registry=r,
        )
        self.received_bytes = Counter(
            "pulmoseg_pacs_received_bytes_total", "Bytes of instances stored.", registry=r
        )
        self.refused = Counter(
            "pulmoseg_pacs_instances_refused_total",
            "Instances refused, by reason (spool_full, invalid, write_error).",
            ["reason"],
            registry=r,
        )
        self.studies = Counter(
            "pulmoseg_pacs_studies_completed_total",
            "Closed studies by outcome (delivered, duplicate, dead_letter).",
            ["outcome"],
            registry=r,
        )
        self.segment_calls = Counter(
            "pulmoseg_pacs_segment_calls_total",
            "Calls to the gRPC service, by result (success, retry, failed).",
            ["result"],
            registry=r,
        )
        self.sends = Counter(
            "pulmoseg_pacs_sends_total",
            "SEG deliveries by destination and result (success, retry, failed).",
            ["destination", "result"],
            registry=r,
        )
        self.spool_bytes = Gauge(
            "pulmoseg_pacs_spool_bytes", "Bytes held in the spool now.", registry=r
        )
        self.spool_capacity = Gauge(
            "pulmoseg_pacs_spool_capacity_bytes",
            "The spool's limit (setting spool_max_bytes); full, it refuses new instances.",
            registry=r,
        )
        self.spool_studies = Gauge(
            "pulmoseg_pacs_spool_studies",
            "Studies in the spool by state (arriving, segment, deliver).",
            ["state"],
            registry=r,
        )

    def set_spool(self, used_bytes: int, by_state: dict[str, int]) -> None:
        self.spool_bytes.set(used_bytes)
        for state in ("arriving", "segment", "deliver"):
            self.spool_studies.labels(state=state).set(by_state.get(state, 0))


@dataclass
class HealthServer:
    """The running HTTP endpoint (``/metrics`` and ``/healthz``); ``port`` is the bound one."""

    httpd: WSGIServer
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds
        pass


def start_health_server(
    metrics: PacsMetrics, host: str, port: int, is_healthy: Callable[[], bool]
) -> HealthServer:
    """Serve ``/metrics`` (Prometheus) and ``/healthz`` on ``host:port`` in a daemon thread."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok = is_healthy()
            body = b"ok\n" if ok else b"unhealthy\n"
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(
                status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            )
            return [body]
        return metrics_app(environ, start_response)

    try:
        httpd = make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        raise OSError(f"Could not bind the metrics port {host}:{port}: {exc.strerror}") from exc
    thread = threading.Thread(target=httpd.serve_forever, name="pacs-metrics", daemon=True)
    thread.start()
    bound = int(httpd.server_address[1])
    logger.info("PACS metrics at http://%s:%d/metrics, health at /healthz", host, bound)
    return HealthServer(httpd=httpd, thread=thread, port=bound)
