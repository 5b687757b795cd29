"""2D slice-folder datasets: already-windowed 8-bit CT slices with optional class-index masks.

Some public lesion benchmarks (e.g. COVID-SemiSeg) ship single axial slices as PNG/JPEG in a
display window rather than Hounsfield volumes. A model trained on them sees the 0..255 pixel
values as its "HU" input (the baked window is (0, 255), slice context 1), so the samplers here
return raw 0..255 intensities, exactly what the exported graph will receive.

Slices of one CT volume are strongly correlated, so splits are made by *group* (volume or
patient, derived from the file name by :func:`group_of`), never by slice. This module mirrors
the naming of ``training.datasets`` (records, ``split_*``, ``Loaded*``, batch samplers) but
does not depend on it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from training.splits import held_out

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png",)

#: Mask class names of COVID-SemiSeg (raw mask value = position): 0 bg, 1 GGO, 2 consolidation.
COVID_SEMISEG_MASK_CLASSES: tuple[str, ...] = ("background", "ggo", "consolidation")

# A trailing "_<slice number>" marks the slice within its volume.
_SLICE_SUFFIX = re.compile(r"^(?P<volume>.+?)_(?P<slice>\d+)$")
# Radiopaedia exports name a volume "<case>_<study>_<series>-dcm"; series of one case share a
# patient, so they are grouped together to keep a patient on one side of a split.
_SERIES_SUFFIX = re.compile(r"^(?P<case>.+?)_\d+_\d+-dcm$")

T = TypeVar("T")


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


def _natural_key(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


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
        for stem, path in sorted(images.items(), key=lambda kv: _natural_key(kv[0]))
    ]


def split_by_group(
    items: Sequence[T],
    val_fraction: float,
    seed: int,
    *,
    key=None,
    fold: tuple[int, int] | None = None,
) -> tuple[list[T], list[T]]:
    """Split items into (train, validation) by group; a group never lands on both sides.

    ``key(item)`` gives the group (default: ``item.group``). About ``val_fraction`` of the
    *groups* (at least one when the fraction is > 0 and there are two or more groups), or the
    groups of cross-validation fold ``fold=(i, k)``, go to validation, chosen by a seeded
    permutation (:func:`training.splits.held_out`); item order is kept within each side.
    """
    get = key if key is not None else (lambda item: item.group)
    groups = sorted({get(item) for item in items}, key=_natural_key)
    val_groups = {groups[i] for i in held_out(len(groups), val_fraction, seed, fold)}
    train = [item for item in items if get(item) not in val_groups]
    val = [item for item in items if get(item) in val_groups]
    return train, val


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


class SliceFolderDataset:
    """A folder of 2D slices (and optionally a folder of masks), loaded on access.

    ``dataset[i]`` reads one slice; :meth:`load` reads a subset into memory for the samplers.
    """

    def __init__(
        self,
        images_dir: str | Path,
        masks_dir: str | Path | None = None,
        *,
        mask_mapping: Mapping[int, int] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir) if masks_dir is not None else None
        self.mask_mapping = dict(mask_mapping) if mask_mapping is not None else None
        self.records = list_slice_folder(self.images_dir, self.masks_dir)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> LoadedSlice:
        return load_slice(self.records[index], self.mask_mapping)

    @property
    def groups(self) -> list[str]:
        """Distinct groups in file order."""
        return list(dict.fromkeys(r.group for r in self.records))

    def split(
        self, val_fraction: float, seed: int, fold: tuple[int, int] | None = None
    ) -> tuple[list[SliceRecord], list[SliceRecord]]:
        return split_by_group(self.records, val_fraction, seed, fold=fold)

    def load(self, records: Sequence[SliceRecord] | None = None) -> list[LoadedSlice]:
        chosen = self.records if records is None else records
        return [load_slice(r, self.mask_mapping) for r in chosen]


@dataclass(frozen=True)
class Augment2D:
    """Light training augmentation; every knob at 0 (or a 1.0 scale range) disables it."""

    #: Probabilities of flipping rows (vertical) and columns (horizontal).
    flip_h_prob: float = 0.5
    flip_w_prob: float = 0.5
    #: Rotation drawn uniformly in ±max_rotation_deg degrees.
    max_rotation_deg: float = 10.0
    #: Isotropic zoom drawn uniformly in [min, max].
    scale_range: tuple[float, float] = (0.9, 1.1)
    #: Additive brightness shift, a fraction of the 0..255 range (±).
    brightness: float = 0.1
    #: Contrast factor drawn in [1 - contrast, 1 + contrast] about each image's mean.
    contrast: float = 0.1

    def __post_init__(self) -> None:
        for name in ("flip_h_prob", "flip_w_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Argument '{name}' must be in [0, 1], got {value}.")
        lo, hi = self.scale_range
        if not 0.0 < lo <= hi:
            raise ValueError(
                "Argument 'scale_range' must be (lo, hi) with 0 < lo <= hi, "
                f"got {self.scale_range}."
            )
        for name in ("max_rotation_deg", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"Argument '{name}' must be >= 0, got {getattr(self, name)}.")
        if self.contrast >= 1.0:
            raise ValueError(f"Argument 'contrast' must be < 1, got {self.contrast}.")


def _resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]):
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    y = None if label is None else torch.from_numpy(label)[None, None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if y is not None:
            y = F.interpolate(y.float(), size=size, mode="nearest").long()
    return x[0], (None if y is None else y[0, 0])


def augment_batch(
    x: torch.Tensor, y: torch.Tensor | None, augment: Augment2D, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips, rotation, zoom (one affine per sample) and brightness/contrast jitter.

    Images are resampled bilinearly and labels by nearest neighbour with the same grid; the
    border that comes into view is 0 (black, background), and intensities stay in 0..255.
    """
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    flip_h = torch.rand(n, generator=generator) < augment.flip_h_prob
    flip_w = torch.rand(n, generator=generator) < augment.flip_w_prob
    angle = uniform(-augment.max_rotation_deg, augment.max_rotation_deg) * (math.pi / 180.0)
    scale = uniform(*augment.scale_range)
    shift = uniform(-augment.brightness, augment.brightness) * 255.0
    factor = uniform(1.0 - augment.contrast, 1.0 + augment.contrast)

    # The affine maps output coordinates to input ones: zoom by `scale` → sample at 1/scale.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sx = torch.where(flip_w, -1.0, 1.0).double()
    sy = torch.where(flip_h, -1.0, 1.0).double()
    # Rotate in pixel units: affine_grid's normalised axes differ in scale when H != W.
    aspect = x.shape[-2] / x.shape[-1]
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy * aspect
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx / aspect, cos * sy
    if not bool(
        (angle == 0).all() and (scale == 1).all() and not flip_h.any() and not flip_w.any()
    ):
        grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if y is not None:
            y = (
                F.grid_sample(
                    y[:, None].float(),
                    grid,
                    mode="nearest",
                    padding_mode="zeros",
                    align_corners=False,
                )[:, 0]
                .round()
                .long()
            )
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    f = factor.float().view(n, 1, 1, 1)
    x = ((x - mean) * f + mean + shift.float().view(n, 1, 1, 1)).clamp(0.0, 255.0)
    return x, y


class _SliceSampler:
    def __init__(
        self,
        slices: Sequence[LoadedSlice],
        *,
        input_size: tuple[int, int],
        augment: Augment2D | None,
        seed: int,
        weights: np.ndarray | None = None,
    ) -> None:
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(
                f"Argument 'input_size' must be (height, width) >= 1, got {input_size}."
            )
        self.slices = list(slices)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.weights = weights

    def _picks(self, batch_size: int) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"Argument 'batch_size' must be at least 1, got {batch_size}.")
        return self.rng.choice(len(self.slices), size=batch_size, p=self.weights)


class LabeledSliceSampler(_SliceSampler):
    """Random labeled batches: (B, 1, H, W) float32 in 0..255 and (B, H, W) int64 labels.

    Slices with any foreground label are drawn ``lesion_oversampling`` times more often.
    ``augment=None`` (validation) only resizes.
    """

    def __init__(
        self,
        slices: Sequence[LoadedSlice],
        *,
        input_size: tuple[int, int],
        augment: Augment2D | None = None,
        lesion_oversampling: float = 1.0,
        seed: int = 0,
    ) -> None:
        labeled = [s for s in slices if s.label is not None]
        if not labeled:
            raise ValueError("LabeledSliceSampler needs at least one slice with a mask.")
        if lesion_oversampling <= 0:
            raise ValueError(
                f"Argument 'lesion_oversampling' must be > 0, got {lesion_oversampling}."
            )
        w = np.array([lesion_oversampling if (s.label > 0).any() else 1.0 for s in labeled])  # type: ignore[operator]
        super().__init__(
            labeled, input_size=input_size, augment=augment, seed=seed, weights=w / w.sum()
        )

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for i in self._picks(batch_size):
            x, y = _resize(self.slices[i].image, self.slices[i].label, self.input_size)
            images.append(x)
            labels.append(y)
        xb, yb = torch.stack(images), torch.stack(labels)  # type: ignore[arg-type]
        if self.augment is not None:
            xb, yb = augment_batch(xb, yb, self.augment, self.generator)
        return xb, yb  # type: ignore[return-value]


class UnlabeledSliceSampler(_SliceSampler):
    """Random image-only batches (B, 1, H, W) float32 in 0..255 for semi-supervised stages.

    Masks, if any, are ignored. Semi-supervised losses usually apply their own transforms, so
    augmentation is off unless given.
    """

    def __init__(
        self,
        slices: Sequence[LoadedSlice],
        *,
        input_size: tuple[int, int],
        augment: Augment2D | None = None,
        seed: int = 0,
    ) -> None:
        if not slices:
            raise ValueError("UnlabeledSliceSampler needs at least one slice.")
        super().__init__(slices, input_size=input_size, augment=augment, seed=seed)

    def sample(self, batch_size: int) -> torch.Tensor:
        xb = torch.stack(
            [
                _resize(self.slices[i].image, None, self.input_size)[0]
                for i in self._picks(batch_size)
            ]
        )
        if self.augment is not None:
            xb, _ = augment_batch(xb, None, self.augment, self.generator)
        return xb
