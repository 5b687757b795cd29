"""Whole DICOM slices in HU with slice- and lobe-level labels, at the network's resolution
(``data.weak_studies`` of the real-CT 2.0 recipe).

Training reads no DICOM (``training`` never imports ``service.dicom``), so this script does
the study reading once: each study is loaded as the server loads it (same series selection,
same UID repair), every whole 512² slice is resized to the model's input size with the
service's own resize (``service.core.preprocessing.resize_planes``: the network sees these
slices exactly as it sees a served study, table, diaphragm and all), and the classical lung
field (``service.core.lung_field``: per-slice field without airways, within the 3D aerated
lungs without bowel gas) is resampled alongside.

Labels (COVID-CT-MD): the slice-level row of the study and its lobe-level rows (5 lobes), the
columns read **head first** (Slice Location descending, the order settled in
``docs/results.md``); a study without an infection row (a normal study) gets 0 on every slice.
A study with no labels at all would get -1 (unknown: unlabeled data only).

Output per study ``OUT/<study>.npz``: ``hu`` (N, H, W) int16, ``lung`` (N, H, W) bool,
``slice_labels`` (N,) int8, ``lobe_labels`` (N, 5) int8, ``spacing_mm`` (row, col) at the
network's size, ``slice_location`` (N,) float; slices ordered head first. Plus
``OUT/provenance.json``.

    python bench/real_ct_weak_slices.py --out runs/real_ct_weak
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from real_ct_negatives import study_lungs
from real_ct_studies import DEFAULT_DATA, label_rows, lobe_label_rows, study_volume

from service.core.preprocessing import resize_planes
from training.config import load_config

REPO = Path(__file__).resolve().parents[1]


def weak_study_arrays(
    study_dir: Path,
    slice_row: np.ndarray | None,
    lobe_rows: np.ndarray | None,
    size: tuple[int, int],
) -> dict[str, np.ndarray]:
    """One study's slices at ``size``, head first, with their lung field and labels."""
    volume, rank = study_volume(study_dir)
    count = len(rank)
    head_first = np.argsort([-float(ds.SliceLocation) for ds in volume.datasets], kind="stable")
    hu = volume.hu
    row_mm, col_mm = volume.spacing_zyx[1], volume.spacing_zyx[2]
    lungs = study_lungs(volume)
    small_hu = resize_planes(hu[head_first].astype(np.float32), size)
    small_lung = resize_planes(lungs[head_first].astype(np.float32), size) >= 0.5
    if slice_row is None:
        slices = np.zeros(count, dtype=np.int8)  # a study without an infection row: normal
        lobes = np.zeros((count, 5), dtype=np.int8)
    else:
        slices = np.asarray(slice_row[:count], dtype=np.int8)
        lobes = (
            np.asarray(lobe_rows[:count], dtype=np.int8)
            if lobe_rows is not None
            else np.full((count, 5), -1, dtype=np.int8)
        )
    h, w = hu.shape[1:]
    return {
        "hu": np.clip(np.rint(small_hu), -32768, 32767).astype(np.int16),
        "lung": small_lung,
        "slice_labels": slices,
        "lobe_labels": lobes,
        "spacing_mm": np.array([row_mm * h / size[0], col_mm * w / size[1]], dtype=np.float32),
        "slice_location": np.array(
            [float(volume.datasets[z].SliceLocation) for z in head_first], dtype=np.float32
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="COVID-CT-MD folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=REPO / "training/configs/real_ct.yaml")
    parser.add_argument("--studies", nargs="*", help="study folder names (default: all)")
    args = parser.parse_args(argv)

    study_root = args.data / "studies"
    if not study_root.is_dir():
        print(f"No studies under '{study_root}'.", file=sys.stderr)
        return 2
    size = tuple(int(v) for v in load_config(args.config).model.input_size)
    slice_rows, lobe_rows = label_rows(args.data), lobe_label_rows(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.studies or sorted(p.name for p in study_root.iterdir() if p.is_dir())
    counts = {}
    for name in names:
        arrays = weak_study_arrays(
            study_root / name, slice_rows.get(name), lobe_rows.get(name), (size[0], size[1])
        )
        np.savez_compressed(args.out / f"{name}.npz", **arrays)
        labels = arrays["slice_labels"]
        counts[name] = {"slices": int(labels.size), "positive": int((labels == 1).sum())}
        print(f"{name}: {counts[name]}", flush=True)
    provenance = {
        "source": str(args.data),
        "studies": counts,
        "size": list(size),
        "label_order": "head first (Slice Location descending)",
        "lung": "classical lung field x 3D aerated lungs (service.core.lung_field)",
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
