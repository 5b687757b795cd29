"""Density bands per lung and zone, with exact fractions on a volume of known HU."""

from __future__ import annotations

import numpy as np
import pytest

from service.quality.density import (
    BANDS,
    abnormal_density_mask,
    midline_columns,
    quantify_density,
    volume_orientation,
)

SPACING = (10.0, 10.0, 10.0)  # 1 mL voxels: volumes are voxel counts


def two_lungs(superior_is_last: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """30 slices; right lung in columns 2-13, left lung in columns 26-37 (column index grows
    to the patient's left), rows 5-24. The left lung's lower third is -800 HU, its middle
    third -600, its upper third -50; the right lung is -980 throughout except a block of
    -300 in its upper third (rows 5-14)."""
    hu = np.full((30, 30, 40), 40.0, dtype=np.float32)
    envelope = np.zeros(hu.shape, dtype=bool)
    envelope[:, 5:25, 2:14] = True
    envelope[:, 5:25, 26:38] = True
    lower, middle, upper = slice(0, 10), slice(10, 20), slice(20, 30)
    if not superior_is_last:
        lower, upper = slice(20, 30), slice(0, 10)
    hu[lower, 5:25, 26:38] = -800.0
    hu[middle, 5:25, 26:38] = -600.0
    hu[upper, 5:25, 26:38] = -50.0
    hu[:, 5:25, 2:14] = -980.0
    hu[upper, 5:15, 2:14] = -300.0
    return hu, envelope


@pytest.mark.parametrize("superior_is_last", [True, False])
def test_bands_per_lung_and_zone_are_exact(superior_is_last: bool) -> None:
    hu, envelope = two_lungs(superior_is_last)
    result = quantify_density(hu, envelope, SPACING, superior_is_last=superior_is_last)
    assert result.envelope_ml == pytest.approx(2 * 30 * 20 * 12)
    left, right = result.region("left"), result.region("right")
    assert left.envelope_ml == right.envelope_ml == pytest.approx(7200)
    assert left.band("well_aerated").fraction == pytest.approx(1 / 3)
    assert left.band("normally_aerated").fraction == pytest.approx(2 / 3)  # -800 and -600
    assert left.band("non_aerated").fraction == pytest.approx(1 / 3)
    assert left.band("compromised").volume_ml == pytest.approx(2400)
    assert right.band("hyperinflated").fraction == pytest.approx(1 - 1 / 6)
    assert right.band("poorly_aerated").volume_ml == pytest.approx(1200)
    assert result.region("left_upper").band("non_aerated").fraction == pytest.approx(1.0)
    assert result.region("left_lower").band("well_aerated").fraction == pytest.approx(1.0)
    assert result.region("right_upper").band("compromised").fraction == pytest.approx(0.5)
    assert result.region("right_lower").band("compromised").fraction == 0.0
    upper = result.region("upper")
    assert upper.envelope_ml == pytest.approx(4800)
    assert upper.band("compromised").fraction == pytest.approx((2400 + 1200) / 4800)
    whole = result.region("whole")
    assert whole.band("well_aerated").volume_ml == pytest.approx(2400)
    # Abnormal density (-700...-250): the left middle third (-600) and the right upper block
    # (-300); the 2-pixel opening takes 3 pixels off each corner of each slice's rectangle.
    assert result.abnormal_ml == pytest.approx(10 * (240 - 12) + 10 * (120 - 12))
    assert result.abnormal_fraction == pytest.approx(result.abnormal_ml / 14400)


def test_band_edges_are_half_open() -> None:
    hu = np.full((3, 8, 8), -700.0, dtype=np.float32)
    envelope = np.ones(hu.shape, dtype=bool)
    whole = quantify_density(hu, envelope, SPACING).region("whole")
    assert whole.band("well_aerated").fraction == 0.0  # -950 <= HU < -700
    assert whole.band("normally_aerated").fraction == 1.0
    hu[:] = 100.0
    whole = quantify_density(hu, envelope, SPACING).region("whole")
    assert whole.band("non_aerated").fraction == 0.0 == whole.band("compromised").fraction


def test_opening_drops_vessel_sized_abnormal_voxels() -> None:
    hu = np.full((2, 30, 30), -850.0, dtype=np.float32)
    hu[:, 25, 3:27] = -500.0  # a one-pixel vessel seen partly in the abnormal range
    envelope = np.ones(hu.shape, dtype=bool)
    assert not abnormal_density_mask(hu, envelope).any()
    hu[:, 10:20, 10:20] = -500.0  # a 10x10 patch of ground glass stays (less its corners)
    assert abnormal_density_mask(hu, envelope).sum() == 2 * (100 - 12)


def test_midline_splits_touching_lungs_at_their_junction() -> None:
    _, envelope = two_lungs()
    envelope[:, 5:8, 14:26] = True  # an anterior junction line joins the lungs
    assert set(midline_columns(envelope)) <= set(range(14, 26))
    hu = np.full(envelope.shape, -850.0, dtype=np.float32)
    result = quantify_density(hu, envelope, SPACING)
    assert result.region("left").envelope_ml + result.region("right").envelope_ml == (
        pytest.approx(result.envelope_ml)
    )
    assert abs(result.region("left").envelope_ml - result.region("right").envelope_ml) < 0.1 * (
        result.envelope_ml
    )


def test_left_is_where_the_row_cosine_says() -> None:
    hu, envelope = two_lungs()
    flipped = quantify_density(
        hu[:, :, ::-1], envelope[:, :, ::-1], SPACING, left_is_high_column=False
    )
    plain = quantify_density(hu, envelope, SPACING)
    assert flipped.as_dict()["regions"] == plain.as_dict()["regions"]
    assert volume_orientation((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)) == (True, True)
    assert volume_orientation((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)) == (False, False)


def test_as_dict_names_every_band_with_its_source() -> None:
    hu, envelope = two_lungs()
    out = quantify_density(hu, envelope, SPACING).as_dict()
    assert set(out["bands"]) == {b.name for b in BANDS}
    assert "Colombi" in out["bands"]["well_aerated"]["source"]
    assert "Lanza" in out["bands"]["compromised"]["source"]
    assert set(out["regions"]) == {
        "whole", "left", "right", "upper", "middle", "lower",
        *(f"{s}_{z}" for s in ("left", "right") for z in ("upper", "middle", "lower")),
    }  # fmt: skip


def test_rejects_mismatched_inputs() -> None:
    hu, envelope = two_lungs()
    with pytest.raises(ValueError, match="'envelope' has shape"):
        quantify_density(hu, envelope[:-1], SPACING)
    with pytest.raises(ValueError, match="'spacing_zyx'"):
        quantify_density(hu, envelope, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="'hu' must be"):
        quantify_density(hu[0], envelope[0], SPACING)
