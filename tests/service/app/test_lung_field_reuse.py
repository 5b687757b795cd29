"""One lung field per study: the inference step finds it, the consistency check reuses it.

The study graph runs on the synthetic warm-up chest (a body with two aerated lungs) with a
stand-in network that calls everything below -500 HU lung, the CT table and air around the
patient included; the model's manifest confines lung to 10 mm of the aerated lungs.
"""

from __future__ import annotations

import pytest

import service.core.lung_field as lung_field
from service.app.study_runner import StudyRunner
from service.app.warm_up import warm_up_instances
from service.core.classes import DEFAULT_CLASSES
from service.core.manifest import ModelManifest
from service.core.options import ApplicabilityPolicy
from service.predictor import InputGeometry, Predictor
from service.quality.assessment import QualityConfig
from tests.service.app.test_operators import ThresholdBackend


@pytest.fixture
def runner() -> StudyRunner:
    manifest = ModelManifest(
        name="pulmoseg-air-is-lung",
        version="0.0.1",
        classes=list(DEFAULT_CLASSES),
        slice_context=1,
        hu_window=(-1000.0, 200.0),
        input_size=(32, 32),
        lung_field_margin_mm=10.0,
    )
    predictor = Predictor(
        ThresholdBackend(), InputGeometry.from_manifest(manifest), manifest=manifest
    )
    return StudyRunner(predictor, quality=QualityConfig(consistency_fraction=1.0))


def test_the_lung_field_is_found_once_and_confines_the_consistency_prediction(
    runner: StudyRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = lung_field.lung_field_confinement

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(lung_field, "lung_field_confinement", counted)
    result = runner.segment(
        warm_up_instances(slices=6, size=64),
        applicability_policy=ApplicabilityPolicy.SEGMENT_AND_FLAG,
    )
    assert calls == [(6, 64, 64)]  # once, on the study's grid
    assert result.quality is not None and result.quality.consistency is not None
    # The air around the body was confined away in the served labels and, with the same
    # field, in the transformed prediction: the check sees the model's (perfect) agreement.
    assert result.quality.consistency.voldice["lung"] == pytest.approx(1.0)
