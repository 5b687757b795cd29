"""training.data.weak_studies and the weak term: whole HU slices with slice-level labels in a
slices2d run (synthetic-lesion batches, weak batches, unlabeled pool)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.data.test_sources import _raw, make_folders
from tests.training.data.test_synthetic_lesions import chest_slice
from training.config import config_from_dict
from training.data.sources import SliceSource, data_source
from training.data.weak_studies import (
    SyntheticLesionSampler,
    WeakSliceSampler,
    lesion_free_indices,
    load_weak_studies,
)
from training.experiment import run_experiment

CLASSES = ["background", "lung", "ggo", "consolidation"]
WINDOW = (-1140.0, 256.0)


def write_study(folder: Path, name: str, labels: list[int], size: int = 32) -> None:
    """A study of len(labels) chest slices at ``size``² (as bench/real_ct_weak_slices.py)."""
    hu, lung = chest_slice()
    step = 160 // size
    hu, lung = hu[::step, ::step], lung[::step, ::step]
    n = len(labels)
    np.savez_compressed(
        folder / f"{name}.npz",
        hu=np.repeat(hu[None], n, 0).astype(np.int16),
        lung=np.repeat(lung[None], n, 0),
        slice_labels=np.asarray(labels, dtype=np.int8),
        lobe_labels=np.zeros((n, 5), dtype=np.int8),
        spacing_mm=np.array([9.5, 9.5], dtype=np.float32),
        slice_location=-np.arange(n, dtype=np.float32),
    )


@pytest.fixture(scope="module")
def weak_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weak")
    write_study(folder, "covid", [0, 0, 0, 1, 1, 1, 0, 0, 0, 0])
    write_study(folder, "normal", [0] * 6)
    return folder


def test_lesion_free_slices_keep_a_guard_from_positives_and_skip_unknown() -> None:
    labels = np.array([0, 0, 0, 1, 0, 0, -1, 0])
    assert lesion_free_indices(labels, guard=1).tolist() == [0, 1, 5, 7]
    assert lesion_free_indices(labels, guard=0).tolist() == [0, 1, 2, 4, 5, 7]
    assert lesion_free_indices(np.zeros(3), guard=2).tolist() == [0, 1, 2]


def test_studies_load_without_the_excluded_ones_and_refuse_mistakes(weak_folder: Path) -> None:
    assert [s.name for s in load_weak_studies(weak_folder)] == ["covid", "normal"]
    assert [s.name for s in load_weak_studies(weak_folder, ["covid"])] == ["normal"]
    with pytest.raises(ValueError, match=r"'weak.exclude' names \['P002'\]"):
        load_weak_studies(weak_folder, ["P002"])
    with pytest.raises(ValueError, match="model.input_size is"):
        load_weak_studies(weak_folder, input_size=(160, 160))
    with pytest.raises(ValueError, match="real_ct_weak_slices.py"):
        load_weak_studies(weak_folder / "missing")


def test_synthetic_batches_label_lung_and_inserted_lesions_reproducibly(weak_folder: Path) -> None:
    studies = load_weak_studies(weak_folder)
    sampler = SyntheticLesionSampler(
        studies, window=WINDOW, class_names=CLASSES, lesion_prob=1.0, guard=1, augment=None
    )
    assert len(sampler.pool) == 5 + 6  # covid: slices 0, 1, 7, 8, 9
    x, y = sampler.sample(6, np.random.default_rng(3), torch.Generator().manual_seed(3))
    x2, y2 = sampler.sample(6, np.random.default_rng(3), torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (6, 1, 32, 32) and y.shape == (6, 32, 32) and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 255.0
    lung = torch.from_numpy(studies[0].lung[0])
    assert ((y >= 2) <= lung).all()  # lesions only inside the lung field
    assert (y == 2).any() or (y == 3).any()
    assert ((y == 0) == ~lung).all()  # outside the lung: background


def test_weak_batches_are_half_positive_with_the_dilated_field(weak_folder: Path) -> None:
    studies = load_weak_studies(weak_folder)
    sampler = WeakSliceSampler(studies, window=WINDOW, field_margin_px=1, augment=None)
    batch = sampler.sample(8, np.random.default_rng(0), torch.Generator())
    assert batch.positive.tolist() == [1.0] * 4 + [0.0] * 4
    lung = torch.from_numpy(studies[0].lung[0])
    assert (batch.region >= lung).all() and (batch.region & ~lung).any()
    only_normal = WeakSliceSampler(studies[1:], window=WINDOW, field_margin_px=0, augment=None)
    assert only_normal.sample(4, np.random.default_rng(0), torch.Generator()).positive.sum() == 0


def _weak_config(folders: Path, weak: Path, out: Path, **weak_keys: object):
    raw = _raw(folders, out, num_classes=4)
    raw["model"].update(class_names=CLASSES, hu_window=list(WINDOW))
    raw["data"].update(pixel_window=list(WINDOW))
    raw["stages"] = ["supervised", "tcsm"]
    raw["optim"].update(bf16=False, num_threads=1)
    raw["runtime"].update(log_every_steps=1)
    raw["weak"] = {"studies": str(weak), "batch_size": 4, "synthetic_share": 0.5, **weak_keys}
    return config_from_dict(raw)


def test_a_run_trains_on_synthetic_weak_and_unlabeled_hu_slices(
    weak_folder: Path, tmp_path: Path
) -> None:
    folders = make_folders(tmp_path / "slices", [(32, 32)] * 6)
    config = _weak_config(folders, weak_folder, tmp_path / "run", exclude=["normal"])
    source = data_source(config)
    assert isinstance(source, SliceSource)
    data = source.load()
    assert len(data.train_unlabeled) == 4 + 10  # the folder's 4 + every slice of 'covid'
    x, y = source.labeled_batches(data.train_labeled).sample(
        4, np.random.default_rng(0), torch.Generator()
    )
    assert x.shape[0] == 4 and float(x.min()) >= WINDOW[0] - 1 and float(x.max()) <= WINDOW[1] + 1
    assert (y[2:] == 1).any()  # the HU half carries the lung class
    weak = source.weak_batches()
    assert weak is not None
    assert float(weak.sample(2, np.random.default_rng(0), torch.Generator()).x.min()) < -500

    result = run_experiment(config, progress=False)
    assert result.finished and [r.steps_run for r in result.stages] == [3, 4]
    steps = [
        json.loads(line)
        for stage in ("supervised", "tcsm")
        for line in (tmp_path / "run" / stage / "steps.jsonl").read_text().splitlines()
    ]
    assert all({"weak_mil", "weak_outside", "dense"} <= set(s) for s in steps)
    assert all(np.isfinite(s["weak_mil"]) for s in steps)


def test_weak_studies_need_a_slices2d_run_with_a_pixel_window(
    weak_folder: Path, tmp_path: Path
) -> None:
    folders = make_folders(tmp_path / "slices", [(32, 32)] * 3)
    raw = _raw(folders, tmp_path / "run", num_classes=4)
    raw["model"].update(class_names=CLASSES, hu_window=list(WINDOW))
    raw["weak"] = {"studies": str(weak_folder)}
    with pytest.raises(ValueError, match="'weak.studies' needs data.kind 'slices2d' with"):
        config_from_dict(raw)
    with pytest.raises(ValueError, match="weak.top_k"):
        _weak_config(folders, weak_folder, tmp_path / "r", top_k=0)
