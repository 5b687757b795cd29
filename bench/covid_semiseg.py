"""Real-data benchmark on COVID-SemiSeg: supervised-only vs the full semi-supervised method.

Both methods train on the same 40 labeled slices and are scored on the same held-out slices
of the 50 annotated COVID-SemiSeg training slices (the release's test split is held back):

* ``supervised``: supervised fine-tuning only (``training/configs/covid_semiseg_supervised.yaml``);
* ``tcsm``: contrastive pre-training (global + local, on the 1600 unlabeled + 40 labeled
  slices), supervised fine-tuning, then TCSM with the unlabeled slices
  (``training/configs/covid_semiseg_tcsm.yaml``).

Each model is exported to ONNX and scored from the ONNX file alone by
``training.evaluation.evaluate_model`` (infection = GGO ∪ consolidation, per-slice Dice and
continuous Dice, mean ± sd), beside the Inf-Net paper's figures. Re-running resumes: finished
stages, exports and evaluations are skipped. The best method's model is copied to
``<out>/best_model.onnx``. The data is only read, never copied (non-commercial licence).

With ``--folds K`` every method runs K times (cross-validation by slice: each fold validates
on a different K-th of the 50 slices), the out-of-fold scores are pooled over all 50 slices,
and each method's K fold models are exported as one ensemble (``<out>/<method>/ensemble.onnx``;
the best method's becomes ``best_model.onnx``).

    python bench/covid_semiseg.py [--data /work/shared/data/covid-semiseg]
        [--out runs/bench/covid_semiseg] [--folds 5] [--smoke] [--docs docs/results.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import training
from training.config import TrainConfig, load_config, save_config
from training.evaluation import evaluate_model
from training.evaluation_report import EvaluationReport, summarise_items
from training.experiment import FINAL_CHECKPOINT, run_experiment
from training.export import export_ensemble, export_onnx
from training.slice_folders import list_slice_folder
from training.splits import split_by_group

log = logging.getLogger("bench.covid_semiseg")

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "training" / "configs"
METHODS: dict[str, str] = {
    "supervised": "Supervised only (40 labeled)",
    "tcsm": "Contrastive pre-training + supervised + TCSM (40 labeled + 1600 unlabeled)",
}
#: Inf-Net paper (IEEE TMI 2020, Tables II and IV), on the release's 48-slice test split.
PUBLISHED: list[tuple[str, str, str, str]] = [
    ("U-Net (as reported by Inf-Net)", "0.439", "—", "—"),
    ("Inf-Net (50 labeled)", "0.682", "—", "—"),
    ("Semi-Inf-Net (50 labeled + 1600 unlabeled)", "0.739", "—", "—"),
    ("Semi-Inf-Net + multi-class head (approx.)", "—", "≈ 0.65", "≈ 0.30–0.46"),
]
#: Cross-validation only: each fold's models of both methods, averaged (no extra training).
COMBINED = "both"
COMBINED_LABEL = "Both methods' models averaged (supervised + full method, per fold)"
SECTION_START = "<!-- covid-semiseg:start -->"
SECTION_END = "<!-- covid-semiseg:end -->"
TIMES_FILE = "bench_times.json"
MODEL_FILE = "model.onnx"
EVAL_FILE = "eval_val.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/covid-semiseg"))
    p.add_argument("--out", type=Path, default=Path("runs/bench/covid_semiseg"))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    p.add_argument("--val-slices", type=int, default=10, help="labeled slices held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        help="k-fold cross-validation over the labeled slices (0: one --val-slices split)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--size", type=int, help="override the input size (square)")
    p.add_argument("--smoke", action="store_true", help="a few steps per stage (under <out>/smoke)")
    p.add_argument("--fresh", action="store_true", help="delete earlier outputs of these methods")
    p.add_argument("--docs", type=Path, help="write the results section into this Markdown file")
    p.add_argument("--machine", help="machine description for --docs (default: detected)")
    p.add_argument("--date", default=dt.date.today().isoformat(), help="date for --docs")
    p.add_argument("--note", default="", help="extra line for --docs (e.g. concurrent load)")
    return p.parse_args(argv)


def _shrink(config: TrainConfig) -> None:
    """Smoke-run sizes: every stage runs (and validates) a few steps at 64x64."""
    config.model.input_size = (64, 64)
    config.optim.epochs, config.optim.steps_per_epoch, config.optim.batch_size = 1, 3, 4
    g, loc, t = config.pretrain_global, config.pretrain_local, config.tcsm
    g.epochs, g.steps_per_epoch, g.batch_size = 1, 3, 8
    loc.epochs, loc.steps_per_epoch, loc.batch_size = 1, 3, 4
    t.epochs, t.steps_per_epoch, t.batch_size, t.unlabeled_batch_size = 2, 2, 2, 2
    t.rampup_steps = 2
    config.runtime.checkpoint_every = 0


def method_config(
    name: str, args: argparse.Namespace, out: Path, n_labeled: int, fold: int | None = None
) -> TrainConfig:
    """The method's YAML with this run's data, output folder, split, seed and threads.

    With ``fold`` the run validates on cross-validation fold ``fold`` of ``args.folds``.
    """
    config = load_config(CONFIG_DIR / f"covid_semiseg_{name}.yaml")
    config.data.root = str(args.data)
    config.output_dir = str(out / name)
    config.seed = args.seed
    # split_by_group holds out round(fraction · groups) groups; every labeled slice is a group.
    config.data.val_fraction = args.val_slices / n_labeled
    if fold is not None:
        config.data.cv_folds, config.data.cv_fold = args.folds, fold
        config.output_dir = str(out / name / f"fold{fold}")
    config.optim.num_threads = args.threads
    config.runtime.tensorboard = False
    if args.smoke:
        _shrink(config)
    if args.size:
        config.model.input_size = (args.size, args.size)
    return config


def _check_same_config(config: TrainConfig, directory: Path) -> None:
    """Resuming under changed settings would mix two experiments: refuse."""
    saved = directory / "config.yaml"
    if not saved.is_file():
        return
    previous = yaml.safe_load(saved.read_text())
    tmp = directory / ".config.check.yaml"
    save_config(config, tmp)
    current = yaml.safe_load(tmp.read_text())
    tmp.unlink()
    for d in (previous, current):
        d.get("optim", {}).pop("num_threads", None)  # speed only
    if previous != current:
        changed = sorted(
            k for k in set(previous) | set(current) if previous.get(k) != current.get(k)
        )
        raise SystemExit(
            f"error: '{directory}' holds a run with other settings (differs in {changed}); "
            "pass --fresh to start over or another --out."
        )


def _load_times(directory: Path) -> dict[str, Any]:
    path = directory / TIMES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_times(directory: Path, times: dict[str, Any]) -> None:
    (directory / TIMES_FILE).write_text(json.dumps(times, indent=2) + "\n")


def run_method(
    name: str, config: TrainConfig, args: argparse.Namespace
) -> tuple[dict[str, Any], EvaluationReport]:
    """Train (resuming), export and evaluate one method; its summary row and the report."""
    directory = Path(config.output_dir)
    if args.fresh and directory.exists():
        shutil.rmtree(directory)
    _check_same_config(config, directory)
    directory.mkdir(parents=True, exist_ok=True)
    times = _load_times(directory)
    final = directory / FINAL_CHECKPOINT
    if not final.is_file():
        log.info("%s: training stages %s", name, list(config.stages))
        result = run_experiment(config, resume=True, progress=False)
        times["train_s"] = times.get("train_s", 0.0) + result.wall_seconds
        if result.final_stage is not None:
            times["final_stage"] = result.final_stage
        _save_times(directory, times)
        if not result.finished:
            raise SystemExit(f"error: {name} stopped before its last stage; re-run to resume.")
    else:
        log.info("%s: training already finished (%s)", name, final)

    onnx_path = directory / MODEL_FILE
    if not onnx_path.is_file() or onnx_path.stat().st_mtime < final.stat().st_mtime:
        start = time.perf_counter()
        export_onnx(final, onnx_path)
        times["export_s"] = time.perf_counter() - start
        _save_times(directory, times)

    start = time.perf_counter()
    report = evaluate_model(
        onnx_path,
        images=args.data / config.data.images,
        masks=args.data / config.data.masks,
        mask_mapping=list(config.data.mask_classes),
        split="val",
        val_fraction=config.data.val_fraction,
        seed=config.seed,
        fold=config.data.fold,
    )
    times["eval_s"] = time.perf_counter() - start
    _save_times(directory, times)
    report.write_json(directory / EVAL_FILE)
    _check_split(config, args, [it.item for it in report.items])

    summary = report.summary
    row = {
        "method": name,
        "label": METHODS[name],
        "model": str(onnx_path),
        "n": len(report.items),
        "dice": {c: summary["dice"][c] for c in report.classes},
        "cdice": {c: summary["cdice"][c] for c in report.classes},
        "wall_s": sum(float(times.get(k, 0.0)) for k in ("train_s", "export_s", "eval_s")),
        "times": times,
        "per_slice_infection": {it.item: it.dice["infection"] for it in report.items},
        "stages": list(config.stages),
        "final_stage": times.get("final_stage"),
    }
    return row, report


def _export_if_stale(checkpoints: list[Path], path: Path, name: str | None = None) -> None:
    """(Re-)export the ensemble of ``checkpoints`` unless ``path`` is newer than all of them."""
    if not path.is_file() or path.stat().st_mtime < max(c.stat().st_mtime for c in checkpoints):
        export_ensemble(checkpoints, path, name=name)


def _pooled_row(
    name: str, label: str, reports: list[EvaluationReport], fold_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """One table row from the folds' out-of-fold reports (every labeled slice once)."""
    items = [it for report in reports for it in report.items]
    classes = list(reports[0].classes)
    pooled = summarise_items(items, classes)
    return {
        "method": name,
        "label": label,
        "n": len(items),
        "dice": {c: pooled["dice"][c] for c in classes},
        "cdice": {c: pooled["cdice"][c] for c in classes},
        "per_slice_infection": {it.item: it.dice["infection"] for it in items},
        "folds": [
            {
                "fold": i,
                "n": len(report.items),
                **{c: report.summary["dice"][c]["mean"] for c in classes},
                **extra,
            }
            for i, (report, extra) in enumerate(zip(reports, fold_rows, strict=True))
        ],
    }


def run_cross_validation(
    name: str, configs: list[TrainConfig], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """Every fold of one method, pooled: each labeled slice is scored once, by the fold model
    that never saw it. The fold models' ensemble (mean softmax) is exported as the method's
    model: it was trained on all labeled slices, and only the pooled out-of-fold scores
    estimate its quality (slightly pessimistically: each member saw 4/5 of the labels)."""
    runs = [run_method(name, config, args) for config in configs]
    ensemble_path = out / name / "ensemble.onnx"
    _export_if_stale([Path(c.output_dir) / FINAL_CHECKPOINT for c in configs], ensemble_path)
    row = _pooled_row(
        name,
        METHODS[name],
        [report for _, report in runs],
        [{"final_stage": r["final_stage"], "wall_s": r["wall_s"]} for r, _ in runs],
    )
    row.update(
        model=str(ensemble_path),
        wall_s=sum(r["wall_s"] for r, _ in runs),
        stages=runs[0][0]["stages"],
    )
    return row


def run_combined(
    configs: dict[str, list[TrainConfig]],
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    """Both methods' models of each fold averaged, scored on that fold's held-out slices; the
    shipped model averages every fold of both methods. Costs no training beyond the two."""
    reports = []
    for fold in range(args.folds):
        members = [Path(configs[n][fold].output_dir) / FINAL_CHECKPOINT for n in configs]
        model = out / COMBINED / f"fold{fold}" / MODEL_FILE
        _export_if_stale(members, model)
        ref = configs[next(iter(configs))][fold]
        report = evaluate_model(
            model,
            images=args.data / ref.data.images,
            masks=args.data / ref.data.masks,
            mask_mapping=list(ref.data.mask_classes),
            split="val",
            val_fraction=ref.data.val_fraction,
            seed=ref.seed,
            fold=ref.data.fold,
        )
        _check_split(ref, args, [it.item for it in report.items])
        reports.append(report)
    ensemble_path = out / COMBINED / "ensemble.onnx"
    _export_if_stale(
        [Path(c.output_dir) / FINAL_CHECKPOINT for cs in configs.values() for c in cs],
        ensemble_path,
        name="pulmoseg-covid-semiseg-both-methods-ensemble",
    )
    row = _pooled_row(COMBINED, COMBINED_LABEL, reports, [{"final_stage": None}] * len(reports))
    row.update(
        model=str(ensemble_path),
        wall_s=sum(r["wall_s"] for r in rows),
        stages=sorted({s for r in rows for s in r["stages"]}),
    )
    return row


def _check_split(config: TrainConfig, args: argparse.Namespace, evaluated: list[str]) -> None:
    """The evaluated slices must be exactly the ones training held out."""
    records = list_slice_folder(args.data / config.data.images, args.data / config.data.masks)
    _, val = split_by_group(records, config.data.val_fraction, config.seed, fold=config.data.fold)
    if sorted(r.name for r in val) != sorted(evaluated):
        raise SystemExit("error: evaluation split differs from the training validation split.")


def _cell(stats: dict[str, Any]) -> str:
    sd = "" if stats.get("sd") is None else f" ± {stats['sd']:.3f}"
    return f"{stats['mean']:.3f}{sd}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: our methods (validation slices) and the published ones (test split)."""
    lines = [
        "| Method | Infection Dice | GGO Dice | Consolidation Dice | Infection cDice | Wall time |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, c = r["dice"], r["cdice"]
        lines.append(
            f"| {r['label']} | {_cell(d['infection'])} | {_cell(d['ggo'])} | "
            f"{_cell(d['consolidation'])} | {_cell(c['infection'])} | {_minutes(r['wall_s'])} |"
        )
    for label, inf, ggo, cons in PUBLISHED:
        lines.append(f"| {label} *(published, test split)* | {inf} | {ggo} | {cons} | — | — |")
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores, no GPU"


def _paired(rows: list[dict[str, Any]]) -> str:
    """Per-slice infection Dice difference, full method minus baseline (same slices)."""
    by = {r["method"]: r["per_slice_infection"] for r in rows}
    if not {"supervised", "tcsm"} <= set(by) or by["supervised"].keys() != by["tcsm"].keys():
        return ""
    diff = np.array([by["tcsm"][k] - by["supervised"][k] for k in by["supervised"]])
    sd = f" ± {diff.std(ddof=1):.3f}" if diff.size > 1 else ""
    return (
        f"- Paired per-slice infection Dice, `tcsm` − `supervised`: {diff.mean():+.3f}{sd} "
        f"(mean ± sd); `tcsm` is better on {int((diff > 0).sum())} of {diff.size} slices."
    )


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _steps(configs: dict[str, TrainConfig]) -> str:
    steps = []
    for name, cfg in configs.items():
        parts = []
        for stage in cfg.stages:
            section = cfg.optim if stage == "supervised" else getattr(cfg, stage)
            parts.append(f"{stage} {section.epochs * section.steps_per_epoch}")
        steps.append(f"`{name}`: " + ", ".join(parts))
    return "; ".join(steps)


def results_section(
    rows: list[dict[str, Any]], args: argparse.Namespace, configs: dict[str, TrainConfig]
) -> str:
    """The docs/results.md section (between the covid-semiseg markers)."""
    any_cfg = next(iter(configs.values()))
    h, w = any_cfg.model.input_size
    n_val = rows[0]["n"] if rows else args.val_slices
    absent = rows[0]["dice"]["consolidation"].get("n_absent", 0) if rows else 0
    best = max(rows, key=lambda r: r["dice"]["infection"]["mean"]) if rows else None
    folds = getattr(args, "folds", 0)
    command = "python bench/covid_semiseg.py --data /work/shared/data/covid-semiseg" + (
        f" --folds {folds}" if folds else ""
    )
    if folds:
        split = (
            f"50 annotated slices in {folds}-fold cross-validation (seed {args.seed}; the "
            "labeled file names carry no volume, so folds are by slice): each fold trains on "
            f"{50 - 50 // folds} and validates on {50 // folds}, and every slice is scored "
            "once, by the fold model that never trained on it"
        )
        scored = f"all {n_val} slices, each by its out-of-fold model"
    else:
        split = (
            f"50 annotated slices, {n_val} held out for validation (seed {args.seed}; the "
            "labeled file names carry no volume, so the split is by slice), "
            f"{50 - n_val} for training"
        )
        scored = f"the {n_val} validation slices"
    lines = [
        SECTION_START,
        "## Real data: COVID-SemiSeg",
        "",
        f"Machine: {args.machine or _machine()}. Date: {args.date}."
        + (f" {args.note}" if args.note else ""),
        "",
        f"Command: `{command}` (resumable; `--smoke` for a few steps per stage).",
        "",
        f"Data: COVID-SemiSeg (Inf-Net release, non-commercial licence; read in place, never "
        f"copied): {split}; 1600 unlabeled slices for the semi-supervised method. "
        f"Input {h}×{w}, BasicUNet features {list(any_cfg.model.features)}, bf16 autocast, "
        f"{args.threads} thread(s). Steps: {_steps(configs)}. Each run ships the `best.pt` of "
        "its best-validated stage (`runtime.final_model: best_validated`).",
        "",
        f"Scores: per-slice Dice of the exported ONNX model (`training.evaluation.evaluate_model`, "
        f"ONNX Runtime CPU) on {scored}, mean ± sd; infection = GGO ∪ consolidation; cDice = "
        "continuous Dice of the infection probability. Wall time: all runs of the method.",
        "",
        format_table(rows),
        "",
        "How to read it:",
        f"- Ours: {n_val} slices of the training release, {h}×{w} input, minutes of CPU "
        "training. Published: the release's 48 test slices with the paper's networks and "
        "training. Same data source, not the same test set: compare orders of magnitude, not "
        "decimals.",
        "- The validation slices also chose each stage's `best.pt` (the best of its epochs) "
        "and the shipped stage, so our figures are slightly optimistic; with 50 labeled "
        "slices there is no room for a third split.",
        f"- {absent} of the {n_val} slices have no consolidation; such a slice scores Dice 1.0 "
        "when none is predicted and 0.0 otherwise, which makes the consolidation column noisy.",
    ]
    for r in rows:
        if r.get("folds"):
            per_fold = ", ".join(
                f"{f['infection']:.3f}" + (f" ({f['final_stage']})" if f["final_stage"] else "")
                for f in r["folds"]
            )
            lines.append(f"- `{r['method']}` infection Dice per fold (shipped stage): {per_fold}.")
    paired = _paired(rows)
    if paired:
        lines.append(paired)
    if best is not None:
        members = (
            f"both methods' {folds} fold models"
            if best["method"] == COMBINED
            else f"its {folds} fold models"
        )
        shipped = (
            f"the ensemble of {members} (mean softmax; trained on all 50 labeled slices "
            "between them, so no slice is left to score it: the release's test split is)"
            if folds
            else "its model"
        )
        lines.append(
            f"- Best method by infection Dice: `{best['method']}`; {shipped} is left at "
            f"`{_shown(Path(args.out) / 'best_model.onnx')}` (git-ignored)."
        )
    lines.append(SECTION_END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Insert or replace the covid-semiseg section; other sections stay untouched."""
    text = path.read_text() if path.is_file() else "# Results\n"
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        _, tail = rest.split(SECTION_END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("code: %s", Path(training.__file__).parent)
    if not (args.data / "train" / "images").is_dir():
        raise SystemExit(f"error: '--data {args.data}' has no train/images folder.")
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"error: unknown method(s) {unknown}; choose from {list(METHODS)}.")
    out = args.out / "smoke" if args.smoke else args.out
    n_labeled = len(
        list_slice_folder(args.data / "train" / "images", args.data / "train" / "masks")
    )
    if args.folds:
        return _main_cross_validation(names, args, out, n_labeled)
    configs = {n: method_config(n, args, out, n_labeled) for n in names}
    rows = []
    for name, config in configs.items():
        row, _ = run_method(name, config, args)
        rows.append(row)
        log.info(
            "%s: infection Dice %s (%.1f min)",
            name,
            _cell(row["dice"]["infection"]),
            row["wall_s"] / 60,
        )
    best = max(rows, key=lambda r: r["dice"]["infection"]["mean"])
    best_path = out / "best_model.onnx"
    shutil.copyfile(best["model"], best_path)
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "best": best["method"], "best_model": str(best_path)}, indent=2)
        + "\n"
    )
    print(format_table(rows))
    print(f"\nbest method: {best['method']}; model: {best_path.resolve()}")
    if args.docs is not None:
        args.out = out
        write_section(args.docs, results_section(rows, args, configs))
        print(f"wrote the results section into {args.docs}")
    return 0


def _main_cross_validation(
    names: list[str], args: argparse.Namespace, out: Path, n_labeled: int
) -> int:
    """``--folds K``: train every fold (fold-major, so early folds pair the methods), pool."""
    if args.folds < 2 or args.folds > n_labeled:
        raise SystemExit(f"error: --folds must be in [2, {n_labeled}], got {args.folds}.")
    configs = {
        n: [method_config(n, args, out, n_labeled, fold) for fold in range(args.folds)]
        for n in names
    }
    for fold in range(args.folds):  # train first, fold by fold; pooling below resumes
        for name in names:
            run_method(name, configs[name][fold], args)
    rows = [run_cross_validation(name, configs[name], args, out) for name in names]
    if len(names) > 1:
        rows.append(run_combined(configs, rows, args, out))
    best = max(rows, key=lambda r: r["dice"]["infection"]["mean"])
    best_path = out / "best_model.onnx"
    shutil.copyfile(best["model"], best_path)
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "best": best["method"], "best_model": str(best_path)}, indent=2)
        + "\n"
    )
    print(format_table(rows))
    for r in rows:
        per_fold = ", ".join(
            f"{f['infection']:.3f}" + (f" ({f['final_stage']})" if f["final_stage"] else "")
            for f in r["folds"]
        )
        print(f"{r['method']}: infection Dice per fold {per_fold}")
    print(f"\nbest method: {best['method']}; model: {best_path.resolve()}")
    if args.docs is not None:
        args.out = out
        single = {n: c[0] for n, c in configs.items()}
        write_section(args.docs, results_section(rows, args, single))
        print(f"wrote the results section into {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
