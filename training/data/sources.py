"""Where a run's batches and validation scores come from: 3D volumes or 2D slice folders.

Every stage needs the same three things from its data: labeled batches, image-only batches
(contrastive pre-training, TCSM's unlabeled term) and a validation score. 3D studies (NIfTI
volumes in HU, 2.5D slice stacks) and 2D slice folders (8-bit slices already in a display
window, e.g. COVID-SemiSeg) provide them differently, so :func:`data_source` picks the
implementation for ``config.data.kind`` once and the stages never branch on the kind.

Randomness is handed in per call (a numpy generator for sampling, a torch generator for
augmentation) so that each optimisation step's batch depends on ``(seed, stage, rank, step)``
alone, as ``training.loop`` requires for exact resumes.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from service.core.classes import LESION_CLASS_NAMES
from service.core.preprocessing import resize_planes
from training.config import DataKind, TrainConfig
from training.data.slice_augmentation import Augment2D
from training.data.slice_folders import (
    LoadedSlice,
    SliceRecord,
    list_slice_folder,
    load_slice,
    mapping_by_names,
)
from training.data.slice_preparation import pad_square, pixels_to_hu, prepare_slice, slices_in_hu
from training.data.slice_samplers import LabeledSliceSampler, UnlabeledSliceSampler
from training.data.splits import split_by_group, split_studies
from training.data.validation import validate_slices, validate_volumes
from training.data.volumes import (
    ImageSliceSampler,
    LoadedStudy,
    SliceBatchSampler,
    load_study,
    read_dataset_manifest,
)
from training.data.weak_studies import (
    HU_AUGMENT,
    SyntheticLesionSampler,
    WeakBatch,
    WeakSliceSampler,
    WeakStudy,
    load_weak_studies,
    unlabeled_slices,
)

__all__ = [
    "DataSource",
    "ExperimentData",
    "ImageBatch",
    "ImageBatches",
    "Item",
    "LabeledBatches",
    "SliceSource",
    "VolumeSource",
    "WeakBatches",
    "data_source",
]

log = logging.getLogger(__name__)

#: One training/validation item: a 3D study or a 2D slice.
Item = LoadedStudy | LoadedSlice


@dataclass
class ExperimentData:
    """Items split for one run: labeled training, unlabeled training, labeled validation.

    3D runs split by study, 2D runs by slice group (volume/patient); unlabeled items always
    stay on the training side.
    """

    train_labeled: list[Item]
    train_unlabeled: list[Item]
    val: list[Item]

    @property
    def train_all(self) -> list[Item]:
        return self.train_labeled + self.train_unlabeled


@dataclass
class ImageBatch:
    """Network inputs ``x`` (B, C, H, W) and, where the layout knows them, each slice's index
    within its volume and the volume's depth (for G^D partition positives)."""

    x: Tensor
    position: Tensor | None = None
    depth: Tensor | None = None


class LabeledBatches(abc.ABC):
    """Draws labeled training batches."""

    @abc.abstractmethod
    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Inputs (B, C, H, W) float32 and labels (B, H, W) int64 in model class indices."""


class ImageBatches(abc.ABC):
    """Draws image-only batches (labels, if any, unused)."""

    #: Whether batches carry slice positions (G^D needs them).
    knows_positions: bool = False

    @abc.abstractmethod
    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> ImageBatch: ...


class WeakBatches(abc.ABC):
    """Draws slices with slice-level labels for the weak loss (inputs in the network's units)."""

    @abc.abstractmethod
    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> WeakBatch: ...


class DataSource(abc.ABC):
    """Loads and splits a run's data, and serves batches and validation for one layout."""

    kind: DataKind
    #: Name of the validation score in logs ("VolDice" for studies, "Dice" for slices).
    metric: str

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def load(self, *, with_unlabeled: bool = True) -> ExperimentData:
        """Read and split the data (validation items are labeled, never trained on)."""

    @abc.abstractmethod
    def labeled_batches(self, items: Sequence[Item]) -> LabeledBatches: ...

    @abc.abstractmethod
    def image_batches(self, items: Sequence[Item]) -> ImageBatches: ...

    @abc.abstractmethod
    def validate(self, model: torch.nn.Module, items: Sequence[Item]) -> dict[str, float]:
        """Mean score per foreground class over the labeled validation items."""

    def weak_batches(self) -> WeakBatches | None:
        """Slices with slice-level labels for the weak loss; None when the run has none."""
        return None


# --------------------------------------------------------------------------------------------
# 3D studies (manifest.json of NIfTI volumes in HU)
# --------------------------------------------------------------------------------------------


class _StudyLabeledBatches(LabeledBatches):
    def __init__(self, sampler: SliceBatchSampler) -> None:
        self.sampler = sampler

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        self.sampler.rng = rng
        return self.sampler.sample(batch_size)


class _StudyImageBatches(ImageBatches):
    knows_positions = True

    def __init__(self, sampler: ImageSliceSampler) -> None:
        self.sampler = sampler

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> ImageBatch:
        x, z, depth = self.sampler.sample(batch_size, rng)
        return ImageBatch(x, z, depth)


class VolumeSource(DataSource):
    """3D studies: 2.5D HU stacks, split by study, validated with per-class VolDice."""

    kind = DataKind.VOLUMES
    metric = "VolDice"

    def load(self, *, with_unlabeled: bool = True) -> ExperimentData:
        records = read_dataset_manifest(self.config.data.root)
        train, val = split_studies(
            records, self.config.data.val_fraction, self.config.seed, self.config.data.fold
        )
        labeled: list[Item] = [load_study(r) for r in train if r.labeled]
        unlabeled: list[Item] = (
            [load_study(r) for r in train if not r.labeled] if with_unlabeled else []
        )
        studies: list[Item] = [load_study(r) for r in val]
        log.info(
            "studies: %d labeled + %d unlabeled for training, %d for validation",
            len(labeled),
            len(unlabeled),
            len(studies),
        )
        return ExperimentData(labeled, unlabeled, studies)

    def labeled_batches(self, items: Sequence[Item]) -> LabeledBatches:
        model = self.config.model
        return _StudyLabeledBatches(
            SliceBatchSampler(
                _studies(items),
                slice_context=model.slice_context,
                input_size=model.input_size,
                lesion_oversampling=self.config.data.lesion_oversampling,
                seed=self.config.seed,
            )
        )

    def image_batches(self, items: Sequence[Item]) -> ImageBatches:
        model = self.config.model
        return _StudyImageBatches(
            ImageSliceSampler(
                _studies(items), slice_context=model.slice_context, input_size=model.input_size
            )
        )

    def validate(self, model: torch.nn.Module, items: Sequence[Item]) -> dict[str, float]:
        return validate_volumes(model, _studies(items), self.config.model)


def _studies(items: Sequence[Item]) -> list[LoadedStudy]:
    bad = [type(i).__name__ for i in items if not isinstance(i, LoadedStudy)]
    if bad:
        raise TypeError(
            f"data.kind 'volumes' needs LoadedStudy items, got {sorted(set(bad))}; "
            "was the data loaded with another data.kind?"
        )
    return [i for i in items if isinstance(i, LoadedStudy)]


# --------------------------------------------------------------------------------------------
# 2D slice folders (8-bit windowed slices, class-index PNG masks)
# --------------------------------------------------------------------------------------------


def _in_hu(x: Tensor, window: tuple[float, float] | None) -> Tensor:
    """Pixel batches (sampled and augmented in 0..255) as HU when the data has a window."""
    return x if window is None else pixels_to_hu(x, window)


class _SliceLabeledBatches(LabeledBatches):
    def __init__(self, sampler: LabeledSliceSampler, window: tuple[float, float] | None) -> None:
        self.sampler = sampler
        self.window = window

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        self.sampler.rng, self.sampler.generator = rng, generator
        x, y = self.sampler.sample(batch_size)
        return _in_hu(x, self.window), y


class _SliceImageBatches(ImageBatches):
    knows_positions = False

    def __init__(self, sampler: UnlabeledSliceSampler, window: tuple[float, float] | None) -> None:
        self.sampler = sampler
        self.window = window

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> ImageBatch:
        self.sampler.rng, self.sampler.generator = rng, generator
        return ImageBatch(_in_hu(self.sampler.sample(batch_size), self.window))


class SliceSource(DataSource):
    """2D slice folders under ``data.root``: labeled slices split by group (volume/patient,
    else by slice), optional unlabeled folder, validated with mean per-slice Dice.

    Unlabeled slices are only ever network inputs, so they are resized to the input size
    when loaded (a 1600-slice folder then takes ~60 MB instead of ~250 MB).
    """

    kind = DataKind.SLICES2D
    metric = "Dice"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        if config.model.slice_context != 1:
            raise ValueError(
                f"Config key 'model.slice_context' must be 1 for data.kind 'slices2d' (single "
                f"slices have no neighbours), got {config.model.slice_context}."
            )
        self.mask_mapping = mapping_by_names(config.data.mask_classes, config.model.class_names)
        #: Model classes the masks annotate (other model classes cannot be scored).
        labeled_classes = set(config.data.mask_classes) | (
            {"lung"} if config.data.lung_labels else set()
        )
        self.scored = [n for n in config.model.class_names[1:] if n in labeled_classes]
        self._negatives: list[LoadedSlice] | None = None
        self._weak: list[WeakStudy] | None = None

    def weak_studies(self) -> list[WeakStudy]:
        """The studies of ``weak.studies`` minus ``weak.exclude`` (read once; [] when off)."""
        if self._weak is None:
            weak = self.config.weak
            self._weak = (
                []
                if weak.studies is None
                else load_weak_studies(weak.studies, weak.exclude, self.config.model.input_size)
            )
        return self._weak

    def _window(self) -> tuple[float, float]:
        window = self.config.data.pixel_window
        if window is None:  # TrainConfig refuses weak studies without one
            raise ValueError("Config key 'weak.studies' needs 'data.pixel_window'.")
        return (float(window[0]), float(window[1]))

    def _folder(self, sub: str) -> Path:
        return Path(self.config.data.root) / sub

    def load(self, *, with_unlabeled: bool = True) -> ExperimentData:
        data = self.config.data
        records = list_slice_folder(self._folder(data.images), self._folder(data.masks))
        train, val = split_by_group(records, data.val_fraction, self.config.seed, fold=data.fold)
        labeled: list[Item] = [self._load(r) for r in train]
        held_out: list[Item] = [self._load(r) for r in val]
        unlabeled: list[Item] = []
        if with_unlabeled and data.unlabeled:
            size = self.config.model.input_size
            for record in list_slice_folder(self._folder(data.unlabeled)):
                loaded = prepare_slice(load_slice(record), data, self.config.model.class_names)
                unlabeled.append(LoadedSlice(record, _resized_uint8(loaded.image, size), None))
        if with_unlabeled and self.config.weak.unlabeled and self.weak_studies():
            unlabeled += unlabeled_slices(self.weak_studies(), self._window())
        if self.weak_studies():
            log.info(
                "weak studies: %s",
                ", ".join(
                    f"{s.name} ({(s.slice_labels == 1).sum()} positive / "
                    f"{(s.slice_labels == 0).sum()} negative slices)"
                    for s in self.weak_studies()
                ),
            )
        log.info(
            "slices: %d labeled (+ %d negatives) + %d unlabeled for training, %d for validation",
            len(labeled),
            len(self.negatives()),
            len(unlabeled),
            len(held_out),
        )
        return ExperimentData(labeled, unlabeled, held_out)

    def negatives(self) -> list[LoadedSlice]:
        """The lesion-free whole-field slices of ``data.negatives`` (read once), as stored:
        already in the model's classes and orientation. Training only, so not in the split."""
        if self._negatives is None:
            folder = self.config.data.negatives
            self._negatives = [] if folder is None else self._read_negatives(Path(folder))
        return self._negatives

    def _read_negatives(self, folder: Path) -> list[LoadedSlice]:
        records = list_slice_folder(folder / "images", folder / "masks")
        if not records:
            raise ValueError(f"Config key 'data.negatives': no slices in '{folder / 'images'}'.")
        loaded = [load_slice(r) for r in records]
        if self.config.data.pad_square:  # as the annotated slices (a no-op on square ones)
            loaded = [
                LoadedSlice(
                    s.record, pad_square(s.image), None if s.label is None else pad_square(s.label)
                )
                for s in loaded
            ]
        classes = len(self.config.model.class_names)
        names = list(self.config.model.class_names)
        lesions = [names.index(n) for n in LESION_CLASS_NAMES if n in names]
        for item in loaded:
            label = np.zeros(1) if item.label is None else item.label
            if label.max() >= classes or np.isin(label, lesions).any():
                raise ValueError(
                    f"Negative slice mask '{item.record.mask_path}' must hold lesion-free class "
                    f"indices below {classes}, got values {np.unique(label).tolist()}."
                )
        return loaded

    def _load(self, record: SliceRecord) -> LoadedSlice:
        loaded = load_slice(record, self.mask_mapping)
        return prepare_slice(loaded, self.config.data, self.config.model.class_names)

    def labeled_batches(self, items: Sequence[Item]) -> LabeledBatches:
        data = self.config.data
        batches = _SliceLabeledBatches(
            LabeledSliceSampler(
                _slices(items),
                input_size=self.config.model.input_size,
                augment=Augment2D(scale_range=data.zoom_range) if data.augment else None,
                lesion_oversampling=data.lesion_oversampling,
                seed=self.config.seed,
                negatives=self.negatives(),
                negatives_share=data.negatives_share,
            ),
            data.pixel_window,
        )
        weak = self.config.weak
        if not self.weak_studies() or weak.synthetic_share == 0:
            return batches
        synthetic = SyntheticLesionSampler(
            self.weak_studies(),
            window=self._window(),
            class_names=self.config.model.class_names,
            lesion_prob=weak.lesion_prob,
            guard=weak.guard,
            augment=HU_AUGMENT if data.augment else None,
        )
        return _WithSyntheticLesions(batches, synthetic, weak.synthetic_share, self._window())

    def weak_batches(self) -> WeakBatches | None:
        weak = self.config.weak
        if not self.weak_studies() or weak.batch_size == 0:
            return None
        sampler = WeakSliceSampler(
            self.weak_studies(),
            window=self._window(),
            field_margin_px=weak.field_margin_px,
            augment=HU_AUGMENT if self.config.data.augment else None,
        )
        return _WeakHUBatches(sampler, self._window())

    def image_batches(self, items: Sequence[Item]) -> ImageBatches:
        return _SliceImageBatches(
            UnlabeledSliceSampler(
                _slices(items), input_size=self.config.model.input_size, seed=self.config.seed
            ),
            self.config.data.pixel_window,
        )

    def validate(self, model: torch.nn.Module, items: Sequence[Item]) -> dict[str, float]:
        """Mean per-slice Dice per class at each slice's own resolution (as evaluation does)."""
        slices = _slices(items)
        window = self.config.data.pixel_window
        if window is not None:
            slices = slices_in_hu(slices, window)
        return validate_slices(model, slices, self.config.model, self.scored)


class _WithSyntheticLesions(LabeledBatches):
    """A labeled batch whose last ``share`` comes from whole HU slices with synthetic lesions."""

    def __init__(
        self,
        base: LabeledBatches,
        synthetic: SyntheticLesionSampler,
        share: float,
        window: tuple[float, float],
    ) -> None:
        self.base, self.synthetic, self.share, self.window = base, synthetic, share, window

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        count = min(int(round(batch_size * self.share)), batch_size - 1)
        x, y = self.base.sample(batch_size - count, rng, generator)
        if count < 1:
            return x, y
        xs, ys = self.synthetic.sample(count, rng, generator)
        return torch.cat([x, _in_hu(xs, self.window)]), torch.cat([y, ys])


class _WeakHUBatches(WeakBatches):
    def __init__(self, sampler: WeakSliceSampler, window: tuple[float, float]) -> None:
        self.sampler, self.window = sampler, window

    def sample(
        self, batch_size: int, rng: np.random.Generator, generator: torch.Generator
    ) -> WeakBatch:
        batch = self.sampler.sample(batch_size, rng, generator)
        return WeakBatch(_in_hu(batch.x, self.window), batch.region, batch.positive)


def _resized_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Unlabeled slices are stored at the input size (the core resize), rounded to 8 bits."""
    return np.clip(np.rint(resize_planes(image, size)), 0, 255).astype(np.uint8)


def _slices(items: Sequence[Item]) -> list[LoadedSlice]:
    bad = [type(i).__name__ for i in items if not isinstance(i, LoadedSlice)]
    if bad:
        raise TypeError(
            f"data.kind 'slices2d' needs LoadedSlice items, got {sorted(set(bad))}; "
            "was the data loaded with another data.kind?"
        )
    return [i for i in items if isinstance(i, LoadedSlice)]


_SOURCES: dict[DataKind, type[DataSource]] = {
    DataKind.VOLUMES: VolumeSource,
    DataKind.SLICES2D: SliceSource,
}


def data_source(config: TrainConfig) -> DataSource:
    """The data source for ``config.data.kind`` (cheap: nothing is read until ``load``)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"Argument 'config' must be a TrainConfig, got {type(config).__name__}.")
    return _SOURCES[config.data.kind](config)
