"""The one predictor: volume (or slice) in, class probabilities out.

The service, ``pulmoseg evaluate`` and training-time validation all call :class:`Predictor`,
with an ONNX Runtime or a torch backend behind the same preprocessing, so the validation
VolDice that picks a checkpoint is the number the service will produce on its export.

Steps per batch of slices: 2.5D context stack → in-plane resize to the network's input size →
backend → softmax → resize of the probabilities back to the slice size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass

import numpy as np

from service.core.errors import ModelError
from service.core.manifest import ModelManifest
from service.core.preprocessing import resize_planes, slice_context_stack
from service.predictor.backend import InferenceBackend

DEFAULT_BATCH_SIZE = 16
#: Upper bound on the input pixels of one network batch (slices × height × width): two slices at
#: 512². Activations grow with it; on a CPU, batches of 16 slices at 512² took 4 GB of ONNX
#: Runtime memory and ran no faster per slice than batches of 1-4 (cache misses).
DEFAULT_MAX_BATCH_PIXELS = 2 * 512 * 512


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


def argmax_classes(scores: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``scores.argmax(axis=1)`` for (n, K, y, x) scores, written into ``out`` (n, y, x).

    A knock-out tournament over contiguous class planes: neighbours are compared pairwise, the
    winners of each round meet in the next (K - 1 comparisons in log2 K rounds). Ties go to the
    lower class, as in argmax, because the left side of every match holds the lower classes
    and wins unless the right side is strictly greater. For four 512² maps of 300 slices: about
    0.95 s against 1.9 s for a left fold over the classes and 2.1-2.6 s for numpy's argmax
    along the strided class axis (same 2-core CPU, busy; ``bench/non_network.py`` measures it
    in the pipeline).
    """
    dtype = out.dtype.type
    Player = tuple[np.ndarray, np.ndarray | np.integer]  # best score so far, its class
    players: list[Player] = [(scores[:, k], dtype(k)) for k in range(scores.shape[1])]
    while len(players) > 2:
        winners: list[Player] = []
        for (left_best, left_class), (right_best, right_class) in zip(
            players[0::2], players[1::2], strict=False
        ):
            right_wins = right_best > left_best
            if isinstance(left_class, np.integer):  # first round: neighbouring classes k, k+1
                winner = np.add(right_wins, left_class, dtype=dtype)
            else:
                winner = np.where(right_wins, right_class, left_class)
            winners.append((np.maximum(left_best, right_best), winner))
        if len(players) % 2:
            winners.append(players[-1])  # a bye: the highest classes meet the others later
        players = winners
    np.copyto(out, players[0][1])
    if len(players) == 2:  # the final, written straight into ``out``
        (left_best, _), (right_best, right_class) = players
        np.copyto(out, right_class, where=right_best > left_best)
    return out


class Predictor:
    """Preprocessing + a backend; thread-safe when the backend is (ORT sessions are)."""

    def __init__(
        self,
        backend: InferenceBackend,
        geometry: InputGeometry,
        *,
        manifest: ModelManifest | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
    ) -> None:
        if not isinstance(backend, InferenceBackend):
            raise TypeError(
                f"Argument 'backend' must be an InferenceBackend, got {type(backend).__name__}."
            )
        if batch_size < 1:
            raise ValueError(f"Argument 'batch_size' must be at least 1, got {batch_size}.")
        if max_batch_pixels < 1:
            raise ValueError(
                f"Argument 'max_batch_pixels' must be at least 1, got {max_batch_pixels}."
            )
        self.backend = backend
        self.geometry = geometry
        self.manifest = manifest
        height, width = geometry.input_size
        #: Slices per network call: ``batch_size``, lowered so one batch stays within
        #: ``max_batch_pixels`` at the network's input size (never below one slice).
        self.batch_size = max(1, min(batch_size, max_batch_pixels // (height * width)))

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
        """Class probabilities (K, z, y, x) float32 for a (z, y, x) volume in input units.

        Holds K float32 copies of the volume; the service needs only labels and calls
        :meth:`predict_labels`, which never builds this array.
        """
        depth, height, width = self._check_volume(volume).shape
        probs = np.empty((self.geometry.num_classes, depth, height, width), dtype=np.float32)
        for z, batch_probs in self._batches(volume, on_progress, is_cancelled):
            probs[:, z] = batch_probs.transpose(1, 0, 2, 3)
        return probs

    def predict_slice_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities (K, y, x) for one 2-D slice (models with slice context 1)."""
        if not isinstance(image, np.ndarray) or image.ndim != 2:
            raise ValueError(
                f"Argument 'image' must be a 2-D (y, x) array, got "
                f"{getattr(image, 'shape', type(image).__name__)}."
            )
        return self.predict_probabilities(image[None])[:, 0]

    def predict_labels(
        self,
        volume: np.ndarray,
        *,
        on_progress: Callable[[float], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Label volume (z, y, x) uint8: argmax of the class probabilities, batch by batch.

        The same labels as ``predict_probabilities(volume).argmax(0)``, but memory grows with
        one batch of probabilities, not with K float copies of the whole volume.
        """
        depth, height, width = self._check_volume(volume).shape
        labels = np.empty((depth, height, width), dtype=np.uint8)
        for z, scores in self._batches(volume, on_progress, is_cancelled, need_probs=False):
            argmax_classes(scores, out=labels[z[0] : z[-1] + 1])
        return labels

    @staticmethod
    def _check_volume(volume: np.ndarray) -> np.ndarray:
        if not isinstance(volume, np.ndarray):
            raise TypeError(
                f"Argument 'volume' must be a numpy array, got {type(volume).__name__}."
            )
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise ValueError(
                f"Argument 'volume' must be a non-empty 3-D (z, y, x) array, got shape "
                f"{volume.shape}."
            )
        return volume

    def _batches(
        self,
        volume: np.ndarray,
        on_progress: Callable[[float], None] | None,
        is_cancelled: Callable[[], bool] | None,
        *,
        need_probs: bool = True,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(slice indices, scores (n, K, y, x)) per batch, at the volume's in-plane size.

        Scores are probabilities; with ``need_probs=False`` and no resize they are the raw
        network output, whose argmax is the same (softmax is monotonic) at a fraction of the cost.
        """
        depth, height, width = volume.shape
        data = volume.astype(np.float32, copy=False)
        resize = (height, width) != tuple(self.geometry.input_size)
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
            if need_probs or resize:
                output = resize_planes(softmax(output), (height, width))
            yield z, output
            if on_progress is not None:
                on_progress(float(z[-1] + 1) / depth)

    def _check_output(self, output: np.ndarray, batch: int) -> None:
        expected = (batch, self.geometry.num_classes, *self.geometry.input_size)
        if tuple(output.shape) != expected:
            raise ModelError(
                f"The network returned shape {tuple(output.shape)}, expected {expected} "
                "(batch, classes, height, width); the model does not match its manifest."
            )
