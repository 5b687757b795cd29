"""Are the synthetic lesions real-looking in HU? Their HU histograms against annotated lesions.

The annotated COVID-SemiSeg lesions (GGO, consolidation), mapped to HU through the project's
intensity contract (each slice re-windowed on its own lung and soft-tissue peaks, as training
sees them), are the reference. The synthetic lesions are inserted by
``training.data.synthetic_lesions`` into the lesion-free slices of the COVID-CT-MD studies
(``bench/real_ct_weak_slices.py`` output), exactly as the 2.0 recipe's batches do. Printed per
class: percentiles of HU, the overlap of the two histograms (1 = identical) and the 1-D
Wasserstein distance in HU; the plot goes to ``--plot``.

    python bench/synthetic_lesion_realism.py --weak runs/real_ct_weak \
        --plot docs/images/synthetic_lesion_hu.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import wasserstein_distance

from training.config import load_config
from training.data.sources import SliceSource
from training.data.synthetic_lesions import CONSOLIDATION, GGO, insert_lesions
from training.data.weak_studies import lesion_free_indices, load_weak_studies

REPO = Path(__file__).resolve().parents[1]
SEMISEG = REPO.parent / "shared" / "data" / "covid-semiseg"
BINS = np.arange(-1100.0, 201.0, 25.0)


def annotated_lesion_hu(config_path: Path, semiseg: Path) -> dict[str, np.ndarray]:
    """HU of every annotated lesion pixel of the 50 slices, as the training data source maps
    them (rotation, harmonisation, window)."""
    config = load_config(config_path)
    config.data.root = str(semiseg)
    config.data.negatives = None
    config.weak.studies = None
    source = SliceSource(config)
    data = source.load(with_unlabeled=False)
    window = config.data.pixel_window
    assert window is not None
    names = list(config.model.class_names)
    values: dict[str, list[np.ndarray]] = {"ggo": [], "consolidation": []}
    for item in data.train_labeled + data.val:
        assert item.label is not None
        hu = item.image.astype(np.float32) * ((window[1] - window[0]) / 255.0) + window[0]
        for name in values:
            values[name].append(hu[item.label == names.index(name)])
    return {name: np.concatenate(parts) for name, parts in values.items()}


def synthetic_lesion_hu(weak: Path, slices: int, seed: int) -> dict[str, np.ndarray]:
    """HU of synthetic lesion pixels over ``slices`` random lesion-free study slices."""
    rng = np.random.default_rng(seed)
    studies = load_weak_studies(weak)
    pool = [(s, int(z)) for s in studies for z in lesion_free_indices(s.slice_labels, 1)]
    values: dict[str, list[np.ndarray]] = {"ggo": [], "consolidation": []}
    for pick in rng.choice(len(pool), size=slices):
        study, z = pool[int(pick)]
        out = insert_lesions(study.hu[z].astype(np.float32), study.lung[z], study.spacing_mm, rng)
        values["ggo"].append(out.hu[out.label == GGO])
        values["consolidation"].append(out.hu[out.label == CONSOLIDATION])
    return {name: np.concatenate(parts) for name, parts in values.items()}


def histogram_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the bin-wise minimum of the two normalised histograms (1 = identical)."""
    ha, _ = np.histogram(np.clip(a, BINS[0], BINS[-1]), BINS)
    hb, _ = np.histogram(np.clip(b, BINS[0], BINS[-1]), BINS)
    return float(np.minimum(ha / max(ha.sum(), 1), hb / max(hb.sum(), 1)).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weak", type=Path, default=REPO / "runs" / "real_ct_weak")
    parser.add_argument("--semiseg", type=Path, default=SEMISEG)
    parser.add_argument("--config", type=Path, default=REPO / "training/configs/real_ct_2.yaml")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if not args.semiseg.is_dir() or not args.weak.is_dir():
        print(f"Needs '{args.semiseg}' and '{args.weak}'.", file=sys.stderr)
        return 2
    real = annotated_lesion_hu(args.config, args.semiseg)
    synthetic = synthetic_lesion_hu(args.weak, args.slices, args.seed)
    print("| class | source | pixels | P10 | P25 | median | P75 | P90 | overlap | W1 (HU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("ggo", "consolidation"):
        overlap = histogram_overlap(real[name], synthetic[name])
        distance = wasserstein_distance(real[name], synthetic[name])
        for label, values in (
            ("annotated (COVID-SemiSeg)", real[name]),
            ("synthetic", synthetic[name]),
        ):
            p = np.percentile(values, [10, 25, 50, 75, 90])
            tail = f"{overlap:.2f} | {distance:.0f}" if label == "synthetic" else "— | —"
            print(
                f"| {name} | {label} | {values.size} | "
                + " | ".join(f"{v:.0f}" for v in p)
                + f" | {tail} |"
            )
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ax, name in zip(axes, ("ggo", "consolidation"), strict=True):
            for label, values in (("annotated", real[name]), ("synthetic", synthetic[name])):
                ax.hist(
                    np.clip(values, BINS[0], BINS[-1]), BINS, density=True, alpha=0.5, label=label
                )
            ax.set_title(name)
            ax.set_xlabel("HU")
            ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
