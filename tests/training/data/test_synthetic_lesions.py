"""training.data.synthetic_lesions: lesions inserted into lesion-free lung in HU."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.synthetic_lesions import (
    CONSOLIDATION,
    GGO,
    LesionRecipe,
    insert_lesions,
)

SPACING = (1.9, 1.9)


def chest_slice(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 160² axial slice in HU: soft-tissue body, two aerated lungs with bright 'vessels'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:160, :160]
    hu = np.full((160, 160), -1000.0, dtype=np.float32)
    hu[((yy - 80) / 60.0) ** 2 + ((xx - 80) / 75.0) ** 2 <= 1] = 40.0
    lung = np.zeros((160, 160), dtype=bool)
    for cx in (50, 110):
        lung |= ((yy - 78) / 40.0) ** 2 + ((xx - cx) / 24.0) ** 2 <= 1
    hu[lung] = -860.0 + rng.normal(0.0, 25.0, int(lung.sum()))
    vessels = lung & (rng.random((160, 160)) < 0.03)
    hu[vessels] = 60.0
    return hu, lung


def test_the_same_seed_gives_the_same_lesions_and_another_seed_others() -> None:
    hu, lung = chest_slice()
    a = insert_lesions(hu, lung, SPACING, np.random.default_rng(7))
    b = insert_lesions(hu, lung, SPACING, np.random.default_rng(7))
    c = insert_lesions(hu, lung, SPACING, np.random.default_rng(8))
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.label, b.label)
    assert (a.label > 0).any() and not np.array_equal(a.label, c.label)


def test_lesions_lie_in_the_lung_and_leave_everything_else_untouched() -> None:
    hu, lung = chest_slice()
    for seed in range(10):
        out = insert_lesions(hu, lung, SPACING, np.random.default_rng(seed))
        assert out.label.dtype == np.uint8 and set(np.unique(out.label)) <= {0, GGO, CONSOLIDATION}
        assert not (out.label > 0)[~lung].any()
        np.testing.assert_array_equal(out.hu[~lung], hu[~lung])
        # Lesions only add density; vessels crossing GGO stay visible (consolidation, as dense
        # as they are, may hide them).
        assert (out.hu >= hu - 1e-3).all()
        vessels = lung & (hu > 50) & (out.label != CONSOLIDATION)
        np.testing.assert_allclose(out.hu[vessels], hu[vessels])


def test_lesion_masks_carry_the_hu_of_their_pattern() -> None:
    hu, lung = chest_slice()
    ggo, consolidation = [], []
    for seed in range(30):
        out = insert_lesions(hu, lung, SPACING, np.random.default_rng(seed))
        ggo.append(out.hu[(out.label == GGO) & (hu < 0)])
        consolidation.append(out.hu[(out.label == CONSOLIDATION) & (hu < 0)])
    ggo_hu, cons_hu = np.concatenate(ggo), np.concatenate(consolidation)
    assert ggo_hu.size > 1000 and cons_hu.size > 200
    # Normal lung here is -860 HU: GGO is hazy, consolidation denser (the recipe's ranges are
    # matched to the annotated lesions in HU by bench/synthetic_lesion_realism.py).
    recipe = LesionRecipe()
    assert recipe.ggo_hu[0] - 20 < np.median(ggo_hu) < recipe.ggo_hu[1]
    assert np.median(cons_hu) > np.median(ggo_hu) + 150


def test_lesions_prefer_the_periphery() -> None:
    from scipy import ndimage

    hu, lung = chest_slice()
    depth = ndimage.distance_transform_edt(lung, sampling=SPACING)
    recipe = LesionRecipe(peripheral_share=1.0, radius_mm=(4.0, 6.0), max_lesions=1)
    depths = []
    for seed in range(20):
        out = insert_lesions(hu, lung, SPACING, np.random.default_rng(seed), recipe)
        depths.append(depth[out.label > 0].min())
    assert max(depths) <= recipe.subpleural_mm


def test_a_slice_without_lung_comes_back_unchanged() -> None:
    hu, _ = chest_slice()
    out = insert_lesions(hu, np.zeros_like(hu, dtype=bool), SPACING, np.random.default_rng(0))
    np.testing.assert_array_equal(out.hu, hu)
    assert not out.label.any()


def test_bad_arguments_say_what_is_wrong() -> None:
    hu, lung = chest_slice()
    with pytest.raises(ValueError, match="one shape"):
        insert_lesions(hu, lung[:10], SPACING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="spacing_mm"):
        insert_lesions(hu, lung, (0.0, 1.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="ggo_hu"):
        LesionRecipe(ggo_hu=(-300.0, -700.0))
    with pytest.raises(ValueError, match="consolidation_prob"):
        LesionRecipe(consolidation_prob=1.5)
