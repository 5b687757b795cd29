"""Settings, error mapping, provider defaults and the GPU memory collector of the quality work."""

from __future__ import annotations

import sys
import types

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.core.errors import (
    InvalidArgumentError,
    InvalidReferenceError,
    ReferenceGeometryError,
    StudyNotFoundError,
)
from service.observability.gpu_metrics import GpuMemoryCollector
from service.quality.assessment import QualityConfig
from service.serving.errors import error_reason, status_for
from service.serving.settings import load_settings, redacted


def test_quality_settings_from_env_and_their_checks(tmp_path):
    env = {
        "PULMOSEG_QUALITY_DB_PATH": str(tmp_path / "q.sqlite"),
        "PULMOSEG_CONSISTENCY_FRACTION": "0.25",
        "PULMOSEG_CONSISTENCY_FLAG_THRESHOLD": "0.7",
        "PULMOSEG_WRITE_SUMMARY_SR": "false",
    }
    settings = load_settings(env=env)
    assert settings.records.db_path == tmp_path / "q.sqlite"
    quality = settings.quality
    assert (quality.consistency_fraction, quality.consistency_flag_threshold) == (0.25, 0.7)
    assert quality.write_summary_sr is False and quality.severity_lesion_floor_ml == 1.0
    assert load_settings(env={}).quality.consistency_fraction is None
    with pytest.raises(
        ValueError, match=r"'quality.consistency_fraction' must be in \[0, 1\], got 2"
    ):
        load_settings(env={}, consistency_fraction=2)
    with pytest.raises(ValueError, match="'quality.severity_lesion_floor_ml' must be >= 0"):
        load_settings(env={}, severity_lesion_floor_ml=-0.5)
    with pytest.raises(ValueError, match="Did you mean 'quality.consistency_fraction'"):
        load_settings(env={}, consistency_fractoin=0.5)


def test_database_password_never_reaches_the_settings_log():
    settings = load_settings(env={}, quality_db_url="postgresql://pulm:s3cret@db:5432/q")
    shown = redacted(settings)["records"]["db_url"]
    assert "s3cret" not in shown and "db:5432/q" in shown


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (InvalidReferenceError("x"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_reference"),
        (ReferenceGeometryError("x"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_reference"),
        (StudyNotFoundError("x"), grpc.StatusCode.NOT_FOUND, "study_not_found"),
        (InvalidArgumentError("x"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        (KeyError("secret internals"), grpc.StatusCode.INTERNAL, "internal"),
    ],
)
def test_quality_errors_in_the_status_table(error, code, reason):
    assert status_for(error)[0] is code
    assert error_reason(error) == reason
    if code is not grpc.StatusCode.INTERNAL:
        assert status_for(error)[1] == "x"


def test_consistency_default_depends_on_the_provider():
    assert QualityConfig().fraction_for("CUDAExecutionProvider") == 1.0
    assert QualityConfig().fraction_for("CPUExecutionProvider") == 0.0
    assert QualityConfig(consistency_fraction=0.3).fraction_for("CUDAExecutionProvider") == 0.3


def test_gpu_memory_collector_exports_only_on_a_gpu(monkeypatch):
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    registry = CollectorRegistry()
    collector = GpuMemoryCollector()
    registry.register(collector)
    assert collector.enable("CPUExecutionProvider") is False
    assert b"pulmoseg_gpu_memory_used_bytes" not in generate_latest(registry)
    assert collector.enable("CUDAExecutionProvider") is True
    assert registry.get_sample_value("pulmoseg_gpu_memory_used_bytes", {"gpu": "0"}) == 3 * 2**30
    assert registry.get_sample_value("pulmoseg_gpu_memory_total_bytes", {"gpu": "0"}) == 80 * 2**30


def test_gpu_memory_collector_stays_silent_without_nvml(monkeypatch):
    def broken() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=broken))
    collector = GpuMemoryCollector()
    assert collector.enable("CUDAExecutionProvider") is False
    assert list(collector.collect()) == []
