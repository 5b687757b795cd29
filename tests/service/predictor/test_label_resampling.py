"""Labels at the slice size from the network's size: the argmax of the resized probabilities,
without resizing K probability maps (``LabelResampling.EXACT``)."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.preprocessing import resize_planes
from service.predictor import InferenceBackend, InputGeometry, LabelResampling, Predictor
from service.predictor.predictor import softmax, upsample_argmax


def smooth_probabilities(n: int, classes: int, size: int, seed: int) -> np.ndarray:
    """Blobby class maps (regions of a few pixels, as a network's output has)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, classes, max(2, size // 6), max(2, size // 6)))
    logits = resize_planes(coarse.astype(np.float32), (size, size)) * 4
    logits += 0.3 * rng.standard_normal(logits.shape).astype(np.float32)
    return softmax(logits)


@pytest.mark.parametrize(
    ("size", "target", "classes"),
    [
        (40, (128, 128), 4),
        (32, (100, 77), 3),
        (16, (16 * 5, 16 * 3), 2),
        (20, (64, 64), 7),
        (40, (24, 30), 4),  # slices smaller than the network
    ],
)
def test_upsampled_argmax_equals_the_argmax_of_resized_probabilities(
    size: int, target: tuple[int, int], classes: int
) -> None:
    probs = smooth_probabilities(3, classes, size, seed=size + classes)
    expected = resize_planes(probs, target).argmax(axis=1)
    out = np.empty((3, *target), dtype=np.uint8)
    np.testing.assert_array_equal(upsample_argmax(probs, out), expected)


def test_ties_go_to_the_lower_class_as_in_argmax() -> None:
    probs = np.full((1, 4, 10, 10), 0.25, dtype=np.float32)  # every pixel a four-way tie
    probs[0, 2, :5] = 0.4
    probs[0, 3, :5] = 0.4  # ties between 2 and 3 in the top half
    out = np.empty((1, 33, 31), dtype=np.uint8)
    np.testing.assert_array_equal(
        upsample_argmax(probs, out), resize_planes(probs, (33, 31)).argmax(axis=1)
    )


class BlobBackend(InferenceBackend):
    """A deterministic 'network': logits from the input's intensities and a fixed pattern."""

    provider = "test"

    def __init__(self, classes: int, size: int) -> None:
        self.pattern = smooth_probabilities(1, classes, size, seed=11)[0] * 3

    def run(self, batch: np.ndarray) -> np.ndarray:
        centre = batch[:, batch.shape[1] // 2 : batch.shape[1] // 2 + 1] / 500.0
        logits = self.pattern[None] + centre * np.arange(self.pattern.shape[0])[None, :, None, None]
        return logits.astype(np.float32)


@pytest.mark.parametrize("shape", [(9, 96, 96), (4, 70, 50), (3, 24, 24)])
def test_predictor_labels_are_the_same_with_and_without_resized_probabilities(
    shape: tuple[int, int, int],
) -> None:
    volume = np.random.default_rng(2).uniform(-1000, 400, size=shape).astype(np.float32)
    geometry = InputGeometry(3, (24, 24), 4)
    backend = BlobBackend(4, 24)
    exact = Predictor(backend, geometry, batch_size=4)
    reference = Predictor(backend, geometry, batch_size=4, label_resampling="probabilities")
    timings: dict[str, float] = {}
    labels = exact.predict_labels(volume, timings=timings)
    assert labels.dtype == np.uint8 and labels.shape == shape
    np.testing.assert_array_equal(labels, reference.predict_labels(volume))
    np.testing.assert_array_equal(labels, exact.predict_probabilities(volume).argmax(axis=0))
    assert set(timings) == {"preprocess", "network", "postprocess"}
    assert all(seconds >= 0 for seconds in timings.values())


def test_nearest_resampling_agrees_away_from_class_boundaries() -> None:
    volume = np.random.default_rng(4).uniform(-1000, 400, size=(4, 96, 96)).astype(np.float32)
    geometry = InputGeometry(1, (24, 24), 3)
    backend = BlobBackend(3, 24)
    exact = Predictor(backend, geometry).predict_labels(volume)
    nearest = Predictor(backend, geometry, label_resampling=LabelResampling.NEAREST)
    agreement = np.mean(nearest.predict_labels(volume) == exact)
    assert 0.8 < agreement < 1.0  # boundaries move by up to half a network pixel


def test_unknown_label_resampling_is_refused() -> None:
    with pytest.raises(ValueError, match="label_resampling"):
        Predictor(BlobBackend(3, 8), InputGeometry(1, (8, 8), 3), label_resampling="cubic")


def test_labels_must_go_to_a_contiguous_uint8_array() -> None:
    probs = smooth_probabilities(2, 3, 8, seed=1)
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        upsample_argmax(probs, np.empty((2, 16, 16), dtype=np.int64))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        upsample_argmax(probs, np.empty((2, 16, 32), dtype=np.uint8)[:, :, ::2])
