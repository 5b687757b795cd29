"""Prometheus metrics of the service, on their own registry and HTTP port.

A dedicated :class:`~prometheus_client.CollectorRegistry` (not the global default) lets tests and
several servers in one process keep separate counts; the process, platform and GC collectors are
registered on it explicitly (a custom registry gets none of them by default, which is why
``process_resident_memory_bytes`` used to be missing). Names follow Prometheus conventions: base
units (seconds, bytes), ``_total`` for counters, labels of low cardinality only (never study or
patient identifiers).

Whole calls and stages are separate histograms: ``pulmoseg_request_duration_seconds`` (the whole
SegmentStudy call, upload included) and ``pulmoseg_stage_duration_seconds{stage}``. With one
histogram, ``sum by () (…)`` over ``stage`` counted every second twice. Quality metrics
(``pulmoseg_study_voldice`` …) live in :mod:`service.observability.quality_metrics` on the
same registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from service.core.progress import ProgressStage
from service.observability.gpu_metrics import GpuMemoryCollector
from service.observability.quality_metrics import QualityMetrics

logger = logging.getLogger(__name__)

#: Stages timed per study: ``ProgressStage`` values plus "quality" (the quality step, which has
#: no progress stage of its own). The whole call is ``pulmoseg_request_duration_seconds``.
STAGES = (*(s.value for s in ProgressStage if s is not ProgressStage.DONE), "quality")

#: Seconds: from sub-second parsing of a small study to minutes of CPU inference on a large one.
DURATION_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


class ServiceMetrics:
    """All metrics of one server; methods record events so callers never touch label names."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pulmoseg_requests_total",
            "gRPC calls by method and final status code.",
            ["method", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "pulmoseg_request_duration_seconds",
            "Seconds per successful SegmentStudy call, upload included.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "pulmoseg_stage_duration_seconds",
            "Seconds per stage of a successful study (receiving, parsing, selecting, volume, "
            "inference, writing, quality); stages do not add up to the call (overheads).",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "pulmoseg_errors_total",
            "Failed gRPC calls by method and reason (the kind of error, e.g. invalid_study).",
            ["method", "reason"],
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.gpu = GpuMemoryCollector()
        r.register(self.gpu)
        self.quality = QualityMetrics(r)
        self.in_progress = Gauge(
            "pulmoseg_studies_in_progress", "Studies being received or segmented now.", registry=r
        )
        self.model_info = Gauge(
            "pulmoseg_model_info",
            "Loaded model and the ONNX Runtime provider actually in use (value is always 1).",
            ["name", "version", "provider"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "pulmoseg_model_loaded",
            "1 once the model is loaded and the server is SERVING.",
            registry=r,
        )
        self.upload_bytes = Counter(
            "pulmoseg_upload_bytes_total",
            "DICOM bytes received in SegmentStudy uploads.",
            registry=r,
        )

    def record_request(self, method: str, code_name: str) -> None:
        self.requests.labels(method=method, code=code_name).inc()

    def record_study(self, total_s: float, stage_seconds: Mapping[str, float]) -> None:
        """Observe a finished study; unknown stage names (and "total") are not stages."""
        self.duration.observe(total_s)
        for stage, seconds in stage_seconds.items():
            if stage in STAGES:
                self.stage_duration.labels(stage=stage).observe(seconds)

    def record_error(self, method: str, reason: str) -> None:
        self.errors.labels(method=method, reason=reason).inc()

    def record_upload(self, num_bytes: int) -> None:
        self.upload_bytes.inc(num_bytes)

    def set_model(self, name: str, version: str, provider: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, provider=provider).set(1)
        self.model_loaded.set(1)
        self.gpu.enable(provider)


@dataclass
class MetricsServer:
    """The running /metrics HTTP endpoint; ``port`` is the bound one (useful with port 0)."""

    httpd: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(metrics: ServiceMetrics, host: str, port: int) -> MetricsServer:
    """Serve ``metrics.registry`` over HTTP on ``host:port`` in a daemon thread."""
    try:
        httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise OSError(f"Could not bind the metrics port {host}:{port}: {exc.strerror}") from exc
    bound = int(httpd.server_address[1])
    logger.info("metrics at http://%s:%d/metrics", host, bound)
    return MetricsServer(httpd=httpd, thread=thread, host=host, port=bound)
