"""GPU memory in use, as a Prometheus collector read at scrape time.

ONNX Runtime does not report its device memory, so the collector asks NVML (``nvidia-ml-py``,
part of the serve extra) for the memory in use on each visible GPU. It exports nothing until
the model runs on a GPU provider, and nothing where NVML cannot load (a CPU-only machine), so
``pulmoseg_gpu_memory_used_bytes`` exists exactly when it means something.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class GpuMemoryCollector(Collector):
    """``pulmoseg_gpu_memory_used_bytes{gpu}`` and ``…_total_bytes{gpu}`` via NVML."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None

    def enable(self, provider: str) -> bool:
        """Start exporting when ``provider`` runs on a GPU; False if NVML is unavailable."""
        if provider not in GPU_PROVIDERS:
            return False
        with self._lock:
            if self._nvml is not None:
                return True
            try:
                import pynvml

                pynvml.nvmlInit()
            except Exception as exc:  # no driver, no library: the metric simply stays absent
                logger.warning("GPU memory metric unavailable (NVML: %s)", exc)
                return False
            self._nvml = pynvml
            return True

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._nvml
        if nvml is None:
            return
        used = GaugeMetricFamily(
            "pulmoseg_gpu_memory_used_bytes", "GPU memory in use (all processes).", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "pulmoseg_gpu_memory_total_bytes", "GPU memory installed.", labels=["gpu"]
        )
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index))
                used.add_metric([str(index)], float(info.used))
                total.add_metric([str(index)], float(info.total))
        except Exception as exc:
            logger.debug("NVML query failed: %s", exc)
            return
        yield used
        yield total
