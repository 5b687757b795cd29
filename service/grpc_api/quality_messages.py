"""Quality records ↔ ``pulmoseg.v1`` messages, in one place for both servicers.

A record's outcome part is rendered by the table-driven walker
(``service.grpc_api.outcome_messages``); only what the outcome does not hold (the record's
hash, creation time and reference scores) is set here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api.outcome_messages import to_message
from service.quality.records import StudyRecord
from service.quality.reference import ReferenceScores


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def reference_message(
    study_hash: str, scores: ReferenceScores, record: StudyRecord
) -> pb2.ReferenceQuality:
    message = pb2.ReferenceQuality(
        study_hash=study_hash,
        voldice=scores.voldice,
        continuous_dice=scores.continuous_dice,
        reference_type=scores.segmentation_type,
        unmatched_segments=scores.unmatched_segments,
        model_version=record.outcome.model_version,
    )
    if record.reference_at is not None:
        message.submitted.CopyFrom(timestamp(record.reference_at))
    return message


def record_message(record: StudyRecord) -> pb2.StudyQualityRecord:
    """The record as the quality API answers it: the outcome's fields that the record message
    carries, plus the hash, the creation time and the reference when one was submitted."""
    message = to_message(record.outcome, pb2.StudyQualityRecord, partial=True)
    message.study_hash = record.study_hash
    message.created.CopyFrom(timestamp(record.created_at))
    if record.reference_voldice is not None:
        reference = pb2.ReferenceQuality(
            study_hash=record.study_hash,
            voldice=record.reference_voldice,
            continuous_dice=record.reference_cdice or {},
            reference_type=record.reference_type or "",
            model_version=record.outcome.model_version,
        )
        if record.reference_at is not None:
            reference.submitted.CopyFrom(timestamp(record.reference_at))
        message.reference.CopyFrom(reference)
    return message
