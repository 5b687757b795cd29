"""Real-data benchmark on COVID-SemiSeg: label efficiency of supervised and semi-supervised
training, by 5-fold cross-validation over the 50 labeled slices.

In each fold (``training.data.splits`` folds, seeded) the 10 held-out slices are the test set; of
the 40 training slices, all 40 or a stratified 8 (``data.labeled_count``: balanced by lesion /
consolidation presence) keep their labels, and the unlabeled pool is the 1600 unlabeled
slices plus the unlabeled rest of the 40. Methods (``--methods``; every one at every
``--labels``), all from ``training/configs/covid_semiseg_grid.yaml`` with their own stages:

* ``supervised``: supervised only;
* ``pre_supervised``: contrastive pre-training (global + local) + supervised;
* ``tcsm`` / ``pre_tcsm``: (pre-training +) supervised + TCSM;
* ``unimatch`` / ``pre_unimatch``: (pre-training +) supervised + UniMatch;
* with ``--ablations``: TCSM variants (consistency weight, ramp-up, EMA decay, perturbation
  strength, probabilities vs logits, unlabeled slices only) at ``--ablation-labels``.

Model selection never sees a fold's test slices: fixed schedules (the last epoch of every
stage, the last stage ships). Each run is exported to ONNX and scored from the ONNX file on
its fold's test slices; the out-of-fold scores of the 5 folds are pooled (every labeled
slice scored once, by the model that never saw it): infection (GGO ∪ consolidation), GGO and
consolidation Dice and infection continuous Dice, mean with a bootstrap 95 % CI, and paired
per-slice differences with bootstrap CIs (``training.evaluation.paired_stats``) against
supervised at the same label count, against supervised at all labels, and with vs without
pre-training.
A label-efficiency plot (``label_efficiency.png``, needs matplotlib) shows the pooled scores.

Runs are resumable (finished stages, exports and evaluations are skipped; ``--fresh`` starts
over) and run in ``--workers`` parallel processes with one thread each on ``--device``.
Methods sharing a stage prefix share it: ``tcsm`` starts from a copy of ``supervised``'s
finished stage, ``pre_tcsm`` from ``pre_supervised``'s, so the grid trains each prefix once.

    python bench/covid_semiseg.py --data /work/shared/data/covid-semiseg \\
        --labels 8 40 --device cuda --workers 16 [--ablations] [--smoke]

``--protocol cpu`` is the 2-core protocol of issue 21 (``training/configs/covid_semiseg_cpu.yaml``:
128x128, fp32, the shipped compact network, short fixed schedules sized from ``--measure``,
3 folds, then ``--pretrain-best 8 40``: pre-training in front of the better of TCSM and
UniMatch); the three targets of the label-efficiency claim are tabulated with the results::

    python bench/covid_semiseg.py --protocol cpu --measure 6   # s/step of every stage
    nice -n 10 python bench/covid_semiseg.py --protocol cpu --workers 2 \\
        --start-deadline 17:55 --docs docs/results.md

``--ship METHOD --ship-labels 50`` (or 10) instead trains METHOD once on all 50 labeled
slices (or a stratified 10 of them) + the unlabeled ones and exports
``<out>/covid_<METHOD>_<N>labeled.onnx``. The data is only read, never copied.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import datetime as dt
import json
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from service.core.run_folder import FINAL_CHECKPOINT
from training.config import TrainConfig, config_from_dict, load_config, save_config
from training.data.slice_folders import list_slice_folder
from training.evaluation.evaluate import evaluate_model
from training.evaluation.paired_stats import bootstrap_mean_ci, paired_difference
from training.evaluation.report import EvaluationReport, summarise_items
from training.experiment import run_experiment
from training.export.onnx_export import export_onnx
from training.loop import step_random

log = logging.getLogger("bench.covid_semiseg")

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "training" / "configs" / "covid_semiseg_grid.yaml"
#: ``--protocol``: the base config of each grid size. ``gpu`` is the original grid (192x192,
#: bf16, long schedules); ``cpu`` the 2-core protocol of issue 21 (128x128, fp32, short fixed
#: schedules sized from a measured step of each method, ``--measure``).
PROTOCOLS = {
    "gpu": BASE_CONFIG,
    "cpu": REPO / "training" / "configs" / "covid_semiseg_cpu.yaml",
}
METHODS_ORDER = (
    "supervised",
    "pre_supervised",
    "tcsm",
    "pre_tcsm",
    "unimatch",
    "pre_unimatch",
)
#: Defaults of the command line per protocol (explicit options win).
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpu": {"folds": 5, "methods": ",".join(METHODS_ORDER), "pretrain_best": []},
    "cpu": {"folds": 3, "methods": "supervised,tcsm,unimatch", "pretrain_best": [8, 40]},
}
PRE = ("pretrain_global", "pretrain_local")
CLASSES = ("infection", "ggo", "consolidation")
MODEL_FILE = "model.onnx"
EVAL_FILE = "eval_test.json"
EVAL_TORCH_FILE = "eval_test_torch.json"
TIMES_FILE = "bench_times.json"
SECTION_START = "<!-- covid-semiseg:start -->"
SECTION_END = "<!-- covid-semiseg:end -->"


@dataclass(frozen=True)
class Method:
    """One column of the grid: stages of the base config plus config overrides; ``donor`` is
    the method whose finished stages are this method's prefix (copied, not retrained)."""

    name: str
    label: str
    stages: tuple[str, ...]
    donor: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("supervised", "Supervised", ("supervised",)),
        Method("pre_supervised", "Pre-training + supervised", (*PRE, "supervised")),
        Method("tcsm", "Supervised + TCSM", ("supervised", "tcsm"), "supervised"),
        Method(
            "pre_tcsm",
            "Pre-training + supervised + TCSM",
            (*PRE, "supervised", "tcsm"),
            "pre_supervised",
        ),
        Method("unimatch", "Supervised + UniMatch", ("supervised", "unimatch"), "supervised"),
        Method(
            "pre_unimatch",
            "Pre-training + supervised + UniMatch",
            (*PRE, "supervised", "unimatch"),
            "pre_supervised",
        ),
    )
}
#: TCSM ablations (issue: why TCSM does not help), each one knob away from ``tcsm``.
ABLATIONS: dict[str, Method] = {
    name: Method(name, f"TCSM, {label}", ("supervised", "tcsm"), "supervised", {"tcsm": o})
    for name, label, o in (
        ("tcsm_w0.1", "consistency weight 0.1", {"consistency_weight": 0.1}),
        ("tcsm_w10", "consistency weight 10", {"consistency_weight": 10.0}),
        ("tcsm_w100", "consistency weight 100", {"consistency_weight": 100.0}),
        ("tcsm_ramp0", "no ramp-up", {"rampup_steps": 0}),
        ("tcsm_ramp800", "ramp-up 800 steps", {"rampup_steps": 800}),
        ("tcsm_ema0.9", "EMA decay 0.9", {"ema_decay": 0.9}),
        ("tcsm_ema0.999", "EMA decay 0.999", {"ema_decay": 0.999}),
        (
            "tcsm_perturb0",
            "no noise/scaling (rot/flip only)",
            {"noise_std_hu": 0.0, "max_scale_delta": 0.0},
        ),
        (
            "tcsm_perturb3x",
            "3x noise, 2.5x scaling",
            {"noise_std_hu": 12.0, "max_scale_delta": 0.25},
        ),
        ("tcsm_logits", "consistency on logits", {"consistency_target": "logits"}),
        (
            "tcsm_unlabeled_only",
            "consistency on unlabeled slices only",
            {"consistency_on_labeled": False},
        ),
    )
}


def all_methods() -> dict[str, Method]:
    return {**METHODS, **ABLATIONS}


# ------------------------------------------------------------------------------ arguments


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/covid-semiseg"))
    p.add_argument("--out", type=Path, default=Path("runs/bench/covid_semiseg"))
    p.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        default="gpu",
        help="grid size: gpu (covid_semiseg_grid.yaml) or cpu (covid_semiseg_cpu.yaml)",
    )
    p.add_argument("--config", type=Path, help="base config (default: the protocol's)")
    p.add_argument("--methods", help="comma-separated subset (default: the protocol's)")
    p.add_argument(
        "--labels",
        type=int,
        nargs="+",
        default=[8, 40],
        help="labeled training slices per fold (40 = all of a fold's training slices)",
    )
    p.add_argument("--ablations", action="store_true", help="add the TCSM ablations")
    p.add_argument("--ablation-labels", type=int, nargs="+", default=[8])
    p.add_argument("--folds", type=int, help="cross-validation folds (default: the protocol's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--workers", type=int, default=1, help="parallel runs (1 thread each)")
    p.add_argument("--size", type=int, help="override the input size (square)")
    p.add_argument("--tensorboard", action="store_true", help="TensorBoard logs in every run")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a few steps per stage, tiny network, 48 unlabeled slices (under <out>/smoke)",
    )
    p.add_argument(
        "--score",
        choices=("onnx", "torch"),
        help="score the exported ONNX model (default) or the checkpoint (default of --smoke)",
    )
    p.add_argument("--fresh", action="store_true", help="delete earlier outputs of these runs")
    p.add_argument("--ship", help="train this method on all (or --ship-labels) labeled slices")
    p.add_argument("--ship-labels", type=int, default=50, help="labeled slices for --ship")
    p.add_argument("--docs", type=Path, help="write the results section into this Markdown file")
    p.add_argument("--machine", help="machine description for --docs (default: detected)")
    p.add_argument("--date", default=dt.date.today().isoformat(), help="date for --docs")
    p.add_argument("--note", default="", help="extra line for --docs")
    p.add_argument(
        "--measure",
        type=int,
        metavar="STEPS",
        help="only time STEPS steps of every stage of --methods at one thread and print s/step",
    )
    p.add_argument(
        "--unlabeled-limit",
        type=int,
        help="use only this many unlabeled slices (evenly spaced; symbolic links, for tests)",
    )
    p.add_argument(
        "--pretrain-best",
        type=int,
        nargs="*",
        metavar="LABELS",
        help="after the grid, add contrastive pre-training in front of the better of TCSM and "
        "UniMatch (at the lowest --labels) at these label counts (cpu protocol: 8 40)",
    )
    p.add_argument(
        "--start-deadline",
        metavar="HH:MM",
        help="start no run after this UTC time today (skipped runs resume on the next call)",
    )
    args = p.parse_args(argv)
    defaults = PROTOCOL_DEFAULTS[args.protocol]
    if args.pretrain_best is None:
        args.pretrain_best = defaults["pretrain_best"]
    if args.methods is None:
        args.methods = defaults["methods"]
    if args.folds is None:
        args.folds = defaults["folds"]
    if args.config is None:
        args.config = PROTOCOLS[args.protocol]
    return args


# ------------------------------------------------------------------------------ configs


def _shrink(config: TrainConfig) -> None:
    """Smoke-run sizes: every stage runs (and validates) a few steps at 64x64."""
    config.model.input_size = (64, 64)
    config.model.features = (4, 4, 8, 8, 16, 4)
    config.pretrain_global.proj_dim = 16
    config.pretrain_local.proj_channels = 8
    config.optim.epochs, config.optim.steps_per_epoch, config.optim.batch_size = 1, 3, 4
    g, loc, t, u = config.pretrain_global, config.pretrain_local, config.tcsm, config.unimatch
    g.epochs, g.steps_per_epoch, g.batch_size = 1, 2, 8
    loc.epochs, loc.steps_per_epoch, loc.batch_size = 1, 2, 4
    t.epochs, t.steps_per_epoch, t.batch_size, t.unlabeled_batch_size = 1, 3, 2, 2
    t.rampup_steps = min(t.rampup_steps, 2)
    u.epochs, u.steps_per_epoch, u.batch_size, u.unlabeled_batch_size = 1, 3, 2, 2
    config.runtime.checkpoint_every = 0
    config.runtime.log_every_steps = 0


def _apply_overrides(config: TrainConfig, overrides: dict[str, dict[str, Any]]) -> TrainConfig:
    raw = config.model_dump(mode="json")
    for section, values in overrides.items():
        raw[section].update(values)
    return config_from_dict(raw)


def base_config(args: argparse.Namespace, data: Path) -> TrainConfig:
    config = load_config(args.config)
    config.data.root = str(data)
    config.seed = args.seed
    config.optim.num_threads = 1
    config.runtime.device = args.device
    config.runtime.tensorboard = bool(args.tensorboard)
    if args.smoke:
        _shrink(config)
    if args.size:
        config.model.input_size = (args.size, args.size)
    return config


def run_config(
    method: Method, labels: int, fold: int, args: argparse.Namespace, data: Path, out: Path
) -> TrainConfig:
    """The method's config for fold ``fold`` with ``labels`` labeled training slices."""
    config = _apply_overrides(base_config(args, data), method.overrides)
    config.stages = method.stages
    config.data.cv_folds, config.data.cv_fold = args.folds, fold
    config.data.labeled_count = labels
    if method.stages == ("supervised",):
        config.data.unlabeled = None  # only the labeled slices are used: skip reading 1600
    config.output_dir = str(run_dir(out, labels, method.name, fold))
    config.export.name = f"pulmoseg-covid-semiseg-{method.name}-{labels}labeled-fold{fold}"
    return config


def run_dir(out: Path, labels: int, method: str, fold: int) -> Path:
    return out / f"labels{labels}" / method / f"fold{fold}"


# ------------------------------------------------------------------------------ one run


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
    # A key added to the code after the run was saved: the run used that key's default.
    defaults = TrainConfig().model_dump(mode="json")
    for section, values in defaults.items():
        if isinstance(values, dict) and isinstance(previous.get(section), dict):
            previous[section] = {**values, **previous[section]}
        elif section not in previous:
            previous[section] = values
    for d in (previous, current):
        d.pop("export", None)  # the model file's identity, not its training
        d.get("optim", {}).pop("num_threads", None)  # speed only
        d.get("runtime", {}).pop("device", None)
        d.get("runtime", {}).pop("tensorboard", None)
    if previous != current:
        changed = sorted(
            k for k in set(previous) | set(current) if previous.get(k) != current.get(k)
        )
        raise RuntimeError(
            f"'{directory}' holds a run with other settings (differs in {changed}); "
            "pass --fresh to start over or another --out."
        )


def _copy_donor_stages(config: TrainConfig, donor: Path | None) -> list[str]:
    """Copy the donor run's finished stages that open this run's stage list (same settings
    by construction: one base config, overrides only on later stages)."""
    if donor is None:
        return []
    copied = []
    out = Path(config.output_dir)
    for stage in config.stages:
        src, dst = donor / stage, out / stage
        if not (src / "last.pt").is_file():
            break
        if not dst.exists():
            shutil.copytree(src, dst)
            copied.append(stage)
    return copied


def _times(directory: Path) -> dict[str, Any]:
    path = directory / TIMES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    images: Path,
    masks: Path,
    mask_mapping: list[str],
    split: str,
    val_fraction: float,
    seed: int,
    fold: tuple[int, int] | None,
) -> EvaluationReport:
    """``evaluate_model``'s 2D scoring of a checkpoint through the torch predictor (no ONNX
    export: ``--score torch``, the default of ``--smoke``, where exporting every run would
    cost more than training it). The predictor is the one validation uses; its scores agree
    with the exported ONNX model's within 1e-3
    (``tests/training/evaluation/test_predictor_parity.py``)."""
    from service.predictor import InputGeometry, Predictor
    from service.predictor.torch_backend import TorchBackend
    from training.evaluation import evaluate as ev
    from training.export.onnx_export import build_manifest, load_checkpoint

    model, config, state = load_checkpoint(checkpoint)
    manifest = build_manifest(config, state)
    predictor = Predictor(
        TorchBackend(model), InputGeometry.from_manifest(manifest), manifest=manifest
    )
    dataset = ev._dataset_classes(mask_mapping, ev.DEFAULT_MASK_CLASSES)
    names = [c.name for c in manifest.classes]
    scorer = ev._Scorer(ev._model_indices(names, dataset, checkpoint), dataset)
    items, scorer = ev._score_slices(
        predictor,
        scorer,
        images,
        masks,
        split,
        val_fraction,
        seed,
        fold,
        ev.slice_preparation(manifest),  # as `pulmoseg evaluate` prepares 8-bit slices
    )
    return EvaluationReport(
        model_path=str(checkpoint),
        model_name=manifest.name,
        model_version=manifest.version,
        provider="torch",
        source=str(images),
        kind="2d",
        split=split,
        classes=scorer.classes,
        items=items,
        summary=summarise_items(items, scorer.classes),
    )


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (resuming), export and score one (labels, method, fold) run: in a worker process.

    Returns the run's per-slice test scores (``items``) and times, or ``error``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    import torch

    torch.set_num_threads(1)
    config = config_from_dict(job["config"])
    directory = Path(config.output_dir)
    key = {k: job[k] for k in ("labels", "method", "fold")}
    try:
        if job["fresh"] and directory.exists():
            shutil.rmtree(directory)
        _check_same_config(config, directory)
        directory.mkdir(parents=True, exist_ok=True)
        times = _times(directory)
        final = directory / FINAL_CHECKPOINT
        if not final.is_file():
            donor = Path(job["donor"]) if job.get("donor") else None
            copied = _copy_donor_stages(config, donor)
            if copied:
                log.info("%s: reusing stages %s of %s", directory, copied, donor)
            result = run_experiment(config, resume=True, progress=False)
            times["train_s"] = times.get("train_s", 0.0) + result.wall_seconds
            times["final_stage"] = result.final_stage
            times["shared_stages"] = sorted(set(times.get("shared_stages", [])) | set(copied))
            (directory / TIMES_FILE).write_text(json.dumps(times, indent=2) + "\n")
            if not result.finished:
                raise RuntimeError("stopped before its last stage; re-run to resume")
        scored = final
        if job["score"] == "onnx":
            scored = directory / MODEL_FILE
            if not scored.is_file() or scored.stat().st_mtime < final.stat().st_mtime:
                start = time.perf_counter()
                export_onnx(final, scored)
                times["export_s"] = time.perf_counter() - start
        eval_path = directory / (EVAL_FILE if job["score"] == "onnx" else EVAL_TORCH_FILE)
        if not eval_path.is_file() or eval_path.stat().st_mtime < scored.stat().st_mtime:
            start = time.perf_counter()
            score = evaluate_model if job["score"] == "onnx" else evaluate_checkpoint
            data = Path(config.data.root)
            report = score(
                scored,
                images=data / config.data.images,
                masks=data / config.data.masks,
                mask_mapping=list(config.data.mask_classes),
                split="val",
                val_fraction=config.data.val_fraction,
                seed=config.seed,
                fold=config.data.fold,
            )
            report.write_json(eval_path)
            times["eval_s"] = time.perf_counter() - start
        (directory / TIMES_FILE).write_text(json.dumps(times, indent=2) + "\n")
        report_dict = json.loads(eval_path.read_text())
        items = [
            {"item": it["item"], "dice": it["dice"], "cdice": it["cdice"]}
            for it in report_dict["items"]
        ]
        return {
            **key,
            "items": items,
            "times": times,
            "dir": str(directory),
            "diagnostics": stage_diagnostics(directory / config.stages[-1]),
        }
    except Exception as exc:  # a failed run must not stop the grid
        log.error("%s failed: %s", directory, exc)
        return {**key, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}


#: Step diagnostics summarised per method (epoch means of the last epoch of the last stage).
DIAGNOSTICS = (
    "supervised",
    "weighted_consistency",
    "agreement",
    "teacher_confidence",
    "student_confidence",
    "teacher_foreground",
    "weighted_unlabeled",
    "confident_fraction",
    "confidence",
    "pseudo_foreground",
)


def stage_diagnostics(stage_dir: Path) -> dict[str, float]:
    """The last epoch of a stage: its mean step diagnostics (``parts`` of ``metrics.jsonl``)
    and, for TCSM, teacher minus student validation Dice (mean over classes)."""
    path = stage_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    last = json.loads(lines[-1])
    out = {k: float(v) for k, v in last.get("parts", {}).items() if k in DIAGNOSTICS}
    teacher, student = last.get("val_voldice_teacher"), last.get("val_voldice_student")
    if teacher and student:
        t = [v for v in teacher.values() if v == v]
        st = [v for v in student.values() if v == v]
        if t and st:
            out["val_teacher_minus_student"] = sum(t) / len(t) - sum(st) / len(st)
    return out


def diagnostics_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per (labels, method) with a semi-supervised last stage, the fold means of
    the last epoch's diagnostics (why consistency does or does not train anything)."""
    groups: dict[tuple[int, str], list[dict[str, float]]] = {}
    for r in results:
        if r.get("diagnostics") and "error" not in r:
            groups.setdefault((r["labels"], r["method"]), []).append(r["diagnostics"])
    keys = [*DIAGNOSTICS, "val_teacher_minus_student"]
    shown = [k for k in keys if any(k in d for ds in groups.values() for d in ds)]
    semi = {k: v for k, v in groups.items() if any("supervised" in d and len(d) > 1 for d in v)}
    if not semi or not shown:
        return ""
    lines = [
        "| Labels | Method | " + " | ".join(shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    order = {name: i for i, name in enumerate(all_methods())}
    for (labels, method), ds in sorted(
        semi.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        cells = []
        for k in shown:
            values = [d[k] for d in ds if k in d]
            cells.append(f"{sum(values) / len(values):.4g}" if values else "—")
        lines.append(f"| {labels} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ scheduling


def _jobs(
    names: list[str], labels: list[int], args: argparse.Namespace, data: Path, out: Path
) -> list[dict[str, Any]]:
    methods = all_methods()
    jobs = []
    grid = [(m, n) for n in labels for m in names]
    if args.ablations:
        grid += [(a, n) for n in args.ablation_labels for a in ABLATIONS]
    seen = set()
    for name, n in grid:
        method = methods[name]
        # a method's donor runs too (its stages are shared), even if not asked for
        chain = [method] if method.donor is None else [methods[method.donor], method]
        for m in chain:
            for fold in range(args.folds):
                key = (n, m.name, fold)
                if key in seen:
                    continue
                seen.add(key)
                config = run_config(m, n, fold, args, data, out)
                donor = run_dir(out, n, m.donor, fold) if m.donor else None
                jobs.append(
                    {
                        "labels": n,
                        "method": m.name,
                        "fold": fold,
                        "config": config.model_dump(mode="json"),
                        "donor": str(donor) if donor else None,
                        "depends": (n, m.donor, fold) if m.donor else None,
                        "fresh": args.fresh,
                        "score": args.score or ("torch" if args.smoke else "onnx"),
                        "cost": len(m.stages),
                    }
                )
    return jobs


def run_jobs(
    jobs: list[dict[str, Any]], workers: int, deadline: float | None = None
) -> list[dict[str, Any]]:
    """Run every job, a job only after the one it depends on (its donor) finished; longer
    jobs (more stages) first. ``workers`` processes (spawned: CUDA-safe), one thread each.
    No job starts after ``deadline`` (``time.time()``): those come back as ``skipped`` (a
    later call resumes them)."""
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    by_key = {(j["labels"], j["method"], j["fold"]): j for j in jobs}
    done: dict[tuple, dict[str, Any]] = {}
    pending = sorted(jobs, key=lambda j: -j["cost"])
    results: list[dict[str, Any]] = []

    def ready(job: dict[str, Any]) -> bool:
        if deadline is not None and time.time() > deadline:
            return False
        dep = job["depends"]
        return dep is None or dep not in by_key or dep in done

    def skip_rest() -> None:
        for job in pending:
            key = {k: job[k] for k in ("labels", "method", "fold")}
            results.append({**key, "skipped": "not started: past --start-deadline"})
            log.info("skipped %s (past --start-deadline)", tuple(key.values()))
        pending.clear()

    def finish(result: dict[str, Any]) -> None:
        key = (result["labels"], result["method"], result["fold"])
        done[key] = result
        results.append(result)
        status = result.get("error") or "ok"
        log.info("[%d/%d] %s: %s", len(results), len(jobs), key, status)

    if workers <= 1:
        while pending:
            job = next((j for j in pending if ready(j)), None)
            if job is None:
                skip_rest()
                break
            pending.remove(job)
            finish(run_job(job))
        return results
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        running: dict[cf.Future, dict[str, Any]] = {}
        while pending or running:
            for job in [j for j in pending if ready(j)]:
                if len(running) >= workers:
                    break
                pending.remove(job)
                running[pool.submit(run_job, job)] = job
            if not running:
                if deadline is not None and time.time() > deadline:
                    skip_rest()
                    break
                raise RuntimeError("job dependencies cannot be met")  # cannot happen
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                try:
                    finish(fut.result())
                except Exception as exc:  # the worker process died
                    key = {k: job[k] for k in ("labels", "method", "fold")}
                    finish({**key, "error": f"worker died: {exc}"})
    return results


# ------------------------------------------------------------------------------ scoring


def pooled_scores(results: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """Per (labels, method): the out-of-fold per-slice scores of all folds, pooled."""
    pooled: dict[tuple[int, str], dict[str, Any]] = {}
    for r in results:
        if "error" in r:
            continue
        entry = pooled.setdefault(
            (r["labels"], r["method"]), {"folds": set(), "dice": {}, "cdice": {}}
        )
        entry["folds"].add(r["fold"])
        for it in r["items"]:
            for metric in ("dice", "cdice"):
                for cls, value in it[metric].items():
                    entry[metric].setdefault(cls, {})[it["item"]] = value
    return pooled


def summarise(
    pooled: dict[tuple[int, str], dict[str, Any]], folds: int, n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """One row per (labels, method): pooled means with bootstrap CIs and paired differences
    (infection Dice) against the references that exist in the grid."""
    rows = []
    order = {name: i for i, name in enumerate(all_methods())}
    for (labels, method), entry in sorted(
        pooled.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], len(order)), kv[0][1])
    ):
        complete = len(entry["folds"]) == folds
        row: dict[str, Any] = {
            "labels": labels,
            "method": method,
            "label": all_methods()[method].label if method in all_methods() else method,
            "complete": complete,
            "folds": sorted(entry["folds"]),
            "n": len(entry["dice"].get("infection", {})),
            "scores": {},
            "paired": {},
        }
        for metric in ("dice", "cdice"):
            for cls in CLASSES:
                values = list(entry[metric].get(cls, {}).values())
                if values:
                    ci = bootstrap_mean_ci(values, n_boot=n_boot, seed=seed)
                    row["scores"][f"{metric}:{cls}"] = ci.to_dict()
        inf = entry["dice"].get("infection", {})
        refs = {"supervised (same labels)": (labels, "supervised")}
        most = max(k[0] for k in pooled)
        if most != labels:
            refs["supervised (all labels)"] = (most, "supervised")
        if method.startswith("pre_"):
            refs["without pre-training"] = (labels, method[len("pre_") :])
        if method in ABLATIONS:
            refs["tcsm (same labels)"] = (labels, "tcsm")
        for ref_name, ref_key in refs.items():
            if ref_key == (labels, method) or ref_key not in pooled:
                continue
            ref = pooled[ref_key]["dice"].get("infection", {})
            if ref.keys() == inf.keys() and inf:
                diff = paired_difference(inf, ref, n_boot=n_boot, seed=seed)
                row["paired"][ref_name] = {"against": list(ref_key), **asdict(diff)}
        rows.append(row)
    return rows


def _ci(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "—"
    return f"{stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def _diff(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "—"
    return (
        f"{stats['mean']:+.3f} [{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}] "
        f"({stats['wins']}/{stats['losses']})"
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: pooled out-of-fold means [bootstrap 95 % CI] and paired differences of the
    infection Dice (mean [CI] (slices better/worse)) against supervised."""
    lines = [
        "| Labels | Method | Infection Dice | GGO Dice | Consolidation Dice | Infection cDice "
        "| Δ vs supervised (same labels) | Δ vs supervised (all labels) "
        "| Δ vs no pre-training (ablations: vs tcsm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, p = r["scores"], r["paired"]
        mark = "" if r["complete"] else f" *(folds {r['folds']})*"
        lines.append(
            f"| {r.get('labels_text', r['labels'])} | {r['label']}{mark} | "
            f"{_ci(s.get('dice:infection'))} | "
            f"{_ci(s.get('dice:ggo'))} | {_ci(s.get('dice:consolidation'))} | "
            f"{_ci(s.get('cdice:infection'))} | {_diff(p.get('supervised (same labels)'))} | "
            f"{_diff(p.get('supervised (all labels)'))} | "
            f"{_diff(p.get('without pre-training') or p.get('tcsm (same labels)'))} |"
        )
    return "\n".join(lines)


def plot_label_efficiency(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Pooled infection Dice (bootstrap CI bars) against labeled slices, one line per method
    (ablations left out). Also writes the plotted numbers as CSV next to it. None when
    matplotlib is not installed."""
    main = [r for r in rows if r["method"] in METHODS and "dice:infection" in r["scores"]]
    with path.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "labels", "infection_dice", "ci_low", "ci_high", "n"])
        for r in main:
            s = r["scores"]["dice:infection"]
            w.writerow([r["method"], r["labels"], s["mean"], s["ci_low"], s["ci_high"], s["n"]])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning(
            "matplotlib is not installed: no %s (numbers in %s)", path, path.with_suffix(".csv")
        )
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, method in enumerate(METHODS):
        pts = sorted(
            (r["labels"], r["scores"]["dice:infection"]) for r in main if r["method"] == method
        )
        if not pts:
            continue
        xs = [x * (1 + 0.02 * (k - len(METHODS) / 2)) for x, _ in pts]  # dodge the CI bars
        ys = [s["mean"] for _, s in pts]
        err = [
            [s["mean"] - s["ci_low"] for _, s in pts],
            [s["ci_high"] - s["mean"] for _, s in pts],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=METHODS[method].label)
    ticks = sorted({r["labels"] for r in main})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labeled training slices per fold")
    ax.set_ylabel("infection Dice (pooled out-of-fold, 95 % CI)")
    n = max((r["n"] for r in main), default=0)
    ax.set_title(f"COVID-SemiSeg label efficiency (cross-validation, {n} slices)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ shipping


def ship(args: argparse.Namespace, data: Path, out: Path) -> int:
    """Train ``--ship`` once on ``--ship-labels`` of the 50 labeled slices (all: 50) + the
    unlabeled ones, fixed schedule (no slice is held out), and export the ONNX model."""
    method = all_methods().get(args.ship)
    if method is None:
        raise SystemExit(f"error: unknown method '{args.ship}'; choose from {list(all_methods())}.")
    n_labeled = len(list_slice_folder(data / "train" / "images", data / "train" / "masks"))
    labels = min(args.ship_labels, n_labeled)
    name = f"covid_{method.name}_{labels}labeled"
    jobs = []
    chain = [all_methods()[method.donor], method] if method.donor else [method]
    for m in chain:
        config = _apply_overrides(base_config(args, data), m.overrides)
        config.stages = m.stages
        config.data.cv_folds, config.data.cv_fold = 0, 0
        config.data.val_fraction = 0.0  # every labeled slice trains: nothing left to select on
        config.data.labeled_count = 0 if labels >= n_labeled else labels
        config.output_dir = str(out / "ship" / f"covid_{m.name}_{labels}labeled")
        config.export.name = f"pulmoseg-covid-semiseg-{m.name}-{labels}labeled"
        jobs.append(config)
    for i, config in enumerate(jobs):
        directory = Path(config.output_dir)
        if args.fresh and directory.exists():
            shutil.rmtree(directory)
        _check_same_config(config, directory)
        directory.mkdir(parents=True, exist_ok=True)
        if i:
            _copy_donor_stages(config, Path(jobs[i - 1].output_dir))
        final = directory / FINAL_CHECKPOINT
        if not final.is_file():
            result = run_experiment(config, resume=True, progress=False)
            if not result.finished:
                raise SystemExit(f"error: {directory} stopped early; re-run to resume.")
    onnx_path = out / f"{name}.onnx"
    export_onnx(Path(jobs[-1].output_dir) / FINAL_CHECKPOINT, onnx_path)
    print(f"shipped {onnx_path.resolve()}")
    return 0


# ------------------------------------------------------------------------------ sizing


def measure_steps(
    names: list[str], labels: int, steps: int, args: argparse.Namespace, data: Path, out: Path
) -> list[dict[str, Any]]:
    """Time ``steps`` optimisation steps (after one warm-up step) of every stage of the
    methods ``names`` at ``labels`` labeled slices, fold 0, one thread, in this process: the
    numbers the CPU protocol is sized from. CPU seconds per step (``cpu_s``) count the work
    whatever else the machine runs; wall seconds (``wall_s``) show the contention."""
    import torch

    from training.distributed import init_distributed, shutdown_distributed
    from training.experiment import _build_task, load_experiment_data, prepare_run
    from training.nn.networks import build_network

    torch.set_num_threads(1)
    methods = all_methods()
    timed: dict[str, dict[str, Any]] = {}
    for name in names:
        method = methods[name]
        config = run_config(method, labels, 0, args, data, out / "measure")
        config.output_dir = str(out / "measure" / name)
        ctx = init_distributed("auto", args.device)
        try:
            prepare_run(config, ctx)
            torch.set_num_threads(1)
            experiment = load_experiment_data(config)
            model = build_network(config.model).to(ctx.device)
            for stage in method.stages:
                if stage in timed:
                    continue
                task = _build_task(stage, config, model, experiment, ctx)
                seed = config.seed
                task.step(0, step_random(seed, stage, 0, 0))  # warm-up: first-call dispatch
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(1, steps + 1):
                    task.step(i, step_random(seed, stage, 0, i))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                timed[stage] = {
                    "stage": stage,
                    "cpu_s": cpu / steps,
                    "wall_s": wall / steps,
                    "steps": steps,
                    "input": list(config.model.input_size),
                    "features": list(config.model.features),
                }
                log.info(
                    "%s: %.3f CPU s/step (%.3f s wall) at %s, 1 thread",
                    stage,
                    cpu / steps,
                    wall / steps,
                    "x".join(map(str, config.model.input_size)),
                )
        finally:
            shutdown_distributed(ctx)
    return list(timed.values())


# ------------------------------------------------------------------------------ main


def _smoke_data(data: Path, out: Path, unlabeled: int = 48) -> Path:
    """A view of the data for --smoke: the labeled folders and a few unlabeled slices, as
    symbolic links (nothing copied)."""
    view = out / ("data" if unlabeled == 48 else f"data_u{unlabeled}")
    (view / "train").mkdir(parents=True, exist_ok=True)
    for sub in ("images", "masks"):
        link = view / "train" / sub
        if not link.exists():
            link.symlink_to((data / "train" / sub).resolve(), target_is_directory=True)
    unl = view / "unlabeled"
    if not unl.exists():
        unl.mkdir()
        files = sorted(p for p in (data / "unlabeled").iterdir() if p.is_file())
        step = max(1, len(files) // unlabeled)
        for p in files[::step][:unlabeled]:
            (unl / p.name).symlink_to(p.resolve())
    return view


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores"


def section_markers(protocol: str) -> tuple[str, str]:
    """The docs markers of a protocol's results section (the gpu one keeps the old ones)."""
    if protocol == "gpu":
        return SECTION_START, SECTION_END
    return f"<!-- covid-semiseg-{protocol}:start -->", f"<!-- covid-semiseg-{protocol}:end -->"


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the grid (resumable: re-running it only scores)."""
    parts = ["python bench/covid_semiseg.py", f"--protocol {args.protocol}"]
    if args.config != PROTOCOLS[args.protocol]:
        parts.append(f"--config {args.config}")
    defaults = PROTOCOL_DEFAULTS[args.protocol]
    if args.methods != defaults["methods"]:
        parts.append(f"--methods {args.methods}")
    parts.append("--labels " + " ".join(map(str, args.labels)))
    parts.append(f"--folds {args.folds}")
    if args.pretrain_best:
        parts.append("--pretrain-best " + " ".join(map(str, args.pretrain_best)))
    if args.ablations:
        parts.append("--ablations")
    parts.append(f"--device {args.device} --workers {args.workers}")
    return " ".join(parts)


def results_section(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    wall_s: float,
    goals: list[dict[str, Any]] | None = None,
    diagnostics: str = "",
    skipped: list[dict[str, Any]] | None = None,
    image: Path | None = None,
) -> str:
    """The docs section (between the protocol's covid-semiseg markers)."""
    start, end = section_markers(args.protocol)
    n = max((r["n"] for r in rows), default=0)
    lines = [
        start,
        f"### Results ({args.protocol} protocol, written by the bench)"
        if args.protocol != "gpu"
        else "## Real data: COVID-SemiSeg label efficiency",
        "",
        f"Machine: {args.machine or _machine()}; device {args.device}, {args.workers} "
        f"worker(s). Date: {args.date}. Grid wall time {wall_s / 3600:.2f} h."
        + (f" {args.note}" if args.note else ""),
        "",
        f"Command: `{command_line(args)}` (base config `{_rel(args.config)}`).",
        "",
        f"{args.folds}-fold cross-validation over the {n} labeled slices: each fold's "
        "held-out slices are its test set, never used for model selection (fixed "
        "schedules, the last epoch of the last stage ships); of a fold's training slices all "
        "or a stratified subset keep their labels, the rest and the unlabeled slices form the "
        f"unlabeled pool. Scores are pooled out-of-fold per-slice scores (all {n} slices, "
        "each by the fold model that never saw it) of the "
        + ("exported ONNX models" if (args.score or "onnx") == "onnx" else "checkpoints")
        + ", mean [bootstrap 95 % CI]; Δ: paired per-slice infection Dice difference, "
        "mean [bootstrap 95 % CI] (slices better/worse).",
        "",
        format_table(rows),
    ]
    if goals:
        lines += ["", "Targets of the claim (pooled out of fold):", "", format_targets(goals)]
    if diagnostics:
        lines += [
            "",
            "Last-epoch step diagnostics of the semi-supervised stages (fold means; "
            "`agreement`: teacher/student argmax agreement, `confident_fraction`: share of "
            "unlabeled pixels above UniMatch's confidence threshold, `weighted_*`: the "
            "unlabeled term as it enters the loss, next to `supervised`):",
            "",
            diagnostics,
        ]
    if skipped:
        lines += [
            "",
            f"Not run (past `--start-deadline`): {len(skipped)} run(s): "
            + ", ".join(f"{r['labels']}/{r['method']}/fold{r['fold']}" for r in skipped)
            + ".",
        ]
    if image is not None:
        lines += ["", f"![label efficiency]({_rel(image, args.docs.parent)})"]
    lines.append(end)
    return "\n".join(lines)


def _rel(path: Path, base: Path = REPO) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), Path(base).resolve())
    except ValueError:
        return str(path)


def write_section(path: Path, section: str, protocol: str = "gpu") -> None:
    """Insert or replace the protocol's covid-semiseg section; other sections stay untouched."""
    start, end = section_markers(protocol)
    text = path.read_text() if path.is_file() else "# Results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def best_semi(rows: list[dict[str, Any]], labels: int, names: tuple[str, ...]) -> str | None:
    """The method of ``names`` with the best pooled infection Dice at ``labels`` (None if none
    of them has a complete row)."""
    scored = [
        (r["scores"]["dice:infection"]["mean"], r["method"])
        for r in rows
        if r["labels"] == labels
        and r["method"] in names
        and r["complete"]
        and "dice:infection" in r["scores"]
    ]
    return max(scored)[1] if scored else None


SEMI = ("tcsm", "unimatch", "pre_tcsm", "pre_unimatch")


def targets(rows: list[dict[str, Any]], low: int, high: int) -> list[dict[str, Any]]:
    """The three targets of the label-efficiency claim (issue 21), pooled out of fold:
    best semi-supervised @low >= supervised @high - 0.02; best semi-supervised @low >=
    supervised @low + 0.05; best semi-supervised @high >= supervised @high + 0.02. "Best" is
    the semi-supervised method with the highest pooled infection Dice at that label count
    (a choice made on the same slices: slightly optimistic). Each target: the point figure,
    its paired per-slice difference with the bootstrap CI, and met or not (point estimate)."""
    by = {(r["labels"], r["method"]): r for r in rows if r["complete"]}
    out = []
    for name, labels, ref_labels, margin, paired in (
        ("best semi-supervised @{a} >= supervised @{b} - 0.02", low, high, -0.02, "all"),
        ("best semi-supervised @{a} >= supervised @{b} + 0.05", low, low, 0.05, "same"),
        ("best semi-supervised @{a} >= supervised @{b} + 0.02", high, high, 0.02, "same"),
    ):
        entry: dict[str, Any] = {"target": name.format(a=labels, b=ref_labels)}
        best = best_semi(rows, labels, SEMI)
        ref = by.get((ref_labels, "supervised"))
        if best is None or ref is None:
            entry["status"] = "not measured"
            out.append(entry)
            continue
        row = by[(labels, best)]
        got = row["scores"]["dice:infection"]["mean"]
        need = ref["scores"]["dice:infection"]["mean"] + margin
        key = "supervised (same labels)" if paired == "same" else "supervised (all labels)"
        entry.update(
            method=best,
            label=row["label"],
            value=got,
            reference=ref["scores"]["dice:infection"]["mean"],
            threshold=need,
            paired=row["paired"].get(key),
            met=got >= need,
            status="met" if got >= need else "not met",
        )
        out.append(entry)
    return out


def format_targets(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| Target | Best method | Its infection Dice | Supervised reference | Needed "
        "| Paired Δ vs the reference [95 % CI] (better/worse) | Met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if e["status"] == "not measured":
            lines.append(f"| {e['target']} | — | — | — | — | — | not measured |")
            continue
        lines.append(
            f"| {e['target']} | {e['label']} | {e['value']:.3f} | {e['reference']:.3f} | "
            f"{e['threshold']:.3f} | {_diff(e['paired'])} | **{e['status']}** |"
        )
    return "\n".join(lines)


def _labels_text(rows: list[dict[str, Any]], n_labeled: int, folds: int) -> None:
    """Name each row's label count as run: a count at or above a fold's training slices
    means all of them (``40 (all: 33–34)`` with 3 folds of 50 slices)."""
    sizes = [len(part) for part in np.array_split(np.arange(n_labeled), folds)]
    train = sorted({n_labeled - k for k in sizes})
    for r in rows:
        if r["labels"] >= train[0]:
            span = f"{train[0]}–{train[-1]}" if len(train) > 1 else str(train[0])
            r["labels_text"] = f"{r['labels']} (all: {span})"
        else:
            r["labels_text"] = str(r["labels"])


def _run_grid(
    names: list[str], args: argparse.Namespace, data: Path, out: Path
) -> list[dict[str, Any]]:
    """The main grid, then (``--pretrain-best``) contrastive pre-training in front of the
    better of TCSM and UniMatch at the lowest label count, one label count after another."""
    deadline = None
    if args.start_deadline:
        hh, mm = (int(v) for v in args.start_deadline.split(":"))
        now = dt.datetime.now(dt.UTC)
        stop = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        deadline = stop.timestamp()
        log.info("no run starts after %s UTC", stop.strftime("%H:%M"))
    jobs = _jobs(names, sorted(set(args.labels)), args, data, out)
    log.info("%d runs (%d workers, device %s)", len(jobs), args.workers, args.device)
    results = run_jobs(jobs, max(1, args.workers), deadline)
    if not args.pretrain_best:
        return results
    done = [r for r in results if "error" not in r and "skipped" not in r]
    rows = summarise(pooled_scores(done), args.folds, 200, args.seed)
    best = best_semi(rows, min(args.labels), ("tcsm", "unimatch"))
    if best is None:
        log.warning("--pretrain-best: no complete TCSM or UniMatch row; nothing to pre-train")
        return results
    log.info("--pretrain-best: %s is the better semi-supervised method; adding pre_%s", best, best)
    for labels in args.pretrain_best:
        extra = _jobs([f"pre_{best}"], [labels], args, data, out)
        results += run_jobs(extra, max(1, args.workers), deadline)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not (args.data / "train" / "images").is_dir():
        raise SystemExit(f"error: '--data {args.data}' has no train/images folder.")
    out = args.out / "smoke" if args.smoke else args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.unlabeled_limit is not None:
        data = _smoke_data(args.data, out, args.unlabeled_limit)
    elif args.smoke:
        data = _smoke_data(args.data, out)
    elif args.measure:  # step times do not depend on the pool size: load a few slices only
        data = _smoke_data(args.data, out / "measure")
    else:
        data = args.data
    if args.ship:
        return ship(args, data, out)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_methods()]
    if unknown:
        raise SystemExit(f"error: unknown method(s) {unknown}; choose from {list(all_methods())}.")
    if args.measure:
        timed = measure_steps(names, min(args.labels), args.measure, args, data, out)
        (out / "measure" / "step_times.json").write_text(json.dumps(timed, indent=2) + "\n")
        print("| Stage | CPU s/step (1 thread) | wall s/step |\n|---|---|---|")
        for t in timed:
            print(f"| {t['stage']} | {t['cpu_s']:.3f} | {t['wall_s']:.3f} |")
        return 0
    n_labeled = len(list_slice_folder(data / "train" / "images", data / "train" / "masks"))
    if not 2 <= args.folds <= n_labeled:
        raise SystemExit(f"error: --folds must be in [2, {n_labeled}], got {args.folds}.")
    start = time.perf_counter()
    results = _run_grid(names, args, data, out)
    wall = time.perf_counter() - start
    skipped = [r for r in results if "skipped" in r]
    results = [r for r in results if "skipped" not in r]
    failed = [r for r in results if "error" in r]
    rows = summarise(pooled_scores(results), args.folds, args.bootstrap, args.seed)
    _labels_text(rows, n_labeled, args.folds)
    labels = sorted({r["labels"] for r in rows})
    goals = targets(rows, labels[0], labels[-1]) if len(labels) > 1 else []
    plot = plot_label_efficiency(rows, out / "label_efficiency.png")
    (out / "results.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "targets": goals,
                "failed": failed,
                "skipped": skipped,
                "wall_s": wall,
                "args": {k: str(v) for k, v in vars(args).items()},
                "runs": [
                    {
                        k: r[k]
                        for k in ("labels", "method", "fold", "times", "dir", "diagnostics")
                        if k in r
                    }
                    for r in results
                ],
            },
            indent=2,
        )
        + "\n"
    )
    table = format_table(rows)
    if goals:
        table += "\n\nTargets of the claim (pooled out of fold):\n\n" + format_targets(goals)
    diagnostics = diagnostics_table(results)
    if diagnostics:
        table += "\n\nLast-epoch step diagnostics (fold means):\n\n" + diagnostics
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(
        f"\n{len(results) - len(failed)}/{len(results)} runs ok, {len(skipped)} skipped, in "
        f"{wall / 60:.1f} min; results: {(out / 'results.json').resolve()}; "
        f"plot: {plot or 'none (no matplotlib)'}"
    )
    for r in failed:
        print(f"FAILED {r['labels']} {r['method']} fold{r['fold']}: {r['error']}")
    if args.docs is not None and not failed:
        image = None
        if plot is not None:
            image = (
                args.docs.parent / "images" / f"covid_semiseg_{args.protocol}_label_efficiency.png"
            )
            image.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plot, image)
        section = results_section(rows, args, wall, goals, diagnostics, skipped, image)
        write_section(args.docs, section, args.protocol)
        print(f"wrote the results section into {args.docs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
