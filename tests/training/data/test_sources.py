"""Tests for training.data.sources: 2D slice folders feeding every stage of the runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.config import DataConfig, DataKind, TrainConfig, config_from_dict
from training.data.sources import SliceSource, VolumeSource, data_source
from training.evaluation.evaluate import evaluate_model
from training.experiment import run_experiment
from training.export.onnx_export import export_onnx

CLASSES = ["background", "ggo", "consolidation"]
#: Pixel value of each raw mask class in the synthetic slices (a lesion is brighter).
LEVELS = (30.0, 130.0, 220.0)


def _slice(rng: np.random.Generator, h: int, w: int, ggo: bool, cons: bool):
    """A (h, w) uint8 image and its mask: a GGO disc and/or a consolidation square."""
    mask = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    if ggo:
        cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, w // 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= (min(h, w) // 6) ** 2] = 1
    if cons:
        y0, x0 = rng.integers(2, h // 2), rng.integers(w // 2, w - 8)
        mask[y0 : y0 + 6, x0 : x0 + 6] = 2
    image = np.take(np.asarray(LEVELS), mask).astype(np.uint8)
    return image, mask


def _save_mask(mask: np.ndarray, path: Path) -> None:
    img = Image.fromarray(mask, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.save(path)


def make_folders(root: Path, sizes: list[tuple[int, int]], unlabeled: int = 4) -> Path:
    """COVID-SemiSeg-like layout: train/images/N.png, train/masks/N.png, unlabeled/*.jpg."""
    rng = np.random.default_rng(5)
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "unlabeled").mkdir()
    for i, (h, w) in enumerate(sizes):
        image, mask = _slice(rng, h, w, ggo=i % 3 != 2, cons=i % 2 == 0)
        Image.fromarray(image).save(root / "train" / "images" / f"{i}.png")
        _save_mask(mask, root / "train" / "masks" / f"{i}.png")
    for j in range(unlabeled):
        image, _ = _slice(rng, 40, 36, ggo=True, cons=j % 2 == 0)
        Image.fromarray(image).save(root / "unlabeled" / f"vol{j // 2}_{j}.jpg")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labeled slices of mixed sizes and four unlabeled slices of two volumes."""
    sizes = [(40, 48), (44, 36), (40, 48), (36, 40), (48, 48), (40, 44)]
    return make_folders(tmp_path_factory.mktemp("slices"), sizes)


def _raw(root: Path, out: Path, **model: object) -> dict:
    return {
        "output_dir": str(out),
        "seed": 2,
        "stages": ["pretrain_global", "pretrain_local", "supervised", "tcsm"],
        "data": {
            "kind": "slices2d",
            "root": str(root),
            "images": "train/images",
            "masks": "train/masks",
            "unlabeled": "unlabeled",
            "mask_classes": CLASSES,
            "val_fraction": 1 / 3,
        },
        "model": {
            "slice_context": 1,
            "features": [4, 4, 8, 8, 16, 4],
            "num_classes": 3,
            "class_names": CLASSES,
            "hu_window": [0.0, 255.0],
            "input_size": [32, 32],
            **model,
        },
        "optim": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 4, "lr": 0.01},
        "pretrain_global": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "proj_dim": 8},
        "pretrain_local": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "proj_channels": 8},
        "tcsm": {
            "epochs": 2,
            "steps_per_epoch": 2,
            "batch_size": 2,
            "unlabeled_batch_size": 2,
            "rampup_steps": 2,
            "noise_std_hu": 4.0,
        },
        "runtime": {"tensorboard": False},
    }


def _config(root: Path, out: Path, **model: object) -> TrainConfig:
    raw = _raw(root, out, **model)
    raw["optim"].update(bf16=False, num_threads=1)
    return config_from_dict(raw)


class NearestLevel(torch.nn.Module):
    """A fixed 'network' that labels each pixel with the class whose intensity is nearest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-((x - level) ** 2) for level in LEVELS], dim=1)


class AllBackground(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 0] = 1.0
        return logits


# ---------------------------------------------------------------------------- config


def test_data_kind_defaults_to_volumes_and_is_read_as_the_enum() -> None:
    assert DataConfig().kind is DataKind.VOLUMES
    assert DataConfig().unlabeled is None
    assert DataConfig(kind=" Slices2D").kind is DataKind.SLICES2D
    assert isinstance(data_source(TrainConfig()), VolumeSource)


def test_unknown_data_kind_fails_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"'data.kind'.*'slice2d'.*Did you mean 'slices2d'"):
        config_from_dict({"data": {"kind": "slice2d"}})


def test_mask_classes_must_be_distinct() -> None:
    with pytest.raises(ValueError, match=r"'data.mask_classes'.*\['background', 'background'\]"):
        DataConfig(mask_classes=("background", "background"))


def test_slices2d_needs_slice_context_one(folders: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'model.slice_context' must be 1 .* got 3"):
        data_source(_config(folders, tmp_path, slice_context=3))


def test_mask_classes_must_be_model_classes(folders: Path, tmp_path: Path) -> None:
    config = _config(folders, tmp_path)
    config.data.mask_classes = ("background", "ggo", "crazy_paving")
    with pytest.raises(ValueError, match=r"\['crazy_paving'\] are not classes of the model"):
        data_source(config)


# ---------------------------------------------------------------------------- loading/batches


def test_load_splits_labeled_slices_and_resizes_unlabeled(folders: Path, tmp_path: Path) -> None:
    source = data_source(_config(folders, tmp_path))
    assert isinstance(source, SliceSource)
    data = source.load()
    assert (len(data.train_labeled), len(data.val), len(data.train_unlabeled)) == (4, 2, 4)
    names = {s.record.name for s in data.train_labeled} | {s.record.name for s in data.val}
    assert names == {str(i) for i in range(6)}
    assert all(s.label is None and s.image.shape == (32, 32) for s in data.train_unlabeled)
    assert all(s.label is not None and s.image.shape == s.label.shape for s in data.val)
    assert len(source.load(with_unlabeled=False).train_unlabeled) == 0


def test_masks_are_mapped_to_model_classes_by_name(folders: Path, tmp_path: Path) -> None:
    config = _config(
        folders,
        tmp_path,
        num_classes=4,
        class_names=["background", "lung", "ggo", "consolidation"],
    )
    data = data_source(config).load(with_unlabeled=False)
    values = set(np.unique(np.concatenate([s.label.ravel() for s in data.train_labeled])))
    assert values == {0, 2, 3}  # raw 1 (ggo) → 2, raw 2 (consolidation) → 3


def test_labeled_batches_depend_only_on_the_given_randomness(folders: Path, tmp_path: Path) -> None:
    source = data_source(_config(folders, tmp_path))
    data = source.load(with_unlabeled=False)
    batches = source.labeled_batches(data.train_labeled)

    def draw(seed: int):
        return batches.sample(3, np.random.default_rng(seed), torch.Generator().manual_seed(seed))

    (x1, y1), (x2, y2), (x3, _) = draw(7), draw(7), draw(8)
    assert x1.shape == (3, 1, 32, 32) and x1.dtype == torch.float32
    assert y1.shape == (3, 32, 32) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert float(x1.min()) >= 0.0 and float(x1.max()) <= 255.0
    assert set(torch.unique(y1).tolist()) <= {0, 1, 2}


def test_image_batches_have_no_positions(folders: Path, tmp_path: Path) -> None:
    source = data_source(_config(folders, tmp_path))
    data = source.load()
    images = source.image_batches(data.train_all)
    batch = images.sample(5, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert images.knows_positions is False
    assert batch.x.shape == (5, 1, 32, 32) and batch.position is None and batch.depth is None


def test_items_of_the_other_kind_are_refused(folders: Path, tmp_path: Path) -> None:
    data = data_source(_config(folders, tmp_path)).load(with_unlabeled=False)
    match = r"'volumes' needs LoadedStudy items, got \['LoadedSlice'\]"
    with pytest.raises(TypeError, match=match):
        VolumeSource(TrainConfig()).labeled_batches(data.train_labeled)


# ---------------------------------------------------------------------------- validation


def test_validation_scores_per_class_dice_at_native_resolution(tmp_path: Path) -> None:
    # Slices as large as the input: no resampling, so the nearest-level model is exact.
    root = make_folders(tmp_path / "data", [(32, 32)] * 6, unlabeled=0)
    source = data_source(_config(root, tmp_path / "run"))
    data = source.load(with_unlabeled=False)
    assert source.validate(NearestLevel(), data.val) == {"ggo": 1.0, "consolidation": 1.0}

    # Predicting nothing: Dice 0 where the class is present, 1 where it is absent too.
    scores = source.validate(AllBackground(), data.val)
    expected = {
        name: float(np.mean([0.0 if (s.label == k).any() else 1.0 for s in data.val]))
        for k, name in ((1, "ggo"), (2, "consolidation"))
    }
    assert scores == pytest.approx(expected)


def test_validation_resizes_back_to_each_slice(folders: Path, tmp_path: Path) -> None:
    source = data_source(_config(folders, tmp_path))
    data = source.load(with_unlabeled=False)
    scores = source.validate(NearestLevel(), data.val)
    assert scores.keys() == {"ggo", "consolidation"}
    assert all(0.8 < v <= 1.0 for v in scores.values())


# ---------------------------------------------------------------------------- staged runs


def test_staged_2d_run_through_all_four_stages_exports_and_resumes(
    folders: Path, tmp_path: Path
) -> None:
    config = _config(folders, tmp_path / "run")
    result = run_experiment(config, progress=False)
    assert result.finished
    assert [r.name for r in result.stages] == list(config.stages)
    assert [r.steps_run for r in result.stages] == [2, 2, 3, 4]
    assert result.final_checkpoint is not None and result.final_checkpoint.is_file()
    assert result.best_val_voldice.keys() == {"ggo", "consolidation"}
    assert result.stages[-1].model_source in {"teacher", "student"}

    again = run_experiment(config, resume=True, progress=False)
    assert again.finished and [r.steps_run for r in again.stages] == [0, 0, 0, 0]

    onnx_path = tmp_path / "model.onnx"
    exported = export_onnx(result.final_checkpoint, onnx_path)
    assert exported.manifest.hu_window == (0.0, 255.0) and exported.manifest.slice_context == 1
    report = evaluate_model(
        onnx_path,
        images=folders / "train" / "images",
        masks=folders / "train" / "masks",
        mask_mapping=CLASSES,
        split="val",
        val_fraction=config.data.val_fraction,
        seed=config.seed,
    )
    val_names = {s.record.name for s in data_source(config).load(with_unlabeled=False).val}
    assert {it.item for it in report.items} == val_names
    assert report.classes == ["ggo", "consolidation", "infection"]


def _negatives(folder: Path, values: list[int], shape: tuple[int, int] = (40, 40)) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i, value in enumerate(values):
        Image.fromarray(np.full(shape, 30, np.uint8)).save(folder / "images" / f"s_{i}.png")
        mask = np.zeros(shape, np.uint8)
        mask[10:30, 10:30] = value
        Image.fromarray(mask).save(folder / "masks" / f"s_{i}.png")
    return folder


def test_negatives_join_training_batches_but_not_validation(folders: Path, tmp_path: Path) -> None:
    raw = _raw(folders, tmp_path / "run", num_classes=4)
    raw["model"]["class_names"] = ["background", "lung", "ggo", "consolidation"]
    raw["data"].update(
        negatives=str(_negatives(tmp_path / "neg", [1, 1, 0])),
        negatives_share=0.5,
        pixel_window=[0.0, 255.0],
        augment=False,  # intensities stay as stored, so a negative is recognisable
    )
    source = data_source(config_from_dict(raw))
    assert isinstance(source, SliceSource)
    data = source.load(with_unlabeled=False)
    assert len(source.negatives()) == 3
    assert not {s.record.name for s in data.val} & {"s_0", "s_1", "s_2"}
    x, y = source.labeled_batches(data.train_labeled).sample(
        400, np.random.default_rng(0), torch.Generator().manual_seed(0)
    )
    from_negatives = (x.flatten(1) == 30.0).all(dim=1).float().mean().item()
    assert 0.4 < from_negatives < 0.6
    assert (y == 1).any()  # the negatives' lung class, as stored


def test_a_negative_slice_with_a_lesion_is_refused(folders: Path, tmp_path: Path) -> None:
    raw = _raw(folders, tmp_path / "run", num_classes=4)
    raw["model"]["class_names"] = ["background", "lung", "ggo", "consolidation"]
    raw["data"].update(
        negatives=str(_negatives(tmp_path / "neg", [1, 2])), pixel_window=[0.0, 255.0]
    )
    source = data_source(config_from_dict(raw))
    with pytest.raises(ValueError, match=r"s_1.png' must hold lesion-free class indices"):
        source.load(with_unlabeled=False)


def test_negatives_need_a_pixel_window_and_a_share_inside_0_1(
    folders: Path, tmp_path: Path
) -> None:
    raw = _raw(folders, tmp_path)
    raw["data"]["negatives"] = "somewhere"
    with pytest.raises(ValueError, match="'data.negatives' needs 'data.pixel_window'"):
        config_from_dict(raw)
    raw["data"].update(pixel_window=[0.0, 255.0], negatives_share=1.0)
    with pytest.raises(ValueError, match=r"'data.negatives_share' must be in \(0, 1\)"):
        config_from_dict(raw)


def test_body_cropped_negatives_are_padded_square_like_the_annotated_slices(
    folders: Path, tmp_path: Path
) -> None:
    raw = _raw(folders, tmp_path / "run", num_classes=4)
    raw["model"]["class_names"] = ["background", "lung", "ggo", "consolidation"]
    raw["data"].update(
        negatives=str(_negatives(tmp_path / "neg", [1], shape=(30, 40))),
        pixel_window=[0.0, 255.0],
        pad_square=True,
    )
    source = data_source(config_from_dict(raw))
    assert isinstance(source, SliceSource)
    (negative,) = source.negatives()
    assert negative.image.shape == negative.label.shape == (40, 40)
    assert (negative.image[:5] == 0).all() and (negative.image[5:35] == 30).all()
