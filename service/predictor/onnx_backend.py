"""ONNX Runtime backend: one warm session per model, shared by every request.

ORT lists CUDA as *available* even where CUDA cannot load and then silently runs on the CPU, so
the provider actually in use is read back from the session and reported; ``require_gpu`` turns
that silent fallback into an immediate error.

ORT's CPU memory arena grows in powers of two and never returns memory. For a network at 512²
it stays off by default: one 512² study left the process about 0.4 GB larger than the same run
without it (batch of 4 slices: 1.07 vs 0.66 GB peak) for no measurable gain in speed on the CPU.
For networks of at most :data:`ARENA_MAX_INPUT_PIXELS` input pixels (the shipped model runs at
160²) it is on by default: without it every intermediate tensor of every batch is a fresh
``mmap`` (the service fixes glibc's mmap threshold, ``service.app.memory_release``) that the
kernel must fault in page by page, which cost more than the network itself — on a 300-slice
study 30 % of the inference CPU time and three times the page faults (2026-12-05,
docs/benchmarks.md) — for a peak about 0.26 GB higher. With the arena on,
:func:`load_onnx_predictor` runs one full batch at load time so the arena has its final size
before the first study (a first study would otherwise grow it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.core.errors import ModelError, ProviderUnavailableError
from service.core.manifest import ModelManifest, read_model_manifest
from service.predictor.backend import InferenceBackend
from service.predictor.predictor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_PIXELS,
    InputGeometry,
    LabelResampling,
    Predictor,
)

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
#: Largest network input (pixels per slice) for which the CPU arena is on by default.
ARENA_MAX_INPUT_PIXELS = 256 * 256


def arena_by_default(manifest: ModelManifest) -> bool:
    """Whether ORT's CPU memory arena is on when the caller does not say (see module doc)."""
    height, width = manifest.input_size
    return int(height) * int(width) <= ARENA_MAX_INPUT_PIXELS


def preferred_providers(available: Sequence[str], *, use_tensorrt: bool = False) -> list[str]:
    """CUDA first (TensorRT only on request: its engine build takes minutes), CPU last."""
    wanted = (["TensorrtExecutionProvider"] if use_tensorrt else []) + [
        "CUDAExecutionProvider",
        CPU_PROVIDER,
    ]
    return [p for p in wanted if p in available]


class OnnxBackend(InferenceBackend):
    """An ONNX Runtime session over an exported pulmoseg model (ORT's ``run`` is thread-safe)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        require_gpu: bool = False,
        intra_op_threads: int = 0,
        cpu_only: bool = False,
        cpu_mem_arena: bool | None = None,
    ) -> None:
        """``cpu_mem_arena``: ORT's CPU memory arena; None decides by the network's input size
        (:func:`arena_by_default`)."""
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.manifest: ModelManifest = read_model_manifest(self.model_path)
        ort.set_default_logger_severity(4)  # a CUDA load failure is reported once, by us
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        if cpu_mem_arena is None:
            cpu_mem_arena = arena_by_default(self.manifest)
        self.cpu_mem_arena = cpu_mem_arena
        options.enable_cpu_mem_arena = cpu_mem_arena
        options.log_severity_level = 3
        requested = (
            [CPU_PROVIDER] if cpu_only else preferred_providers(ort.get_available_providers())
        )
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=requested)
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime could not load model '{self.model_path}': {exc}"
            ) from exc
        self.providers: list[str] = list(self.session.get_providers())
        self.provider = self.providers[0]
        if require_gpu and self.provider not in GPU_PROVIDERS:
            raise ProviderUnavailableError(
                f"A GPU is required (require_gpu=true) but ONNX Runtime runs on {self.provider}; "
                f"requested {requested}. Check the CUDA/cuDNN libraries and the GPU device."
            )
        if self.provider == CPU_PROVIDER and "CUDAExecutionProvider" in requested:
            log.warning("CUDA provider listed but not usable; running on CPUExecutionProvider")
        self.input_name = self.session.get_inputs()[0].name
        log.info(
            "model %s %s loaded; ONNX Runtime provider in use: %s",
            self.manifest.name,
            self.manifest.version,
            self.provider,
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        output: np.ndarray = self.session.run(None, {self.input_name: batch})[0]
        return output


def load_onnx_predictor(
    model_path: str | Path,
    *,
    require_gpu: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
    intra_op_threads: int = 0,
    cpu_only: bool = False,
    cpu_mem_arena: bool | None = None,
    label_resampling: LabelResampling | str = LabelResampling.EXACT,
) -> Predictor:
    """A :class:`Predictor` over an exported model; geometry and classes come from its manifest.

    With ORT's CPU arena on (the default for small networks), one full batch runs before the
    predictor is returned, so the first study finds the arena at its final size.
    """
    backend = OnnxBackend(
        model_path,
        require_gpu=require_gpu,
        intra_op_threads=intra_op_threads,
        cpu_only=cpu_only,
        cpu_mem_arena=cpu_mem_arena,
    )
    predictor = Predictor(
        backend,
        InputGeometry.from_manifest(backend.manifest),
        manifest=backend.manifest,
        batch_size=batch_size,
        max_batch_pixels=max_batch_pixels,
        label_resampling=label_resampling,
    )
    if backend.cpu_mem_arena and backend.provider == CPU_PROVIDER:
        predictor.warm_up()
    return predictor
