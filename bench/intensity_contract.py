"""Which HU window were COVID-SemiSeg's 8-bit slices displayed in? Measured, then checked.

The release says only "already in a lung window". Tissues with known, stable attenuation show
as histogram peaks in every chest slice: aerated lung (about -890 HU in these scanners'
studies), fat (about -100 HU) and soft tissue/blood (about +35 HU). This script

1. finds the three peaks in the DICOM studies of ``covid-ct-md`` (HU, inside the body) and in
   each labeled COVID-SemiSeg slice (pixel values);
2. fits pixel = a * HU + b by least squares over the per-slice peaks matched to the studies'
   median peak HU, which gives the window lo = -b / a, hi = (255 - b) / a;
3. windows the three studies with the fitted window and plots their histograms beside the
   training slices' (``docs/images/intensity_contract.png``): if the contract holds, the peaks
   fall on top of each other.

The fitted window goes into ``training/configs/real_ct.yaml`` as ``data.pixel_window`` and
``model.hu_window`` (the exported graph then maps HU to the training intensities).

    python bench/intensity_contract.py [--semiseg ../shared/data/covid-semiseg]
        [--studies ../shared/data/covid-ct-md/studies] [--plot docs/images/intensity_contract.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from scipy import ndimage
from scipy.signal import find_peaks

from training.data.slice_preparation import harmonized

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TISSUES = ("lung", "fat", "soft tissue")
#: Pixel ranges in which each tissue's peak is looked for in the 8-bit slices (wide: the
#: windows differ between the release's sources).
PIXEL_RANGES = {"lung": (5, 110), "fat": (160, 200), "soft tissue": (195, 245)}
HU_RANGES = {"lung": (-1000, -700), "fat": (-160, -60), "soft tissue": (0, 80)}


def _peak(hist: np.ndarray, lo: int, hi: int, offset: int = 0) -> float | None:
    smooth = ndimage.gaussian_filter1d(hist.astype(float), 2 if offset == 0 else 6)
    peaks, _ = find_peaks(smooth, prominence=smooth.sum() * 1e-3)
    inside = [p for p in peaks if lo <= p - offset <= hi]
    return float(max(inside, key=lambda p: smooth[p]) - offset) if inside else None


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Inside the patient (the air around and the table excluded)."""
    dense = ndimage.binary_opening(hu > -500, iterations=2)
    labels, count = ndimage.label(dense)
    if count == 0:
        return dense
    sizes = ndimage.sum_labels(dense, labels, np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)


def read_hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def study_histogram(folder: Path, step: int = 3) -> np.ndarray:
    """HU histogram (-1200..1199) of the body over the middle half of a study's slices."""
    files = sorted(folder.glob("*.dcm"))
    hist = np.zeros(2400)
    for path in files[len(files) // 4 : 3 * len(files) // 4 : step]:
        hu = read_hu(path)
        values = np.clip(hu[body_mask(hu)], -1200, 1199).astype(int) + 1200
        hist += np.bincount(values, minlength=2400)
    return hist


def slice_histograms(images: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(images.glob("*.jpg")):
        with Image.open(path) as img:
            out[path.stem] = np.bincount(np.asarray(img.convert("L")).ravel(), minlength=256)
    return out


def fit_window(
    slice_peaks: list[dict[str, float]], tissue_hu: dict[str, float]
) -> tuple[float, float]:
    """Least-squares pixel = a*HU + b over every (slice, tissue) peak; returns (lo, hi)."""
    xs, ys = [], []
    for peaks in slice_peaks:
        for tissue, pixel in peaks.items():
            xs.append(tissue_hu[tissue])
            ys.append(pixel)
    a, b = np.polyfit(np.array(xs), np.array(ys), 1)
    return float(-b / a), float((255.0 - b) / a)


def windowed_histogram(hist_hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map an HU histogram (-1200..1199) through the window to 256 pixel bins."""
    lo, hi = window
    hu = np.arange(-1200, 1200)
    pixels = np.clip(np.rint((np.clip(hu, lo, hi) - lo) / (hi - lo) * 255), 0, 255).astype(int)
    return np.bincount(pixels, weights=hist_hu, minlength=256)


def harmonized_histograms(
    semiseg: Path, window: tuple[float, float], tissue_hu: tuple[float, float]
) -> dict[str, np.ndarray]:
    """Histograms of the labeled slices after per-slice harmonisation (what training sees)."""
    out = {}
    for path in sorted((semiseg / "train" / "images").glob("*.jpg")):
        with Image.open(path) as img:
            image = np.asarray(img.convert("L"))
        with Image.open(semiseg / "train" / "masks" / f"{path.stem}.png") as img:
            label = np.asarray(img)
        out[path.stem] = np.bincount(
            harmonized(image, label, window, tissue_hu).ravel(), minlength=256
        )
    return out


def plot(
    path: Path,
    slices: dict[str, np.ndarray],
    studies: dict[str, np.ndarray],
    window: tuple[float, float],
    harmonized_slices: dict[str, np.ndarray] | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    train = sum(h / h.sum() for h in slices.values()) / len(slices)
    ax.plot(
        np.arange(256),
        train,
        color="grey",
        lw=1.5,
        ls="--",
        label="COVID-SemiSeg slices as released",
    )
    if harmonized_slices:
        h = sum(v / v.sum() for v in harmonized_slices.values()) / len(harmonized_slices)
        ax.plot(np.arange(256), h, color="black", lw=2, label="… harmonised (what training sees)")
    for name, hist in studies.items():
        h = windowed_histogram(hist, window)
        ax.plot(np.arange(256), h / h.sum(), lw=1.2, label=f"{name} (DICOM, windowed)")
    ax.set_xlim(0, 255)
    ax.set_ylim(0, 0.03)
    ax.set_xlabel(
        f"network input intensity (pixel units; window {window[0]:.0f}…{window[1]:.0f} HU)"
    )
    ax.set_ylabel("fraction of body pixels")
    ax.legend(fontsize=8)
    ax.set_title("One intensity contract: training slices vs DICOM studies in HU, windowed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--semiseg", type=Path, default=SHARED / "covid-semiseg")
    parser.add_argument("--studies", type=Path, default=SHARED / "covid-ct-md" / "studies")
    parser.add_argument("--plot", type=Path, default=REPO / "docs/images/intensity_contract.png")
    args = parser.parse_args(argv)

    studies = {p.name: study_histogram(p) for p in sorted(args.studies.iterdir()) if p.is_dir()}
    study_peaks = {
        name: {t: _peak(h, *HU_RANGES[t], offset=1200) for t in TISSUES}
        for name, h in studies.items()
    }
    tissue_hu = {
        t: float(np.median([p[t] for p in study_peaks.values() if p[t] is not None]))
        for t in TISSUES
    }
    slices = slice_histograms(args.semiseg / "train" / "images")
    slice_peaks = []
    for hist in slices.values():
        peaks = {t: _peak(hist, *PIXEL_RANGES[t]) for t in TISSUES}
        slice_peaks.append({t: v for t, v in peaks.items() if v is not None})
    window = fit_window(slice_peaks, tissue_hu)
    median_pixels = {t: float(np.median([p[t] for p in slice_peaks if t in p])) for t in TISSUES}
    found = {t: sum(t in p for p in slice_peaks) for t in TISSUES}
    print(
        "| tissue | studies' peak (HU) | training slices' median peak (px) | slices with it | "
        "studies windowed (px) |"
    )
    print("|---|---|---|---|---|")
    lo, hi = window
    for t in TISSUES:
        windowed = (tissue_hu[t] - lo) / (hi - lo) * 255
        print(
            f"| {t} | {tissue_hu[t]:.0f} | {median_pixels[t]:.0f} | {found[t]}/{len(slices)} | "
            f"{windowed:.0f} |"
        )
    print(f"\nfitted window: lo = {lo:.0f} HU, hi = {hi:.0f} HU (width {hi - lo:.0f})")
    print(json.dumps({"pixel_window": [round(lo), round(hi)], "study_peaks_hu": study_peaks}))
    anchors_hu = (tissue_hu["lung"], tissue_hu["soft tissue"])
    rounded = (float(round(lo)), float(round(hi)))
    harmonised = harmonized_histograms(args.semiseg, rounded, anchors_hu)
    peaks_after = [_peak(h, *PIXEL_RANGES["lung"]) for h in harmonised.values()]
    study_lung_px = (anchors_hu[0] - rounded[0]) / (rounded[1] - rounded[0]) * 255
    spread_before = np.percentile([p["lung"] for p in slice_peaks if "lung" in p], [10, 90])
    spread_after = np.percentile([p for p in peaks_after if p is not None], [10, 90])
    print(
        f"normal-lung peak of the training slices, 10th-90th percentile: {spread_before[0]:.0f}-"
        f"{spread_before[1]:.0f} px as released, {spread_after[0]:.0f}-{spread_after[1]:.0f} px "
        f"harmonised (studies: {study_lung_px:.0f})"
    )
    if args.plot:
        plot(args.plot, slices, studies, rounded, harmonised)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
