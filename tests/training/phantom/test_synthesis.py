"""Synthesis of one phantom study: determinism, HU per label, what varies between studies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from training.phantom import (
    CONSOLIDATION,
    GGO,
    LUNG,
    PhantomStudy,
    is_lesion_free,
    phantom_spacing,
    study_seed,
    synthesize_study,
)

SIZE, SLICES = 64, 16


@pytest.fixture(scope="module")
def studies() -> list[PhantomStudy]:
    return [synthesize_study(study_seed(3, i), SIZE, SLICES) for i in range(4)]


def test_same_seed_gives_identical_study_and_other_seed_differs() -> None:
    a = synthesize_study(1234, SIZE, SLICES)
    b = synthesize_study(1234, SIZE, SLICES)
    c = synthesize_study(1235, SIZE, SLICES)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.lesions == b.lesions
    assert not np.array_equal(a.hu, c.hu)
    assert not np.array_equal(a.label, c.label)


def test_study_seed_depends_on_seed_and_index_only() -> None:
    assert study_seed(5, 2) == study_seed(5, 2)
    assert len({study_seed(5, i) for i in range(50)}) == 50
    assert study_seed(5, 0) != study_seed(6, 0)


def test_shapes_dtypes_and_spacing() -> None:
    s = synthesize_study(7, SIZE, SLICES)
    assert s.hu.shape == s.label.shape == s.hu_clean.shape == (SLICES, SIZE, SIZE)
    assert (s.hu.dtype, s.label.dtype, s.hu_clean.dtype) == (np.int16, np.uint8, np.float32)
    assert s.spacing_zyx == pytest.approx((15.0, 5.46875, 5.46875))
    assert phantom_spacing(128, 48) == pytest.approx((5.0, 2.734375, 2.734375))
    assert set(np.unique(s.label)) <= {0, LUNG, GGO, CONSOLIDATION}
    assert s.hu.min() >= -1024 and s.hu.max() <= 3071
    assert s.hu.max() >= 400  # bone is present


def test_hu_per_label_before_noise(studies: list[PhantomStudy]) -> None:
    pooled_cons = []
    for s in studies:
        lung_median = np.median(s.hu_clean[s.label == LUNG])
        assert abs(lung_median + 850.0) <= 60.0, lung_median
        assert np.count_nonzero(s.label == GGO) > 0
        assert -700.0 <= np.median(s.hu_clean[s.label == GGO]) <= -300.0
        pooled_cons.append(s.hu_clean[s.label == CONSOLIDATION])
        # Outside the body is air, and the noise level is what the study says it is
        # (measured away from air, where clipping at -1024 would shrink it).
        assert np.median(s.hu_clean[:, :3, :3]) == pytest.approx(-1000.0, abs=1.0)
        tissue = s.hu_clean > -900
        noise = s.hu[tissue].astype(np.float32) - s.hu_clean[tissue]
        assert noise.std() == pytest.approx(s.noise_std_hu, rel=0.1)
        assert abs(noise.mean()) < 1.0
    cons = np.concatenate(pooled_cons)
    assert cons.size > 50
    assert -100.0 <= np.median(cons) <= 50.0


def test_ggo_overlaps_vessels_in_hu(studies: list[PhantomStudy]) -> None:
    """Labels matter: some plain-lung voxels (small vessels) fall in the GGO HU range."""
    s = studies[0]
    lung_hu = s.hu_clean[s.label == LUNG]
    in_ggo_range = np.count_nonzero((lung_hu > -650) & (lung_hu < -350))
    assert in_ggo_range > 50


def test_noise_level_varies_between_studies(studies: list[PhantomStudy]) -> None:
    noise = [s.noise_std_hu for s in studies]
    assert all(10.0 <= n <= 30.0 for n in noise)
    assert max(noise) - min(noise) > 3.0


def test_lesions_only_inside_lung_field() -> None:
    with_lesions = synthesize_study(99, SIZE, SLICES)
    without = synthesize_study(99, SIZE, SLICES, with_lesions=False)
    assert with_lesions.has_lesions and not without.has_lesions
    # Same lung field; lesions are carved out of it, never added outside.
    np.testing.assert_array_equal(with_lesions.label > 0, without.label > 0)
    assert without.lesion_voxels() == {"ggo": 0, "consolidation": 0}
    # Intensity changes stay within the lung field (plus the scanner blur's reach).
    near_lung = ndimage.binary_dilation(without.label > 0, iterations=2)
    diff = np.abs(with_lesions.hu_clean - without.hu_clean)
    assert diff[~near_lung].max() < 1e-3
    assert diff[with_lesions.label >= GGO].mean() > 100.0


def test_lesion_sizes_and_counts_vary(studies: list[PhantomStudy]) -> None:
    totals = [sum(s.lesion_voxels().values()) for s in studies]
    assert len(set(totals)) == len(totals)
    assert max(totals) > 3 * min(totals)
    radii = [spec.radius_mm for s in studies for spec in s.lesions]
    assert max(radii) > 3 * min(radii)
    assert len({len(s.lesions) for s in studies}) > 1


def test_lung_and_body_shape_vary(studies: list[PhantomStudy]) -> None:
    lung_volumes = [np.count_nonzero(s.label > 0) for s in studies]
    body_areas = [np.count_nonzero(s.hu_clean[SLICES // 2] > -500) for s in studies]
    assert max(lung_volumes) > 1.15 * min(lung_volumes)
    assert max(body_areas) > 1.1 * min(body_areas)


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.25, 5), (0.5, 10), (1.0, 20)])
def test_lesion_free_fraction_is_met_in_every_prefix(fraction: float, expected: int) -> None:
    flags = [is_lesion_free(8, i, fraction) for i in range(20)]
    assert sum(flags) == expected
    for n in range(1, 21):
        assert int(np.floor(n * fraction)) <= sum(flags[:n]) <= int(np.ceil(n * fraction))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seed": -1}, ValueError, r"'seed' must be >= 0, got -1"),
        ({"seed": 1.5}, TypeError, r"'seed' must be an int, got float"),
        ({"seed": 1, "size": 16}, ValueError, r"'size' must be >= 32, got 16"),
        ({"seed": 1, "slices": True}, TypeError, r"'slices' must be an int, got bool"),
    ],
)
def test_synthesize_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        synthesize_study(**kwargs)
