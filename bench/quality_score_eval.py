"""Does the label-free quality score predict error? Fit and evaluation of ``quality_score``.

1. **Phantoms with controlled shifts** (``training.phantom``, 160×160×64): clean, added noise,
   a smooth and a sharp reconstruction kernel, thick slices (2 and 3 slices averaged), HU
   offsets, partial coverage. Each is segmented by the shipped real-CT model
   (``models/pulmoseg-real-ct.onnx``, lung-field confinement as served) and gets, with the
   service's own functions, every candidate signal (``service.quality.score_signals``: the
   consistency pass with lesion entropy, the applicability check's lung field) and its true
   lesion VolDice (GGO ∪ consolidation against the phantom's masks). Studies whose true lesions
   are under 1 mL (VolDice meaningless) are left out.
2. **Fit / test split by seed**: even phantom seeds fit the logistic coefficients and pick the
   threshold (at most 10 % of the fit half's good studies, VolDice >= 0.5, flagged); odd seeds
   report catch rate (VolDice < 0.5 studies flagged), false-alarm rate and Spearman ρ, per single
   signal (each with its own 10 % threshold) and for the combination.
3. **Real studies**: the shared COVID-CT-MD studies; score against the slice error rate (a slice
   is an error when its predicted lesion area, >= 50 mm² positive, disagrees with its label).
4. **Out of scope**: pydicom's non-chest CT series and partial chest phantoms: each must be
   flagged by the applicability check with its reason.

    python bench/quality_score_eval.py [--seeds 40] [--rows runs/quality/rows.json]
        [--fit-only] [--image docs/images/quality-score.png]

Prints the tables (markdown) and the fitted constants for ``service/quality/quality_score.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.core.lung_field import manifest_confinement  # noqa: E402
from service.core.segmentation_metrics import class_volumes_ml  # noqa: E402
from service.predictor import Predictor  # noqa: E402
from service.predictor.onnx_backend import load_onnx_predictor  # noqa: E402
from service.quality.applicability import check_applicability, check_volume  # noqa: E402
from service.quality.clinical import LESIONS, LUNG, clinical_summary  # noqa: E402
from service.quality.consistency import transformed_prediction  # noqa: E402
from service.quality.quality_score import (  # noqa: E402
    FEATURES_WITH_TTA,
    FEATURES_WITHOUT_TTA,
    ScoreVariant,
    feature_vector,
)
from service.quality.score_signals import QualitySignals, study_signals  # noqa: E402
from service.quality.transforms import ConsistencyTransform  # noqa: E402
from service.quality.tta import EntropyRecordingPredictor  # noqa: E402
from training.phantom import study_seed, synthesize_study  # noqa: E402

MODEL = REPO / "models" / "pulmoseg-real-ct.onnx"
SIZE, SLICES = 160, 64
LESION_IDS = (2, 3)
MIN_TRUE_LESION_ML = 1.0
GOOD_VOLDICE = 0.5
MAX_FALSE_ALARM = 0.10
SLICE_MIN_AREA_MM2 = 50.0


def _thick(hu: np.ndarray, label: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k slices averaged into one (a thicker reconstruction); truth: lesion where >= half."""
    d = (hu.shape[0] // k) * k
    thick = hu[:d].reshape(d // k, k, *hu.shape[1:]).mean(axis=1)
    lab = label[:d].reshape(d // k, k, *label.shape[1:])
    lesion = np.isin(lab, LESION_IDS).mean(axis=1) >= 0.5
    lung = (lab > 0).mean(axis=1) >= 0.5
    out = np.where(lesion, 2, np.where(lung, 1, 0)).astype(np.uint8)
    return thick, out


def shifts(
    hu: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """Controlled shifts of one phantom: name -> (HU, truth labels, spacing)."""
    hu = hu.astype(np.float32)
    out = {"clean": (hu, label, spacing)}
    for std in (40, 80):
        out[f"noise_{std}"] = (hu + rng.normal(0, std, hu.shape).astype(np.float32), label, spacing)
    out["kernel_smooth"] = (ndimage.gaussian_filter(hu, (0, 1.5, 1.5)), label, spacing)
    blurred = ndimage.gaussian_filter(hu, (0, 1.0, 1.0))
    out["kernel_sharp"] = (hu + 2.0 * (hu - blurred), label, spacing)
    for k in (2, 3):
        thick, lab = _thick(hu, label, k)
        out[f"thick_x{k}"] = (thick, lab, (spacing[0] * k, spacing[1], spacing[2]))
    for offset in (-150, 80, 150, 300):
        out[f"offset_{offset:+d}"] = (hu + offset, label, spacing)
    lo, hi = int(0.35 * hu.shape[0]), int(0.7 * hu.shape[0])
    out["partial_35pct"] = (hu[lo:hi], label[lo:hi], spacing)
    return out


def lesion_voldice(pred: np.ndarray, truth: np.ndarray) -> float:
    a, b = np.isin(pred, LESION_IDS), np.isin(truth, LESION_IDS)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def serve_like(
    predictor: Predictor, hu: np.ndarray, spacing: tuple[float, float, float], index: int
) -> tuple[np.ndarray, QualitySignals, list[str], float]:
    """What the service computes for a study: labels, signals, applicability reasons, seconds
    spent on the quality signals beyond segmentation (consistency pass + signals)."""
    manifest = predictor.manifest
    if manifest is None:
        raise ValueError(f"Model {MODEL} carries no manifest.")
    hu = np.ascontiguousarray(hu, dtype=np.float32)
    applicability = check_applicability(hu, spacing, manifest=manifest)
    labels = predictor.predict_labels(hu)
    field = manifest_confinement(hu, spacing, manifest)
    if field is not None:
        labels = field.confine(labels)
    started = time.perf_counter()
    tta = EntropyRecordingPredictor(predictor, LESION_IDS)
    transform = list(ConsistencyTransform)[index % len(ConsistencyTransform)]
    back = transformed_prediction(
        tta, hu, labels, transform, confine=None if field is None else field.confine
    )
    classes = manifest.foreground_classes
    volumes = class_volumes_ml(labels, spacing, [c.index for c in classes])
    clinical = clinical_summary({c.name: float(volumes[c.index]) for c in classes})
    signals = study_signals(
        labels=labels,
        spacing_zyx=spacing,
        lung_classes=[c.index for c in classes if c.name in (LUNG, *LESIONS)],
        lesion_classes=list(LESION_IDS),
        lesion_volume_ml=clinical.lesion_volume_ml,
        lung_volume_ml=clinical.lung_volume_ml,
        aerated_lungs=applicability.aerated_lungs,
        lung_stride=applicability.lung_stride,
        transformed_back=back,
        entropy_sum=tta.entropy_sum,
        entropy_voxels=tta.lesion_voxels,
    )
    return labels, signals, applicability.reason_values, time.perf_counter() - started


def measure_phantoms(predictor: Predictor, seeds: int, base_seed: int) -> list[dict]:
    rows: list[dict] = []
    started = time.perf_counter()
    for i in range(seeds):
        study = synthesize_study(study_seed(base_seed, i), size=SIZE, slices=SLICES)
        rng = np.random.default_rng([base_seed, i, 7])
        for name, (hu, truth, spacing) in shifts(
            study.hu, study.label, study.spacing_zyx, rng
        ).items():
            voxel_ml = float(np.prod(spacing)) / 1000.0
            true_ml = float(np.isin(truth, LESION_IDS).sum()) * voxel_ml
            labels, signals, reasons, seconds = serve_like(predictor, hu, spacing, i)
            rows.append(
                {
                    "seed_index": i,
                    "shift": name,
                    "true_lesion_ml": true_ml,
                    "voldice": lesion_voldice(labels, truth),
                    "signals": signals.as_dict(),
                    "applicability": reasons,
                    "signal_seconds": seconds,
                }
            )
        print(f"phantom {i + 1}/{seeds} done ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


# --- fitting ------------------------------------------------------------------------------


def features(rows: list[dict], variant: ScoreVariant) -> np.ndarray:
    return np.array(
        [list(feature_vector(QualitySignals(**r["signals"]), variant).values()) for r in rows]
    )


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> tuple[float, np.ndarray]:
    """Logistic regression by Newton's method on standardised features, mapped back to raw."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([np.ones((len(x), 1)), (x - mu) / sd])
    w = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) + l2 * np.r_[0, w[1:]]
        hess = (z.T * (p * (1 - p))) @ z + l2 * np.diag(np.r_[0, np.ones(len(w) - 1)])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[1:] / sd
    return float(w[0] - (weights * mu).sum()), weights


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(v, -60, 60)))


def pick_threshold(scores: np.ndarray, good: np.ndarray) -> float:
    """The largest threshold (flag: score < t) flagging at most 10 % of the good studies."""
    ranked = np.sort(scores[good])
    k = int(np.floor(MAX_FALSE_ALARM * len(ranked)))
    return float(ranked[k]) if len(ranked) else 0.5


def evaluate(scores: np.ndarray, voldice: np.ndarray, threshold: float) -> dict[str, float]:
    bad = voldice < GOOD_VOLDICE
    flagged = scores < threshold
    rho = stats.spearmanr(scores, voldice).statistic if scores.std() > 0 else float("nan")
    return {
        "catch": float(flagged[bad].mean()) if bad.any() else float("nan"),
        "false_alarm": float(flagged[~bad].mean()) if (~bad).any() else float("nan"),
        "rho": float(rho),
        "n_bad": int(bad.sum()),
        "n": len(scores),
    }


#: Single signals as scores (higher = more trusted).
SINGLE = {
    "TTA agreement (lesion consistency VolDice)": lambda s: _v(
        s, "consistency_lesion_voldice", 1.0
    ),
    "− lesion entropy": lambda s: -_v(s, "lesion_entropy", 0.0),
    "lung vs classical lung field Dice": lambda s: _v(s, "lung_field_dice", 0.0),
    "− lesion outside aerated lung": lambda s: -_v(s, "lesion_outside_lung", 0.0),
    "− lesion / lung volume": lambda s: -_v(s, "lesion_lung_ratio", 0.0),
}


def _v(signals: dict, key: str, default: float) -> float:
    value = signals.get(key)
    return default if value is None else float(value)


def fit_and_report(rows: list[dict]) -> tuple[dict, list[str]]:
    rows = [r for r in rows if r["true_lesion_ml"] >= MIN_TRUE_LESION_ML]
    fit = [r for r in rows if r["seed_index"] % 2 == 0]
    test = [r for r in rows if r["seed_index"] % 2 == 1]
    vd_fit = np.array([r["voldice"] for r in fit])
    vd_test = np.array([r["voldice"] for r in test])
    lines = [
        f"Phantom studies: {len(fit)} fit (even seeds), {len(test)} test (odd seeds); "
        f"VolDice < {GOOD_VOLDICE}: {int((vd_fit < GOOD_VOLDICE).sum())} fit, "
        f"{int((vd_test < GOOD_VOLDICE).sum())} test.",
        "",
        "| signal (test half) | threshold | catch VolDice<0.5 | false alarms | Spearman ρ |",
        "|---|---|---|---|---|",
    ]
    for name, fn in SINGLE.items():
        s_fit = np.array([fn(r["signals"]) for r in fit])
        s_test = np.array([fn(r["signals"]) for r in test])
        t = pick_threshold(s_fit, vd_fit >= GOOD_VOLDICE)
        e = evaluate(s_test, vd_test, t)
        lines.append(
            f"| {name} | {t:.3f} | {e['catch']:.0%} | {e['false_alarm']:.0%} | {e['rho']:.2f} |"
        )
    fitted: dict = {}
    for variant, names in (
        (ScoreVariant.WITH_TTA, FEATURES_WITH_TTA),
        (ScoreVariant.WITHOUT_TTA, FEATURES_WITHOUT_TTA),
    ):
        b, w = fit_logistic(features(fit, variant), (vd_fit >= GOOD_VOLDICE).astype(float))
        s_fit = sigmoid(b + features(fit, variant) @ w)
        s_test = sigmoid(b + features(test, variant) @ w)
        t = pick_threshold(s_fit, vd_fit >= GOOD_VOLDICE)
        e = evaluate(s_test, vd_test, t)
        fitted[variant.value] = {
            "intercept": round(b, 4),
            "weights": [round(float(v), 4) for v in w],
            "features": list(names),
            "threshold": round(t, 4),
            "test": e,
            "test_scores": s_test.tolist(),
        }
        lines.append(
            f"| **quality_score ({variant.value})** | {t:.3f} | **{e['catch']:.0%}** | "
            f"**{e['false_alarm']:.0%}** | **{e['rho']:.2f}** |"
        )
    # per shift, with the shipped variant
    lines += [
        "",
        "| shift (test half) | studies | mean true VolDice | mean score | flagged |",
        "|---|---|---|---|---|",
    ]
    s_test = np.array(fitted[ScoreVariant.WITH_TTA.value]["test_scores"])
    t = fitted[ScoreVariant.WITH_TTA.value]["threshold"]
    for shift in dict.fromkeys(r["shift"] for r in test):
        idx = [k for k, r in enumerate(test) if r["shift"] == shift]
        lines.append(
            f"| {shift} | {len(idx)} | {vd_test[idx].mean():.2f} | {s_test[idx].mean():.2f} | "
            f"{(s_test[idx] < t).mean():.0%} |"
        )
    return fitted, lines


# --- real studies and out-of-scope -------------------------------------------------------


def real_studies(predictor: Predictor, data: Path, fitted: dict) -> list[str]:
    sys.path.insert(0, str(REPO / "bench"))
    from real_ct_studies import label_rows, study_volume

    rows = label_rows(data)
    model = fitted[ScoreVariant.WITH_TTA.value]
    lines = [
        "| study | slices | quality_score | flagged | slice error rate | applicability |",
        "|---|---|---|---|---|---|",
    ]
    for study_dir in sorted((data / "studies").iterdir()):
        volume, rank = study_volume(study_dir)
        hu = volume.hu.astype(np.float32)
        labels, signals, _, seconds = serve_like(predictor, hu, volume.spacing_zyx, 0)
        reasons = check_volume(volume, predictor.manifest).reason_values
        score = float(
            sigmoid(
                model["intercept"]
                + np.dot(
                    model["weights"], list(feature_vector(signals, ScoreVariant.WITH_TTA).values())
                )
            )
        )
        area = (
            np.isin(labels, LESION_IDS).sum(axis=(1, 2))
            * volume.spacing_zyx[1]
            * volume.spacing_zyx[2]
        )
        predicted = np.zeros(len(rank), dtype=int)
        for z in range(len(rank)):
            predicted[rank[z]] = int(area[z] >= SLICE_MIN_AREA_MM2)
        row = rows.get(study_dir.name)
        truth = (
            np.zeros(len(rank), dtype=int) if row is None else np.asarray(row[: len(rank)])[::-1]
        )
        error = float((predicted != truth).mean())
        lines.append(
            f"| {study_dir.name} | {len(rank)} | {score:.3f} | {score < model['threshold']} | "
            f"{error:.1%} | {', '.join(reasons) or 'applicable'} |"
        )
        print(
            f"real study {study_dir.name}: score {score:.3f}, signal seconds {seconds:.1f}",
            flush=True,
        )
    return lines


def out_of_scope(predictor: Predictor, base_seed: int) -> list[str]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from service.dicom.volume import series_to_volume

    lines = ["| series | flagged | reasons |", "|---|---|---|"]
    corpus = Path(str(get_testdata_file("CT_small.dcm"))).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(corpus.glob("*.dcm")):
            try:
                ds = pydicom.dcmread(path)
                if getattr(ds, "Modality", "") != "CT":
                    continue
                if "FrameOfReferenceUID" not in ds:
                    ds.FrameOfReferenceUID = generate_uid()
                result = check_volume(series_to_volume([ds]), predictor.manifest)
            except Exception as exc:  # broken files of pydicom's own tests
                if getattr(ds, "Modality", "") == "CT":
                    lines.append(f"| pydicom {path.name} | refused | {type(exc).__name__} |")
                continue
            lines.append(
                f"| pydicom {path.name} (non-chest) | {not result.applicable} | "
                f"{', '.join(result.reason_values)} |"
            )
    for i in range(3):
        study = synthesize_study(study_seed(base_seed + 1, i), size=SIZE, slices=SLICES)
        for lo, hi in ((0.0, 0.3), (0.4, 0.6)):
            a, b = int(lo * SLICES), int(hi * SLICES)
            result = check_applicability(
                study.hu[a:b].astype(np.float32), study.spacing_zyx, manifest=predictor.manifest
            )
            lines.append(
                f"| partial chest phantom {i} slices {a}-{b} | {not result.applicable} | "
                f"{', '.join(result.reason_values)} |"
            )
    return lines


def _best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def serving_cost(predictor: Predictor, data: Path, base_seed: int) -> list[str]:
    """Seconds the score adds to a study, best of 3: the entropy bookkeeping in the consistency
    pass (recorder against plain ``predict_labels`` on the transformed copy) and the signals
    (no inference; the lung field is the applicability check's)."""
    sys.path.insert(0, str(REPO / "bench"))
    from real_ct_studies import study_volume

    cases = []
    study = synthesize_study(study_seed(base_seed, 0), size=SIZE, slices=SLICES)
    cases.append((f"phantom {SIZE}²×{SLICES}", study.hu.astype(np.float32), study.spacing_zyx))
    p002 = data / "studies" / "P002"
    if p002.exists():
        volume, _ = study_volume(p002)
        shape = "×".join(str(v) for v in volume.hu.shape[1:]) + f"×{volume.hu.shape[0]}"
        cases.append(
            (f"COVID-CT-MD P002 {shape}", volume.hu.astype(np.float32), volume.spacing_zyx)
        )
    lines = [
        "| study | consistency pass (s) | + entropy (s) | signals (s) | added by the score (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [_cost_row(predictor, name, hu, spacing) for name, hu, spacing in cases]
    return lines


def _cost_row(predictor: Predictor, name: str, hu: np.ndarray, spacing: tuple) -> str:
    applicability = check_applicability(hu, spacing, manifest=predictor.manifest)
    labels = predictor.predict_labels(hu)
    flipped = ConsistencyTransform.FLIP_X.apply(hu)
    tta = EntropyRecordingPredictor(predictor, LESION_IDS)
    plain = _best_of(lambda: predictor.predict_labels(flipped))
    recorded = _best_of(lambda: tta(flipped))
    back = ConsistencyTransform.FLIP_X.invert(tta(flipped))

    def signals() -> None:
        study_signals(
            labels=labels,
            spacing_zyx=spacing,
            lung_classes=[1, 2, 3],
            lesion_classes=list(LESION_IDS),
            lesion_volume_ml=1.0,
            lung_volume_ml=1.0,
            aerated_lungs=applicability.aerated_lungs,
            lung_stride=applicability.lung_stride,
            transformed_back=back,
            entropy_sum=tta.entropy_sum,
            entropy_voxels=tta.lesion_voxels,
        )

    t_signals = _best_of(signals)
    extra = max(recorded - plain, 0.0)
    return f"| {name} | {plain:.2f} | {extra:.2f} | {t_signals:.2f} | {extra + t_signals:.2f} |"


def plot(rows: list[dict], fitted: dict, path: Path) -> None:
    from PIL import Image, ImageDraw

    test = [r for r in rows if r["true_lesion_ml"] >= MIN_TRUE_LESION_ML and r["seed_index"] % 2]
    model = fitted[ScoreVariant.WITH_TTA.value]
    scores = model["test_scores"]
    w, h, m = 760, 580, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = m, h - m, w - 30, 40

    def xy(cx: float, cy: float) -> tuple[float, float]:
        return x0 + cx * (x1 - x0), y0 - cy * (y0 - y1)

    for t in np.linspace(0, 1, 6):
        gx, _ = xy(t, 0)
        _, gy = xy(0, t)
        d.line([(gx, y0), (gx, y1)], fill=(230, 230, 230))
        d.line([(x0, gy), (x1, gy)], fill=(230, 230, 230))
        d.text((gx - 8, y0 + 8), f"{t:.1f}", fill="black")
        d.text((x0 - 30, gy - 6), f"{t:.1f}", fill="black")
    d.rectangle([x0, y1, x1, y0], outline="black")
    tx, _ = xy(model["threshold"], 0)
    d.line([(tx, y0), (tx, y1)], fill=(214, 39, 40), width=2)
    _, gy = xy(0, GOOD_VOLDICE)
    d.line([(x0, gy), (x1, gy)], fill=(120, 120, 120), width=1)
    d.text(((x0 + x1) / 2 - 150, h - 30), "quality_score (label-free, with TTA)", fill="black")
    d.text((10, 14), "true lesion VolDice (phantom masks), test seeds", fill="black")
    d.text((tx + 4, y1 + 4), f"flag threshold {model['threshold']:.2f}", fill=(214, 39, 40))
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75)]
    kinds = ["clean", "noise", "kernel", "thick", "offset", "partial"]
    for r, s in zip(test, scores, strict=True):
        k = next(i for i, name in enumerate(kinds) if r["shift"].startswith(name))
        colour = (palette + [(127, 127, 127)])[k]
        px, py = xy(s, r["voldice"])
        d.ellipse([px - 4, py - 4, px + 4, py + 4], outline=colour, width=2)
    for k, name in enumerate(kinds):
        colour = (palette + [(127, 127, 127)])[k]
        d.ellipse([x0 + 12, y1 + 10 + 16 * k, x0 + 20, y1 + 18 + 16 * k], outline=colour, width=2)
        d.text((x0 + 26, y1 + 8 + 16 * k), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=2311)
    parser.add_argument("--rows", type=Path, default=REPO / "runs/quality/rows.json")
    parser.add_argument("--fit-only", action="store_true", help="reuse --rows, measure nothing")
    parser.add_argument(
        "--cost-only", action="store_true", help="only the seconds the score adds per study"
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/covid-ct-md")
    parser.add_argument("--image", type=Path, default=REPO / "docs/images/quality-score.png")
    args = parser.parse_args()
    started = time.perf_counter()
    predictor = load_onnx_predictor(MODEL, intra_op_threads=1, cpu_only=True)
    if args.cost_only:
        print("\n".join(serving_cost(predictor, args.data, args.seed)))
        return 0
    if args.fit_only:
        rows = json.loads(args.rows.read_text())
    else:
        rows = measure_phantoms(predictor, args.seeds, args.seed)
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        args.rows.write_text(json.dumps(rows))
    fitted, lines = fit_and_report(rows)
    seconds = [r["signal_seconds"] for r in rows if r["shift"] == "clean"]
    machine = platform.processor() or platform.machine()
    print(f"\n## Phantoms ({machine}, {datetime.now(UTC):%Y-%m-%d})\n")
    print("\n".join(lines))
    print(
        f"\nquality signals: {np.mean(seconds):.2f} s per 64-slice phantom (consistency pass incl.)"
    )
    print("\n## Fitted constants\n")
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "test_scores"} for k, v in fitted.items()},
            indent=1,
        )
    )
    print("\n## Out of scope\n")
    print("\n".join(out_of_scope(predictor, args.seed)))
    if args.data.exists():
        print("\n## Real studies (COVID-CT-MD)\n")
        print("\n".join(real_studies(predictor, args.data, fitted)))
    plot(rows, fitted, args.image)
    print(f"\nwrote {args.image}; {time.perf_counter() - started:.0f} s in all, pid {os.getpid()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
