"""Whole DICOM slices in HU with slice-level labels: synthetic-lesion batches and weak batches.

``bench/real_ct_weak_slices.py`` stores each study at the network's input size, head first,
with its classical lung field and the dataset's slice-level labels (1 infection, 0 none,
-1 unknown). From them this module draws

* **dense batches** (:class:`SyntheticLesionSampler`): lesion-free slices (label 0 and at least
  ``guard`` slices from any positive one) with the lung class from the lung field and, with
  probability ``lesion_prob``, synthetic GGO/consolidation inserted in HU
  (:mod:`training.data.synthetic_lesions`): voxel masks with real anatomy around them;
* **weak batches** (:class:`WeakSliceSampler`): labeled slices, half positive and half
  negative, with the dilated lung field as the region where the weak loss looks for lesions;
* **unlabeled images** (:func:`unlabeled_slices`) for the semi-supervised stages.

Images come out as the slice data source's other batches do: pixels of ``data.pixel_window``
(float, 0..255), so one intensity contract maps every batch back to HU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from service.core.classes import LESION_CLASS_NAMES
from training.data.slice_augmentation import Augment2D, augment_batch
from training.data.slice_folders import LoadedSlice, SliceRecord
from training.data.synthetic_lesions import CONSOLIDATION, GGO, LesionRecipe, insert_lesions

__all__ = [
    "HU_AUGMENT",
    "SyntheticLesionSampler",
    "WeakBatch",
    "WeakSliceSampler",
    "WeakStudy",
    "lesion_free_indices",
    "load_weak_studies",
    "unlabeled_slices",
]

#: Augmentation of whole HU fields: no flips (anatomy has a side and a front), small rotation
#: and zoom, and intensity jitter of a few HU only (±0.1 of the window would move normal lung
#: by ±140 HU, into the GGO range).
HU_AUGMENT = Augment2D(
    flip_h_prob=0.0,
    flip_w_prob=0.0,
    max_rotation_deg=8.0,
    scale_range=(0.85, 1.15),
    brightness=0.01,
    contrast=0.04,
)


@dataclass
class WeakStudy:
    """One study at the network's input size, slices head first."""

    name: str
    hu: np.ndarray  # (N, H, W) int16
    lung: np.ndarray  # (N, H, W) bool, the classical lung field
    slice_labels: np.ndarray  # (N,) int8: 1 infection, 0 none, -1 unknown
    spacing_mm: tuple[float, float]

    def __post_init__(self) -> None:
        n = self.hu.shape[0]
        if self.hu.ndim != 3 or self.lung.shape != self.hu.shape or self.slice_labels.shape != (n,):
            raise ValueError(
                f"Weak study '{self.name}': hu {self.hu.shape}, lung {self.lung.shape} and "
                f"slice_labels {self.slice_labels.shape} must be (N, H, W), (N, H, W), (N,)."
            )


def load_weak_studies(
    folder: str | Path, exclude: Sequence[str] = (), input_size: tuple[int, int] | None = None
) -> list[WeakStudy]:
    """Read ``folder/<study>.npz`` (all but ``exclude``), checking the slices' size."""
    root = Path(folder)
    paths = sorted(root.glob("*.npz"))
    if not paths:
        raise ValueError(
            f"Config key 'weak.studies': no <study>.npz files in '{root}'; make them with "
            "`python bench/real_ct_weak_slices.py --out <folder>`."
        )
    unknown = sorted(set(exclude) - {p.stem for p in paths})
    if unknown:
        raise ValueError(
            f"Config key 'weak.exclude' names {unknown}, which are not studies in '{root}' "
            f"(found {[p.stem for p in paths]})."
        )
    studies = []
    for path in paths:
        if path.stem in exclude:
            continue
        with np.load(path) as arrays:
            study = WeakStudy(
                path.stem,
                arrays["hu"],
                arrays["lung"].astype(bool),
                arrays["slice_labels"].astype(np.int8),
                (float(arrays["spacing_mm"][0]), float(arrays["spacing_mm"][1])),
            )
        if input_size is not None and study.hu.shape[1:] != tuple(input_size):
            raise ValueError(
                f"Weak study '{path}' has {study.hu.shape[2]}x{study.hu.shape[1]} slices but "
                f"model.input_size is {list(input_size)}; remake it with the same config."
            )
        studies.append(study)
    return studies


def lesion_free_indices(labels: np.ndarray, guard: int) -> np.ndarray:
    """Slices labeled 0 and at least ``guard`` slices from any positive (-1: never)."""
    labels = np.asarray(labels)
    near_positive = labels == 1
    if guard > 0 and near_positive.any():
        near_positive = ndimage.binary_dilation(near_positive, iterations=guard)
    return np.flatnonzero((labels == 0) & ~near_positive)


def _to_pixels(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return np.clip((hu.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0.0, 255.0)


class SyntheticLesionSampler:
    """Dense labeled batches from the studies' lesion-free slices, lesions inserted in HU.

    Returns (B, 1, H, W) float32 pixels of ``window`` and (B, H, W) int64 labels in the model's
    classes: lung from the lung field, GGO and consolidation where lesions were inserted.
    """

    def __init__(
        self,
        studies: Sequence[WeakStudy],
        *,
        window: tuple[float, float],
        class_names: Sequence[str],
        lesion_prob: float,
        guard: int,
        augment: Augment2D | None = HU_AUGMENT,
        recipe: LesionRecipe | None = None,
    ) -> None:
        self.studies = list(studies)
        self.pool = [
            (s, int(z)) for s in self.studies for z in lesion_free_indices(s.slice_labels, guard)
        ]
        if not self.pool:
            raise ValueError("SyntheticLesionSampler found no lesion-free slice in its studies.")
        names = list(class_names)
        self.lung_index = names.index("lung")
        self.lesion_index = {
            GGO: names.index(LESION_CLASS_NAMES[0]),
            CONSOLIDATION: names.index(LESION_CLASS_NAMES[1]),
        }
        self.window = window
        self.lesion_prob = lesion_prob
        self.augment = augment
        self.recipe = recipe or LesionRecipe()

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for pick in rng.choice(len(self.pool), size=batch_size):
            study, z = self.pool[int(pick)]
            hu = study.hu[z].astype(np.float32)
            lung = study.lung[z]
            label = np.where(lung, self.lung_index, 0).astype(np.int64)
            if rng.random() < self.lesion_prob:
                inserted = insert_lesions(hu, lung, study.spacing_mm, rng, self.recipe)
                hu = inserted.hu
                for value, index in self.lesion_index.items():
                    label[inserted.label == value] = index
            images.append(torch.from_numpy(_to_pixels(hu, self.window))[None])
            labels.append(torch.from_numpy(label))
        x, y = torch.stack(images), torch.stack(labels)
        if self.augment is not None:
            x, y = augment_batch(x, y, self.augment, generator)
        return x, y


@dataclass
class WeakBatch:
    """Weakly labeled slices: pixels ``x`` (B, 1, H, W), ``region`` (B, H, W) bool (the dilated
    lung field: lesions can only be there) and ``positive`` (B,) float (1 = infection)."""

    x: torch.Tensor
    region: torch.Tensor
    positive: torch.Tensor


class WeakSliceSampler:
    """Batches of slices with a slice-level label, half positive and half negative (all
    negative when the studies have no positive slice)."""

    def __init__(
        self,
        studies: Sequence[WeakStudy],
        *,
        window: tuple[float, float],
        field_margin_px: int,
        augment: Augment2D | None = HU_AUGMENT,
    ) -> None:
        self.studies = list(studies)
        self.positives = [
            (i, int(z))
            for i, s in enumerate(self.studies)
            for z in np.flatnonzero(s.slice_labels == 1)
        ]
        self.negatives = [
            (i, int(z))
            for i, s in enumerate(self.studies)
            for z in np.flatnonzero(s.slice_labels == 0)
        ]
        if not self.negatives and not self.positives:
            raise ValueError("WeakSliceSampler found no slice with a slice-level label.")
        structure = ndimage.generate_binary_structure(2, 1)
        self.regions = [
            ndimage.binary_dilation(s.lung, structure=structure[None], iterations=field_margin_px)
            if field_margin_px > 0
            else s.lung
            for s in self.studies
        ]
        self.window = window
        self.augment = augment

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> WeakBatch:
        half = batch_size // 2 if self.positives and self.negatives else 0
        picks = (
            [self.positives[int(i)] for i in rng.choice(len(self.positives), size=half)]
            if half
            else []
        )
        rest = self.negatives or self.positives
        picks += [rest[int(i)] for i in rng.choice(len(rest), size=batch_size - len(picks))]
        images, regions, positive = [], [], []
        for study_index, z in picks:
            study = self.studies[study_index]
            images.append(torch.from_numpy(_to_pixels(study.hu[z], self.window))[None])
            regions.append(torch.from_numpy(self.regions[study_index][z].astype(np.int64)))
            positive.append(float(study.slice_labels[z] == 1))
        x, region = torch.stack(images), torch.stack(regions)
        if self.augment is not None:
            x, region = augment_batch(x, region, self.augment, generator)
        return WeakBatch(x, region.bool(), torch.tensor(positive))


def unlabeled_slices(
    studies: Sequence[WeakStudy], window: tuple[float, float]
) -> list[LoadedSlice]:
    """Every slice of the studies as an unlabeled item (pixels of ``window``)."""
    items = []
    for study in studies:
        for z in range(study.hu.shape[0]):
            name = f"{study.name}_{z:03d}"
            record = SliceRecord(name, Path(f"{study.name}.npz"), None, study.name)
            items.append(LoadedSlice(record, _to_pixels(study.hu[z], window), None))
    return items
