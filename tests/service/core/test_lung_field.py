"""The classical lung-field extraction that labels the lung class on real CT slices."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.lung_field import (
    LungFieldParams,
    aerated_lung_volume,
    confine_as_manifest_says,
    confine_to_lung_field,
    lung_field_slice,
    lung_field_volume,
)


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def chest_slice(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A 200x200 chest in HU: body, two lungs with vessels, trachea, bowel gas, a lesion at
    the pleura of the right-hand lung. Returns (hu, true lungs incl. vessels, parts)."""
    rng = np.random.default_rng(seed)
    shape = (200, 200)
    hu = np.full(shape, -1000.0)
    body = _ellipse(shape, 100, 100, 70, 92)
    hu[body] = 40.0
    left, right = _ellipse(shape, 95, 60, 45, 28), _ellipse(shape, 95, 140, 45, 28)
    lungs = left | right
    hu[lungs] = -860.0
    for _ in range(25):  # vessels: dense dots inside the lungs
        cy, cx = rng.integers(60, 130), rng.choice([rng.integers(45, 75), rng.integers(125, 155)])
        vessel = _ellipse(shape, cy, cx, 2, 2) & lungs
        hu[vessel] = 30.0
    trachea = _ellipse(shape, 70, 100, 5, 5)
    hu[trachea] = -1000.0
    gas = _ellipse(shape, 155, 110, 4, 6)
    hu[gas] = -980.0
    lesion = _ellipse(shape, 95, 166, 10, 6) & right  # consolidation against the pleura
    hu[lesion] = 20.0
    hu += rng.normal(0.0, 15.0, shape)
    return hu, lungs, {"trachea": trachea, "gas": gas, "lesion": lesion}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_finds_both_lungs_and_leaves_out_airway_and_gas() -> None:
    hu, lungs, parts = chest_slice()
    field = lung_field_slice(hu)
    assert _dice(field, lungs & ~parts["lesion"]) > 0.95
    assert not (field & parts["trachea"]).any()
    assert not (field & parts["gas"]).any()
    # Vessels are holes inside the lung field and are filled.
    assert field[lungs & ~parts["lesion"] & (hu > -500)].mean() > 0.9


def test_known_lesions_at_the_pleura_stay_inside_the_lung() -> None:
    hu, lungs, parts = chest_slice()
    without = lung_field_slice(hu)
    assert without[parts["lesion"]].mean() < 0.5  # dense, open to the pleura: missed alone
    with_lesion = lung_field_slice(hu, known_lesions=parts["lesion"])
    assert with_lesion[parts["lesion"]].all()
    assert _dice(with_lesion, lungs) > 0.97


def test_a_crop_through_the_body_wall_needs_border_is_body() -> None:
    hu, lungs, parts = chest_slice()
    crop = (slice(30, 170), slice(20, 180))  # cuts the body on the left and right
    assert (
        _dice(lung_field_slice(hu[crop], border_is_body=True), (lungs & ~parts["lesion"])[crop])
        > 0.95
    )


def test_no_lung_in_a_slice_of_soft_tissue() -> None:
    hu = np.full((64, 64), -1000.0)
    hu[8:56, 8:56] = 40.0
    assert not lung_field_slice(hu).any()


def test_volume_runs_slice_by_slice_and_checks_shapes() -> None:
    hu, lungs, parts = chest_slice()
    field = lung_field_volume(np.stack([hu, hu]))
    assert field.shape == (2, 200, 200)
    assert np.array_equal(field[0], lung_field_slice(hu))
    with pytest.raises(ValueError, match="one \\(H, W\\) slice"):
        lung_field_slice(np.stack([hu, hu]))
    with pytest.raises(ValueError, match="\\(D, H, W\\) volume"):
        lung_field_volume(hu)


def test_thresholds_are_parameters() -> None:
    hu, lungs, _ = chest_slice()
    # A lung threshold below the lungs' HU finds no lung.
    assert not lung_field_slice(hu, LungFieldParams(lung_threshold_hu=-950.0)).any()


def _study() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Six chest slices above four abdominal ones (body, bowel gas, no lung) and a CT table."""
    chest = [chest_slice(seed=i) for i in range(6)]
    hu_chest = np.stack([c[0] for c in chest])
    lungs = np.stack([c[1] for c in chest])
    lesion = np.stack([c[2]["lesion"] for c in chest])
    abdomen = np.full((4, 200, 200), -1000.0)
    abdomen[:, _ellipse((200, 200), 100, 100, 70, 92)] = 40.0
    abdomen[:, _ellipse((200, 200), 155, 100, 8, 12)] = -990.0  # bowel gas, under no lung
    hu = np.concatenate([hu_chest, abdomen])
    hu[:, 185:190, 20:180] = 200.0  # the table, apart from the body
    truth_lungs = np.concatenate([lungs, np.zeros_like(abdomen, dtype=bool)])
    truth_lesion = np.concatenate([lesion, np.zeros_like(abdomen, dtype=bool)])
    return hu, truth_lungs, {"lesion": truth_lesion}


def test_aerated_lungs_leave_out_bowel_gas_and_the_table() -> None:
    hu, lungs, parts = _study()
    field = aerated_lung_volume(hu)
    assert not field[6:].any()  # no lung in the abdomen: the gas is a small 3D component
    assert not field[:, 185:190].any()
    assert _dice(field[:6], (lungs & ~parts["lesion"])[:6]) > 0.95


def test_confinement_removes_abdominal_and_table_labels_and_keeps_pleural_lesions() -> None:
    hu, lungs, parts = _study()
    labels = np.where(lungs, 1, 0).astype(np.uint8)
    labels[parts["lesion"]] = 3
    labels[6:, 100:120, 90:130] = 3  # "consolidation" in the liver/bowel
    labels[:, 185:190, 40:160] = 1  # "lung" on the table
    out = confine_to_lung_field(labels, hu, (2.0, 1.0, 1.0), 10.0, [1, 2, 3], stride=2)
    assert not out[6:].any() and not out[:, 185:190].any()
    assert (out[parts["lesion"]] == 3).all()  # dense, at the pleura, within the margin
    assert np.array_equal(out[:6][lungs[:6]], labels[:6][lungs[:6]])


def test_manifest_decides_whether_to_confine() -> None:
    from service.core.classes import classes_for
    from service.core.manifest import ModelManifest

    hu, lungs, _ = _study()
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[6:, 100:120, 90:130] = 3
    manifest = ModelManifest(
        name="m",
        version="1",
        classes=classes_for(("background", "lung", "ggo", "consolidation")),
        slice_context=1,
        hu_window=(-1140.0, 256.0),
        input_size=(64, 64),
    )
    assert confine_as_manifest_says(labels, hu, (2.0, 1.0, 1.0), manifest) is labels
    manifest.lung_field_margin_mm = 10.0
    assert not confine_as_manifest_says(labels, hu, (2.0, 1.0, 1.0), manifest).any()
    roundtrip = ModelManifest.from_json(manifest.to_json())
    assert roundtrip.lung_field_margin_mm == 10.0
    with pytest.raises(ValueError, match="margin_mm"):
        confine_to_lung_field(labels, hu, (2.0, 1.0, 1.0), -1.0, [3])


def _confine_with_isin(labels: np.ndarray, allowed: np.ndarray, stride: int, classes) -> np.ndarray:
    """The former application of the field: full-size mask and ``np.isin``."""
    full = np.repeat(np.repeat(allowed, stride, axis=1), stride, axis=2)
    full = full[:, : labels.shape[1], : labels.shape[2]]
    out = labels.copy()
    out[~full & np.isin(labels, list(classes))] = 0
    return out


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_a_field_found_once_confines_like_the_full_size_mask(stride: int) -> None:
    from service.core.lung_field import lung_field_confinement

    hu, lungs, parts = _study()
    rng = np.random.default_rng(stride)
    labels = rng.integers(0, 4, size=hu.shape).astype(np.uint8)
    field = lung_field_confinement(hu, (2.0, 1.0, 1.0), 10.0, [1, 3], stride=stride)
    assert field.allowed.shape == hu[:, ::stride, ::stride].shape
    expected = _confine_with_isin(labels, field.allowed, stride, [1, 3])
    np.testing.assert_array_equal(field.confine(labels), expected)
    # the same field, applied to another label volume of the study, confines it alike
    other = rng.integers(0, 4, size=hu.shape).astype(np.uint8)
    np.testing.assert_array_equal(
        field.confine(other), _confine_with_isin(other, field.allowed, stride, [1, 3])
    )
    np.testing.assert_array_equal(
        field.confine(labels),
        confine_to_lung_field(labels, hu, (2.0, 1.0, 1.0), 10.0, [1, 3], stride=stride),
    )
    with pytest.raises(ValueError, match="shape"):
        field.confine(labels[:, :-1])


def test_manifest_confinement_is_none_unless_the_manifest_asks() -> None:
    from service.core.classes import classes_for
    from service.core.lung_field import manifest_confinement
    from service.core.manifest import ModelManifest

    hu, _, _ = _study()
    manifest = ModelManifest(
        name="m",
        version="1",
        classes=classes_for(("background", "lung", "ggo", "consolidation")),
        slice_context=1,
        hu_window=(-1140.0, 256.0),
        input_size=(64, 64),
    )
    assert manifest_confinement(hu, (2.0, 1.0, 1.0), manifest) is None
    assert manifest_confinement(hu, (2.0, 1.0, 1.0), None) is None
    manifest.lung_field_margin_mm = 10.0
    field = manifest_confinement(hu, (2.0, 1.0, 1.0), manifest)
    assert field is not None and field.confined_classes == (1, 2, 3)
