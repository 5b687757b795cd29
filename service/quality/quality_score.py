"""``quality_score``: one label-free number in [0, 1] that says how far to trust a study's lesions.

The score is a logistic combination of the signals of ``service.quality.score_signals``: the
estimated probability that the study's lesion VolDice against a radiologist's truth is at least
0.5. A study scoring under the threshold is flagged for review (reason ``quality_score``).

The coefficients and thresholds below are not hand-set: ``bench/quality_score_eval.py`` fits them
on phantom studies with controlled shifts (noise, kernels, slice thickness, HU offsets, partial
coverage) segmented by the shipped real-CT model, on half of the phantom seeds, and picks the
threshold that flags at most 10 % of the good studies (VolDice >= 0.5) of that half; the other
half measures them (docs/monitoring.md, "Quality score"). Two sets exist because the consistency
pass (and with it the TTA disagreement and the entropy) runs on every study on a GPU but on none
by default on the CPU: ``WITH_TTA`` uses all signals, ``WITHOUT_TTA`` only those that cost no
inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from service.core.settings_base import EnvSettingsModel, Fraction
from service.core.study_outcome import QualityOutcome
from service.quality.score_signals import QualitySignals

__all__ = [
    "QUALITY_SCORE_REASON",
    "ScoreModel",
    "QualityScore",
    "QualityScoreConfig",
    "ScoreVariant",
    "feature_vector",
    "score_study",
]

#: The reason label of a study flagged by the score (metrics, records, API).
QUALITY_SCORE_REASON = "quality_score"


class ScoreVariant(StrEnum):
    """Which coefficient set scored a study: with or without the consistency pass's signals."""

    WITH_TTA = "with_tta"
    WITHOUT_TTA = "without_tta"


#: Feature names in the order of the coefficients; each grows with suspected error.
FEATURES_WITH_TTA = (
    "tta_disagreement",
    "lesion_entropy",
    "lung_field_mismatch",
    "lesion_outside_lung",
    "lesion_lung_ratio",
)
FEATURES_WITHOUT_TTA = FEATURES_WITH_TTA[2:]


@dataclass(frozen=True)
class ScoreModel:
    """A fitted logistic model: score = sigmoid(intercept + sum(weights * features))."""

    features: tuple[str, ...]
    intercept: float
    weights: tuple[float, ...]
    #: Scores below this are flagged (chosen for <= 10 % false alarms on the fit half).
    threshold: float
    provenance: str

    def score(self, values: dict[str, float]) -> float:
        z = self.intercept + sum(
            w * values[n] for n, w in zip(self.features, self.weights, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


# --- fitted by bench/quality_score_eval.py (see provenance); replace only by re-running it ---
_PROVENANCE = (
    "bench/quality_score_eval.py --seeds 50 (seed 2311), 2026-12-05: logistic fit of "
    "VolDice >= 0.5 on 300 phantom studies (even seeds, 12 shifts each) segmented by "
    "pulmoseg-real-ct 2.0.0; threshold: 10 % of the fit half's good studies flagged"
)
MODELS: dict[ScoreVariant, ScoreModel] = {
    ScoreVariant.WITH_TTA: ScoreModel(
        features=FEATURES_WITH_TTA,
        intercept=9.272,
        weights=(-6.6112, -5.551, -17.9606, -9.1153, -53.6203),
        threshold=0.3115,
        provenance=_PROVENANCE,
    ),
    ScoreVariant.WITHOUT_TTA: ScoreModel(
        features=FEATURES_WITHOUT_TTA,
        intercept=2.5366,
        weights=(-2.2057, -7.0203, -28.6832),
        threshold=0.3201,
        provenance=_PROVENANCE,
    ),
}


class QualityScoreConfig(EnvSettingsModel):
    """The ``quality.score`` settings group: on/off and the flag threshold (None: the fitted
    one)."""

    key_prefix: ClassVar[str] = "quality.score."

    enabled: bool = True
    threshold: Fraction | None = None

    def threshold_for(self, variant: ScoreVariant) -> float:
        return MODELS[variant].threshold if self.threshold is None else float(self.threshold)


@dataclass(frozen=True)
class QualityScore:
    """The score of one study, whether it is flagged, by which threshold and from what."""

    score: float
    flagged: bool
    threshold: float
    variant: ScoreVariant
    signals: QualitySignals = field(default_factory=QualitySignals)

    def outcome(self) -> QualityOutcome:
        """The study outcome's ``quality`` part (unmeasured signals left out)."""
        return QualityOutcome(
            score=self.score,
            flagged=self.flagged,
            threshold=self.threshold,
            variant=self.variant.value,
            signals={k: float(v) for k, v in self.signals.as_dict().items() if v is not None},
        )


def feature_vector(signals: QualitySignals, variant: ScoreVariant) -> dict[str, float]:
    """The features of ``variant`` from the signals; a missing signal takes its benign value
    (no lesion called: nothing disagrees, nothing is unsure, nothing is outside the lungs)."""

    def value(v: float | None, default: float) -> float:
        return default if v is None else float(v)

    values = {
        "tta_disagreement": 1.0 - value(signals.consistency_lesion_voldice, 1.0),
        "lesion_entropy": value(signals.lesion_entropy, 0.0),
        "lung_field_mismatch": 1.0 - value(signals.lung_field_dice, 0.0),
        "lesion_outside_lung": value(signals.lesion_outside_lung, 0.0),
        "lesion_lung_ratio": value(signals.lesion_lung_ratio, 0.0),
    }
    return {name: values[name] for name in MODELS[variant].features}


def score_study(signals: QualitySignals, config: QualityScoreConfig) -> QualityScore:
    """Score one study with the fitted model its signals allow."""
    variant = (
        ScoreVariant.WITH_TTA
        if signals.consistency_lesion_voldice is not None
        else ScoreVariant.WITHOUT_TTA
    )
    score = MODELS[variant].score(feature_vector(signals, variant))
    threshold = config.threshold_for(variant)
    return QualityScore(round(score, 6), score < threshold, threshold, variant, signals)
