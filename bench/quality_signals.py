"""Consistency VolDice against reference VolDice on phantom studies: the figure of
docs/monitoring.md ("consistency is not accuracy").

Two untrained ONNX models (tests/service/quality/hu_model.py) label voxels by HU: one purely
by value (exactly equivariant under flips and rotations), one with a position-dependent term.
For each phantom study the script computes, with the service's own functions, the GGO
consistency VolDice (``service.quality.consistency``) and the GGO VolDice against the phantom's
true mask, prints a table, and draws a scatter plot with Pillow.

    python bench/quality_signals.py [--studies 16] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "service" / "quality"))

from hu_model import write_hu_model  # noqa: E402

from service.core.segmentation_metrics import vol_dice  # noqa: E402
from service.predictor.onnx_backend import load_onnx_predictor  # noqa: E402
from service.quality.consistency import consistency_voldice  # noqa: E402
from service.quality.transforms import ConsistencyTransform  # noqa: E402
from training.data.volumes import load_nifti_zyx  # noqa: E402
from training.phantom import generate_dataset  # noqa: E402

GGO = 2
SIZE, SLICES = 64, 24
COLOURS = {"HU only (equivariant)": (31, 119, 180), "HU + position ramp": (214, 39, 40)}


def measure(studies: int, seed: int, work: Path) -> dict[str, list[tuple[float, float]]]:
    manifest = generate_dataset(
        work / "phantoms",
        studies=studies,
        seed=seed,
        size=SIZE,
        slices=SLICES,
        lesion_free_fraction=0.0,
        progress=False,
    )
    records = json.loads(manifest.read_text())["studies"]
    models = {
        "HU only (equivariant)": write_hu_model(work / "flat.onnx", SIZE, ramp=0.0),
        "HU + position ramp": write_hu_model(work / "ramp.onnx", SIZE, ramp=1.5),
    }
    transforms = list(ConsistencyTransform)
    out: dict[str, list[tuple[float, float]]] = {}
    for name, path in models.items():
        predictor = load_onnx_predictor(path)
        points = []
        for i, study in enumerate(records):
            hu, _ = load_nifti_zyx(manifest.parent / study["image"])
            truth, _ = load_nifti_zyx(manifest.parent / study["label"])
            truth = np.rint(truth).astype(np.uint8)
            labels = predictor.predict_labels(hu.astype(np.float32))
            consistency = consistency_voldice(
                predictor.predict_labels,
                hu.astype(np.float32),
                labels,
                {GGO: "ggo"},
                transforms[i % len(transforms)],
            )["ggo"]
            points.append((consistency, vol_dice(labels, truth, GGO)))
        out[name] = points
    return out


def plot(points: dict[str, list[tuple[float, float]]], path: Path) -> None:
    w, h, m = 720, 560, 70
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
    d.text(((x0 + x1) / 2 - 120, h - 30), "consistency VolDice (GGO, label-free)", fill="black")
    d.text((10, 14), "reference VolDice (GGO, against the true mask)", fill="black")
    d.text(
        (x0 + 10, y1 + 8),
        "consistency is not accuracy: phantom studies, two HU models",
        fill="black",
    )
    for k, (name, pts) in enumerate(points.items()):
        colour = COLOURS[name]
        for cx, cy in pts:
            px, py = xy(cx, cy)
            d.ellipse([px - 5, py - 5, px + 5, py + 5], outline=colour, width=2)
        d.ellipse([x0 + 12, y1 + 34 + 18 * k, x0 + 22, y1 + 44 + 18 * k], outline=colour, width=2)
        d.text((x0 + 30, y1 + 32 + 18 * k), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs/images/quality-consistency-vs-reference.png"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pulmoseg-quality-") as tmp:
        points = measure(args.studies, args.seed, Path(tmp))
    print(f"{'model':24} {'consistency mean':>16} {'reference mean':>14} {'corr':>6}")
    for name, pts in points.items():
        c = np.array([p[0] for p in pts])
        r = np.array([p[1] for p in pts])
        corr = float(np.corrcoef(c, r)[0, 1]) if c.std() > 0 and r.std() > 0 else float("nan")
        print(f"{name:24} {c.mean():16.3f} {r.mean():14.3f} {corr:6.2f}")
    plot(points, args.out)
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s, {args.studies} studies)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
