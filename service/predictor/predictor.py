"""The one predictor: volume (or slice) in, class probabilities out.

The service, ``pulmoseg evaluate`` and training-time validation all call :class:`Predictor`,
with an ONNX Runtime or a torch backend behind the same preprocessing, so the validation
VolDice that picks a checkpoint is the number the service will produce on its export.

Steps per batch of slices: 2.5D context stack → in-plane resize to the network's input size →
backend → softmax → resize of the probabilities back to the slice size.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass

import numpy as np

from service.core.errors import ModelError
from service.core.manifest import ModelManifest
from service.core.preprocessing import resize_planes, slice_context_stack
from service.predictor.backend import InferenceBackend

DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class InputGeometry:
    """How the network's input is built: odd 2.5D context, in-plane size, class count."""

    slice_context: int
    input_size: tuple[int, int]
    num_classes: int

    def __post_init__(self) -> None:
        if self.slice_context < 1 or self.slice_context % 2 == 0:
            raise ValueError(
                f"Argument 'slice_context' must be a positive odd number, got {self.slice_context}."
            )
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(
                f"Argument 'input_size' must be two positive sizes, got {self.input_size}."
            )
        if self.num_classes < 2:
            raise ValueError(f"Argument 'num_classes' must be at least 2, got {self.num_classes}.")

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> InputGeometry:
        height, width = manifest.input_size
        return cls(manifest.slice_context, (int(height), int(width)), len(manifest.classes))


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax (float32)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted, dtype=np.float32)
    probabilities: np.ndarray = exp / exp.sum(axis=axis, keepdims=True)
    return probabilities


class Predictor:
    """Preprocessing + a backend; thread-safe when the backend is (ORT sessions are)."""

    def __init__(
        self,
        backend: InferenceBackend,
        geometry: InputGeometry,
        *,
        manifest: ModelManifest | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if not isinstance(backend, InferenceBackend):
            raise TypeError(
                f"Argument 'backend' must be an InferenceBackend, got {type(backend).__name__}."
            )
        if batch_size < 1:
            raise ValueError(f"Argument 'batch_size' must be at least 1, got {batch_size}.")
        self.backend = backend
        self.geometry = geometry
        self.manifest = manifest
        self.batch_size = batch_size

    @property
    def provider(self) -> str:
        return self.backend.provider

    def predict_probabilities(
        self,
        volume: np.ndarray,
        *,
        on_progress: Callable[[float], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Class probabilities (K, z, y, x) float32 for a (z, y, x) volume in input units."""
        if not isinstance(volume, np.ndarray):
            raise TypeError(
                f"Argument 'volume' must be a numpy array, got {type(volume).__name__}."
            )
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise ValueError(
                f"Argument 'volume' must be a non-empty 3-D (z, y, x) array, got shape "
                f"{volume.shape}."
            )
        depth, height, width = volume.shape
        data = volume.astype(np.float32, copy=False)
        probs = np.empty((self.geometry.num_classes, depth, height, width), dtype=np.float32)
        for start in range(0, depth, self.batch_size):
            if is_cancelled is not None and is_cancelled():
                raise CancelledError("the study was cancelled during inference")
            z = np.arange(start, min(start + self.batch_size, depth))
            batch = resize_planes(
                slice_context_stack(data, self.geometry.slice_context, z),
                self.geometry.input_size,
            )
            output = self.backend.run(np.ascontiguousarray(batch))
            self._check_output(output, len(z))
            probs[:, z] = resize_planes(softmax(output), (height, width)).transpose(1, 0, 2, 3)
            if on_progress is not None:
                on_progress(float(z[-1] + 1) / depth)
        return probs

    def predict_slice_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities (K, y, x) for one 2-D slice (models with slice context 1)."""
        if not isinstance(image, np.ndarray) or image.ndim != 2:
            raise ValueError(
                f"Argument 'image' must be a 2-D (y, x) array, got "
                f"{getattr(image, 'shape', type(image).__name__)}."
            )
        return self.predict_probabilities(image[None])[:, 0]

    def predict_labels(self, volume: np.ndarray, **kwargs: object) -> np.ndarray:
        """Label volume (z, y, x) uint8: argmax of the class probabilities."""
        probs = self.predict_probabilities(volume, **kwargs)  # type: ignore[arg-type]
        labels: np.ndarray = probs.argmax(axis=0).astype(np.uint8)
        return labels

    def _check_output(self, output: np.ndarray, batch: int) -> None:
        expected = (batch, self.geometry.num_classes, *self.geometry.input_size)
        if tuple(output.shape) != expected:
            raise ModelError(
                f"The network returned shape {tuple(output.shape)}, expected {expected} "
                "(batch, classes, height, width); the model does not match its manifest."
            )
