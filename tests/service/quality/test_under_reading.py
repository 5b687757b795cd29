"""The under-reading flag: density burden against the model's lesion burden."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.core.lung_field import lung_envelope
from service.quality.density import DensityQuantification, quantify_density
from service.quality.under_reading import DEFAULT_MARGIN, UNDER_READING, under_reading
from training.phantom import LUNG, synthesize_study

NORMAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "covid-ct-md"
NORMAL = NORMAL / "studies" / "normal002"


@pytest.fixture(scope="module")
def diseased_phantom() -> tuple[DensityQuantification, float]:
    """A phantom whose lower lungs (slices 6-19 of 48) are diffuse ground glass (-520 HU):
    its density and that lesion's volume (mL), what a faithful model would report."""
    study = synthesize_study(5, size=128, slices=48, with_lesions=False)
    hu = study.hu.astype(np.float32)
    lesion = (study.label == LUNG) & (np.arange(hu.shape[0]) < 20)[:, None, None]
    rng = np.random.default_rng(1)
    hu[lesion] = rng.normal(-520.0, 25.0, int(lesion.sum()))
    envelope = lung_envelope(hu, study.spacing_zyx, superior_is_last=True)
    density = quantify_density(hu, envelope, study.spacing_zyx)
    return density, float(lesion.sum() * np.prod(study.spacing_zyx) / 1000)


def test_erased_lesion_output_is_flagged_with_its_reason(diseased_phantom) -> None:
    density, true_lesion_ml = diseased_phantom
    assert density.abnormal_fraction > DEFAULT_MARGIN  # the phantom is diseased enough
    erased = under_reading(density, 0.0)
    assert erased.flagged and erased.reason == UNDER_READING
    assert "exceeds" in erased.message()
    faithful = under_reading(density, true_lesion_ml)
    assert not faithful.flagged and faithful.reason is None, faithful.message()


def test_partly_erased_output_is_flagged_only_past_the_margin(diseased_phantom) -> None:
    density, _ = diseased_phantom
    kept = (density.abnormal_fraction - DEFAULT_MARGIN) * density.envelope_ml
    assert not under_reading(density, kept + 1.0).flagged
    assert under_reading(density, max(kept - 1.0, 0.0)).flagged


def test_no_envelope_is_never_flagged() -> None:
    empty = quantify_density(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool), (1.0, 1.0, 1.0))
    assert not under_reading(empty, 0.0).flagged


def test_rejects_bad_arguments(diseased_phantom) -> None:
    density, _ = diseased_phantom
    with pytest.raises(TypeError, match="'density' must be a DensityQuantification"):
        under_reading({"abnormal_fraction": 0.5}, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'lesion_volume_ml' must be >= 0"):
        under_reading(density, -1.0)
    with pytest.raises(ValueError, match="'margin'"):
        under_reading(density, 1.0, margin=1.5)


@pytest.mark.skipif(not NORMAL.is_dir(), reason="no ../shared COVID-CT-MD normal study")
def test_normal_study_is_not_flagged() -> None:
    """The real normal study with the 0.1 mL of lesion model 2.0.0 finds in it."""
    series = [pydicom.dcmread(p) for p in sorted(NORMAL.glob("*.dcm"))]
    series.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in series]
    ).astype(np.float32)
    z = [float(ds.ImagePositionPatient[2]) for ds in series]
    spacing = (float(np.median(np.diff(z))), *(float(v) for v in series[0].PixelSpacing))
    envelope = lung_envelope(hu, spacing, superior_is_last=True)
    verdict = under_reading(quantify_density(hu, envelope, spacing), 0.1)
    assert not verdict.flagged, verdict.message()
