"""Prometheus metrics of the capture, on the server's registry (labels of low cardinality)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

KINDS = ("labeled", "unlabeled")


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.errors = Counter(
            "pulmoseg_capture_errors_total",
            "Captures of studies or references that failed (the study itself was answered).",
            registry=registry,
        )
        self.captured = Gauge(
            "pulmoseg_captured_studies",
            "Cases in the capture dataset now, by kind (after retention).",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            self.captured.labels(kind=kind)

    def set_counts(self, counts: Mapping[str, int]) -> None:
        for kind in KINDS:
            self.captured.labels(kind=kind).set(counts.get(kind, 0))
