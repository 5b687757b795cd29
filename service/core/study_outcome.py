"""One study's outcome: the single declared field list behind every outlet.

A segmented study leaves the service through six outlets: the gRPC ``StudySummary``, the
``summary.json`` of the client and of the MONAI Deploy app, the quality records row, the DICOM
SR, the Prometheus metrics and the client's dictionary. Each renders *this* schema; none maps
fields by hand. The field names are the ``pulmoseg.v1.StudySummary`` names, so the proto
mapping is table-driven (``service.grpc_api.outcome_messages``) and a test walks every field
through every outlet. Adding a field means adding it here and to the proto, nothing else.

Field metadata (``Metric``) declares which scalar fields are also exported as a Prometheus
histogram and under which name, so the metrics renderer needs no field list of its own.
The module is pydantic only: the shared core imports no runtime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

__all__ = [
    "SUMMARY_FILE_NAME",
    "ApplicabilityOutcome",
    "ClinicalOutcome",
    "ConsistencyOutcome",
    "CountedBy",
    "DensityBandOutcome",
    "DensityOutcome",
    "DensityRegionOutcome",
    "Metric",
    "OutcomeModel",
    "QualityOutcome",
    "SeverityGrade",
    "Skipped",
    "StudyOutcome",
    "UnderReadingOutcome",
    "declared_metrics",
    "summary_document",
    "write_summary_json",
]

SUMMARY_FILE_NAME = "summary.json"


class SeverityGrade(StrEnum):
    """MosMedData CT severity: no lesion, <25 %, 25–50 %, 50–75 %, ≥75 % involvement."""

    CT0 = "CT-0"
    CT1 = "CT-1"
    CT2 = "CT-2"
    CT3 = "CT-3"
    CT4 = "CT-4"


@dataclass(frozen=True)
class Metric:
    """A scalar outcome field also observed as a histogram ``name`` (value × ``scale``),
    labelled by model version. Declared on the field, read by the metrics renderer."""

    name: str
    help: str
    buckets: tuple[float, ...]
    scale: float = 1.0


@dataclass(frozen=True)
class CountedBy:
    """A categorical outcome field counted in ``name`` with the value as label ``label``."""

    name: str
    help: str
    label: str


class OutcomeModel(BaseModel):
    """Frozen, strict about unknown keys: a misspelt field is an error, not a silent drop."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class ClinicalOutcome(OutcomeModel):
    """Per-class volumes (mL), the lungs' volume, lesion volume, involvement and CT grade.

    Values a model cannot give (no lung or no lesion class) are None.
    """

    class_volumes_ml: dict[str, float] = Field(default_factory=dict)
    lung_volume_ml: float | None = None
    lesion_volume_ml: float | None = None
    involvement_percent: Annotated[
        float | None,
        Metric(
            "pulmoseg_lung_involvement_ratio",
            "Share of the lungs' volume taken by lesions (GGO + consolidation), per study.",
            (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
            scale=0.01,
        ),
    ] = None
    severity_grade: Annotated[
        SeverityGrade | None,
        CountedBy(
            "pulmoseg_severity_grade_total",
            "Studies by MosMedData CT severity grade (CT-0 .. CT-4).",
            "grade",
        ),
    ] = None

    def describe(self) -> str:
        """One line for people: involvement and grade, or why there is none."""
        if self.involvement_percent is None or self.severity_grade is None:
            return "no involvement grade (the model has no lung and lesion classes)"
        return (
            f"lung involvement {self.involvement_percent:.1f} %, "
            f"CT grade {self.severity_grade.value}"
        )


class ConsistencyOutcome(OutcomeModel):
    """Per-class VolDice between the prediction and its transform-consistent twin, the
    transform, the threshold and whether any class fell below it (review flag)."""

    transform: str
    voldice: dict[str, float] = Field(default_factory=dict)
    threshold: float = 0.0
    flagged: bool = False

    @property
    def minimum(self) -> float:
        """The lowest class VolDice (1.0 when no class was compared)."""
        return min(self.voldice.values()) if self.voldice else 1.0


class ApplicabilityOutcome(OutcomeModel):
    """The input checks: failed ``reasons`` (empty inside the model's range), one sentence
    each in ``details``, what was measured (unmeasurable values left out)."""

    applicable: bool = True
    reasons: list[str] = Field(default_factory=list)
    details: dict[str, str] = Field(default_factory=dict)
    measurements: dict[str, float] = Field(default_factory=dict)
    contrast_agent: str = ""


class QualityOutcome(OutcomeModel):
    """The label-free quality score, its flag, threshold, variant and the signals it combined
    (unmeasured ones left out)."""

    score: float
    flagged: bool = False
    threshold: float = 0.0
    variant: str = ""
    signals: dict[str, float] = Field(default_factory=dict)


class DensityBandOutcome(OutcomeModel):
    """One quantitative-CT band (``service.quality.density.BANDS``) in one region: its volume
    and its share of the region's envelope."""

    band: str
    volume_ml: float = 0.0
    fraction: float = 0.0


class DensityRegionOutcome(OutcomeModel):
    """The bands of one region (``whole``, ``left``, ``right``, ``upper`` … ``left_lower``)."""

    region: str
    envelope_ml: float = 0.0
    bands: list[DensityBandOutcome] = Field(default_factory=list)


class DensityOutcome(OutcomeModel):
    """Label-free density quantification inside the lung envelope (``docs/quantification.md``):
    the abnormal-density burden (−700…−250 HU after an in-plane opening) and every band per
    region. ``well_aerated_fraction`` repeats the whole envelope's well-aerated share (Colombi
    et al. 2020) as one scalar so that it can be a metric."""

    envelope_ml: float = 0.0
    abnormal_ml: float = 0.0
    abnormal_fraction: Annotated[
        float,
        Metric(
            "pulmoseg_abnormal_density_ratio",
            "Share of the lung envelope at abnormal density (-700..-250 HU), per study.",
            (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
        ),
    ] = 0.0
    well_aerated_fraction: Annotated[
        float,
        Metric(
            "pulmoseg_well_aerated_lung_ratio",
            "Share of the lung envelope that is well aerated (-950..-700 HU), per study.",
            (0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0),
        ),
    ] = 0.0
    regions: list[DensityRegionOutcome] = Field(default_factory=list)


class UnderReadingOutcome(OutcomeModel):
    """The under-reading check (``service.quality.under_reading``): the density burden and the
    model's lesion burden (fractions of the envelope), the normal margin and the verdict."""

    flagged: bool = False
    reason: str | None = None
    density_fraction: float = 0.0
    lesion_fraction: float = 0.0
    margin: float = 0.0


class StudyOutcome(OutcomeModel):
    """One segmented study, safe to log and store: identifiers are hashes, no patient data.

    ``stage_seconds`` keeps the pipeline's order of stages; ``review_required`` is derived
    (consistency flag, quality-score flag, under-reading flag or a failed applicability check)
    so that no outlet and no client needs a rule of its own.
    """

    study_uid_hash: str
    class_volumes_ml: dict[str, float] = Field(default_factory=dict)
    num_instances: int = 0
    model_name: str = ""
    model_version: str = ""
    provider: str = ""
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    seg_size_bytes: int = 0
    seg_sha256: str = ""
    clinical: ClinicalOutcome | None = None
    consistency: ConsistencyOutcome | None = None
    flagged: bool = False
    sr_size_bytes: int = 0
    sr_sha256: str = ""
    applicability: ApplicabilityOutcome | None = None
    quality: QualityOutcome | None = None
    density: DensityOutcome | None = None
    under_reading: UnderReadingOutcome | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        """A stored or received outcome carries ``review_required``: it is derived, not read."""
        if isinstance(data, dict) and "review_required" in data:
            return {k: v for k, v in data.items() if k != "review_required"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def review_required(self) -> bool:
        return (
            self.flagged
            or (self.quality is not None and self.quality.flagged)
            or (self.applicability is not None and not self.applicability.applicable)
            or (self.under_reading is not None and self.under_reading.flagged)
        )

    @classmethod
    def digests(cls, seg_bytes: bytes, sr_bytes: bytes = b"") -> dict[str, Any]:
        """The size and SHA-256 fields of the SEG and SR, computed from the bytes in one way."""
        return {
            "seg_size_bytes": len(seg_bytes),
            "seg_sha256": hashlib.sha256(seg_bytes).hexdigest(),
            "sr_size_bytes": len(sr_bytes),
            "sr_sha256": hashlib.sha256(sr_bytes).hexdigest() if sr_bytes else "",
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain Python types in schema order (``json.dumps`` takes it as it is)."""
        return self.model_dump(mode="python")


class Skipped(Protocol):
    """An item the study-folder rule left out (``service.dicom.study_folder.SkippedFile``)."""

    @property
    def path(self) -> str: ...

    @property
    def reason(self) -> str: ...


def summary_document(outcome: StudyOutcome, skipped: Iterable[Skipped] = ()) -> dict[str, Any]:
    """What ``summary.json`` holds: the outcome plus the items the study-folder rule skipped."""
    return {
        **outcome.as_dict(),
        "skipped": [{"path": str(s.path), "reason": str(s.reason)} for s in skipped],
    }


def write_summary_json(
    path: str | Path, outcome: StudyOutcome, skipped: Iterable[Skipped] = ()
) -> Path:
    """Write :func:`summary_document` to ``path`` (its folder is created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Schema order, not sorted: stage_seconds keeps the pipeline's order of stages.
    text = json.dumps(summary_document(outcome, skipped), indent=2)
    target.write_text(text + "\n")
    return target


def declared_metrics(
    model: type[BaseModel] = StudyOutcome, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Metric | CountedBy]]:
    """Every field (as a path from the outcome) that declares a metric, with its declaration."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        for item in info.metadata:
            if isinstance(item, Metric | CountedBy):
                yield path, item
        nested = outcome_submodel(info.annotation)
        if nested is not None:
            yield from declared_metrics(nested, path)


def outcome_submodel(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``X | None`` (or ``X``), None for a non-model field."""
    candidates = getattr(annotation, "__args__", None) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
