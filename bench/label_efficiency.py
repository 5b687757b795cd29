"""Label-efficiency benchmark on phantoms: does TCSM with 5x fewer labels match full labels?

Methods (same fixed phantom data, same test studies, several seeds):
  sup100        supervised, all training studies labeled
  sup20         supervised, 20 % of the studies labeled
  tcsm20        sup20's weights, then TCSM on the 20 % labeled + 80 % unlabeled studies
  pre_tcsm20    contrastive pre-training (global + local) on all training studies, then
                supervised on the 20 %, then TCSM with the unlabeled rest

Each seed draws a different labeled subset and a different initialisation. Every final model
is exported to ONNX and scored with ``pulmoseg evaluate``'s code on held-out test studies
(VolDice per class). Resumable: re-running skips finished runs and stages.

    python bench/label_efficiency.py [--seeds 0 1 2] [--out runs/bench/label_efficiency]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from training.config import config_from_dict
from training.evaluation.evaluate import evaluate_model
from training.experiment import run_experiment
from training.export.onnx_export import export_onnx
from training.phantom import LesionMix, generate_dataset

TRAIN_STUDIES, TEST_STUDIES = 20, 10
LABELED_FRACTION = 0.2
DATA_SEED, TEST_SEED = 2026, 9090
METHODS = ("sup100", "sup20", "tcsm20", "pre_tcsm20")
#: The benchmark's lesions: consolidation in every study with lesions (so a per-study
#: consolidation VolDice never compares two empty masks), at sizes a 96-px matrix resolves,
#: and few lesions per study, so that 4 labeled studies show few examples of each kind.
BENCH_MIX = LesionMix(
    ggo_count=(1, 4),
    consolidation_probability=1.0,
    consolidation_count=(1, 3),
    consolidation_radius_mm=(8.0, 25.0),
)
SETTINGS_FILE = "bench_settings.json"
CLASSES = ("lung", "ggo", "consolidation", "infection")


def experiment(
    method: str,
    seed: int,
    data_root: Path,
    out: Path,
    size: int,
    scale: float,
    tcsm_epochs: int = 6,
    consistency_weight: float = 1.0,
) -> dict:
    """The experiment config of one method; step counts scale with ``scale``."""

    def steps(n: int) -> int:
        return max(1, round(n * scale))

    stages = {
        "sup100": ["supervised"],
        "sup20": ["supervised"],
        "tcsm20": ["supervised", "tcsm"],
        "pre_tcsm20": ["pretrain_global", "pretrain_local", "supervised", "tcsm"],
    }[method]
    return {
        "output_dir": str(out),
        "seed": seed,
        "stages": stages,
        "data": {"root": str(data_root), "val_fraction": 0.0, "lesion_oversampling": 3.0},
        "model": {
            "slice_context": 3,
            "features": [16, 16, 32, 64, 128, 16],
            "input_size": [size, size],
        },
        "optim": {
            "loss": "dice_ce",
            "lr": 3e-3,
            "epochs": 10,
            "steps_per_epoch": steps(100),
            "batch_size": 8,
            "bf16": True,
        },
        "pretrain_global": {
            "epochs": 3,
            "steps_per_epoch": steps(100),
            "batch_size": 16,
            "temperature": 0.1,
            "partition_positives": True,
            "partitions": 4,
        },
        "pretrain_local": {
            "epochs": 3,
            "steps_per_epoch": steps(100),
            "batch_size": 8,
            "temperature": 0.1,
            "num_regions": 13,
            "region_size": 3,
        },
        "tcsm": {
            "epochs": tcsm_epochs,
            "steps_per_epoch": steps(100),
            "batch_size": 4,
            "unlabeled_batch_size": 4,
            "lr": 1e-3,
            "ema_decay": 0.99,
            "consistency_weight": consistency_weight,
            "rampup_steps": steps(300),
        },
        "runtime": {"tensorboard": False, "checkpoint_every": steps(100)},
        "export": {"name": f"phantom-{method}", "version": f"seed{seed}"},
    }


def write_manifest(source_manifest: Path, target_root: Path, labeled: set[str]) -> Path:
    """A manifest over the same volumes with its own labeled subset (paths point back)."""
    raw = json.loads(source_manifest.read_text())
    rel = Path("..") / source_manifest.parent.name
    for study in raw["studies"]:
        for key in ("image", "label", "dicom"):
            if study.get(key):
                study[key] = str(rel / study[key])
        study["labeled"] = study["id"] in labeled
    target_root.mkdir(parents=True, exist_ok=True)
    (target_root / "manifest.json").write_text(json.dumps(raw, indent=1))
    return target_root


def run_one(
    method: str,
    seed: int,
    work: Path,
    size: int,
    scale: float,
    tcsm_epochs: int = 6,
    consistency_weight: float = 1.0,
) -> dict:
    result_file = work / "runs" / f"{method}_seed{seed}" / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    run_dir = result_file.parent
    data_root = work / ("labels_100" if method == "sup100" else f"labels_20_seed{seed}")
    if method == "tcsm20":  # TCSM continues from sup20's supervised stage of the same seed
        sup20_stage = work / "runs" / f"sup20_seed{seed}" / "supervised"
        if sup20_stage.is_dir() and not (run_dir / "supervised").exists():
            shutil.copytree(sup20_stage, run_dir / "supervised")
    config = config_from_dict(
        experiment(method, seed, data_root, run_dir, size, scale, tcsm_epochs, consistency_weight)
    )
    started = time.perf_counter()
    trained = run_experiment(config, resume=True, progress=False)
    train_seconds = time.perf_counter() - started
    if not trained.finished or trained.final_checkpoint is None:
        raise RuntimeError(f"{method} seed {seed} did not finish")
    model_path = run_dir / "model.onnx"
    export_onnx(trained.final_checkpoint, model_path)
    report = evaluate_model(model_path, dataset_root=work / "test")
    vol = report.summary["vol_dice"]
    result = {
        "method": method,
        "seed": seed,
        "train_seconds": train_seconds,
        "vol_dice": {c: vol[c]["mean"] for c in CLASSES if c in vol},
        "model": str(model_path),
    }
    result_file.write_text(json.dumps(result, indent=1))
    return result


def stratified_subset(ids: list[str], strata: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of ``ids`` drawn per stratum (largest-remainder quotas).

    With 4 labeled studies of 20, a plain draw can hold 2 lesion-free studies (seed 0 did in
    the first run of this data), which measures the draw rather than the method; drawing
    lesion and lesion-free studies in proportion keeps every seed's labeled set alike.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for item, stratum in zip(ids, strata, strict=True):
        groups.setdefault(stratum, []).append(item)
    target = round(fraction * len(ids))
    quotas = {k: fraction * len(v) for k, v in sorted(groups.items())}
    counts = {k: int(q) for k, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda k: quotas[k] - counts[k], reverse=True)
    for k in by_remainder[: target - sum(counts.values())]:
        counts[k] += 1
    chosen: set[str] = set()
    for k, members in sorted(groups.items()):
        chosen.update(members[i] for i in rng.permutation(len(members))[: counts[k]])
    return chosen


def check_settings(work: Path, settings: dict) -> None:
    """Resuming in a folder made with other data settings would mix two benchmarks: refuse."""
    path = work / SETTINGS_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            raise SystemExit(
                f"error: '{work}' holds a benchmark with other data settings ({previous}); "
                "pass another --out."
            )
        return
    if (work / "phantoms").exists():
        raise SystemExit(
            f"error: '{work}' holds phantoms of unknown settings (no {SETTINGS_FILE}); "
            "pass another --out."
        )
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/label_efficiency_v3"))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tcsm-epochs", type=int, default=6, help="TCSM epochs of 100 steps")
    parser.add_argument(
        "--consistency-weight", type=float, default=1.0, help="TCSM consistency weight (max)"
    )
    args = parser.parse_args()
    work = args.out
    started = time.perf_counter()
    check_settings(
        work,
        {
            "size": args.size,
            "slices": args.slices,
            "mix": BENCH_MIX.to_dict(),
            "labeled_draw": "stratified by lesion presence",
        },
    )

    train_manifest = work / "phantoms" / "manifest.json"
    if not train_manifest.is_file():
        generate_dataset(
            work / "phantoms",
            studies=TRAIN_STUDIES,
            seed=DATA_SEED,
            size=args.size,
            slices=args.slices,
            progress=False,
            lesion_mix=BENCH_MIX,
        )
    if not (work / "test" / "manifest.json").is_file():
        generate_dataset(
            work / "test",
            studies=TEST_STUDIES,
            seed=TEST_SEED,
            size=args.size,
            slices=args.slices,
            lesion_free_fraction=0.0,  # VolDice of an empty-vs-empty study says nothing
            progress=False,
            lesion_mix=BENCH_MIX,
        )
    studies = json.loads(train_manifest.read_text())["studies"]
    ids = [s["id"] for s in studies]
    write_manifest(train_manifest, work / "labels_100", set(ids))
    strata = ["lesions" if s["has_lesions"] else "lesion-free" for s in studies]
    for seed in args.seeds:
        labeled = stratified_subset(ids, strata, LABELED_FRACTION, seed)
        write_manifest(train_manifest, work / f"labels_20_seed{seed}", labeled)
    n_labeled = len(labeled)

    results = []
    for seed in args.seeds:
        for method in args.methods:
            t0 = time.perf_counter()
            res = run_one(
                method,
                seed,
                work,
                args.size,
                args.scale,
                args.tcsm_epochs,
                args.consistency_weight,
            )
            results.append(res)
            dice = " ".join(f"{k}={v:.3f}" for k, v in res["vol_dice"].items())
            print(
                f"[{time.perf_counter() - started:6.0f} s] {method:<11} seed {seed}: {dice} "
                f"(train {res['train_seconds']:.0f} s, call {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )

    print(
        f"\nphantom label efficiency: {TRAIN_STUDIES} training studies "
        f"({n_labeled} labeled for the 20 % methods), {TEST_STUDIES} test studies, "
        f"{args.size}x{args.size}x{args.slices}, seeds {args.seeds}; {platform.machine()}"
    )
    header = "| method | " + " | ".join(f"VolDice {c}" for c in CLASSES) + " | train time (s) |"
    print(header)
    print("|" + "---|" * (len(CLASSES) + 2))
    summary = {}
    for method in args.methods:
        rows = [r for r in results if r["method"] == method]
        cells = []
        for c in CLASSES:
            values = [r["vol_dice"][c] for r in rows if c in r["vol_dice"]]
            mean = statistics.fmean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            summary.setdefault(method, {})[c] = (mean, sd)
            cells.append(f"{mean:.3f} ± {sd:.3f}")
        wall = statistics.fmean(r["train_seconds"] for r in rows)
        print(f"| {method} | " + " | ".join(cells) + f" | {wall:.0f} |")
    if {"sup100", "sup20", "tcsm20"} <= set(summary):
        for c in ("ggo", "consolidation"):
            full, low, semi = (summary[m][c][0] for m in ("sup100", "sup20", "tcsm20"))
            print(
                f"{c}: tcsm20 / sup100 = {semi / full:.3f} (target >= 0.97); "
                f"tcsm20 - sup20 = {semi - low:+.3f} (target >= +0.03)"
            )
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
