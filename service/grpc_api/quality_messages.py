"""Quality results and records ↔ ``pulmoseg.v1`` messages, in one place for both servicers."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from service.grpc_api import segmentation_pb2 as pb2
from service.quality.applicability import Applicability
from service.quality.clinical import ClinicalSummary
from service.quality.consistency import ConsistencyResult
from service.quality.quality_score import QualityScore
from service.quality.records import StudyRecord
from service.quality.reference import ReferenceScores


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def clinical_message(
    volumes: dict[str, float],
    lung_ml: float | None,
    lesion_ml: float | None,
    involvement: float | None,
    grade: str | None,
) -> pb2.ClinicalSummary:
    message = pb2.ClinicalSummary(class_volumes_ml=volumes, severity_grade=grade or "")
    if lung_ml is not None:
        message.lung_volume_ml = lung_ml
    if lesion_ml is not None:
        message.lesion_volume_ml = lesion_ml
    if involvement is not None:
        message.involvement_percent = involvement
    return message


def clinical_from_summary(summary: ClinicalSummary) -> pb2.ClinicalSummary:
    return clinical_message(
        summary.class_volumes_ml,
        summary.lung_volume_ml,
        summary.lesion_volume_ml,
        summary.involvement_percent,
        summary.grade.value if summary.grade else None,
    )


def consistency_message(result: ConsistencyResult) -> pb2.ConsistencyQuality:
    return pb2.ConsistencyQuality(
        transform=result.transform,
        voldice=result.voldice,
        threshold=result.threshold,
        flagged=result.flagged,
    )


def applicability_message(
    reasons: list[str],
    measurements: dict[str, float | None],
    details: dict[str, str] | None = None,
    contrast_agent: str = "",
) -> pb2.Applicability:
    """The checks as a message; unmeasured values (None) are left out of the map."""
    return pb2.Applicability(
        applicable=not reasons,
        reasons=reasons,
        details=details or {},
        measurements={k: float(v) for k, v in measurements.items() if v is not None},
        contrast_agent=contrast_agent,
    )


def quality_message(
    score: float, flagged: bool, threshold: float, variant: str, signals: dict[str, object]
) -> pb2.QualityScore:
    """The quality score as a message; signals without a value (None) are left out."""
    return pb2.QualityScore(
        score=score,
        flagged=flagged,
        threshold=threshold,
        variant=variant,
        signals={
            k: float(v)
            for k, v in signals.items()
            if isinstance(v, int | float) and k not in ("variant", "threshold")
        },
    )


def quality_from_score(score: QualityScore) -> pb2.QualityScore:
    return quality_message(
        score.score, score.flagged, score.threshold, score.variant.value, score.as_record()
    )


def review_required(
    flagged: bool, score: QualityScore | None, applicability: Applicability | None
) -> bool:
    """The summary's ``review_required``: consistency flag, score flag or failed checks."""
    return (
        flagged
        or (score is not None and score.flagged)
        or (applicability is not None and not applicability.applicable)
    )


def applicability_from_result(result: Applicability) -> pb2.Applicability:
    return applicability_message(
        result.reason_values,
        dict(result.measurements),
        dict(result.details),
        result.contrast_agent,
    )


def reference_message(
    study_hash: str, scores: ReferenceScores, record: StudyRecord
) -> pb2.ReferenceQuality:
    message = pb2.ReferenceQuality(
        study_hash=study_hash,
        voldice=scores.voldice,
        continuous_dice=scores.continuous_dice,
        reference_type=scores.segmentation_type,
        unmatched_segments=scores.unmatched_segments,
        model_version=record.model_version,
    )
    if record.reference_at is not None:
        message.submitted.CopyFrom(timestamp(record.reference_at))
    return message


def record_message(record: StudyRecord) -> pb2.StudyQualityRecord:
    volumes = record.class_volumes_ml
    lesion = None
    if record.lung_volume_ml is not None:
        lesion = sum(v for k, v in volumes.items() if k in ("ggo", "consolidation"))
    message = pb2.StudyQualityRecord(
        study_hash=record.study_hash,
        created=timestamp(record.created_at),
        model_name=record.model_name,
        model_version=record.model_version,
        provider=record.provider,
        num_instances=record.num_instances,
        clinical=clinical_message(
            volumes, record.lung_volume_ml, lesion, record.involvement_percent, record.grade
        ),
        flagged=record.flagged,
        stage_seconds=record.stage_seconds,
    )
    if record.consistency_voldice is not None:
        message.consistency.CopyFrom(
            pb2.ConsistencyQuality(
                transform=record.consistency_transform or "",
                voldice=record.consistency_voldice,
                flagged=record.flagged,
            )
        )
    if record.applicability_reasons is not None:
        message.applicability.CopyFrom(
            applicability_message(
                list(record.applicability_reasons), dict(record.applicability_measurements or {})
            )
        )
    if record.quality_score is not None:
        message.quality.CopyFrom(
            quality_message(
                record.quality_score,
                bool(record.quality_flagged),
                float(record.quality_threshold or 0.0),
                str((record.quality_signals or {}).get("variant", "")),
                dict(record.quality_signals or {}),
            )
        )
    if record.reference_voldice is not None:
        reference = pb2.ReferenceQuality(
            study_hash=record.study_hash,
            voldice=record.reference_voldice,
            continuous_dice=record.reference_cdice or {},
            reference_type=record.reference_type or "",
            model_version=record.model_version,
        )
        if record.reference_at is not None:
            reference.submitted.CopyFrom(timestamp(record.reference_at))
        message.reference.CopyFrom(reference)
    return message
