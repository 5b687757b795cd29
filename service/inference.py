"""ONNX Runtime inference for exported pulmoseg models.

One :class:`OnnxSegmenter` holds one warm ORT session that is shared by every request (ORT's
``run`` is thread-safe). ORT lists CUDA as *available* even where CUDA cannot load and then
silently runs on the CPU, so the provider actually in use is read back from the session and
reported; ``require_gpu`` turns that silent fallback into an immediate error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
from scipy import ndimage

from service.errors import ModelError, ProviderUnavailableError
from service.manifest import ModelManifest, read_manifest
from service.slices import slice_context_stack

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


def preferred_providers(available: Sequence[str], *, use_tensorrt: bool = False) -> list[str]:
    """CUDA first (TensorRT only on request: its engine build takes minutes), CPU last."""
    wanted = (["TensorrtExecutionProvider"] if use_tensorrt else []) + [
        "CUDAExecutionProvider",
        CPU_PROVIDER,
    ]
    return [p for p in wanted if p in available]


class OnnxSegmenter:
    """Runs an exported 2.5D segmentation model over a CT volume in Hounsfield units."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        require_gpu: bool = False,
        batch_size: int = 16,
        intra_op_threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.manifest: ModelManifest = read_manifest(self.model_path)
        if batch_size < 1:
            raise ValueError(f"Argument 'batch_size' must be at least 1, got {batch_size}.")
        self.batch_size = batch_size
        ort.set_default_logger_severity(4)  # a CUDA load failure is reported once, by us
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3  # CUDA load failures are reported by us, not as ORT noise
        requested = preferred_providers(ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=requested)
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime could not load model '{self.model_path}': {exc}"
            ) from exc
        self.providers: list[str] = list(self.session.get_providers())
        self.provider: str = self.providers[0]
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

    def predict_probabilities(
        self,
        hu_volume: np.ndarray,
        *,
        on_progress: Callable[[float], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Class probabilities (K, z, y, x) float32 for a (z, y, x) volume in HU."""
        if hu_volume.ndim != 3:
            raise ValueError(
                f"Argument 'hu_volume' must be 3-D (z, y, x), got shape {hu_volume.shape}."
            )
        depth, height, width = hu_volume.shape
        target_h, target_w = self.manifest.input_size
        volume = hu_volume.astype(np.float32, copy=False)
        num_classes = len(self.manifest.classes)
        probs = np.empty((num_classes, depth, height, width), dtype=np.float32)
        for start in range(0, depth, self.batch_size):
            if is_cancelled is not None and is_cancelled():
                raise CancelledError("study cancelled during inference")
            z = np.arange(start, min(start + self.batch_size, depth))
            batch = slice_context_stack(volume, self.manifest.slice_context, z)
            batch = _resize_planes(batch, (target_h, target_w), order=1)
            logits = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]
            batch_probs = _softmax(logits, axis=1)
            batch_probs = _resize_planes(batch_probs, (height, width), order=1)
            probs[:, z] = batch_probs.transpose(1, 0, 2, 3)
            if on_progress is not None:
                on_progress(float(z[-1] + 1) / depth)
        return probs

    def predict_labels(self, hu_volume: np.ndarray, **kwargs: object) -> np.ndarray:
        """Label volume (z, y, x) uint8: argmax of the class probabilities."""
        return self.predict_probabilities(hu_volume, **kwargs).argmax(axis=0).astype(np.uint8)  # type: ignore[arg-type]


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def _resize_planes(batch: np.ndarray, size: tuple[int, int], *, order: int) -> np.ndarray:
    """Resample the last two axes of (n, c, h, w) to ``size``; a no-op when sizes match."""
    if batch.shape[-2:] == tuple(size):
        return batch
    factors = (1.0, 1.0, size[0] / batch.shape[-2], size[1] / batch.shape[-1])
    return ndimage.zoom(batch, factors, order=order, mode="nearest", grid_mode=True).astype(
        np.float32, copy=False
    )
