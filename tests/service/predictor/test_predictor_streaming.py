"""The predictor streams by batches: labels without whole-volume probabilities, bounded batches.

At 512² a batch of 16 slices made ONNX Runtime take 4 GB and full-volume float probabilities
another K × 4 bytes per voxel; both are pinned down here on the session's real model.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from service.predictor import InputGeometry, Predictor
from service.predictor.onnx_backend import OnnxBackend, load_onnx_predictor
from service.predictor.predictor import DEFAULT_MAX_BATCH_PIXELS, argmax_classes


@pytest.mark.parametrize("shape", [(7, 64, 64), (5, 50, 70)])
def test_streamed_labels_equal_the_argmax_of_the_probabilities(
    exported_model: Path, shape: tuple[int, int, int]
) -> None:
    predictor = load_onnx_predictor(exported_model, cpu_only=True, batch_size=3)
    volume = np.random.default_rng(1).uniform(-1000, 400, size=shape).astype(np.float32)
    labels = predictor.predict_labels(volume)
    expected = predictor.predict_probabilities(volume).argmax(axis=0)
    assert labels.dtype == np.uint8 and labels.shape == shape
    assert np.mean(labels == expected) > 0.9999


def test_labels_never_hold_probabilities_of_the_whole_volume(exported_model: Path) -> None:
    predictor = load_onnx_predictor(exported_model, cpu_only=True)
    volume = np.random.default_rng(2).uniform(-1000, 400, size=(192, 64, 64)).astype(np.float32)
    whole_volume_probs = predictor.geometry.num_classes * volume.size * 4
    tracemalloc.start()
    try:
        predictor.predict_labels(volume)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # labels (1 byte a voxel) plus one batch; the probabilities alone would be 16 bytes a voxel
    assert peak < 0.25 * whole_volume_probs, (peak, whole_volume_probs)


def test_batch_size_is_bounded_by_pixels_at_large_input_sizes(exported_model: Path) -> None:
    backend = OnnxBackend(exported_model, cpu_only=True)
    at_512 = Predictor(backend, InputGeometry(3, (512, 512), 4), batch_size=16)
    at_64 = Predictor(backend, InputGeometry(3, (64, 64), 4), batch_size=16)
    huge = Predictor(backend, InputGeometry(3, (2048, 2048), 4), batch_size=16)
    assert at_512.batch_size == DEFAULT_MAX_BATCH_PIXELS // (512 * 512) == 2
    assert at_64.batch_size == 16
    assert huge.batch_size == 1
    with pytest.raises(ValueError, match="max_batch_pixels"):
        Predictor(backend, InputGeometry(3, (64, 64), 4), max_batch_pixels=0)


def test_onnx_runtime_cpu_arena_follows_the_network_size_unless_asked(
    exported_model: Path,
) -> None:
    from service.predictor.onnx_backend import ARENA_MAX_INPUT_PIXELS, arena_by_default

    backend = OnnxBackend(exported_model, cpu_only=True)
    height, width = backend.manifest.input_size
    small = height * width <= ARENA_MAX_INPUT_PIXELS
    assert backend.session.get_session_options().enable_cpu_mem_arena is small
    assert arena_by_default(backend.manifest) is small
    big = dataclasses.replace(backend.manifest, input_size=(512, 512))
    assert not arena_by_default(big)  # 512² networks: +0.4 GB for no gain, stays off
    off = OnnxBackend(exported_model, cpu_only=True, cpu_mem_arena=False)
    assert not off.session.get_session_options().enable_cpu_mem_arena
    on = OnnxBackend(exported_model, cpu_only=True, cpu_mem_arena=True)
    assert on.session.get_session_options().enable_cpu_mem_arena


def test_the_predictor_runs_one_full_batch_at_load_when_the_arena_is_on(
    exported_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[tuple[int, ...]] = []
    original = OnnxBackend.run

    def counted(self: OnnxBackend, batch: np.ndarray) -> np.ndarray:
        runs.append(batch.shape)
        return original(self, batch)

    monkeypatch.setattr(OnnxBackend, "run", counted)
    predictor = load_onnx_predictor(exported_model, cpu_only=True, cpu_mem_arena=True)
    assert runs == [
        (predictor.batch_size, predictor.geometry.slice_context, *predictor.geometry.input_size)
    ]
    runs.clear()
    load_onnx_predictor(exported_model, cpu_only=True, cpu_mem_arena=False)
    assert runs == []


@pytest.mark.parametrize("classes", [1, 2, 3, 4, 5, 7, 8])
def test_argmax_classes_matches_numpy_including_ties(classes: int) -> None:
    # Scores from {0, 1, 2}: most pixels hold ties, which go to the lower class as in argmax.
    rng = np.random.default_rng(classes)
    scores = rng.integers(0, 3, size=(2, classes, 9, 11)).astype(np.float32)
    out = np.empty((2, 9, 11), dtype=np.uint8)
    np.testing.assert_array_equal(argmax_classes(scores, out), scores.argmax(axis=1))
