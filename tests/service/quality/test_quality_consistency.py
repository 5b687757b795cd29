"""Consistency transforms, study selection, consistency VolDice and the review flag."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.identifiers import uid_hash
from service.quality.consistency import consistency_voldice, flag_study
from service.quality.selection import is_selected, transform_for
from service.quality.transforms import ConsistencyTransform

VOLUME = np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5)


@pytest.mark.parametrize("transform", list(ConsistencyTransform))
def test_every_transform_is_exactly_inverted(transform):
    moved = transform.apply(VOLUME)
    assert not np.array_equal(moved, VOLUME) or moved.shape != VOLUME.shape
    np.testing.assert_array_equal(transform.invert(moved), VOLUME)
    # leading axes (e.g. classes) are carried along untouched
    stacked = np.stack([VOLUME, VOLUME + 1])
    np.testing.assert_array_equal(transform.invert(transform.apply(stacked)), stacked)


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ("flip_x", VOLUME[:, :, ::-1]),
        ("flip_z", VOLUME[::-1]),
        ("rot90", np.rot90(VOLUME, 1, axes=(1, 2))),
        ("rot270", np.rot90(VOLUME, -1, axes=(1, 2))),
    ],
)
def test_transforms_are_the_named_numpy_operations(transform, expected):
    np.testing.assert_array_equal(ConsistencyTransform.parse(transform).apply(VOLUME), expected)


def test_unknown_transform_gets_a_hint():
    with pytest.raises(ValueError, match="Did you mean 'rot90'"):
        ConsistencyTransform.parse("rot9")


def test_selection_fraction_and_transform_are_deterministic():
    hashes = [uid_hash(f"1.2.826.0.1.{i}") for i in range(2000)]
    assert all(is_selected(h, 1.0) for h in hashes)
    assert not any(is_selected(h, 0.0) for h in hashes)
    share = sum(is_selected(h, 0.25) for h in hashes) / len(hashes)
    assert 0.2 < share < 0.3
    assert [transform_for(h) for h in hashes[:50]] == [transform_for(h) for h in hashes[:50]]
    assert {transform_for(h) for h in hashes} == set(ConsistencyTransform)
    with pytest.raises(ValueError, match=r"'fraction' must be in \[0, 1\]"):
        is_selected(hashes[0], 1.5)


def _box_labels() -> np.ndarray:
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, 1:7, 1:7] = 1
    labels[1:3, 2:4, 2:6] = 2
    return labels


def test_an_equivariant_model_is_perfectly_consistent():
    labels = _box_labels()
    hu = labels.astype(np.float32)  # the "model" reads the labels straight from the image
    scores = consistency_voldice(
        lambda x: x.astype(np.uint8), hu, labels, {1: "lung", 2: "ggo"}, "rot90"
    )
    assert scores == {"lung": 1.0, "ggo": 1.0}


def test_a_position_dependent_model_is_not():
    labels = _box_labels()
    hu = labels.astype(np.float32)

    def shifted(x: np.ndarray) -> np.ndarray:  # always shifts one voxel towards +x
        return np.roll(x, 1, axis=-1).astype(np.uint8)

    scores = consistency_voldice(shifted, hu, shifted(hu), {1: "lung", 2: "ggo"}, "flip_x")
    # the GGO box is 4 wide: shifted +1 against shifted -1 overlaps 2 of 4 columns
    assert scores["ggo"] == pytest.approx(0.5)
    assert scores["lung"] == pytest.approx(0.625)
    assert flag_study(scores, 0.6, ["lung", "ggo"])  # GGO is below
    assert not flag_study(scores, 0.6, ["lung"])  # the lung alone is not
    assert not flag_study(scores, 0.5, ["lung", "ggo"])  # the threshold is strict


@pytest.mark.parametrize("transform", list(ConsistencyTransform))
def test_confining_after_mapping_back_equals_confining_by_the_transformed_field(transform):
    """The study's lung field, found once, confines T⁻¹(f(T(x))) exactly as the transformed
    field would confine f(T(x)) before mapping back (a voxel mask commutes with T)."""
    rng = np.random.default_rng(7)
    hu = rng.normal(size=(4, 12, 12)).astype(np.float32)
    allowed = rng.random(hu.shape) < 0.6

    def predict(volume):  # not equivariant: position matters, so T changes the prediction
        ramp = np.arange(volume.shape[-1])[None, None, :] / volume.shape[-1]
        return np.digitize(volume + ramp, [-0.5, 0.3, 1.0]).astype(np.uint8)

    def confine(labels):
        return np.where(allowed, labels, 0).astype(np.uint8)

    def predict_confined_on_transformed_grid(volume):
        return np.where(transform.apply(allowed), predict(volume), 0).astype(np.uint8)

    labels = confine(predict(hu))
    classes = {1: "lung", 2: "ggo", 3: "consolidation"}
    reused = consistency_voldice(predict, hu, labels, classes, transform, confine=confine)
    transformed = consistency_voldice(
        predict_confined_on_transformed_grid, hu, labels, classes, transform
    )
    assert reused == transformed
    unconfined = consistency_voldice(predict, hu, labels, classes, transform)
    assert unconfined != reused  # the field matters here, so the test can fail
