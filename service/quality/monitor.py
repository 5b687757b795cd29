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
from typing import Protocol

import numpy as np

from service.core.manifest import ModelManifest
from service.core.study_outcome import StudyOutcome
from service.observability.quality_metrics import QualityMetrics
from service.quality.clinical import LESIONS
from service.quality.geometry import StudyGeometry
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


@dataclass(frozen=True)
class SegmentedStudy:
    """A study as the monitor records it: its outcome, the prediction on its grid (kept for a
    later reference) and its HU volume (for the opt-in capture; never stored by the monitor)."""

    outcome: StudyOutcome
    labels: np.ndarray
    geometry: StudyGeometry
    hu: np.ndarray


class StudyObserver(Protocol):
    """Told of each recorded study and scored reference (``service.capture``); never raises."""

    def study_segmented(self, study: SegmentedStudy, manifest: ModelManifest) -> None: ...

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

    def record_study(self, study: SegmentedStudy, manifest: ModelManifest) -> StudyRecord:
        """Persist and export one segmented study."""
        outcome = study.outcome
        record = StudyRecord(
            study_hash=outcome.study_uid_hash, created_at=datetime.now(UTC), outcome=outcome
        )
        self.store.save_study(record, study.labels, study.geometry)
        if self.capture is not None:
            self.capture.study_segmented(study, manifest)
        if self.metrics is not None:
            self.metrics.observe_outcome(outcome, LESIONS, _flag_reasons(outcome))
        quality = outcome.quality
        if quality is not None and quality.flagged:
            logger.warning(
                "study %s flagged for review: quality score %.3f below %.3f (%s)",
                outcome.study_uid_hash,
                quality.score,
                quality.threshold,
                quality.variant,
            )
        verdict = outcome.under_reading
        if verdict is not None and verdict.flagged:
            logger.warning(
                "study %s flagged for review: abnormal density %.1f %% of the lung envelope vs "
                "model lesions %.1f %% (margin %.1f points)",
                outcome.study_uid_hash,
                100 * verdict.density_fraction,
                100 * verdict.lesion_fraction,
                100 * verdict.margin,
            )
        consistency = outcome.consistency
        if outcome.flagged:
            logger.warning(
                "study %s flagged for review: consistency VolDice %s below %.2f",
                outcome.study_uid_hash,
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
            self.metrics.observe_reference(record.outcome.model_version, scores.voldice)
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


def _flag_reasons(outcome: StudyOutcome) -> list[str]:
    """Why the quality step flags the study: ``consistency``, ``quality_score`` and/or
    ``under_reading``."""
    reasons = ["consistency"] if outcome.flagged else []
    if outcome.quality is not None and outcome.quality.flagged:
        reasons.append("quality_score")
    if outcome.under_reading is not None and outcome.under_reading.flagged:
        reasons.append(outcome.under_reading.reason or "under_reading")
    return reasons
