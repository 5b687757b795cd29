"""8-bit slices brought to a DICOM study's geometry and HU: rotation, padding, lung labels,
and one intensity contract from HU to the network (data.pixel_window = model.hu_window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.service.core.test_lung_field import chest_slice
from training.config import config_from_dict
from training.data.slice_folders import LoadedSlice, SliceRecord
from training.data.slice_preparation import pixels_to_hu, prepare_slice
from training.data.sources import SliceSource
from training.nn.networks import build_network

WINDOW = (-1140.0, 256.0)
CLASSES = ["background", "lung", "ggo", "consolidation"]


def _to_pixels(hu: np.ndarray) -> np.ndarray:
    lo, hi = WINDOW
    return np.clip(np.rint((np.clip(hu, lo, hi) - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def _config(root: Path, **data: object) -> dict:
    return {
        "output_dir": str(root / "run"),
        "data": {
            "kind": "slices2d",
            "root": str(root),
            "images": "images",
            "masks": "masks",
            "unlabeled": None,
            "mask_classes": ["background", "ggo", "consolidation"],
            "val_fraction": 0.5,
            "pixel_window": list(WINDOW),
            **data,
        },
        "model": {
            "slice_context": 1,
            "num_classes": 4,
            "class_names": CLASSES,
            "hu_window": list(WINDOW),
            "input_size": [64, 64],
        },
    }


@pytest.fixture()
def chest_folder(tmp_path: Path) -> Path:
    """Two chest slices as a lung-windowed, body-cropped, rotated 8-bit release would ship."""
    for i in range(2):
        hu, _, parts = chest_slice(seed=i)
        pixels = np.rot90(_to_pixels(hu)[20:180, 10:190], 1)  # cropped, then turned
        mask = np.rot90(parts["lesion"][20:180, 10:190].astype(np.uint8) * 2, 1)
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp_path / "images" / f"{i}.png")
        img = Image.fromarray(np.ascontiguousarray(mask), mode="P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
        img.save(tmp_path / "masks" / f"{i}.png")
    return tmp_path


def test_pixels_to_hu_inverts_the_window_for_arrays_and_tensors() -> None:
    hu = np.array([-1140.0, -500.0, 0.0, 256.0])
    pixels = (hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0]) * 255
    assert np.allclose(pixels_to_hu(pixels, WINDOW), hu)
    assert torch.allclose(
        pixels_to_hu(torch.tensor(pixels), WINDOW), torch.tensor(hu, dtype=torch.float64)
    )


def test_prepare_slice_turns_pads_and_adds_the_lung(chest_folder: Path) -> None:
    config = config_from_dict(_config(chest_folder, rotate90=-1, pad_square=True, lung_labels=True))
    source = SliceSource(config)
    data = source.load()
    item = data.train_labeled[0]
    assert item.image.shape[0] == item.image.shape[1] == 180  # 160x180 crop padded square
    assert item.image.shape == item.label.shape
    values = set(np.unique(item.label).tolist())
    assert {0, 1, 3} <= values  # background, lung, consolidation (GGO absent)
    # The lesion stayed a lesion and sits inside the lung field (known lesions added).
    hu, lungs, parts = chest_slice(seed=int(item.record.name))
    truth = np.pad(lungs[20:180, 10:190], ((10, 10), (0, 0)))
    field = item.label > 0
    assert 2.0 * (field & truth).sum() / (field.sum() + truth.sum()) > 0.95


def test_batches_and_validation_images_are_in_hu(chest_folder: Path) -> None:
    config = config_from_dict(_config(chest_folder, rotate90=-1, lung_labels=True))
    source = SliceSource(config)
    data = source.load()
    x, y = source.labeled_batches(data.train_labeled).sample(
        2, np.random.default_rng(0), torch.Generator().manual_seed(0)
    )
    assert x.min() >= WINDOW[0] - 1e-3 and x.max() <= WINDOW[1] + 1e-3
    assert x.min() < -800  # air and lung are there, in HU
    assert "lung" in source.scored
    scores = source.validate(build_network(config.model), data.val)
    assert set(scores) == {"lung", "ggo", "consolidation"} & set(source.scored)
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_the_exported_window_must_be_the_data_window(tmp_path: Path) -> None:
    raw = _config(tmp_path)
    raw["model"]["hu_window"] = [-1024.0, 400.0]
    with pytest.raises(ValueError, match="must equal 'data.pixel_window'"):
        config_from_dict(raw)


def test_lung_labels_need_a_window_and_a_lung_class(tmp_path: Path) -> None:
    raw = _config(tmp_path, lung_labels=True)
    raw["data"]["pixel_window"] = None
    raw["model"]["hu_window"] = [0.0, 255.0]
    with pytest.raises(ValueError, match="needs 'data.pixel_window'"):
        config_from_dict(raw)
    raw = _config(tmp_path, lung_labels=True)
    raw["model"]["class_names"] = ["background", "ggo", "consolidation"]
    raw["model"]["num_classes"] = 3
    with pytest.raises(ValueError, match="needs a 'lung' class"):
        config_from_dict(raw)


def test_rotation_without_labels_keeps_the_image(tmp_path: Path) -> None:
    config = config_from_dict(_config(tmp_path, rotate90=1))
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    record = SliceRecord("0", tmp_path / "0.png", None, "0")
    out = prepare_slice(LoadedSlice(record, image, None), config.data, CLASSES)
    assert np.array_equal(out.image, np.rot90(image, 1)) and out.label is None


def test_harmonisation_moves_each_slice_to_the_common_tissue_peaks() -> None:
    from training.data.slice_preparation import harmonized, tissue_anchors

    rng = np.random.default_rng(3)
    lung_hu, soft_hu = -894.0, 41.0
    expected = tuple(
        round((v - WINDOW[0]) / (WINDOW[1] - WINDOW[0]) * 255) for v in (lung_hu, soft_hu)
    )
    for lung_px, soft_px in [(22, 195), (77, 232), (45, 216)]:  # darker, brighter, already right
        image = np.full((120, 120), soft_px, dtype=np.int64)
        image[10:70, 10:110] = lung_px
        image = np.clip(image + rng.integers(-2, 3, image.shape), 0, 255).astype(np.uint8)
        label = np.zeros_like(image)
        label[20:40, 20:40] = 1  # a lesion: excluded from the lung peak
        image[20:40, 20:40] = 150
        assert tissue_anchors(image, label) == pytest.approx((lung_px, soft_px), abs=1)
        out = harmonized(image, label, WINDOW, (lung_hu, soft_hu))
        assert tissue_anchors(out, label) == pytest.approx(expected, abs=2)
    # Anchors that cannot be read (no soft tissue) leave the slice as it is.
    flat = np.full((120, 120), 40, dtype=np.uint8)
    assert harmonized(flat, np.zeros_like(flat), WINDOW, (lung_hu, soft_hu)) is flat
