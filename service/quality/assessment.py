"""The quality step of one study: clinical summary, consistency check and SR, as a plain call.

The MONAI Deploy graph runs it as ``QualityOperator`` (``service.app.quality_operator``) after
the SEG is written; it is a plain function so that it is tested without a graph. It reuses the
warm predictor for the consistency inference, so the check costs one more inference of the
study and nothing else. The label-free quality score (``service.quality.quality_score``) reuses
that pass (its mapped-back labels and, when ``predict`` is an ``EntropyRecordingPredictor``, the
entropy of its lesion call) and the applicability check's lung field: no inference of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.core.manifest import ModelManifest
from service.quality.applicability import Applicability
from service.quality.clinical import LESIONS, LUNG, ClinicalSummary, clinical_summary
from service.quality.consistency import (
    ConsistencyResult,
    class_voldice,
    flag_study,
    transformed_prediction,
)
from service.quality.geometry import StudyGeometry
from service.quality.quality_score import QualityScore, QualityScoreConfig, score_study
from service.quality.score_signals import study_signals
from service.quality.selection import is_selected, transform_for
from service.quality.sr_writer import build_summary_sr

#: Provider names on which the consistency check runs for every study by default.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


@dataclass(frozen=True)
class QualityConfig:
    """What the quality step does; built once from the service settings."""

    #: Share of studies checked for consistency; None: all on a GPU, none on the CPU.
    consistency_fraction: float | None = None
    flag_threshold: float = 0.8
    lesion_floor_ml: float = 1.0
    write_sr: bool = True
    #: The label-free quality score (service.quality.quality_score): on/off and threshold.
    score: QualityScoreConfig = field(default_factory=QualityScoreConfig)

    def fraction_for(self, provider: str) -> float:
        if self.consistency_fraction is not None:
            return float(self.consistency_fraction)
        return 1.0 if provider in GPU_PROVIDERS else 0.0


@dataclass(frozen=True)
class StudyQuality:
    """What the quality step found for one study (no patient data)."""

    clinical: ClinicalSummary
    geometry: StudyGeometry
    consistency: ConsistencyResult | None = None
    sr_bytes: bytes = field(default=b"", repr=False)
    seconds: float = 0.0
    score: QualityScore | None = None

    @property
    def flagged(self) -> bool:
        """Flagged by the consistency check (the per-class VolDice floor)."""
        return self.consistency is not None and self.consistency.flagged

    @property
    def flag_reasons(self) -> list[str]:
        """Why the quality step flags the study: ``consistency`` and/or ``quality_score``."""
        reasons = ["consistency"] if self.flagged else []
        if self.score is not None and self.score.flagged:
            reasons.append("quality_score")
        return reasons


def flag_classes(class_names: list[str]) -> list[str]:
    """Classes whose consistency decides the flag: the lungs and the lesions when present."""
    wanted = [n for n in class_names if n in (LUNG, *LESIONS)]
    return wanted or class_names


def assess_study(
    *,
    study_hash: str,
    volume: Any,
    labels: np.ndarray,
    seg_bytes: bytes,
    class_volumes_ml: Mapping[str, float],
    manifest: ModelManifest,
    predict: Callable[[np.ndarray], np.ndarray],
    provider: str,
    config: QualityConfig,
    software_version: str,
    applicability: Applicability | None = None,
    confine: Callable[[np.ndarray], np.ndarray] | None = None,
) -> StudyQuality:
    """Run the quality step; ``volume`` is the study's ``CTVolume`` (HU array and grid).

    ``confine`` post-processes the consistency prediction once mapped back to the study's grid
    (the lung field the served labels were confined to), see ``consistency_voldice``."""
    started = time.perf_counter()
    clinical = clinical_summary(class_volumes_ml, lesion_floor_ml=config.lesion_floor_ml)
    geometry = StudyGeometry.from_volume(volume)
    consistency = None
    back = None
    classes = {c.index: c.name for c in manifest.foreground_classes}
    if is_selected(study_hash, config.fraction_for(provider)):
        transform = transform_for(study_hash)
        back = transformed_prediction(predict, volume.hu, labels, transform, confine=confine)
        scores = class_voldice(back, labels, classes)
        flagged = flag_study(scores, config.flag_threshold, flag_classes(list(classes.values())))
        consistency = ConsistencyResult(transform.value, scores, config.flag_threshold, flagged)
    score = None
    if config.score.enabled:
        lesion_ids = [i for i, n in classes.items() if n in LESIONS]
        lung_ids = [i for i, n in classes.items() if n in (LUNG, *LESIONS)]
        signals = study_signals(
            labels=labels,
            spacing_zyx=volume.spacing_zyx,
            lung_classes=lung_ids,
            lesion_classes=lesion_ids,
            lesion_volume_ml=clinical.lesion_volume_ml,
            lung_volume_ml=clinical.lung_volume_ml,
            aerated_lungs=None if applicability is None else applicability.aerated_lungs,
            lung_stride=1 if applicability is None else applicability.lung_stride,
            transformed_back=back if lesion_ids else None,
            entropy_sum=float(getattr(predict, "entropy_sum", 0.0)),
            entropy_voxels=int(getattr(predict, "lesion_voxels", 0)),
        )
        score = score_study(signals, config.score)
    sr = (
        build_summary_sr(seg_bytes, clinical, manifest, software_version, applicability, score)
        if config.write_sr
        else b""
    )
    return StudyQuality(clinical, geometry, consistency, sr, time.perf_counter() - started, score)
