"""A phantom data set on disk: one folder per study (DICOM series, NIfTI image and label) and
a ``manifest.json`` that says which studies are labeled and what each one holds.

The training code reads real formats only, so phantoms go through the same doors a user's
archive does. Writing is deterministic: same arguments, byte-identical files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import generate_uid
from tqdm import tqdm

from training.phantom.checks import check_fraction, check_int
from training.phantom.dicom_writer import write_ct_series
from training.phantom.labels import LABEL_OF, LUNG
from training.phantom.lesions import LesionMix
from training.phantom.nifti_writer import write_nifti
from training.phantom.synthesis import (
    is_lesion_free,
    phantom_spacing,
    study_seed,
    synthesize_study,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "pulmoseg-phantom"
MANIFEST_VERSION = 1


def study_uids(seed: int, index: int, size: int, slices: int) -> tuple[str, str]:
    """(StudyInstanceUID, SeriesInstanceUID), reproducible from what determines the pixels."""
    base = ["pulmoseg-phantom", str(seed), str(index), str(size), str(slices)]
    return (
        generate_uid(entropy_srcs=[*base, "study"]),
        generate_uid(entropy_srcs=[*base, "series"]),
    )


def generate_dataset(
    out_dir: Path,
    studies: int,
    seed: int,
    size: int = 128,
    slices: int = 48,
    labeled_fraction: float = 1.0,
    lesion_free_fraction: float = 0.2,
    progress: bool = True,
    lesion_mix: LesionMix | None = None,
) -> Path:
    """Generate ``studies`` phantom studies under ``out_dir`` and return the manifest path.

    Study ``i`` depends only on (seed, i, size, slices, lesion_free_fraction, lesion_mix; None
    is the default :class:`LesionMix`), so a larger data set extends a smaller one.
    ``labeled`` marks the first ``round(labeled_fraction * studies)`` studies of a seeded
    permutation: the ones training may use labels of (label files are written for all, for
    evaluation).
    """
    check_int("studies", studies, minimum=1)
    check_int("seed", seed, minimum=0)
    spacing = phantom_spacing(size, slices)
    check_fraction("labeled_fraction", labeled_fraction)
    check_fraction("lesion_free_fraction", lesion_free_fraction)
    if not isinstance(out_dir, str | os.PathLike):
        raise TypeError(f"Argument 'out_dir' must be a path, got {type(out_dir).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    mix = LesionMix() if lesion_mix is None else lesion_mix
    n_labeled = math.floor(labeled_fraction * studies + 0.5)
    order = np.random.default_rng([seed, 0x1ABE1]).permutation(studies)
    labeled = {int(i) for i in order[:n_labeled]}
    records = []
    for i in tqdm(range(studies), desc="phantom", unit="study", disable=not progress):
        records.append(
            _write_study(out_dir, seed, i, size, slices, lesion_free_fraction, i in labeled, mix)
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "seed": seed,
        "num_studies": studies,
        "size": size,
        "slices": slices,
        "spacing_zyx": list(spacing),
        "labeled_fraction": labeled_fraction,
        "lesion_free_fraction": lesion_free_fraction,
        "lesion_mix": mix.to_dict(),
        "classes": {str(value): name for name, value in LABEL_OF.items()},
        "axes": "NIfTI (x, y, z) RAS affine; DICOM LPS, slice index grows towards superior",
        "studies": records,
    }
    path = out_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    logger.info(
        "phantom data set written: %d studies (%d labeled, %d with lesions) in %s",
        studies,
        n_labeled,
        sum(r["has_lesions"] for r in records),
        out_dir,
    )
    return path


def read_phantom_manifest(path: Path) -> dict[str, Any]:
    """Load a phantom manifest, resolving each study's relative paths against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Argument 'path': no phantom manifest at {path}")
    data = json.loads(path.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"Argument 'path': {path} is not a {MANIFEST_FORMAT} manifest "
            f"(format={data.get('format')!r})"
        )
    for record in data["studies"]:
        for key in ("image", "label", "dicom"):
            record[f"{key}_path"] = str(path.parent / record[key])
    return data


def _write_study(
    out_dir: Path,
    seed: int,
    index: int,
    size: int,
    slices: int,
    lesion_free_fraction: float,
    labeled: bool,
    lesion_mix: LesionMix,
) -> dict[str, Any]:
    sseed = study_seed(seed, index)
    lesion_free = is_lesion_free(seed, index, lesion_free_fraction)
    study = synthesize_study(
        sseed, size, slices, with_lesions=not lesion_free, lesion_mix=lesion_mix
    )
    study_id = f"phantom_{index:04d}"
    study_uid, series_uid = study_uids(seed, index, size, slices)
    folder = out_dir / study_id
    write_ct_series(
        study.hu,
        study.spacing_zyx,
        folder / "dicom",
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=f"PHANTOM^{index:04d}",
        patient_id=f"PHANTOM-{index:04d}",
        seed=sseed,
        origin_lps=study.origin_lps,
        study_id=f"{index:04d}",
    )
    write_nifti(study.hu, study.spacing_zyx, study.origin_lps, folder / "image.nii.gz")
    write_nifti(study.label, study.spacing_zyx, study.origin_lps, folder / "label.nii.gz")
    return {
        "id": study_id,
        "image": f"{study_id}/image.nii.gz",
        "label": f"{study_id}/label.nii.gz",
        "dicom": f"{study_id}/dicom",
        "labeled": labeled,
        "has_lesions": study.has_lesions,
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "lesion_voxels": study.lesion_voxels(),
        "lung_voxels": int(np.count_nonzero(study.label == LUNG)),
        "num_lesions": len(study.lesions),
        "shape_zyx": list(study.hu.shape),
        "spacing_zyx": list(study.spacing_zyx),
        "origin_lps": list(study.origin_lps),
        "noise_std_hu": study.noise_std_hu,
        "seed": sseed,
    }


__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "generate_dataset",
    "read_phantom_manifest",
    "study_uids",
]
