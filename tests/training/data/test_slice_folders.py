"""Tests for training.data.slice_folders: file pairing, group names, mask reading and mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.slice_images import slice_folder, write_image, write_palette_mask
from training.data.slice_folders import (
    COVID_SEMISEG_MASK_CLASSES,
    group_of,
    list_slice_folder,
    load_slice,
    mapping_by_names,
    read_mask,
)
from training.data.splits import split_by_group


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("Data-1_coronacases_org_001_10.jpg", "Data-1_coronacases_org_001"),
        ("Data-1_coronacases_org_001_100.jpg", "Data-1_coronacases_org_001"),
        (
            "Data-1_radiopaedia_org_covid-19-pneumonia-10_85902_3-dcm_7.jpg",
            "Data-1_radiopaedia_org_covid-19-pneumonia-10",
        ),
        (
            "Data-1_radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm_12.jpg",
            "Data-1_radiopaedia_org_covid-19-pneumonia-10",
        ),
        ("12.jpg", "12"),
        ("some/folder/12.png", "12"),
        ("scan.png", "scan"),
    ],
)
def test_group_of(name: str, group: str) -> None:
    assert group_of(name) == group


def test_group_of_rejects_non_string() -> None:
    with pytest.raises(TypeError, match="'name' must be a str"):
        group_of(12)  # type: ignore[arg-type]


def test_pairing_by_stem_natural_order_and_mapping(tmp_path: Path) -> None:
    images, masks = slice_folder(tmp_path, {"10": (16, 12), "2": (14, 20), "1": (16, 16)})
    records = list_slice_folder(images, masks)
    assert [r.name for r in records] == ["1", "2", "10"]
    assert all(r.labeled and r.mask_path.stem == r.name for r in records)  # type: ignore[union-attr]
    assert [r.group for r in records] == ["1", "2", "10"]

    # covid-semiseg 0 bg/1 ggo/2 consolidation onto a model with a lung class.
    mapping = mapping_by_names(
        COVID_SEMISEG_MASK_CLASSES, ["background", "lung", "ggo", "consolidation"]
    )
    assert mapping == {0: 0, 1: 2, 2: 3}
    item = load_slice(records[2], mapping)
    assert item.image.shape == (16, 12) and item.image.dtype == np.uint8
    assert item.label is not None and item.label.dtype == np.int64
    assert np.count_nonzero(item.label == 2) == 20
    assert np.count_nonzero(item.label == 3) == 12
    assert set(np.unique(item.label).tolist()) == {0, 2, 3}
    # Palette masks are read as indices, not colours.
    assert set(np.unique(read_mask(masks / "1.png")).tolist()) == {0, 1, 2}


def test_unlabeledslice_folder(tmp_path: Path) -> None:
    folder = tmp_path / "unlabeled"
    for name in ("vol-a_1", "vol-a_2", "vol-b_1"):
        write_image(folder / f"{name}.jpg", np.zeros((8, 8), dtype=np.uint8))
    records = list_slice_folder(folder)
    assert len(records) == 3
    assert [r.group for r in records] == ["vol-a", "vol-a", "vol-b"]
    assert all(load_slice(r).label is None for r in records)


def test_mapping_by_names_rejects_unknown_class() -> None:
    with pytest.raises(ValueError, match=r"\['ggo'\] are not classes of the model"):
        mapping_by_names(["background", "ggo"], ["background", "lung"])


def test_folder_errors(tmp_path: Path) -> None:
    images, masks = slice_folder(tmp_path, {"0": (10, 10), "1": (12, 12)})
    with pytest.raises(FileNotFoundError, match="'images_dir': folder '.*nowhere' does not exist"):
        list_slice_folder(tmp_path / "nowhere", masks)
    with pytest.raises(FileNotFoundError, match="'masks_dir'"):
        list_slice_folder(images, tmp_path / "nowhere")

    write_image(images / "5.jpg", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"Image '.*5\.jpg' has no mask '5\.png'"):
        list_slice_folder(images, masks)
    (images / "5.jpg").unlink()

    write_palette_mask(masks / "7.png", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"Mask '.*7\.png' has no image with stem '7'"):
        list_slice_folder(images, masks)
    (masks / "7.png").unlink()

    write_image(images / "1.png", np.zeros((12, 12), dtype=np.uint8))
    with pytest.raises(ValueError, match="two files with stem '1'"):
        list_slice_folder(images, masks)
    (images / "1.png").unlink()

    write_palette_mask(masks / "1.png", np.zeros((12, 13), dtype=np.uint8))
    records = list_slice_folder(images, masks)
    with pytest.raises(ValueError, match=r"Mask '.*1\.png' is 13x12 px but its image .* 12x12 px"):
        load_slice(records[1])

    with pytest.raises(ValueError, match=r"holds values \[2\] that 'mask_mapping' does not map"):
        read_mask(masks / "0.png", {0: 0, 1: 1})


def test_split_by_group_on_records(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    for v in range(4):
        for s in range(3):
            write_image(folder / f"case{v}_{s}.png", np.zeros((4, 4), dtype=np.uint8))
    train, val = split_by_group(list_slice_folder(folder), 0.5, seed=1)
    assert len(val) == 6 and len(train) == 6
    assert not {r.group for r in train} & {r.group for r in val}
