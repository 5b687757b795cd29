"""Evaluate an exported ONNX model on labeled data, exactly as the service would run it.

Only the ONNX file and the one predictor (``service.predictor``, ONNX Runtime backend) are
used — never a training network — so the numbers describe the artefact that ships.
Classes are matched by *name* between the model manifest and the dataset, because datasets
number their labels differently (phantom: 0 bg/1 lung/2 ggo/3 consolidation; COVID-SemiSeg
masks: 0 bg/1 ggo/2 consolidation). Lesion classes are also scored together as "infection".

Metrics per item (empty reference and empty prediction agree: Dice 1.0, as in
``service.core.segmentation_metrics``): 3D studies get mean slice Dice (``dice``), VolDice
(``vol_dice``) and continuous Dice (``cdice``); 2D slices get Dice and continuous Dice. Items
are aggregated as mean ± sample standard deviation (``training.evaluation.report``); the
``pulmoseg evaluate`` command line lives in ``training.cli.commands``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.core.classes import DEFAULT_CLASS_NAMES, LESION_CLASS_NAMES, LESION_MASK_CLASS_NAMES
from service.core.segmentation_metrics import continuous_dice, dice, mean_slice_dice
from training.data.splits import check_fold, split_by_group, split_studies
from training.evaluation.report import EvaluationReport, ItemMetrics, summarise_items

if TYPE_CHECKING:
    from service.core.manifest import ModelManifest
    from service.predictor import Predictor
    from training.config import DataConfig

log = logging.getLogger(__name__)

#: Classes that make up the "infection" aggregate.
LESION_CLASSES: tuple[str, ...] = LESION_CLASS_NAMES
INFECTION = "infection"
BACKGROUND = "background"
#: Label names of 3D datasets whose manifest does not list its classes (the phantom scheme).
DEFAULT_VOLUME_CLASSES: tuple[str, ...] = DEFAULT_CLASS_NAMES
#: Mask names of 2D slice folders by default (COVID-SemiSeg).
DEFAULT_MASK_CLASSES: tuple[str, ...] = LESION_MASK_CLASS_NAMES
SPLITS = ("all", "train", "val")
#: The ``training_summary`` key under which an export records how its 8-bit slices were
#: prepared (``training.export.onnx_export``); ``evaluate`` prepares slice folders the same way.
SLICE_PREPARATION_KEY = "slice_preparation"
#: The data settings that make up that preparation (``training.data.slice_preparation``).
SLICE_PREPARATION_FIELDS = (
    "pixel_window",
    "rotate90",
    "harmonize_tissue_hu",
    "pad_square",
    "lung_labels",
)


def _dataset_classes(
    mask_mapping: Sequence[str] | Mapping[int, str] | None, default: Sequence[str]
) -> dict[int, str]:
    """Raw label value → class name (a sequence lists names by raw value)."""
    if mask_mapping is None:
        mask_mapping = default
    if isinstance(mask_mapping, str):
        raise TypeError(
            "Argument 'mask_mapping' must be a sequence of class names or a {value: name} "
            f"mapping, got the string {mask_mapping!r}; split it by commas first."
        )
    if isinstance(mask_mapping, Mapping):
        pairs = {int(k): str(v) for k, v in mask_mapping.items()}
    else:
        pairs = {i: str(v) for i, v in enumerate(mask_mapping)}
    if BACKGROUND not in pairs.values():
        raise ValueError(f"Argument 'mask_mapping' must name a '{BACKGROUND}' class, got {pairs}.")
    return pairs


def _model_indices(
    model_classes: Sequence[str], dataset: Mapping[int, str], model_path: Path
) -> dict[str, int]:
    missing = sorted({n for n in dataset.values() if n not in model_classes})
    if missing:
        raise ValueError(
            f"Model '{model_path}' has no class {missing} that the dataset labels; the model's "
            f"classes are {list(model_classes)} (set the dataset's names with --mask-classes)."
        )
    return {name: list(model_classes).index(name) for name in dataset.values()}


class _Scorer:
    """Turns (probabilities, reference) into per-class scores in the dataset's name space."""

    def __init__(self, model_index: Mapping[str, int], dataset: Mapping[int, str]) -> None:
        self.dataset = dict(dataset)
        self.names = [n for n in dict.fromkeys(dataset.values()) if n != BACKGROUND]
        self.raw_values = {n: [v for v, m in dataset.items() if m == n] for n in self.names}
        self.model_index = dict(model_index)
        self.lesions = [n for n in self.names if n in LESION_CLASSES]
        self.classes = self.names + ([INFECTION] if self.lesions else [])
        self.known_values = sorted(dataset)

    def check_reference(self, ref: np.ndarray, item: str) -> None:
        unknown = np.setdiff1d(np.unique(ref), self.known_values)
        if unknown.size:
            raise ValueError(
                f"Reference of '{item}' holds label values {unknown.tolist()} that the dataset's "
                f"classes do not name (named: {self.known_values})."
            )

    def masks(
        self, probs: np.ndarray, pred: np.ndarray, ref: np.ndarray
    ) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """Per scored class: its name, predicted mask, reference mask and probability map."""
        for name in self.classes:
            members = self.lesions if name == INFECTION else [name]
            model_idx = [self.model_index[m] for m in members]
            raw = [v for m in members for v in self.raw_values[m]]
            prob = np.clip(probs[model_idx].sum(axis=0), 0.0, 1.0)
            yield name, np.isin(pred, model_idx), np.isin(ref, raw), prob

    def score(self, item: str, kind: str, probs: np.ndarray, ref: np.ndarray) -> ItemMetrics:
        pred = probs.argmax(axis=0)
        result = ItemMetrics(item=item, kind=kind, dice={}, cdice={})
        for name, pm, rm, prob in self.masks(probs, pred, ref):
            if kind == "3d":
                result.dice[name] = mean_slice_dice(pm.astype(np.uint8), rm.astype(np.uint8), 1)
                result.vol_dice[name] = dice(pm, rm)
            else:
                result.dice[name] = dice(pm, rm)
            result.cdice[name] = continuous_dice(prob, rm.astype(np.float32))
            result.reference_voxels[name] = int(rm.sum())
            result.predicted_voxels[name] = int(pm.sum())
        return result


def _check_split(split: str | None) -> str:
    split = "all" if split is None else split
    if split not in SPLITS:
        raise ValueError(f"Argument 'split' must be one of {list(SPLITS)}, got {split!r}.")
    return split


def _volume_items(
    root: Path, split: str, val_fraction: float, seed: int, fold: tuple[int, int] | None
) -> list[tuple[str, Path, Path]]:
    """(study id, image path, label path) of the chosen studies that have a label file.

    ``val``/``train`` reproduce training's study split (``split_studies``, same fraction and
    seed); label files of studies marked unlabeled for training still count for evaluation.
    """
    from training.data.volumes import read_dataset_manifest

    records = read_dataset_manifest(root)
    if split != "all":
        train, val = split_studies(records, val_fraction, seed, fold)
        records = val if split == "val" else train
    raw = json.loads((root / "manifest.json").read_text())
    labels = {
        str(s["id"]): s["label"] for s in raw["studies"] if isinstance(s, dict) and s.get("label")
    }
    items = [
        (r.study_id, r.image_path, root / labels[r.study_id])
        for r in records
        if r.study_id in labels
    ]
    if not items:
        raise ValueError(f"Dataset '{root}' has no study with a label file in split '{split}'.")
    return items


def _model_manifest(predictor: Predictor) -> ModelManifest:
    """The exported model's manifest (what its geometry, window and classes come from)."""
    if predictor.manifest is None:
        raise ValueError("The model to evaluate has no manifest; export it with pulmoseg export.")
    return predictor.manifest


def _manifest_class_names(root: Path) -> dict[int, str] | None:
    raw = json.loads((root / "manifest.json").read_text())
    classes = raw.get("classes") if isinstance(raw, dict) else None
    if isinstance(classes, dict) and classes:
        return {int(k): str(v) for k, v in classes.items()}
    return None


def _score_studies(
    predictor: Predictor,
    scorer: _Scorer,
    root: Path,
    split: str,
    val_fraction: float,
    seed: int,
    fold: tuple[int, int] | None,
) -> list[ItemMetrics]:
    """Scores of the labeled studies of a 3D dataset (HU volumes, scored in 3D)."""
    from training.data.volumes import load_volume_zyx  # nibabel: only for 3D datasets

    items = []
    for study_id, image_path, label_path in _volume_items(root, split, val_fraction, seed, fold):
        hu, _ = load_volume_zyx(image_path)
        ref, _ = load_volume_zyx(label_path)
        if ref.shape != hu.shape:
            raise ValueError(
                f"Label '{label_path}' has shape {ref.shape} but image '{image_path}' has "
                f"{hu.shape}."
            )
        ref = np.rint(ref).astype(np.int64)
        scorer.check_reference(ref, study_id)
        probs = predictor.predict_probabilities(hu.astype(np.float32))
        items.append(scorer.score(study_id, "3d", probs, ref))
    return items


def slice_preparation(
    manifest: ModelManifest, recipe: DataConfig | None = None
) -> DataConfig | None:
    """How training prepared and validated the model's 8-bit slices: ``recipe`` (a training
    config's ``data`` section) when given, else what the export recorded in its manifest
    (``training_summary["slice_preparation"]``), else None (the slices are read as they are)."""
    from training.config import DataConfig, DataKind

    if recipe is not None:
        if recipe.kind is not DataKind.SLICES2D or recipe.pixel_window is None:
            raise ValueError(
                "Argument 'recipe' must be the data section of a slices2d recipe with a "
                f"'data.pixel_window', got kind {recipe.kind.value!r} and window "
                f"{recipe.pixel_window}."
            )
        return recipe
    recorded = manifest.training_summary.get(SLICE_PREPARATION_KEY)
    if not isinstance(recorded, dict) or recorded.get("pixel_window") is None:
        return None
    fields = {k: recorded[k] for k in SLICE_PREPARATION_FIELDS if recorded.get(k) is not None}
    return DataConfig(kind=DataKind.SLICES2D, **fields)


def _prepared_scorer(
    dataset: Mapping[int, str], model_names: Sequence[str], preparation: DataConfig
) -> tuple[dict[int, int], _Scorer]:
    """Raw mask value → model index, and a scorer in model indices: the dataset's classes plus
    the lung when training labelled it (``lung_labels``), as training validation scores them."""
    mapping = {raw: list(model_names).index(name) for raw, name in dataset.items()}
    names = {list(model_names).index(name): name for name in dataset.values()}
    if preparation.lung_labels and "lung" in model_names:
        names[list(model_names).index("lung")] = "lung"
    index = {name: i for i, name in names.items()}
    return mapping, _Scorer(index, names)


def _score_slices(
    predictor: Predictor,
    scorer: _Scorer,
    images: Path,
    masks: Path,
    split: str,
    val_fraction: float,
    seed: int,
    fold: tuple[int, int] | None,
    preparation: DataConfig | None = None,
) -> tuple[list[ItemMetrics], _Scorer]:
    """Scores of 8-bit 2D slices, each its own one-slice volume, split by group if asked.

    With a ``preparation`` each slice goes the way training validation takes it: rotated,
    harmonised, lung-labelled and padded (``prepare_slice``), then mapped to HU through the
    intensity contract (``slices_in_hu``); the scores are then in the model's classes."""
    from training.data.slice_folders import list_slice_folder, load_slice  # PIL: only for 2D
    from training.data.slice_preparation import prepare_slice, slices_in_hu

    manifest = _model_manifest(predictor)
    window = manifest.hu_window
    mapping: dict[int, int] = {v: v for v in scorer.known_values}
    if preparation is not None:
        model_names = [c.name for c in manifest.classes]
        mapping, scorer = _prepared_scorer(scorer.dataset, model_names, preparation)
    elif tuple(window) != (0.0, 255.0):
        log.warning(
            "model window %s is not (0, 255) and the model records no slice preparation: "
            "8-bit slices may be misread; pass the training recipe (--recipe) to prepare them "
            "as training validated them",
            window,
        )
    records = list_slice_folder(images, masks)
    if split != "all":
        train, val = split_by_group(records, val_fraction, seed, fold=fold)
        records = val if split == "val" else train
    items = []
    for record in records:
        loaded = load_slice(record, mapping)
        if loaded.label is None:  # cannot happen: masks_dir was given
            raise ValueError(f"Image '{record.image_path}' has no mask.")
        if preparation is not None:
            loaded = prepare_slice(loaded, preparation, [c.name for c in manifest.classes])
            assert preparation.pixel_window is not None  # slice_preparation guarantees it
            loaded = slices_in_hu([loaded], preparation.pixel_window)[0]
        assert loaded.label is not None
        probs = predictor.predict_slice_probabilities(loaded.image.astype(np.float32))
        items.append(scorer.score(record.name, "2d", probs, loaded.label))
    return items, scorer


def evaluate_model(
    model_path: str | Path,
    *,
    dataset_root: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    mask_mapping: Sequence[str] | Mapping[int, str] | None = None,
    split: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: tuple[int, int] | None = None,
    recipe: DataConfig | None = None,
) -> EvaluationReport:
    """Score ``model_path`` on a 3D dataset (``dataset_root``) or a 2D slice folder pair.

    8-bit slice folders are prepared as training validated them (:func:`slice_preparation`:
    ``recipe``, a training config's ``data`` section, or what the model's manifest records),
    so that the CLI reproduces the figures training and the benches report.

    ``mask_mapping`` names the dataset's label values (a list by value, or {value: name});
    default: the 3D manifest's ``classes`` (else the phantom scheme) or COVID-SemiSeg's names
    for 2D. ``split`` (``all``/``train``/``val``; None = all) selects a study split like
    training's or a group split of the slices (``split_by_group``) with ``val_fraction``/``seed``,
    or cross-validation fold ``fold=(i, k)`` (as ``data.cv_fold``/``data.cv_folds``).
    """
    from service.predictor.onnx_backend import load_onnx_predictor

    split = _check_split(split)
    fold = check_fold(fold)
    if fold is not None and split == "all":
        raise ValueError("Argument 'fold' selects a split side: pass split='val' or 'train'.")
    if (dataset_root is None) == (images is None):
        raise ValueError(
            "Pass either 'dataset_root' (a 3D dataset with manifest.json) or 'images' and "
            "'masks' (2D slice folders), not both or neither."
        )
    if images is not None and masks is None:
        raise ValueError(
            f"Argument 'masks' is required with 'images' ({images}): evaluation needs masks."
        )
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"Model file '{model_path}' does not exist.")

    if dataset_root is not None:
        root = Path(dataset_root)
        if not root.is_dir():
            raise FileNotFoundError(f"Dataset folder '{root}' does not exist.")
        if mask_mapping is None:
            mask_mapping = _manifest_class_names(root) or DEFAULT_VOLUME_CLASSES
        dataset = _dataset_classes(mask_mapping, DEFAULT_VOLUME_CLASSES)
        source, kind = str(root), "3d"
    else:
        dataset = _dataset_classes(mask_mapping, DEFAULT_MASK_CLASSES)
        source, kind = str(images), "2d"

    predictor = load_onnx_predictor(model_path)
    manifest = _model_manifest(predictor)
    model_names = [c.name for c in manifest.classes]
    scorer = _Scorer(_model_indices(model_names, dataset, model_path), dataset)

    if kind == "3d":
        items = _score_studies(predictor, scorer, Path(source), split, val_fraction, seed, fold)
    else:
        items, scorer = _score_slices(
            predictor,
            scorer,
            Path(str(images)),
            Path(str(masks)),
            split,
            val_fraction,
            seed,
            fold,
            slice_preparation(manifest, recipe),
        )
    if not items:
        raise ValueError(f"No item to evaluate in '{source}' for split '{split}'.")

    log.info("evaluated %d %s items of %s", len(items), kind, source)
    return EvaluationReport(
        model_path=str(model_path),
        model_name=manifest.name,
        model_version=manifest.version,
        provider=predictor.provider,
        source=source,
        kind=kind,
        split=split,
        classes=scorer.classes,
        items=items,
        summary=summarise_items(items, scorer.classes),
    )
