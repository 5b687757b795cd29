"""Slice files on disk for the 2D slice tests: 8-bit images and palette (class-index) masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Palette of the masks: index 0 black, 1 red, 2 green (values are read back as indices).
PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9)


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def write_palette_mask(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8), mode="P")
    img.putpalette(PALETTE)
    img.save(path)


def slice_folder(tmp_path: Path, sizes: dict[str, tuple[int, int]]) -> tuple[Path, Path]:
    """Images (PNG for stem '2', JPG otherwise) and palette masks with 0/1/2 blocks."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem, (h, w) in sizes.items():
        suffix = ".png" if stem == "2" else ".jpg"
        write_image(images / f"{stem}{suffix}", np.full((h, w), 100, dtype=np.uint8))
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[2:6, 3:8] = 1  # 20 px GGO
        mask[8:11, 3:7] = 2  # 12 px consolidation
        write_palette_mask(masks / f"{stem}.png", mask)
    return images, masks
