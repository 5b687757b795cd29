"""Promotion: is a candidate model at least as good as the served one on the site's own data?

Both models are scored by ``pulmoseg evaluate`` (a subprocess: the service never imports
training) on the **site-held reference set** the operator configures (setting
``training.reference_set``: a dataset folder, or 'captured'), all of its studies. Never on the
candidate's own validation split: whoever submits a job chooses that data, so a dataset built
for it could always win. The candidate's own-split figure (from its registry entry) is reported
beside the decision but does not decide.

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
from dataclasses import dataclass, field
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


def mean_lesion(vol: dict[str, float]) -> float | None:
    """The mean lesion VolDice of per-class means (see the module docstring); None if empty."""
    lesions = [name for name in LESION_CLASS_NAMES if name in vol]
    names = lesions or [n for n in vol if n not in ("background", "infection")]
    if not names:
        return None
    return float(sum(float(vol[n]) for n in names) / len(names))


def lesion_score(report: dict[str, Any]) -> float:
    """The mean lesion VolDice of an evaluation report (see the module docstring)."""
    vol = report.get("summary", {}).get("vol_dice") or {}
    score = mean_lesion({name: float(value["mean"]) for name, value in vol.items()})
    if score is None:
        raise JobStateError("The evaluation reported no VolDice, so the models cannot be compared.")
    return score


def evaluate(model: Path, data: Path) -> float:
    """Score ``model`` on every study of the reference set ``data`` (``pulmoseg evaluate``)."""
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
            "--split",
            "all",
            "--out",
            str(out),
        ]
        with log.open("wb") as sink:
            code = subprocess.call(
                command, stdout=sink, stderr=subprocess.STDOUT, timeout=EVALUATE_TIMEOUT_S
            )
        if code != 0 or not out.is_file():
            raise JobStateError(
                f"Could not evaluate '{model.name}' on the reference set '{data}' (exit code "
                f"{code}): "
                f"{log_tail(log, 5)}"
            )
        return lesion_score(json.loads(out.read_text()))


def decide(
    candidate: float, serving: float, serving_version: str, reference: Path, own: float | None
) -> PromotionDecision:
    promoted = candidate >= serving - TIE_TOLERANCE
    verdict = "not worse than" if promoted else "worse than"
    beside = (
        f"; on its own validation split (reported, not deciding) it scored {own:.4f}"
        if own is not None
        else ""
    )
    return PromotionDecision(
        promoted,
        candidate,
        serving,
        f"candidate mean lesion VolDice {candidate:.4f} is {verdict} the served version "
        f"{serving_version}'s {serving:.4f} on the site reference set '{reference}'{beside}",
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
    #: Validation VolDice per class on the job's own split (reported beside, never deciding).
    own_voldice: dict[str, float] = field(default_factory=dict)


def promote(
    candidate: Candidate,
    served_version: str,
    served_model: Path,
    serving_dir: Path,
    new_version: str,
    reference: Path,
) -> tuple[PromotionDecision, str]:
    """Score both models on the site reference set; install the candidate as ``new_version``
    when it is not worse. Returns the decision and the installed version ("")."""
    if not (reference / "manifest.json").is_file():
        raise JobStateError(
            f"The reference set '{reference}' (setting 'training.reference_set') has no "
            "manifest.json, so the models cannot be compared on it."
        )
    score = evaluate(candidate.model, reference)
    baseline = evaluate(served_model, reference)
    own = mean_lesion(candidate.own_voldice)
    decision = decide(score, baseline, served_version, reference, own)
    if not decision.promoted:
        return decision, ""
    install(candidate.model, serving_dir, new_version)
    return decision, new_version
