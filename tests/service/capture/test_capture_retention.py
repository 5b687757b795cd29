"""The capture folder's rules without a server: retention by count and age, pending volumes that
expire or become labeled cases, crash leftovers removed, writes that leave nothing half-done."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from service.capture.dataset import CaptureDataset, CapturedVolume
from service.capture.files import TEMP_PREFIX, write_npz_atomic
from service.capture.labels import reference_label_volume

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SHAPE = (3, 4, 5)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _volume(study_hash: str) -> CapturedVolume:
    hu = np.random.default_rng(len(study_hash)).normal(-500, 300, SHAPE)
    return CapturedVolume(
        study_hash, hu, (2.5, 0.7, 0.7), np.eye(3), "net", "1.0.0", ["background", "lung"]
    )


def _dataset(root: Path, clock: Clock, **limits: object) -> CaptureDataset:
    options = {
        "retention": timedelta(days=30),
        "max_studies": 100,
        "pending_ttl": timedelta(hours=24),
    }
    return CaptureDataset(root, now=clock, **{**options, **limits})  # type: ignore[arg-type]


def _ids(dataset: CaptureDataset) -> list[str]:
    return [s["id"] for s in dataset.studies()]


def test_count_limit_removes_the_oldest_cases_first(tmp_path):
    clock = Clock()
    dataset = _dataset(tmp_path, clock, max_studies=3)
    for i in range(5):
        clock.now = T0 + timedelta(hours=i)
        dataset.add_unlabeled(_volume(f"{i:016x}"))
        dataset.prune()
    assert _ids(dataset) == [f"{i:016x}" for i in (2, 3, 4)]
    assert sorted(p.name for p in (tmp_path / "cases").iterdir()) == _ids(dataset)


def test_age_limit_removes_cases_past_retention(tmp_path):
    clock = Clock()
    dataset = _dataset(tmp_path, clock, retention=timedelta(days=30))
    dataset.add_unlabeled(_volume("aaaa"))
    clock.now = T0 + timedelta(days=20)
    dataset.add_unlabeled(_volume("bbbb"))
    assert dataset.prune() == []
    clock.now = T0 + timedelta(days=30, minutes=1)
    assert dataset.prune() == ["aaaa"]
    assert _ids(dataset) == ["bbbb"]
    assert not (tmp_path / "cases" / "aaaa").exists()
    assert dataset.counts() == {"labeled": 0, "unlabeled": 1}


def test_a_pending_volume_becomes_a_labeled_case_only_with_its_reference(tmp_path):
    clock = Clock()
    dataset = _dataset(tmp_path, clock)
    dataset.put_pending(_volume("cccc"))
    dataset.put_pending(_volume("dddd"))
    assert not (tmp_path / "manifest.json").exists()  # pending volumes are no dataset
    label = reference_label_volume({1: np.ones(SHAPE), 2: np.zeros(SHAPE)})
    assert dataset.add_label("cccc", label, ["lung", "ggo"])
    [entry] = dataset.studies()
    assert (
        entry["id"] == "cccc" and entry["labeled"] and entry["reference_classes"] == ["lung", "ggo"]
    )
    assert not dataset.pending_path("cccc").exists()
    with np.load(tmp_path / entry["label"]) as data:
        np.testing.assert_array_equal(data["volume"], label)

    clock.now = T0 + timedelta(hours=24, minutes=1)
    dataset.prune()
    assert not dataset.pending_path("dddd").exists()  # expired unreferenced
    assert not dataset.add_label("dddd", label, ["lung"])
    assert _ids(dataset) == ["cccc"]


def test_a_label_of_the_wrong_shape_is_refused_and_nothing_changes(tmp_path):
    dataset = _dataset(tmp_path, Clock())
    dataset.add_unlabeled(_volume("eeee"))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\).*\(3, 4, 5\)"):
        dataset.add_label("eeee", np.zeros((2, 2, 2), np.uint8), ["lung"])
    assert dataset.counts() == {"labeled": 0, "unlabeled": 1}


def test_overlapping_reference_segments_keep_the_lesion_inside_the_lung():
    lung = np.ones(SHAPE)
    ggo = np.zeros(SHAPE)
    ggo[1, 1:3, 1:3] = 0.8  # fractional: binarised at 0.5
    label = reference_label_volume({2: ggo, 1: lung})
    assert label.dtype == np.uint8
    assert (label == 2).sum() == 4 and (label == 1).sum() == lung.size - 4
    with pytest.raises(ValueError, match="matched no model class"):
        reference_label_volume({})


def test_prune_removes_unlisted_case_folders_and_stale_temporary_files(tmp_path):
    dataset = _dataset(tmp_path, Clock())
    dataset.add_unlabeled(_volume("ffff"))
    orphan = tmp_path / "cases" / "0123"  # written, then the process died before listing it
    orphan.mkdir()
    (orphan / "image.npz").write_bytes(b"x")
    stale = tmp_path / "cases" / "ffff" / f"{TEMP_PREFIX}abc.npz"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    fresh = tmp_path / f"{TEMP_PREFIX}live.json"  # a write in progress is left alone
    fresh.write_bytes(b"{")
    dataset.prune()
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    assert _ids(dataset) == ["ffff"]


def test_a_failed_write_leaves_neither_a_temporary_nor_a_partial_file(tmp_path):
    target = tmp_path / "image.npz"
    target.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(OSError):
        write_npz_atomic(target, {"volume": np.zeros(SHAPE)})
    assert [p.name for p in tmp_path.iterdir()] == ["image.npz"]
    assert target.is_dir() and not any(target.iterdir())


def test_manifest_is_what_the_training_reader_expects(tmp_path):
    dataset = _dataset(tmp_path, Clock())
    dataset.add_unlabeled(_volume("abcd"))
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["format"] == "pulmoseg-capture/1"
    [entry] = raw["studies"]
    assert entry["image"] == "cases/abcd/image.npz" and entry["labeled"] is False
    assert "label" not in entry and entry["captured_at"] == T0.isoformat()


def test_pending_volumes_are_bounded_by_count_too(tmp_path):
    clock = Clock()
    dataset = _dataset(tmp_path, clock, max_studies=2)
    for i in range(4):
        clock.now = T0 + timedelta(minutes=i)
        dataset.put_pending(_volume(f"{i:04x}"))
    (tmp_path / "pending" / "beef.npz").write_bytes(b"truncated")
    dataset.prune()
    assert sorted(p.name for p in (tmp_path / "pending").iterdir()) == ["0002.npz", "0003.npz"]
