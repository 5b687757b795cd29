"""Inference cost of an ensemble model against one of its members, side by side.

Times ONNX Runtime (CPU, or the providers the service would pick) on the same batch of slices
for a single exported model and for an ensemble exported by
``training.export.onnx_export.export_ensemble``
(e.g. ``runs/bench/covid_cv5/best_model.onnx`` against ``.../supervised/fold0/model.onnx``),
and prints seconds per slice and the ratio. Figures go to docs/benchmarks.md.

    python bench/ensemble_cost.py --single M.onnx --ensemble E.onnx [--slices 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from service.predictor.onnx_backend import load_onnx_predictor


def seconds_per_slice(model: Path, volume: np.ndarray, repeats: int) -> float:
    """Median wall time of ``predict_probabilities`` over ``repeats`` runs, per slice."""
    predictor = load_onnx_predictor(model)
    predictor.predict_probabilities(volume)  # warm-up: session and memory arenas
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict_probabilities(volume)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) / volume.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=Path, required=True, help="one exported model")
    parser.add_argument("--ensemble", type=Path, required=True, help="an exported ensemble")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for path in (args.single, args.ensemble):
        if not path.is_file():
            raise SystemExit(f"error: model '{path}' does not exist.")
    predictor = load_onnx_predictor(args.ensemble)
    h, w = predictor.manifest.input_size
    lo, hi = predictor.manifest.hu_window
    volume = np.random.default_rng(0).uniform(lo, hi, (args.slices, h, w)).astype(np.float32)
    single = seconds_per_slice(args.single, volume, args.repeats)
    ensemble = seconds_per_slice(args.ensemble, volume, args.repeats)
    members = predictor.manifest.training_summary.get("ensemble_members", "?")
    print(f"{platform.machine()}, provider {predictor.provider}, {args.slices} slices {h}x{w}")
    print("| model | s / slice | ratio |\n|---|---|---|")
    print(f"| single ({args.single.name}) | {single:.4f} | 1.00 |")
    ratio = ensemble / single
    print(f"| ensemble of {members} ({args.ensemble.name}) | {ensemble:.4f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
