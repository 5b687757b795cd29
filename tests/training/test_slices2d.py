"""Tests for training.slices2d: file pairing, mask mapping, group splits and batch samplers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.slices2d import (
    COVID_SEMISEG_MASK_CLASSES,
    Augment2D,
    LabeledSliceSampler,
    SliceFolderDataset,
    UnlabeledSliceSampler,
    augment_batch,
    group_of,
    list_slice_folder,
    mapping_by_names,
    read_mask,
    split_by_group,
)

PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9)


def _write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _write_palette_mask(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8), mode="P")
    img.putpalette(PALETTE)
    img.save(path)


def _folder(tmp_path: Path, sizes: dict[str, tuple[int, int]]) -> tuple[Path, Path]:
    """Images (PNG for stem '2', JPG otherwise) and palette masks with 0/1/2 blocks."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem, (h, w) in sizes.items():
        suffix = ".png" if stem == "2" else ".jpg"
        _write_image(images / f"{stem}{suffix}", np.full((h, w), 100, dtype=np.uint8))
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[2:6, 3:8] = 1  # 20 px GGO
        mask[8:11, 3:7] = 2  # 12 px consolidation
        _write_palette_mask(masks / f"{stem}.png", mask)
    return images, masks


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
    images, masks = _folder(tmp_path, {"10": (16, 12), "2": (14, 20), "1": (16, 16)})
    records = list_slice_folder(images, masks)
    assert [r.name for r in records] == ["1", "2", "10"]
    assert all(r.labeled and r.mask_path.stem == r.name for r in records)  # type: ignore[union-attr]
    assert [r.group for r in records] == ["1", "2", "10"]

    # covid-semiseg 0 bg/1 ggo/2 consolidation onto a model with a lung class.
    mapping = mapping_by_names(
        COVID_SEMISEG_MASK_CLASSES, ["background", "lung", "ggo", "consolidation"]
    )
    assert mapping == {0: 0, 1: 2, 2: 3}
    ds = SliceFolderDataset(images, masks, mask_mapping=mapping)
    item = ds[2]
    assert item.image.shape == (16, 12) and item.image.dtype == np.uint8
    assert item.label is not None and item.label.dtype == np.int64
    assert np.count_nonzero(item.label == 2) == 20
    assert np.count_nonzero(item.label == 3) == 12
    assert set(np.unique(item.label).tolist()) == {0, 2, 3}
    # Palette masks are read as indices, not colours.
    assert set(np.unique(read_mask(masks / "1.png")).tolist()) == {0, 1, 2}


def test_unlabeled_folder(tmp_path: Path) -> None:
    folder = tmp_path / "unlabeled"
    for name in ("vol-a_1", "vol-a_2", "vol-b_1"):
        _write_image(folder / f"{name}.jpg", np.zeros((8, 8), dtype=np.uint8))
    ds = SliceFolderDataset(folder)
    assert len(ds) == 3
    assert ds.groups == ["vol-a", "vol-b"]
    assert all(s.label is None for s in ds.load())


def test_mapping_by_names_rejects_unknown_class() -> None:
    with pytest.raises(ValueError, match=r"\['ggo'\] are not classes of the model"):
        mapping_by_names(["background", "ggo"], ["background", "lung"])


def test_folder_errors(tmp_path: Path) -> None:
    images, masks = _folder(tmp_path, {"0": (10, 10), "1": (12, 12)})
    with pytest.raises(FileNotFoundError, match="'images_dir': folder '.*nowhere' does not exist"):
        list_slice_folder(tmp_path / "nowhere", masks)
    with pytest.raises(FileNotFoundError, match="'masks_dir'"):
        list_slice_folder(images, tmp_path / "nowhere")

    _write_image(images / "5.jpg", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"Image '.*5\.jpg' has no mask '5\.png'"):
        list_slice_folder(images, masks)
    (images / "5.jpg").unlink()

    _write_palette_mask(masks / "7.png", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"Mask '.*7\.png' has no image with stem '7'"):
        list_slice_folder(images, masks)
    (masks / "7.png").unlink()

    _write_image(images / "1.png", np.zeros((12, 12), dtype=np.uint8))
    with pytest.raises(ValueError, match="two files with stem '1'"):
        list_slice_folder(images, masks)
    (images / "1.png").unlink()

    _write_palette_mask(masks / "1.png", np.zeros((12, 13), dtype=np.uint8))
    ds = SliceFolderDataset(images, masks)
    with pytest.raises(ValueError, match=r"Mask '.*1\.png' is 13x12 px but its image .* 12x12 px"):
        ds[1]

    with pytest.raises(ValueError, match=r"holds values \[2\] that 'mask_mapping' does not map"):
        read_mask(masks / "0.png", {0: 0, 1: 1})


def test_split_by_group_never_leaks_a_group() -> None:
    names = [f"vol{v}_{s}.jpg" for v in range(9) for s in range(1, 1 + v % 4 + 1)]
    names += [f"{i}.jpg" for i in range(6)]  # groups of their own
    items = [(n, group_of(n)) for n in names]
    for seed in range(10):
        train, val = split_by_group(items, 0.25, seed, key=lambda it: it[1])
        assert sorted(train + val) == sorted(items)
        assert not {g for _, g in train} & {g for _, g in val}
        assert len({g for _, g in val}) == 4  # round(0.25 * 15 groups)
    a = split_by_group(items, 0.25, 3, key=lambda it: it[1])
    assert a == split_by_group(items, 0.25, 3, key=lambda it: it[1])
    assert split_by_group(items, 0.0, 0, key=lambda it: it[1]) == (items, [])
    with pytest.raises(ValueError, match="'val_fraction' must be in"):
        split_by_group(items, 1.0, 0, key=lambda it: it[1])


def test_split_by_group_on_records(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    for v in range(4):
        for s in range(3):
            _write_image(folder / f"case{v}_{s}.png", np.zeros((4, 4), dtype=np.uint8))
    ds = SliceFolderDataset(folder)
    train, val = ds.split(0.5, seed=1)
    assert len(val) == 6 and len(train) == 6
    assert not {r.group for r in train} & {r.group for r in val}


def test_labeled_sampler_shapes_and_resize(tmp_path: Path) -> None:
    images, masks = _folder(tmp_path, {"0": (20, 24), "1": (30, 18)})
    slices = SliceFolderDataset(images, masks).load()
    sampler = LabeledSliceSampler(slices, input_size=(16, 16), seed=0)
    x, y = sampler.sample(5)
    assert x.shape == (5, 1, 16, 16) and x.dtype == torch.float32
    assert y.shape == (5, 16, 16) and y.dtype == torch.int64
    # No augmentation: a constant image stays exactly 100 after bilinear resizing.
    assert torch.all(x == 100.0)
    assert set(torch.unique(y).tolist()) <= {0, 1, 2}
    assert (y == 1).any() and (y == 2).any()

    aug = LabeledSliceSampler(slices, input_size=(16, 16), augment=Augment2D(), seed=0)
    xa, ya = aug.sample(8)
    assert xa.shape == (8, 1, 16, 16) and ya.shape == (8, 16, 16)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 255.0
    assert set(torch.unique(ya).tolist()) <= {0, 1, 2}


def test_lesion_oversampling_weights(tmp_path: Path) -> None:
    images, masks = _folder(tmp_path, {"0": (12, 12)})
    _write_image(images / "1.jpg", np.zeros((12, 12), dtype=np.uint8))
    _write_palette_mask(masks / "1.png", np.zeros((12, 12), dtype=np.uint8))
    slices = SliceFolderDataset(images, masks).load()
    sampler = LabeledSliceSampler(slices, input_size=(8, 8), lesion_oversampling=3.0)
    assert sampler.weights is not None
    np.testing.assert_allclose(sampler.weights, [0.75, 0.25])


def test_augment_flips_are_exact_on_non_square_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 6 * 10, dtype=torch.float32).reshape(2, 1, 6, 10)
    y = (torch.arange(2 * 6 * 10).reshape(2, 6, 10) % 3).long()
    only_flips = Augment2D(
        flip_h_prob=1.0,
        flip_w_prob=1.0,
        max_rotation_deg=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
    )
    xa, ya = augment_batch(x, y, only_flips, gen)
    torch.testing.assert_close(xa, torch.flip(x, dims=(-2, -1)))
    assert torch.equal(ya, torch.flip(y, dims=(-2, -1)))  # type: ignore[arg-type]


def test_augment_brightness_contrast_only_touches_intensities() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.full((4, 1, 8, 8), 128.0)
    y = torch.ones((4, 8, 8), dtype=torch.int64)
    jitter = Augment2D(
        flip_h_prob=0.0,
        flip_w_prob=0.0,
        max_rotation_deg=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.2,
        contrast=0.2,
    )
    xa, ya = augment_batch(x, y, jitter, gen)
    assert torch.equal(ya, y)  # type: ignore[arg-type]
    shifts = xa[:, 0, 0, 0] - 128.0
    assert torch.all(shifts.abs() <= 0.2 * 255 + 1e-4) and shifts.abs().max() > 1.0
    assert torch.all(xa == xa[:, :, :1, :1])  # each image shifted uniformly


def test_augment_rotation_keeps_labels_valid_and_moves_pixels() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.zeros((3, 1, 32, 32))
    x[:, :, 8:24, 14:18] = 200.0
    y = (x[:, 0] > 0).long() * 2
    rot = Augment2D(
        flip_h_prob=0.0,
        flip_w_prob=0.0,
        max_rotation_deg=30.0,
        scale_range=(0.9, 1.1),
        brightness=0.0,
        contrast=0.0,
    )
    xa, ya = augment_batch(x, y, rot, gen)
    assert set(torch.unique(ya).tolist()) <= {0, 2}  # type: ignore[union-attr]
    assert not torch.equal(ya, y)  # type: ignore[arg-type]
    # Label area is preserved up to resampling and zoom (64 px bar, zoom within ±10 %).
    areas = (ya == 2).sum(dim=(1, 2)).float()  # type: ignore[union-attr]
    assert torch.all((areas > 64 * 0.75) & (areas < 64 * 1.3))


def test_augment_config_validation() -> None:
    with pytest.raises(ValueError, match="'flip_h_prob' must be in"):
        Augment2D(flip_h_prob=1.5)
    with pytest.raises(ValueError, match="'scale_range'"):
        Augment2D(scale_range=(1.2, 1.0))
    with pytest.raises(ValueError, match="'contrast' must be < 1"):
        Augment2D(contrast=1.0)


def test_unlabeled_sampler(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    rng = np.random.default_rng(0)
    for name, shape in (("a_1", (20, 30)), ("a_2", (25, 25)), ("b_1", (40, 22))):
        _write_image(folder / f"{name}.png", rng.integers(0, 256, shape))
    sampler = UnlabeledSliceSampler(SliceFolderDataset(folder).load(), input_size=(24, 16), seed=3)
    x = sampler.sample(4)
    assert x.shape == (4, 1, 24, 16) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 255.0
    with pytest.raises(ValueError, match="'batch_size' must be at least 1"):
        sampler.sample(0)
    with pytest.raises(ValueError, match="needs at least one slice"):
        UnlabeledSliceSampler([], input_size=(8, 8))
