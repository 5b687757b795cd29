"""3D study datasets: manifest reading, volume loading and 2.5D batches (study splits:
``training.data.splits``).

Volumes are held as (z, y, x) arrays in LPS order (x → patient left, y → posterior, z →
superior) — the same array layout the service builds from a DICOM series — so a model sees
the same orientation in training and at serving time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import nibabel as nib
import numpy as np
import torch
from nibabel.spatialimages import SpatialImage

from service.core.preprocessing import slice_context_stack
from training.nn.resize import resize_images, resize_labels


@dataclass(frozen=True)
class StudyRecord:
    """One study of a dataset manifest; ``label_path`` is None for unlabeled studies."""

    study_id: str
    image_path: Path
    label_path: Path | None
    dicom_dir: Path | None = None

    @property
    def labeled(self) -> bool:
        return self.label_path is not None


def read_dataset_manifest(root: str | Path) -> list[StudyRecord]:
    """Read ``root/manifest.json``: a list of studies with image/label paths relative to root.

    Accepted per-study keys: ``id``, ``image`` and optional ``label`` (paths), ``labeled``
    (a study with ``labeled: false`` is treated as unlabeled even if a label file exists),
    optional ``dicom``.
    """
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"Dataset folder '{root}' has no manifest.json; generate one with 'pulmoseg phantom'."
        )
    raw = json.loads(manifest_path.read_text())
    studies = raw.get("studies") if isinstance(raw, dict) else None
    if not isinstance(studies, list) or not studies:
        raise ValueError(f"'{manifest_path}' must hold a non-empty list under 'studies'.")
    records = []
    for i, entry in enumerate(studies):
        try:
            study_id = str(entry["id"])
            image = root / entry["image"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"Study #{i} of '{manifest_path}' lacks key {exc}.") from exc
        label = entry.get("label")
        labeled = bool(entry.get("labeled", label is not None))
        dicom = entry.get("dicom")
        records.append(
            StudyRecord(
                study_id=study_id,
                image_path=image,
                label_path=(root / label) if (label and labeled) else None,
                dicom_dir=(root / dicom) if dicom else None,
            )
        )
    return records


def load_nifti_zyx(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load a NIfTI volume reoriented to LPS as (z, y, x), with its spacing (z, y, x) in mm."""
    img = nib.load(str(path))
    if not isinstance(img, SpatialImage):
        raise ValueError(f"'{path}' is not a volume image (got {type(img).__name__}).")
    current = nib.orientations.io_orientation(img.affine)
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    transform = nib.orientations.ornt_transform(current, target)
    data = nib.orientations.apply_orientation(np.asanyarray(img.dataobj), transform)
    zooms = img.header.get_zooms()[:3]
    spacing_xyz = [float(zooms[int(np.where(current[:, 0] == k)[0][0])]) for k in range(3)]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), (
        spacing_xyz[2],
        spacing_xyz[1],
        spacing_xyz[0],
    )


def load_npz_zyx(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load a volume the service's capture wrote (``service.capture``): an ``.npz`` holding
    ``volume`` already in the service's (z, y, x) layout, and ``spacing_zyx`` in mm."""
    with np.load(str(path), allow_pickle=False) as data:
        missing = {"volume", "spacing_zyx"} - set(data.files)
        if missing:
            raise ValueError(
                f"'{path}' is not a captured volume: it lacks {sorted(missing)} "
                f"(has {sorted(data.files)})."
            )
        volume = np.asarray(data["volume"])
        spacing = [float(v) for v in np.asarray(data["spacing_zyx"]).reshape(-1)]
    if volume.ndim != 3 or len(spacing) != 3:
        raise ValueError(
            f"'{path}' must hold a 3D volume and 3 spacings, got shape {volume.shape} and "
            f"{len(spacing)} spacing(s)."
        )
    return volume, (spacing[0], spacing[1], spacing[2])


def load_volume_zyx(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A volume (z, y, x) and its spacing from NIfTI or a captured ``.npz``, by file suffix."""
    if str(path).endswith(".npz"):
        return load_npz_zyx(path)
    return load_nifti_zyx(path)


@dataclass
class LoadedStudy:
    """A study in memory: HU volume and (optional) label volume, both (z, y, x)."""

    record: StudyRecord
    hu: np.ndarray
    label: np.ndarray | None
    spacing_zyx: tuple[float, float, float]


def load_study(record: StudyRecord) -> LoadedStudy:
    hu, spacing = load_volume_zyx(record.image_path)
    label = None
    if record.label_path is not None:
        label, _ = load_volume_zyx(record.label_path)
        if label.shape != hu.shape:
            raise ValueError(
                f"Study '{record.study_id}': label shape {label.shape} differs from "
                f"image {hu.shape}."
            )
        label = label.astype(np.int64)
    return LoadedStudy(record, hu.astype(np.float32), label, spacing)


class SliceBatchSampler:
    """Draws random 2.5D slice batches from labeled studies, lesion slices oversampled."""

    def __init__(
        self,
        studies: list[LoadedStudy],
        *,
        slice_context: int,
        input_size: tuple[int, int],
        lesion_oversampling: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.studies = [s for s in studies if s.label is not None]
        if not self.studies:
            raise ValueError("SliceBatchSampler needs at least one labeled study.")
        self.slice_context = slice_context
        self.input_size = input_size
        self.rng = np.random.default_rng(seed)
        index, weights = [], []
        for si, study in enumerate(self.studies):
            assert study.label is not None
            has_lesion = np.any((study.label >= 2).reshape(study.label.shape[0], -1), axis=1)
            for z in range(study.hu.shape[0]):
                index.append((si, z))
                weights.append(lesion_oversampling if has_lesion[z] else 1.0)
        self.index = index
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: HU stacks (B, C, H, W) float32 and labels (B, H, W) int64."""
        picks = self.rng.choice(len(self.index), size=batch_size, p=self.weights)
        images, labels = [], []
        for p in picks:
            si, z = self.index[p]
            study = self.studies[si]
            assert study.label is not None
            stack = slice_context_stack(study.hu, self.slice_context, np.array([z]))[0]
            lab = study.label[z]
            if self.rng.random() < 0.5:  # left-right mirror: anatomy is roughly symmetric
                stack, lab = stack[..., ::-1], lab[..., ::-1]
            images.append(np.ascontiguousarray(stack))
            labels.append(np.ascontiguousarray(lab))
        x = torch.from_numpy(np.stack(images))
        y = torch.from_numpy(np.stack(labels))
        return resize_batch(x, y, self.input_size)


class ImageSliceSampler:
    """Uniformly drawn 2.5D slice stacks of any study (labels unused) with their positions."""

    def __init__(
        self, studies: list[LoadedStudy], *, slice_context: int, input_size: tuple[int, int]
    ) -> None:
        if not studies:
            raise ValueError(
                "Argument 'studies' is empty; image sampling needs at least one study."
            )
        self.studies = studies
        self.slice_context = slice_context
        self.input_size = input_size
        self.index = [(si, z) for si, s in enumerate(studies) for z in range(s.hu.shape[0])]

    def sample(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """HU stacks ``(B, C, H, W)``, slice indices ``(B,)`` and volume depths ``(B,)``."""
        picks = rng.integers(0, len(self.index), size=batch_size)
        stacks, z_index, depth = [], [], []
        for p in picks:
            si, z = self.index[int(p)]
            hu = self.studies[si].hu
            stacks.append(slice_context_stack(hu, self.slice_context, np.array([z]))[0])
            z_index.append(z)
            depth.append(hu.shape[0])
        x, _ = resize_batch(torch.from_numpy(np.stack(stacks)), None, self.input_size)
        return x.float(), torch.tensor(z_index), torch.tensor(depth)


@overload
def resize_batch(
    x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def resize_batch(x: torch.Tensor, y: None, size: tuple[int, int]) -> tuple[torch.Tensor, None]: ...


def resize_batch(
    x: torch.Tensor, y: torch.Tensor | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample images (bilinear) and labels (nearest) in-plane to the network's input size."""
    return resize_images(x, size), (None if y is None else resize_labels(y, size))
