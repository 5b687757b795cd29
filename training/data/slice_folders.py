"""2D slice folders on disk: listing, image/mask pairing, reading and mask-value mapping.

Some public lesion benchmarks (e.g. COVID-SemiSeg) ship single axial slices as PNG/JPEG in a
display window rather than Hounsfield volumes. A model trained on them sees the 0..255 pixel
values as its "HU" input (the baked window is (0, 255), slice context 1), so slices are read
as raw 0..255 intensities, exactly what the exported graph will receive.

Each slice carries its *group* (volume or patient, derived from the file name by
:func:`group_of`) because slices of one volume are strongly correlated and must stay on one
side of a split (:func:`training.data.splits.split_by_group`). Batches are drawn by
``training.data.slice_samplers``; the 3D counterpart of this module is ``training.data.volumes``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from service.core.classes import LESION_MASK_CLASS_NAMES
from training.data.splits import natural_key

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png",)

#: Mask class names of COVID-SemiSeg (raw mask value = position): 0 bg, 1 GGO, 2 consolidation.
COVID_SEMISEG_MASK_CLASSES: tuple[str, ...] = LESION_MASK_CLASS_NAMES

# A trailing "_<slice number>" marks the slice within its volume.
_SLICE_SUFFIX = re.compile(r"^(?P<volume>.+?)_(?P<slice>\d+)$")
# Radiopaedia exports name a volume "<case>_<study>_<series>-dcm"; series of one case share a
# patient, so they are grouped together to keep a patient on one side of a split.
_SERIES_SUFFIX = re.compile(r"^(?P<case>.+?)_\d+_\d+-dcm$")


def group_of(name: str) -> str:
    """Patient/volume group of a slice file name (suffix and folders ignored).

    ``Data-1_coronacases_org_001_10.jpg`` → ``Data-1_coronacases_org_001`` (slice number
    dropped); ``..._covid-19-pneumonia-10_85902_3-dcm_7.jpg`` → ``..._covid-19-pneumonia-10``
    (all series of that case). A name without a volume part (``12.jpg``) is its own group.
    """
    if not isinstance(name, str):
        raise TypeError(f"Argument 'name' must be a str, got {type(name).__name__}.")
    stem = Path(name).stem
    match = _SLICE_SUFFIX.match(stem)
    if match is None:
        return stem
    volume = match.group("volume")
    series = _SERIES_SUFFIX.match(volume)
    return series.group("case") if series else volume


@dataclass(frozen=True)
class SliceRecord:
    """One 2D slice on disk; ``mask_path`` is None for unlabeled slices."""

    name: str
    image_path: Path
    mask_path: Path | None
    group: str

    @property
    def labeled(self) -> bool:
        return self.mask_path is not None


def _files_by_stem(folder: Path, suffixes: Sequence[str], arg: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"Argument '{arg}': folder '{folder}' does not exist.")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise ValueError(
                f"Folder '{folder}' holds two files with stem '{path.stem}' "
                f"('{found[path.stem].name}' and '{path.name}'); pairing by stem needs one."
            )
        found[path.stem] = path
    if not found:
        raise ValueError(f"Argument '{arg}': folder '{folder}' has no {'/'.join(suffixes)} files.")
    return found


def list_slice_folder(
    images_dir: str | Path, masks_dir: str | Path | None = None
) -> list[SliceRecord]:
    """Records of a slice folder, images paired with masks by file stem.

    With ``masks_dir`` every image needs a mask and every mask an image (a stray file usually
    means a broken copy, so it is an error rather than silently skipped). Without it all
    slices are unlabeled.
    """
    images = _files_by_stem(Path(images_dir), IMAGE_SUFFIXES, "images_dir")
    masks: dict[str, Path] = {}
    if masks_dir is not None:
        masks = _files_by_stem(Path(masks_dir), MASK_SUFFIXES, "masks_dir")
        for stem, path in images.items():
            if stem not in masks:
                raise ValueError(f"Image '{path}' has no mask '{stem}.png' in '{masks_dir}'.")
        for stem, path in masks.items():
            if stem not in images:
                raise ValueError(
                    f"Mask '{path}' has no image with stem '{stem}' in '{images_dir}'."
                )
    return [
        SliceRecord(stem, path, masks.get(stem), group_of(path.name))
        for stem, path in sorted(images.items(), key=lambda kv: natural_key(kv[0]))
    ]


def read_image(path: str | Path) -> np.ndarray:
    """An image as (H, W) uint8 grayscale (colour images are converted to luminance)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def read_mask(path: str | Path, mask_mapping: Mapping[int, int] | None = None) -> np.ndarray:
    """A class-index mask as (H, W) int64; ``mask_mapping`` maps raw values to model classes.

    Palette PNGs are read as their indices (not colours), so a palette mask's values are the
    class indices. Raw values missing from ``mask_mapping`` are an error, not background.
    """
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I", "I;16", "1"):
            raise ValueError(
                f"Mask '{path}' has image mode {img.mode}; expected a palette or grayscale PNG "
                "of class indices."
            )
        raw = np.asarray(img, dtype=np.int64).copy()
    if mask_mapping is None:
        return raw
    values = np.unique(raw)
    unknown = [int(v) for v in values if int(v) not in mask_mapping]
    if unknown:
        raise ValueError(
            f"Mask '{path}' holds values {unknown} that 'mask_mapping' does not map "
            f"(mapped: {sorted(mask_mapping)})."
        )
    lut = np.zeros(int(values.max()) + 1, dtype=np.int64)
    for raw_value, target in mask_mapping.items():
        if 0 <= raw_value < lut.size:
            lut[raw_value] = target
    return lut[raw]


def mapping_by_names(mask_classes: Sequence[str], model_classes: Sequence[str]) -> dict[int, int]:
    """Map raw mask values (position in ``mask_classes``) to model class indices by name."""
    missing = [name for name in mask_classes if name not in model_classes]
    if missing:
        raise ValueError(
            f"Mask classes {missing} are not classes of the model; model classes are "
            f"{list(model_classes)}."
        )
    return {raw: list(model_classes).index(name) for raw, name in enumerate(mask_classes)}


@dataclass
class LoadedSlice:
    """A slice in memory: (H, W) uint8 intensities and (H, W) int64 class labels (or None)."""

    record: SliceRecord
    image: np.ndarray
    label: np.ndarray | None


def load_slice(record: SliceRecord, mask_mapping: Mapping[int, int] | None = None) -> LoadedSlice:
    image = read_image(record.image_path)
    label = None
    if record.mask_path is not None:
        label = read_mask(record.mask_path, mask_mapping)
        if label.shape != image.shape:
            raise ValueError(
                f"Mask '{record.mask_path}' is {label.shape[1]}x{label.shape[0]} px but its "
                f"image '{record.image_path}' is {image.shape[1]}x{image.shape[0]} px."
            )
    return LoadedSlice(record, image, label)
