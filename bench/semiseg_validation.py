"""Exported real-CT models on the COVID-SemiSeg validation slices: did the lesion Dice hold?

The 8 annotated slices that pick the real-CT recipes' checkpoints (``data.val_fraction`` 0.16,
seed 0: the same split for 1.1.0 and 2.0) are prepared exactly as training validates them
(rotation, per-slice harmonisation, pixels to HU through the intensity contract) and segmented
by each exported ONNX model through the service's predictor. Reported per model: mean per-slice
Dice of lung, GGO, consolidation and infection (GGO ∪ consolidation), and the pooled infection
Dice over all 8 slices.

    python bench/semiseg_validation.py runs/model_1.1.0.onnx models/pulmoseg-real-ct.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from service.core.segmentation_metrics import dice
from service.predictor.onnx_backend import load_onnx_predictor
from training.config import load_config
from training.data.slice_preparation import slices_in_hu
from training.data.sources import SliceSource

REPO = Path(__file__).resolve().parents[1]
SEMISEG = REPO.parent / "shared" / "data" / "covid-semiseg"


def validation_slices(config_path: Path, semiseg: Path) -> tuple[list, list[str]]:
    config = load_config(config_path)
    config.data.root = str(semiseg)
    config.data.negatives = None
    config.weak.studies = None
    window = config.data.pixel_window
    assert window is not None
    val = SliceSource(config).load(with_unlabeled=False).val
    return slices_in_hu(val, window), list(config.model.class_names)


def scores(model: Path, slices: list, names: list[str]) -> dict[str, float]:
    predictor = load_onnx_predictor(model, intra_op_threads=2)
    lesions = [names.index("ggo"), names.index("consolidation")]
    per_slice: dict[str, list[float]] = {n: [] for n in ("lung", "ggo", "consolidation")}
    per_slice["infection"] = []
    pooled_pred, pooled_true = [], []
    for item in slices:
        pred = predictor.predict_slice_probabilities(item.image.astype(np.float32)).argmax(axis=0)
        for name in ("lung", "ggo", "consolidation"):
            index = names.index(name)
            per_slice[name].append(dice(pred == index, item.label == index))
        infected_pred, infected_true = np.isin(pred, lesions), np.isin(item.label, lesions)
        per_slice["infection"].append(dice(infected_pred, infected_true))
        pooled_pred.append(infected_pred.ravel())
        pooled_true.append(infected_true.ravel())
    result = {name: float(np.mean(values)) for name, values in per_slice.items()}
    result["pooled infection"] = dice(np.concatenate(pooled_pred), np.concatenate(pooled_true))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+", help="exported ONNX models")
    parser.add_argument("--semiseg", type=Path, default=SEMISEG)
    parser.add_argument("--config", type=Path, default=REPO / "training/configs/real_ct_2.yaml")
    args = parser.parse_args(argv)
    if not args.semiseg.is_dir():
        print(f"No COVID-SemiSeg folder '{args.semiseg}'.", file=sys.stderr)
        return 2
    slices, names = validation_slices(args.config, args.semiseg)
    columns = ("lung", "ggo", "consolidation", "infection", "pooled infection")
    print(f"{len(slices)} validation slices")
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for model in args.models:
        result = scores(model, slices, names)
        print(f"| {model} | " + " | ".join(f"{result[c]:.3f}" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
