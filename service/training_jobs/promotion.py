"""Promotion: is a candidate model at least as good as the served one, on the same data?

Both models are scored by ``pulmoseg evaluate`` (a subprocess: the service never imports
training) on the candidate job's validation split — the same dataset, fraction, seed and fold
that chose the candidate's checkpoint — so the two figures are directly comparable.

The figure is the **mean lesion VolDice**: the mean over the lesion classes (GGO,
consolidation) of their per-study VolDice means, as ``pulmoseg evaluate`` reports them; a model
without lesion classes is scored on all its non-background classes. The candidate is promoted
when its figure is not lower than the served model's (ties promote: the newer model wins).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.classes import LESION_CLASS_NAMES
from service.training_jobs.errors import JobStateError
from service.training_jobs.worker import log_tail

#: Scores closer than this count as equal (float noise of two ORT runs).
TIE_TOLERANCE = 1e-9
EVALUATE_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    candidate: float
    serving: float
    message: str


def split_arguments(config: dict[str, Any]) -> list[str]:
    """``pulmoseg evaluate`` arguments that reproduce the training run's validation split."""
    data = config.get("data") or {}
    args = [
        "--split",
        "val",
        "--val-fraction",
        str(data.get("val_fraction", 0.2)),
        "--seed",
        str(config.get("seed", 0)),
    ]
    if data.get("cv_folds"):
        args += ["--fold", f"{data.get('cv_fold', 0)}/{data['cv_folds']}"]
    return args


def lesion_score(report: dict[str, Any]) -> float:
    """The mean lesion VolDice of an evaluation report (see the module docstring)."""
    vol = report.get("summary", {}).get("vol_dice") or {}
    lesions = [name for name in LESION_CLASS_NAMES if name in vol]
    names = lesions or [n for n in vol if n not in ("background", "infection")]
    if not names:
        raise JobStateError("The evaluation reported no VolDice, so the models cannot be compared.")
    return float(sum(float(vol[n]["mean"]) for n in names) / len(names))


def evaluate(model: Path, data: Path, config: dict[str, Any]) -> float:
    """Score ``model`` on the validation split of ``data`` (``pulmoseg evaluate``)."""
    with tempfile.TemporaryDirectory(prefix="pulmoseg-promote-") as tmp:
        out, log = Path(tmp) / "report.json", Path(tmp) / "evaluate.log"
        command = [
            sys.executable,
            "-m",
            "service.cli",
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(data),
            *split_arguments(config),
            "--out",
            str(out),
        ]
        with log.open("wb") as sink:
            code = subprocess.call(
                command, stdout=sink, stderr=subprocess.STDOUT, timeout=EVALUATE_TIMEOUT_S
            )
        if code != 0 or not out.is_file():
            raise JobStateError(
                f"Could not evaluate '{model.name}' on the validation data (exit code {code}): "
                f"{log_tail(log, 5)}"
            )
        return lesion_score(json.loads(out.read_text()))


def decide(candidate: float, serving: float, serving_version: str) -> PromotionDecision:
    promoted = candidate >= serving - TIE_TOLERANCE
    verdict = "not worse than" if promoted else "worse than"
    return PromotionDecision(
        promoted,
        candidate,
        serving,
        f"candidate mean lesion VolDice {candidate:.4f} is {verdict} the served version "
        f"{serving_version}'s {serving:.4f} on the same validation data",
    )


def install(candidate: Path, serving_dir: Path, version: str) -> Path:
    """Copy the candidate in as ``<serving_dir>/<version>/model.onnx`` in one rename (a hidden
    folder while copying, which the version listing skips)."""
    staging = serving_dir / f".{version}"
    target = serving_dir / version
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copy2(candidate, staging / "model.onnx")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / "model.onnx"


@dataclass(frozen=True)
class Candidate:
    """What a promotion compares: a registry entry and the job that made it."""

    job_id: str
    model_name: str
    model_version: str
    model: Path
    data: Path
    config: dict[str, Any]


def promote(
    candidate: Candidate,
    served_version: str,
    served_model: Path,
    serving_dir: Path,
    new_version: str,
) -> tuple[PromotionDecision, str]:
    """Score both models on the candidate's validation split; install the candidate as
    ``new_version`` when it is not worse. Returns the decision and the installed version ("")."""
    if not candidate.data.is_dir():
        raise JobStateError(
            f"The validation data of {candidate.model_name} {candidate.model_version} "
            f"('{candidate.data}') is gone, so the models cannot be compared on it."
        )
    score = evaluate(candidate.model, candidate.data, candidate.config)
    baseline = evaluate(served_model, candidate.data, candidate.config)
    decision = decide(score, baseline, served_version)
    if not decision.promoted:
        return decision, ""
    install(candidate.model, serving_dir, new_version)
    return decision, new_version
