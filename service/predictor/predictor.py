"""The one predictor: volume (or slice) in, class probabilities out.

The service, ``pulmoseg evaluate`` and training-time validation all call :class:`Predictor`,
with an ONNX Runtime or a torch backend behind the same preprocessing, so the validation
VolDice that picks a checkpoint is the number the service will produce on its export.

Steps per batch of slices: 2.5D context stack → in-plane resize to the network's input size →
backend → softmax → back to the slice size. Probabilities (:meth:`Predictor.predict_probabilities`)
are resized bilinearly; labels (:meth:`Predictor.predict_labels`, what the service serves) are
the argmax of those resized probabilities, but computed at the network's resolution wherever
that decides it (see :class:`LabelResampling`), so K float maps at the slice size are never built.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass

import numpy as np

from service.core.errors import ModelError
from service.core.manifest import ModelManifest
from service.core.options import Option
from service.core.preprocessing import interpolation_taps, resize_planes, slice_context_stack
from service.predictor.backend import InferenceBackend

DEFAULT_BATCH_SIZE = 16
#: Upper bound on the input pixels of one network batch (slices × height × width): two slices at
#: 512². Activations grow with it; on a CPU, batches of 16 slices at 512² took 4 GB of ONNX
#: Runtime memory and ran no faster per slice than batches of 1-4 (cache misses).
DEFAULT_MAX_BATCH_PIXELS = 2 * 512 * 512


#: Marks a full-size pixel whose label the low-resolution argmax does not decide.
_UNDECIDED = np.uint8(255)


class LabelResampling(Option):
    """How :meth:`Predictor.predict_labels` brings labels from the network's size to the slice's.

    * ``exact`` (default): the argmax of the bilinearly resized probabilities, as
      ``probabilities`` computes it, but without resizing them: a full-size pixel interpolates
      the probabilities of (at most) 2×2 network pixels with non-negative weights, and where
      those pixels share their argmax class c, every convex combination of them has c as its
      argmax too (p_c ≥ p_k at each of them, ties to the lower class included). Only pixels
      whose 2×2 network neighbourhood holds two classes (the class boundaries) are
      interpolated, with the same taps and order as :func:`resize_planes`. The labels equal
      those of ``probabilities`` up to float32 rounding at exact ties.
    * ``probabilities``: K probability maps resized to the slice size, then the argmax (the
      path before 2026-12; kept as the reference for tests and ``bench/real_study_speed.py``).
    * ``nearest``: the argmax at the network's size, upsampled by nearest neighbour: cheapest,
      but it moves class boundaries by up to half a network pixel (agreement with ``exact``
      measured by the bench; not used by the service).
    """

    EXACT = "exact"
    PROBABILITIES = "probabilities"
    NEAREST = "nearest"


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


def upsample_argmax(probs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``resize_planes(probs, out.shape[-2:]).argmax(axis=1)`` without the resized maps.

    ``probs``: (n, K, h, w) float32 probabilities (or any scores that are interpolated, not
    logits); ``out``: (n, H, W) uint8, written and returned. See
    :attr:`LabelResampling.EXACT` for why the low-resolution argmax decides every pixel whose
    2×2 source neighbourhood holds one class; the others (class boundaries, a few percent of a
    CT slice) are interpolated with the taps and order of
    :func:`service.core.preprocessing.resize_planes` (rows, then columns) and compared.
    """
    n, classes, h, w = probs.shape
    height, width = out.shape[-2:]
    if classes >= _UNDECIDED:
        raise ValueError(f"At most {int(_UNDECIDED) - 1} classes are supported, got {classes}.")
    if out.dtype != np.uint8 or not out.flags.c_contiguous or out.shape[0] != n:
        raise ValueError(
            f"Argument 'out' must be a C-contiguous uint8 array of {n} planes, got "
            f"{out.dtype} {out.shape}."
        )
    small = argmax_classes(probs, np.empty((n, h, w), dtype=np.uint8))
    # A cell (i, j) is decided when rows i, i+1 and columns j, j+1 hold one class (the last
    # row and column repeat themselves: their "next" is the clamped edge).
    padded = np.pad(small, ((0, 0), (0, 1), (0, 1)), mode="edge")
    decided = (
        (padded[:, :-1, :-1] == padded[:, 1:, :-1])
        & (padded[:, :-1, :-1] == padded[:, :-1, 1:])
        & (padded[:, :-1, :-1] == padded[:, 1:, 1:])
    )
    cells = np.where(decided, small, _UNDECIDED)
    row_lo, row_hi, row_w_lo, row_w_hi = interpolation_taps(h, height)
    col_lo, col_hi, col_w_lo, col_w_hi = interpolation_taps(w, width)
    # Output row Y interpolates source rows lo[Y] and hi[Y] (= lo[Y] + 1 or the clamped edge):
    # the cell at (lo[Y], lo[X]) covers all four source pixels of (Y, X).
    np.take(np.take(cells, row_lo, axis=1), col_lo, axis=2, out=out)
    flat = out.reshape(-1)
    undecided = np.flatnonzero(flat == _UNDECIDED)
    if undecided.size:
        b, pixel = np.divmod(undecided, height * width)
        y, x = np.divmod(pixel, width)
        r0, r1, c0, c1 = row_lo[y], row_hi[y], col_lo[x], col_hi[x]
        # rows of (K,) class probabilities, one per network pixel
        table = np.ascontiguousarray(probs.transpose(0, 2, 3, 1)).reshape(-1, classes)
        base = b * (h * w)
        wr0, wr1 = row_w_lo[y][:, None], row_w_hi[y][:, None]
        # (m, K) each: the same products and sums as the two-tap resize, rows first
        left = table[base + r0 * w + c0] * wr0 + table[base + r1 * w + c0] * wr1
        right = table[base + r0 * w + c1] * wr0 + table[base + r1 * w + c1] * wr1
        values = left * col_w_lo[x][:, None] + right * col_w_hi[x][:, None]
        flat[undecided] = values.argmax(axis=1)
    return out


def _upsample_nearest(small: np.ndarray, out: np.ndarray) -> None:
    """Nearest-neighbour upsampling of (n, h, w) labels into ``out`` (n, H, W)."""
    from service.core.preprocessing import nearest_indices

    rows = nearest_indices(small.shape[1], out.shape[1])
    cols = nearest_indices(small.shape[2], out.shape[2])
    np.take(np.take(small, rows, axis=1), cols, axis=2, out=out)


class _Clock:
    """Adds the seconds since the last lap to ``timings[stage]``; does nothing without timings."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = 0.0

    def start(self) -> None:
        if self.timings is not None:
            self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
            self.last = now


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
        label_resampling: LabelResampling | str = LabelResampling.EXACT,
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
        self.label_resampling = LabelResampling.parse(
            label_resampling, "Argument 'label_resampling'"
        )

    @property
    def provider(self) -> str:
        return self.backend.provider

    def warm_up(self) -> None:
        """Run one full batch at the network's input size (air), so that what the backend
        sizes by its largest batch (ORT's memory arena) is sized before the first study.

        The output is not checked here: whether the model matches its manifest is the service's
        warm-up study's question, which reports it in its own words."""
        shape = (self.batch_size, self.geometry.slice_context, *self.geometry.input_size)
        self.backend.run(np.full(shape, -1000.0, dtype=np.float32))

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
        timings: dict[str, float] | None = None,
        on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Label volume (z, y, x) uint8: argmax of the class probabilities, batch by batch.

        The same labels as ``predict_probabilities(volume).argmax(0)`` (with the default
        :class:`LabelResampling`), but memory grows with one batch of probabilities at the
        network's size, not with K float copies of the whole volume. ``timings``, when given,
        gets the seconds spent in ``preprocess`` (context stack, resize to the network),
        ``network`` (the backend) and ``postprocess`` (softmax, labels at the slice size) added.
        ``on_batch(probabilities, labels)``, when given, sees each batch's class probabilities
        (n, K, y, x) and their argmax (n, y, x) at the resolution the labels are decided at, so
        a caller can measure the model's uncertainty without a second inference.
        """
        depth, height, width = self._check_volume(volume).shape
        labels = np.empty((depth, height, width), dtype=np.uint8)
        resize = (height, width) != tuple(self.geometry.input_size)
        mode = self.label_resampling if resize else LabelResampling.PROBABILITIES
        clock = _Clock(timings)
        batches = self._batches(
            volume,
            on_progress,
            is_cancelled,
            need_probs=False,
            resize_back=mode is LabelResampling.PROBABILITIES,
            clock=clock,
        )
        resized_probabilities = resize and mode is LabelResampling.PROBABILITIES
        for z, output in batches:
            out = labels[z[0] : z[-1] + 1]
            small: np.ndarray | None = None
            probs: np.ndarray | None = output if resized_probabilities else None
            if mode is LabelResampling.PROBABILITIES:
                small = argmax_classes(output, out=out)
            elif mode is LabelResampling.NEAREST:
                small = argmax_classes(output, np.empty((len(z), *output.shape[2:]), np.uint8))
                _upsample_nearest(small, out)
            else:
                probs = softmax(output)
                upsample_argmax(probs, out)
            clock.lap("postprocess")
            if on_batch is not None:
                probs = softmax(output) if probs is None else probs
                if small is None:
                    small = argmax_classes(probs, np.empty((len(z), *probs.shape[2:]), np.uint8))
                on_batch(probs, small)
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
        resize_back: bool = True,
        clock: _Clock | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(slice indices, scores (n, K, y, x)) per batch, at the volume's in-plane size.

        Scores are probabilities; with ``need_probs=False`` and no resize they are the raw
        network output, whose argmax is the same (softmax is monotonic) at a fraction of the cost.
        With ``resize_back=False`` they are always the raw network output, at its size.
        """
        clock = clock or _Clock(None)
        depth, height, width = volume.shape
        data = volume.astype(np.float32, copy=False)
        resize = (height, width) != tuple(self.geometry.input_size)
        for start in range(0, depth, self.batch_size):
            if is_cancelled is not None and is_cancelled():
                raise CancelledError("the study was cancelled during inference")
            z = np.arange(start, min(start + self.batch_size, depth))
            clock.start()
            batch = resize_planes(
                slice_context_stack(data, self.geometry.slice_context, z),
                self.geometry.input_size,
            )
            batch = np.ascontiguousarray(batch)
            clock.lap("preprocess")
            output = self.backend.run(batch)
            clock.lap("network")
            self._check_output(output, len(z))
            if resize_back and (need_probs or resize):
                output = resize_planes(softmax(output), (height, width))
                clock.lap("postprocess")
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
