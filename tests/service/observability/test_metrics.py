"""ServiceMetrics on a real HTTP endpoint, read back with Prometheus' own text parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.observability.metrics import MetricsServer, ServiceMetrics, start_metrics_server


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """Samples by name, keyed by their sorted label items."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture
def served() -> Iterator[tuple[ServiceMetrics, MetricsServer]]:
    metrics = ServiceMetrics()
    server = start_metrics_server(metrics, "127.0.0.1", 0)
    yield metrics, server
    server.stop()


def test_endpoint_exposes_recorded_values(served: tuple[ServiceMetrics, MetricsServer]) -> None:
    metrics, server = served
    assert server.port > 0
    metrics.record_request("SegmentStudy", "OK")
    metrics.record_request("SegmentStudy", "OK")
    metrics.record_request("SegmentStudy", "INVALID_ARGUMENT")
    metrics.record_upload(1500)
    metrics.record_study(3.0, {"parsing": 0.5, "inference": 2.0, "bogus_stage": 9.0})
    metrics.set_model("lungnet", "1.2.0", "CPUExecutionProvider")

    s = scrape(server.port)
    ok = (("code", "OK"), ("method", "SegmentStudy"))
    bad = (("code", "INVALID_ARGUMENT"), ("method", "SegmentStudy"))
    assert s["pulmoseg_requests_total"] == {ok: 2.0, bad: 1.0}
    assert s["pulmoseg_upload_bytes_total"][()] == 1500.0
    assert s["pulmoseg_request_duration_seconds_sum"][()] == 3.0  # the whole call, no stage
    assert s["pulmoseg_request_duration_seconds_count"][()] == 1.0
    assert s["pulmoseg_stage_duration_seconds_count"][(("stage", "inference"),)] == 1.0
    # bucket le=2.5 holds the 2.0 s inference, le=1.0 does not
    assert s["pulmoseg_stage_duration_seconds_bucket"][(("le", "2.5"), ("stage", "inference"))] == 1
    assert s["pulmoseg_stage_duration_seconds_bucket"][(("le", "1.0"), ("stage", "inference"))] == 0
    stages = {dict(k)["stage"] for k in s["pulmoseg_stage_duration_seconds_count"]}
    assert stages == {"parsing", "inference"}  # unknown stage names are not exported
    # Summing the stage histogram can no longer count the whole call a second time.
    assert sum(s["pulmoseg_stage_duration_seconds_sum"].values()) == 2.5
    info = (("name", "lungnet"), ("provider", "CPUExecutionProvider"), ("version", "1.2.0"))
    assert s["pulmoseg_model_info"] == {info: 1.0}
    assert s["pulmoseg_model_loaded"][()] == 1.0
    assert s["pulmoseg_studies_in_progress"][()] == 0.0


def test_model_info_keeps_only_current_model(served: tuple[ServiceMetrics, MetricsServer]) -> None:
    metrics, server = served
    metrics.set_model("a", "1", "CPUExecutionProvider")
    metrics.set_model("a", "2", "CUDAExecutionProvider")
    assert list(scrape(server.port)["pulmoseg_model_info"]) == [
        (("name", "a"), ("provider", "CUDAExecutionProvider"), ("version", "2"))
    ]


def test_registries_are_separate() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()
    first.record_upload(10)
    assert first.registry.get_sample_value("pulmoseg_upload_bytes_total") == 10.0
    assert second.registry.get_sample_value("pulmoseg_upload_bytes_total") == 0.0
    assert second.registry.get_sample_value("pulmoseg_model_loaded") == 0.0


def test_busy_port_gives_clear_error(served: tuple[ServiceMetrics, MetricsServer]) -> None:
    _, server = served
    with pytest.raises(OSError, match=rf"Could not bind the metrics port 127.0.0.1:{server.port}"):
        start_metrics_server(ServiceMetrics(), "127.0.0.1", server.port)
