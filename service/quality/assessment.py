"""The quality step of one study: clinical summary, consistency check and SR, as a plain call.

The MONAI Deploy graph runs it as ``QualityOperator`` (``service.app.quality_operator``) after
the SEG is written; it is a plain function so that it is tested without a graph. It reuses the
warm predictor for the consistency inference, so the check costs one more inference of the
study and nothing else. The label-free quality score (``service.quality.quality_score``) reuses
that pass (its mapped-back labels and, when ``predict`` is an ``EntropyRecordingPredictor``, the
entropy of its lesion call) and the applicability check's lung field: no inference of its own.
The density bands and the under-reading check (``service.quality.study_density``) are measured
on the served labels' envelope, about a second per study.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from service.core.manifest import ModelManifest
from service.core.settings_base import EnvSettingsModel, Fraction, NonNegative
from service.core.study_outcome import (
    ClinicalOutcome,
    ConsistencyOutcome,
    DensityOutcome,
    UnderReadingOutcome,
)
from service.quality.applicability import Applicability
from service.quality.clinical import LESIONS, LUNG, clinical_summary
from service.quality.consistency import (
    class_voldice,
    flag_study,
    transformed_prediction,
)
from service.quality.geometry import StudyGeometry
from service.quality.quality_score import QualityScore, QualityScoreConfig, score_study
from service.quality.score_signals import study_signals
from service.quality.selection import is_selected, transform_for
from service.quality.sr_writer import build_summary_sr
from service.quality.study_density import StudyDensity, study_density

#: Provider names on which the consistency check runs for every study by default.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


class QualityConfig(EnvSettingsModel):
    """What the quality step does: the server's ``quality`` settings group, handed over as is."""

    key_prefix: ClassVar[str] = "quality."

    #: Share of studies checked for consistency (a second inference); None: all on a GPU,
    #: none on the CPU.
    consistency_fraction: Fraction | None = None
    #: A study whose consistency VolDice of any class falls below this is flagged for review.
    consistency_flag_threshold: Fraction = 0.8
    #: Lesion volume (mL) at or under which a study is graded CT-0.
    severity_lesion_floor_ml: NonNegative = 1.0
    #: Send a DICOM SR (TID 1500) with the clinical summary beside the SEG.
    write_summary_sr: bool = True
    #: The label-free quality score (service.quality.quality_score): on/off and threshold.
    score: QualityScoreConfig = Field(default_factory=QualityScoreConfig)

    def fraction_for(self, provider: str) -> float:
        if self.consistency_fraction is not None:
            return float(self.consistency_fraction)
        return 1.0 if provider in GPU_PROVIDERS else 0.0


@dataclass(frozen=True)
class StudyQuality:
    """What the quality step found for one study (no patient data)."""

    clinical: ClinicalOutcome
    geometry: StudyGeometry
    consistency: ConsistencyOutcome | None = None
    sr_bytes: bytes = field(default=b"", repr=False)
    seconds: float = 0.0
    score: QualityScore | None = None
    #: Density bands and the under-reading check; None when the model has no lung class.
    density: StudyDensity | None = None

    @property
    def flagged(self) -> bool:
        """Flagged by the consistency check (the per-class VolDice floor)."""
        return self.consistency is not None and self.consistency.flagged

    @property
    def density_outcome(self) -> DensityOutcome | None:
        """The study outcome's ``density`` part (None when not measured)."""
        return self.density.density.outcome() if self.density else None

    @property
    def under_reading_outcome(self) -> UnderReadingOutcome | None:
        """The study outcome's ``under_reading`` part (None when not checked)."""
        verdict = self.density.under_reading if self.density else None
        return verdict.outcome() if verdict else None


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
    clinical = clinical_summary(class_volumes_ml, lesion_floor_ml=config.severity_lesion_floor_ml)
    geometry = StudyGeometry.from_volume(volume)
    consistency = None
    back = None
    classes = {c.index: c.name for c in manifest.foreground_classes}
    if is_selected(study_hash, config.fraction_for(provider)):
        transform = transform_for(study_hash)
        back = transformed_prediction(predict, volume.hu, labels, transform, confine=confine)
        scores = class_voldice(back, labels, classes)
        flagged = flag_study(
            scores, config.consistency_flag_threshold, flag_classes(list(classes.values()))
        )
        consistency = ConsistencyOutcome(
            transform=transform.value,
            voldice=scores,
            threshold=config.consistency_flag_threshold,
            flagged=flagged,
        )
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
    measured = StudyQuality(
        clinical,
        geometry,
        consistency,
        score=score,
        density=measure_density(volume, labels, classes, clinical),
    )
    sr = (
        build_summary_sr(
            seg_bytes,
            clinical,
            manifest,
            software_version,
            applicability,
            score,
            density=measured.density_outcome,
            under_reading=measured.under_reading_outcome,
        )
        if config.write_summary_sr
        else b""
    )
    return replace(measured, sr_bytes=sr, seconds=time.perf_counter() - started)


def measure_density(
    volume: Any, labels: np.ndarray, classes: Mapping[int, str], clinical: ClinicalOutcome
) -> StudyDensity | None:
    """The density bands on the envelope of the served lung and lesion classes and the
    under-reading check against the clinical lesion volume; None without a lung class."""
    if LUNG not in classes.values():
        return None
    return study_density(
        volume.hu,
        labels,
        volume.spacing_zyx,
        [i for i, n in classes.items() if n in (LUNG, *LESIONS)],
        lesion_volume_ml=clinical.lesion_volume_ml,
        row_cosine=volume.row_cosine,
        slice_normal=volume.slice_normal,
    )
