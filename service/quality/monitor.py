"""The quality monitor of a server: records each study and scores references.

Owned by the gRPC server (one per process), used by the servicers: ``record_study`` after a
study is segmented, ``submit_reference`` when a radiologist's SEG arrives, ``get`` and ``list``
for the quality API. The records store does the persistence, ``QualityMetrics`` the metrics;
logs name studies by hash only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from service.core.manifest import ModelManifest
from service.observability.quality_metrics import QualityMetrics
from service.quality.clinical import LESIONS
from service.quality.records import QualityStore, StudyRecord
from service.quality.reference import (
    ReferenceMasks,
    ReferenceScores,
    read_reference,
    score_reference,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceOutcome:
    scores: ReferenceScores
    record: StudyRecord


class StudyObserver(Protocol):
    """Told of each recorded study and scored reference (``service.capture``); never raises."""

    def study_segmented(self, result: Any, manifest: ModelManifest) -> None: ...

    def reference_submitted(
        self, study_hash: str, reference: ReferenceMasks, manifest: ModelManifest
    ) -> None: ...

    def close(self) -> None: ...


class QualityMonitor:
    """Thread-safe (the store opens one session per call; prometheus_client is thread-safe)."""

    def __init__(
        self,
        store: QualityStore,
        metrics: QualityMetrics | None = None,
        capture: StudyObserver | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        #: The opt-in training-data capture (None: off, nothing is kept).
        self.capture = capture

    def record_study(
        self,
        result: Any,
        manifest: ModelManifest,
        provider: str,
        stage_seconds: dict[str, float],
    ) -> StudyRecord | None:
        """Persist and export one segmented study (``result`` is a ``StudyResult``)."""
        quality = result.quality
        if quality is None:
            return None
        clinical = quality.clinical
        consistency = quality.consistency
        applicability = getattr(result, "applicability", None)
        record = StudyRecord(
            study_hash=result.study_uid_hash,
            created_at=datetime.now(UTC),
            model_name=manifest.name,
            model_version=manifest.version,
            provider=provider,
            num_instances=result.num_instances,
            class_volumes_ml=dict(clinical.class_volumes_ml),
            lung_volume_ml=clinical.lung_volume_ml,
            involvement_percent=clinical.involvement_percent,
            grade=clinical.grade.value if clinical.grade else None,
            consistency_transform=consistency.transform if consistency else None,
            consistency_voldice=dict(consistency.voldice) if consistency else None,
            flagged=quality.flagged,
            stage_seconds=dict(stage_seconds),
            applicability_reasons=applicability.reason_values if applicability else None,
            applicability_measurements=(
                dict(applicability.measurements) if applicability else None
            ),
            quality_score=quality.score.score if quality.score else None,
            quality_flagged=quality.score.flagged if quality.score else None,
            quality_signals=(
                {**quality.score.as_record(), "threshold": quality.score.threshold}
                if quality.score
                else None
            ),
        )
        self.store.save_study(record, result.labels, quality.geometry)
        if self.capture is not None:
            self.capture.study_segmented(result, manifest)
        if self.metrics is not None:
            self.metrics.observe_study(
                manifest.version,
                clinical.class_volumes_ml,
                LESIONS,
                clinical.involvement_percent,
                record.grade,
                consistency.voldice if consistency else None,
                quality.flagged,
            )
            if quality.score is not None:
                self.metrics.observe_quality_score(
                    manifest.version,
                    quality.score.score,
                    quality.score.variant.value,
                    quality.flag_reasons,
                )
        if quality.score is not None and quality.score.flagged:
            logger.warning(
                "study %s flagged for review: quality score %.3f below %.3f (%s)",
                result.study_uid_hash,
                quality.score.score,
                quality.score.threshold,
                quality.score.variant.value,
            )
        if quality.flagged:
            logger.warning(
                "study %s flagged for review: consistency VolDice %s below %.2f",
                result.study_uid_hash,
                {k: round(v, 3) for k, v in consistency.voldice.items()} if consistency else {},
                consistency.threshold if consistency else float("nan"),
            )
        return record

    def submit_reference(
        self, study_hash: str, data: bytes, manifest: ModelManifest
    ) -> ReferenceOutcome:
        """Score a reference SEG against the stored prediction of ``study_hash``."""
        labels, geometry = self.store.prediction(study_hash)
        reference = read_reference(data, geometry, manifest.classes)
        scores = score_reference(labels, reference, manifest.classes)
        record = self.store.set_reference(
            study_hash, scores.voldice, scores.continuous_dice, scores.segmentation_type
        )
        if self.metrics is not None:
            self.metrics.observe_reference(record.model_version, scores.voldice)
        if self.capture is not None:
            self.capture.reference_submitted(study_hash, reference, manifest)
        logger.info(
            "reference for study %s (%s): VolDice %s",
            study_hash,
            scores.segmentation_type,
            {k: round(v, 3) for k, v in scores.voldice.items()},
        )
        return ReferenceOutcome(scores, record)

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()
        self.store.close()
