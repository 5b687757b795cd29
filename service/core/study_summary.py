"""The one ``summary.json`` schema, written by ``pulmoseg segment --summary-json`` (the client)
and by ``python -m service.app`` (the MONAI Deploy app / MAP).

Both describe the same thing, one segmented study, so a script that reads one reads the other.
The keys are the field names of the gRPC ``StudySummary`` (the service's public answer), every
key is always present (None, 0 or "" when a part did not run), and ``skipped`` lists what the
study-folder rule left out. It lives in the shared core because the app and the client are
different layers that must not depend on each other's objects: each passes plain values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "SUMMARY_FILE_NAME",
    "Skipped",
    "applicability_fields",
    "clinical_fields",
    "consistency_fields",
    "quality_fields",
    "review_required",
    "study_summary",
    "summary_document",
    "write_summary_json",
]

SUMMARY_FILE_NAME = "summary.json"


class Skipped(Protocol):
    """An item the study-folder rule left out (``service.dicom.study_folder.SkippedFile``)."""

    @property
    def path(self) -> str: ...

    @property
    def reason(self) -> str: ...


def clinical_fields(
    *,
    class_volumes_ml: Mapping[str, float],
    lung_volume_ml: float | None,
    lesion_volume_ml: float | None,
    involvement_percent: float | None,
    severity_grade: str | None,
) -> dict[str, Any]:
    """The ``clinical`` entry; values a model cannot give (no lung or lesion class) are None."""
    return {
        "class_volumes_ml": _floats(class_volumes_ml),
        "lung_volume_ml": _float_or_none(lung_volume_ml),
        "lesion_volume_ml": _float_or_none(lesion_volume_ml),
        "involvement_percent": _float_or_none(involvement_percent),
        "severity_grade": str(severity_grade) if severity_grade else None,
    }


def consistency_fields(
    *, transform: str, voldice: Mapping[str, float], threshold: float, flagged: bool
) -> dict[str, Any]:
    """The ``consistency`` entry: per-class VolDice under ``transform`` and the review flag."""
    return {
        "transform": str(transform),
        "voldice": _floats(voldice),
        "threshold": float(threshold),
        "flagged": bool(flagged),
    }


def applicability_fields(
    *,
    reasons: Iterable[str],
    details: Mapping[str, str],
    measurements: Mapping[str, float | None],
    contrast_agent: str = "",
) -> dict[str, Any]:
    """The ``applicability`` entry: the failed input checks (``reasons``, empty when the study
    is inside the model's range), one sentence each, and what was measured (a value that could
    not be measured is left out, as the gRPC map leaves it out)."""
    names = [str(r) for r in reasons]
    return {
        "applicable": not names,
        "reasons": names,
        "details": {str(k): str(v) for k, v in details.items()},
        "measurements": {str(k): float(v) for k, v in measurements.items() if v is not None},
        "contrast_agent": str(contrast_agent),
    }


def quality_fields(
    *,
    score: float,
    flagged: bool,
    threshold: float,
    variant: str,
    signals: Mapping[str, float | None],
) -> dict[str, Any]:
    """The ``quality`` entry: the label-free quality score (``service.quality.quality_score``),
    whether it fell below ``threshold`` and the signals it combined (unmeasured ones left out,
    as the gRPC map leaves them out)."""
    return {
        "score": float(score),
        "flagged": bool(flagged),
        "threshold": float(threshold),
        "variant": str(variant),
        "signals": {str(k): float(v) for k, v in signals.items() if v is not None},
    }


def review_required(
    *,
    flagged: bool,
    quality: Mapping[str, Any] | None,
    applicability: Mapping[str, Any] | None,
) -> bool:
    """ "Do not use without a look": the consistency flag, the quality score's flag or a
    failed applicability check — one bool, so that a client needs no rule of its own."""
    return (
        bool(flagged)
        or bool(quality is not None and quality.get("flagged"))
        or bool(applicability is not None and not applicability.get("applicable", True))
    )


def study_summary(
    *,
    study_uid_hash: str,
    num_instances: int,
    class_volumes_ml: Mapping[str, float],
    model_name: str,
    model_version: str,
    provider: str,
    stage_seconds: Mapping[str, float],
    seg_bytes: bytes,
    sr_bytes: bytes = b"",
    clinical: Mapping[str, Any] | None = None,
    consistency: Mapping[str, Any] | None = None,
    flagged: bool = False,
    applicability: Mapping[str, Any] | None = None,
    quality: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The study's summary in plain Python types (``json.dumps`` takes it as it is).

    Sizes and SHA-256 digests are computed here from the bytes, so both writers state them
    the same way; ``clinical`` and ``consistency`` come from :func:`clinical_fields` and
    :func:`consistency_fields` (None when the quality step did not run), ``applicability``
    from :func:`applicability_fields` (None when the checks did not run), ``quality`` from
    :func:`quality_fields` (None when the score is off); ``review_required`` is derived here
    (:func:`review_required`) so every writer states it the same way.
    """
    return {
        "study_uid_hash": str(study_uid_hash),
        "class_volumes_ml": _floats(class_volumes_ml),
        "num_instances": int(num_instances),
        "model_name": str(model_name),
        "model_version": str(model_version),
        "provider": str(provider),
        "stage_seconds": _floats(stage_seconds),
        "seg_size_bytes": len(seg_bytes),
        "seg_sha256": hashlib.sha256(seg_bytes).hexdigest(),
        "clinical": dict(clinical) if clinical is not None else None,
        "consistency": dict(consistency) if consistency is not None else None,
        "flagged": bool(flagged),
        "sr_size_bytes": len(sr_bytes),
        "sr_sha256": hashlib.sha256(sr_bytes).hexdigest() if sr_bytes else "",
        "applicability": dict(applicability) if applicability is not None else None,
        "quality": dict(quality) if quality is not None else None,
        "review_required": review_required(
            flagged=flagged, quality=quality, applicability=applicability
        ),
    }


def summary_document(summary: Mapping[str, Any], skipped: Iterable[Skipped] = ()) -> dict[str, Any]:
    """What ``summary.json`` holds: the summary plus the items the study-folder rule skipped."""
    return {
        **summary,
        "skipped": [{"path": str(s.path), "reason": str(s.reason)} for s in skipped],
    }


def write_summary_json(
    path: str | Path, summary: Mapping[str, Any], skipped: Iterable[Skipped] = ()
) -> Path:
    """Write :func:`summary_document` to ``path`` (its folder is created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Schema order, not sorted: stage_seconds keeps the pipeline's order of stages.
    text = json.dumps(summary_document(summary, skipped), indent=2)
    target.write_text(text + "\n")
    return target


def _floats(values: Mapping[str, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in values.items()}


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)
