"""Prometheus metrics of study quality, registered on the service's registry.

Labels are low-cardinality only: class name, model version, grade. Never a study hash: one
series per study would grow without bound, and the records database is where studies live.
Volumes are in millilitres (Prometheus has no base unit for volume; cubic metres would be
unreadable) and involvement is a ratio 0..1, as the conventions ask for ratios.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from service.core.study_outcome import CountedBy, Metric, StudyOutcome, declared_metrics

#: Dice-like scores: fine steps where models live (0.7..1), coarse below.
SCORE_BUCKETS = (
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.925,
    0.95,
    0.975,
    0.99,
    1.0,
)
#: Lesion volumes from a small nodule-sized spot to a whole lung (mL).
VOLUME_BUCKETS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class QualityMetrics:
    """Quality metrics of one server; methods record events so callers never touch labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        labels = ["class", "model_version"]
        self.study_voldice = Histogram(
            "pulmoseg_study_voldice",
            "VolDice of the model against a submitted reference SEG, per class.",
            labels,
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.consistency_voldice = Histogram(
            "pulmoseg_consistency_voldice",
            "Label-free consistency VolDice (prediction vs prediction of a flipped/rotated "
            "copy mapped back), per class. Consistency is not accuracy.",
            labels,
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.lesion_volume = Histogram(
            "pulmoseg_lesion_volume_milliliters",
            "Predicted lesion volume per study, per lesion class.",
            labels,
            buckets=VOLUME_BUCKETS,
            registry=r,
        )
        #: The outcome fields that declare their own metric (``service.core.study_outcome``).
        self.declared: list[tuple[tuple[str, ...], Metric | CountedBy, Histogram | Counter]] = [
            (path, spec, _declared_collector(spec, r)) for path, spec in declared_metrics()
        ]
        self.assessed = Counter(
            "pulmoseg_quality_studies_total",
            "Studies that went through the quality step.",
            ["model_version"],
            registry=r,
        )
        self.consistency_checks = Counter(
            "pulmoseg_consistency_checks_total",
            "Studies selected for the consistency check.",
            ["model_version"],
            registry=r,
        )
        self.flagged = Counter(
            "pulmoseg_flagged_studies_total",
            "Studies flagged for review because their consistency VolDice fell below the "
            "threshold.",
            ["model_version"],
            registry=r,
        )
        self.applicability_checks = Counter(
            "pulmoseg_applicability_checks_total",
            "Studies whose input went through the applicability checks (before inference).",
            ["model_version"],
            registry=r,
        )
        self.not_applicable = Counter(
            "pulmoseg_not_applicable_studies_total",
            "Studies outside the model's declared range (flagged or refused), any reason.",
            ["model_version"],
            registry=r,
        )
        self.not_applicable_reasons = Counter(
            "pulmoseg_not_applicable_reasons_total",
            "Studies outside the model's declared range by reason (no_aerated_lung, "
            "partial_thorax, slice_thickness_out_of_range, spacing_out_of_range, "
            "hu_calibration); a study with two reasons counts under both.",
            ["reason", "model_version"],
            registry=r,
        )
        self.quality_score = Histogram(
            "pulmoseg_quality_score",
            "Label-free quality score per study (0 worst .. 1 best: the estimated chance of "
            "lesion VolDice >= 0.5), by coefficient set (variant with_tta / without_tta).",
            ["model_version", "variant"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.review_flags = Counter(
            "pulmoseg_review_flagged_studies_total",
            "Studies flagged for review by reason: quality_score (score under its threshold), "
            "consistency (consistency VolDice under its threshold), under_reading (abnormal "
            "density beyond the lesions); a study with two counts under both. Applicability "
            "reasons: pulmoseg_not_applicable_reasons_total.",
            ["reason", "model_version"],
            registry=r,
        )
        self.references = Counter(
            "pulmoseg_references_total",
            "Reference SEGs scored against the stored prediction.",
            ["model_version"],
            registry=r,
        )

    def observe_outcome(
        self, outcome: StudyOutcome, lesion_classes: tuple[str, ...], reasons: Iterable[str]
    ) -> None:
        """One assessed study: lesion volumes, consistency, flags, the quality score and every
        field that declares its own metric; ``reasons`` are the quality step's flag reasons."""
        version = outcome.model_version
        self.assessed.labels(model_version=version).inc()
        clinical = outcome.clinical
        volumes = clinical.class_volumes_ml if clinical is not None else {}
        for name in lesion_classes:
            if name in volumes:
                self.lesion_volume.labels(name, version).observe(volumes[name])
        for path, spec, collector in self.declared:
            value = _field_at(outcome, path)
            if value is None or value == "":
                continue
            if isinstance(spec, Metric) and isinstance(collector, Histogram):
                collector.labels(model_version=version).observe(float(value) * spec.scale)
            elif isinstance(spec, CountedBy) and isinstance(collector, Counter):
                collector.labels(str(value), version).inc()
        if outcome.consistency is not None:
            self.consistency_checks.labels(model_version=version).inc()
            for name, score in outcome.consistency.voldice.items():
                self.consistency_voldice.labels(name, version).observe(score)
        if outcome.flagged:
            self.flagged.labels(model_version=version).inc()
        if outcome.quality is not None:
            self.observe_quality_score(
                version, outcome.quality.score, outcome.quality.variant, reasons
            )

    def observe_quality_score(
        self, model_version: str, score: float, variant: str, reasons: Iterable[str]
    ) -> None:
        """One scored study and the quality step's flag reasons."""
        self.quality_score.labels(model_version=model_version, variant=variant).observe(score)
        for reason in reasons:
            self.review_flags.labels(reason=reason, model_version=model_version).inc()

    def observe_applicability(self, model_version: str, reasons: Iterable[str]) -> None:
        """Count one checked study and, when it is outside the range, each of its reasons."""
        self.applicability_checks.labels(model_version=model_version).inc()
        names = list(reasons)
        if names:
            self.not_applicable.labels(model_version=model_version).inc()
        for reason in names:
            self.not_applicable_reasons.labels(reason=reason, model_version=model_version).inc()

    def observe_reference(self, model_version: str, voldice: Mapping[str, float]) -> None:
        self.references.labels(model_version=model_version).inc()
        for name, score in voldice.items():
            self.study_voldice.labels(name, model_version).observe(score)

    def ensure_series(self, model_version: str, class_names: list[str]) -> None:
        """Create the zero counters of a model, so rates and ratios exist before any event."""
        for counter in (
            self.assessed,
            self.consistency_checks,
            self.flagged,
            self.references,
            self.applicability_checks,
            self.not_applicable,
        ):
            counter.labels(model_version=model_version)
        for reason in ("quality_score", "consistency", "under_reading"):
            self.review_flags.labels(reason=reason, model_version=model_version)


def _declared_collector(
    spec: Metric | CountedBy, registry: CollectorRegistry
) -> Histogram | Counter:
    if isinstance(spec, Metric):
        return Histogram(
            spec.name, spec.help, ["model_version"], buckets=spec.buckets, registry=registry
        )
    return Counter(spec.name, spec.help, [spec.label, "model_version"], registry=registry)


def _field_at(outcome: StudyOutcome, path: tuple[str, ...]) -> Any:
    value: Any = outcome
    for name in path:
        if value is None:
            return None
        value = getattr(value, name)
    return value
