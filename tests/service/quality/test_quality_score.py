"""The quality score's signals on constructed arrays, its combination and its settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.quality.quality_score import (
    MODELS,
    QualityScoreConfig,
    ScoreVariant,
    feature_vector,
    score_study,
)
from service.quality.score_signals import (
    QualitySignals,
    lesion_consistency,
    lesion_entropy,
    lesion_lung_ratio,
    lesion_outside_lung,
    lung_field_dice,
    normalised_entropy,
    study_signals,
)

LESIONS = (2, 3)
LUNGS = (1, 2, 3)


def test_lesion_consistency_is_the_voldice_of_the_lesion_union():
    a = np.zeros((2, 4, 4), np.uint8)
    b = np.zeros_like(a)
    a[0, :2, :2] = 2  # 4 voxels GGO
    b[0, :2, :2] = 3  # the same voxels called consolidation: the lesion is found both times
    b[1, 0, 0] = 2  # one extra voxel
    assert lesion_consistency(a, b, LESIONS) == pytest.approx(2 * 4 / (4 + 5))
    assert lesion_consistency(np.zeros_like(a), np.zeros_like(a), LESIONS) == 1.0
    with pytest.raises(ValueError, match="'labels' and 'transformed_back'"):
        lesion_consistency(a, b[:1], LESIONS)


def test_entropy_is_normalised_and_averaged_over_lesion_voxels():
    uniform = np.full((1, 4, 2, 2), 0.25, np.float32)
    certain = np.zeros((1, 4, 2, 2), np.float32)
    certain[:, 2] = 1.0
    assert np.allclose(normalised_entropy(uniform), 1.0, atol=1e-6)
    assert np.allclose(normalised_entropy(certain), 0.0, atol=1e-5)
    half = np.array([[0.5], [0.5], [0.0], [0.0]], np.float32)[None]  # (1, 4, 1)
    assert normalised_entropy(half)[0, 0] == pytest.approx(math.log(2) / math.log(4), abs=1e-5)
    assert lesion_entropy(3.0, 6) == 0.5
    assert lesion_entropy(0.0, 0) is None
    with pytest.raises(ValueError, match="'entropy_sum' and 'lesion_voxels'"):
        lesion_entropy(-1.0, 2)


def _lungs_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """A (2, 8, 8) study: aerated lung rows 2-5, columns 2-5 on both slices."""
    aerated = np.zeros((2, 8, 8), bool)
    aerated[:, 2:6, 2:6] = True
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 1
    return aerated, labels


def test_lung_field_dice_counts_lesions_as_lung_and_works_on_a_coarser_grid():
    aerated, labels = _lungs_and_labels()
    labels[0, 2:4, 2:4] = 2  # a lesion inside the lung is still lung
    assert lung_field_dice(labels, aerated, LUNGS) == 1.0
    labels[:, 6, 2:6] = 1  # 8 extra voxels called lung: Dice = 2*32 / (40 + 32)
    assert lung_field_dice(labels, aerated, LUNGS) == pytest.approx(64 / 72)
    fine = np.repeat(np.repeat(labels, 2, axis=1), 2, axis=2)  # 16×16, aerated at stride 2
    assert lung_field_dice(fine, aerated, LUNGS) == pytest.approx(64 / 72)
    assert lung_field_dice(labels, np.zeros_like(aerated), LUNGS) is None
    with pytest.raises(ValueError, match="same number of slices"):
        lung_field_dice(labels[:1], aerated, LUNGS)


def test_lesion_outside_lung_measures_the_share_beyond_the_margin():
    aerated, labels = _lungs_and_labels()
    assert lesion_outside_lung(labels, aerated, LESIONS, pixel_mm=2.0) is None  # no lesion
    labels[0, 3, 3] = 2  # inside
    labels[0, 6, 3] = 2  # 1 pixel (2 mm) from the lung: within the 5 mm margin
    labels[0, 0, 7] = 3  # far corner: (2 rows, 2 cols) away -> 2.83 px = 5.66 mm: outside
    labels[1, 0, 0] = 2  # 2.83 px: outside
    assert lesion_outside_lung(labels, aerated, LESIONS, pixel_mm=2.0) == pytest.approx(0.5)
    assert lesion_outside_lung(labels, aerated, LESIONS, pixel_mm=2.0, margin_mm=6.0) == 0.0
    with pytest.raises(ValueError, match="'pixel_mm' must be > 0"):
        lesion_outside_lung(labels, aerated, LESIONS, pixel_mm=0.0)


def test_lesion_lung_ratio():
    assert lesion_lung_ratio(50.0, 200.0) == 0.25
    assert lesion_lung_ratio(None, 200.0) is None
    assert lesion_lung_ratio(10.0, 0.0) is None


def test_study_signals_leaves_the_tta_signals_out_without_the_consistency_pass():
    aerated, labels = _lungs_and_labels()
    labels[0, 3, 3] = 2
    kwargs = {
        "labels": labels,
        "spacing_zyx": (5.0, 1.0, 1.0),
        "lung_classes": LUNGS,
        "lesion_classes": LESIONS,
        "lesion_volume_ml": 1.0,
        "lung_volume_ml": 4.0,
        "aerated_lungs": aerated,
        "lung_stride": 2,
    }
    cheap = study_signals(**kwargs)
    assert cheap.consistency_lesion_voldice is None and cheap.lesion_entropy is None
    assert cheap.lung_field_dice == 1.0 and cheap.lesion_outside_lung == 0.0
    assert cheap.lesion_lung_ratio == 0.25
    full = study_signals(
        **kwargs, transformed_back=labels.copy(), entropy_sum=0.3, entropy_voxels=3
    )
    assert full.consistency_lesion_voldice == 1.0
    assert full.lesion_entropy == pytest.approx(0.1)


def test_score_uses_the_variant_the_signals_allow_and_falls_with_worse_signals():
    good = QualitySignals(0.95, 0.2, 0.97, 0.0, 0.05)
    bad = QualitySignals(0.3, 0.6, 0.7, 0.6, 0.6)
    config = QualityScoreConfig()
    s_good, s_bad = score_study(good, config), score_study(bad, config)
    assert s_good.variant is ScoreVariant.WITH_TTA
    assert 0.0 <= s_bad.score < s_good.score <= 1.0
    assert s_good.threshold == MODELS[ScoreVariant.WITH_TTA].threshold
    assert s_bad.flagged and not s_good.flagged
    cheap = score_study(QualitySignals(lung_field_dice=0.97), config)
    assert cheap.variant is ScoreVariant.WITHOUT_TTA
    assert set(feature_vector(cheap.signals, cheap.variant)) == set(
        MODELS[ScoreVariant.WITHOUT_TTA].features
    )
    outcome = s_good.outcome()
    assert outcome.variant == "with_tta" and outcome.signals["lung_field_dice"] == 0.97


def test_the_fitted_constants_state_their_provenance_and_grow_with_suspected_error():
    for model in MODELS.values():
        assert "bench/quality_score_eval.py" in model.provenance
        assert 0.0 < model.threshold < 1.0
        assert len(model.weights) == len(model.features)
        # every feature grows with suspected error, so the fit must give it a negative weight
        assert all(w < 0 for w in model.weights), model


def test_settings_threshold_and_off():
    signals = QualitySignals(0.95, 0.2, 0.97, 0.0, 0.05)
    strict = score_study(signals, QualityScoreConfig(threshold=1.0))
    assert strict.flagged and strict.threshold == 1.0
    lenient = score_study(signals, QualityScoreConfig(threshold=0.0))
    assert not lenient.flagged
    with pytest.raises(
        ValueError, match="'quality.score.threshold' must be in \\[0, 1\\], got 1.5"
    ):
        QualityScoreConfig(threshold=1.5)
    from service.serving.settings import load_settings

    settings = load_settings(env={"PULMOSEG_QUALITY_SCORE_THRESHOLD": "0.4"})
    assert settings.quality.score.threshold == 0.4 and settings.quality.score.enabled
    with pytest.raises(ValueError, match="quality.score.threshold"):
        load_settings(env={"PULMOSEG_QUALITY_SCORE_THRESHOLD": "-0.1"})
    off = load_settings(env={"PULMOSEG_QUALITY_SCORE_ENABLED": "false"}).quality
    assert not off.score.enabled  # the quality step takes this group as it is
