"""The clinical summary of a study: volumes, lung involvement and the MosMedData CT grade.

Labels are exclusive (argmax), so the lung class holds only normal-looking lung; the lungs'
volume is lung + GGO + consolidation, and involvement is the lesions' share of it. The grade
follows MosMedData's CT-0..CT-4 scale by involvement, with CT-0 for studies whose lesions stay
below a small volume floor (noise-level detections must not make a study CT-1).
"""

from __future__ import annotations

from collections.abc import Mapping

from service.core.study_outcome import ClinicalOutcome, SeverityGrade

__all__ = ["LESIONS", "LUNG", "SeverityGrade", "clinical_summary", "severity_grade"]

LUNG = "lung"
LESIONS = ("ggo", "consolidation")


def severity_grade(
    involvement_percent: float, lesion_volume_ml: float, lesion_floor_ml: float
) -> SeverityGrade:
    """The CT grade for an involvement; lesions at or under the floor count as none."""
    if lesion_volume_ml <= lesion_floor_ml:
        return SeverityGrade.CT0
    if involvement_percent < 25.0:
        return SeverityGrade.CT1
    if involvement_percent < 50.0:
        return SeverityGrade.CT2
    if involvement_percent < 75.0:
        return SeverityGrade.CT3
    return SeverityGrade.CT4


def clinical_summary(
    class_volumes_ml: Mapping[str, float], *, lesion_floor_ml: float = 1.0
) -> ClinicalOutcome:
    """Summarise per-class volumes (the outcome's ``clinical`` part); models without lung and
    lesion classes get no grade."""
    if lesion_floor_ml < 0:
        raise ValueError(f"Argument 'lesion_floor_ml' must be >= 0, got {lesion_floor_ml}.")
    volumes = {str(k): float(v) for k, v in class_volumes_ml.items()}
    if LUNG not in volumes or not any(name in volumes for name in LESIONS):
        return ClinicalOutcome(class_volumes_ml=volumes)
    lesion = sum(volumes.get(name, 0.0) for name in LESIONS)
    lung = volumes[LUNG] + lesion
    involvement = 100.0 * lesion / lung if lung > 0 else 0.0
    return ClinicalOutcome(
        class_volumes_ml=volumes,
        lung_volume_ml=lung,
        lesion_volume_ml=lesion,
        involvement_percent=involvement,
        severity_grade=severity_grade(involvement, lesion, lesion_floor_ml),
    )
