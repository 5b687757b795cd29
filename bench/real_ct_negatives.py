"""Lesion-free training slices from DICOM studies with slice-level labels (``data.negatives``).

The annotated lesion slices (COVID-SemiSeg) all show infection, cropped to the body: a model
trained on them alone has never seen normal lung, the mediastinum, the abdomen or the CT table,
and calls dependent density, vessels and bowel "lesion" on real studies. A slice that a study's
slice-level labels call infection-free is a complete label map for free: lung from the classical
extraction (``service.core.lung_field``: the per-slice field without airways, within the 3D
aerated lungs without bowel gas), no GGO, no consolidation.

Which slices count as negative, fixed before any training: every slice of a study without
infection labels (a normal study); in a labeled study only slices that are negative whichever
way the label columns run (Slice Location ascending or descending: the dataset's own README does
not say) and at least ``--guard`` slices away from any positive one. Every ``--every``-th such
slice is kept (neighbours 2 mm apart are nearly the same image).

Output: ``OUT/images/<study>_<index>.png`` (8-bit in the model's ``pixel_window``, radiological
orientation, whole field of view), ``OUT/masks/<same>.png`` (model class indices) and
``OUT/provenance.json``. Run ``--exclude`` to keep a study out (leave-one-study-out checks).

    python bench/real_ct_negatives.py --out runs/real_ct_negatives/all
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from real_ct_studies import DEFAULT_DATA, label_rows, study_volume
from scipy import ndimage

from service.core.lung_field import aerated_lung_volume, lung_field_volume
from service.dicom.volume import CTVolume
from training.config import load_config
from training.data.slice_preparation import hu_to_pixels as to_pixels

REPO = Path(__file__).resolve().parents[1]
#: Enclosed soft tissue up to this area is lung (vessels, nodules), as the served constraint.
MAX_HOLE_MM2 = 400.0
#: Denser than this is body (or table); the body is the largest such component.
BODY_HU = -500.0
#: The annotated COVID-SemiSeg slices are JPEGs with the quality-75 quantisation tables.
ANNOTATED_JPEG_QUALITY = 75


def negative_indices(labels: np.ndarray | None, count: int, guard: int) -> list[int]:
    """Slice ranks (Slice Location ascending) that are negative in both label orders and at
    least ``guard`` ranks from any positive one; all of them when the study has no labels."""
    if labels is None:
        return list(range(count))
    row = np.asarray(labels[:count]) > 0
    positive = row | row[::-1]
    return [int(i) for i in np.flatnonzero(~_dilated(positive, guard))]


def _dilated(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for step in range(1, radius + 1):
        out[step:] |= mask[:-step]
        out[:-step] |= mask[step:]
    return out


def body_box(hu: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    """The bounding box of the largest soft-tissue-or-denser component (the body, not the
    table, which is thin and separate), widened by ``margin`` pixels."""
    labels, count = ndimage.label(hu > BODY_HU)
    if count == 0:
        return slice(None), slice(None)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    rows, cols = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    h, w = hu.shape
    return (
        slice(max(int(rows.min()) - margin, 0), min(int(rows.max()) + margin + 1, h)),
        slice(max(int(cols.min()) - margin, 0), min(int(cols.max()) + margin + 1, w)),
    )


def study_lungs(volume: CTVolume) -> np.ndarray:
    """The study's lung label (z, y, x) bool: the per-slice classical field (without airways)
    within the 3D aerated lungs (without bowel gas), as the served constraint sees them."""
    row_mm, col_mm = volume.spacing_zyx[1], volume.spacing_zyx[2]
    lungs: np.ndarray = lung_field_volume(volume.hu) & aerated_lung_volume(
        volume.hu, max_hole_px=MAX_HOLE_MM2 / (row_mm * col_mm)
    )
    return lungs


def write_study_negatives(
    study_dir: Path,
    labels: np.ndarray | None,
    out: Path,
    *,
    window: tuple[float, float],
    lung_index: int,
    every: int,
    guard: int,
    like_annotated: bool = False,
) -> int:
    """Write one study's negative slices; returns how many.

    ``like_annotated``: cropped to the body and stored as JPEG at quality 75, as the annotated
    COVID-SemiSeg slices are, so that neither the CT table and the air around the body nor the
    absence of JPEG artefacts tells the network "no lesion here" (the loader pads them square
    as it pads the annotated ones).
    """
    volume, rank = study_volume(study_dir)
    by_rank = np.argsort(rank)  # by_rank[r] = volume index of the slice ranked r
    picks = negative_indices(labels, len(rank), guard)[::every]
    hu = volume.hu
    lungs = study_lungs(volume)
    for r in picks:
        z = int(by_rank[r])
        stem = f"{study_dir.name}_{r:03d}"
        box = body_box(hu[z]) if like_annotated else (slice(None), slice(None))
        image = Image.fromarray(to_pixels(hu[z][box], window))
        if like_annotated:
            image.save(out / "images" / f"{stem}.jpg", quality=ANNOTATED_JPEG_QUALITY)
        else:
            image.save(out / "images" / f"{stem}.png")
        mask = np.where(lungs[z][box], lung_index, 0).astype(np.uint8)
        Image.fromarray(mask).save(out / "masks" / f"{stem}.png")
    return len(picks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=REPO / "training/configs/real_ct.yaml")
    parser.add_argument("--exclude", nargs="*", default=[], help="study folder names to skip")
    parser.add_argument("--every", type=int, default=2, help="keep every N-th negative slice")
    parser.add_argument("--guard", type=int, default=2, help="slices kept away from positives")
    parser.add_argument(
        "--like-annotated",
        action="store_true",
        help="crop to the body and store as JPEG (quality 75), as the annotated slices are",
    )
    args = parser.parse_args(argv)

    config = load_config(args.config)
    window = config.data.pixel_window
    if window is None or "lung" not in config.model.class_names:
        print(f"{args.config}: needs data.pixel_window and a 'lung' class.", file=sys.stderr)
        return 2
    study_root = args.data / "studies"
    if not study_root.is_dir():
        print(f"No studies under '{study_root}'.", file=sys.stderr)
        return 2
    rows = label_rows(args.data)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for study in sorted(p for p in study_root.iterdir() if p.is_dir()):
        if study.name in args.exclude:
            continue
        counts[study.name] = write_study_negatives(
            study,
            rows.get(study.name),
            args.out,
            window=(float(window[0]), float(window[1])),
            lung_index=list(config.model.class_names).index("lung"),
            every=args.every,
            guard=args.guard,
            like_annotated=args.like_annotated,
        )
        print(f"{study.name}: {counts[study.name]} negative slices", flush=True)
    provenance = {
        "source": str(args.data),
        "slices": counts,
        "excluded": args.exclude,
        "every": args.every,
        "guard": args.guard,
        "like_annotated": args.like_annotated,
        "window_hu": list(window),
        "rule": "no infection label in either label order, guard slices from any positive",
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
