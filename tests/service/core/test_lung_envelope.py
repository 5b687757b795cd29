"""The lung envelope: the aerated lungs plus the disease inside the pleura (model 3.0, item 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw

from service.core.lung_field import EnvelopeParams, aerated_lung_volume, lung_envelope
from training.phantom import LUNG, synthesize_study

FOUR_D_LUNG = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "4d-lung"


def _ball(shape: tuple[int, ...], centre: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    grids = np.indices(shape).astype(float)
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
    return dist2 <= radius_mm**2


@pytest.fixture(scope="module")
def pleural_consolidation():
    """A phantom (slice 0 inferior) with a dense consolidation against the lateral pleura of
    its right lung: half a 15 mm ball, cut by the pleura."""
    study = synthesize_study(11, size=128, slices=48, with_lesions=False)
    hu = study.hu.astype(np.float32)
    lung = study.label == LUNG
    z = 24
    right = lung[z].copy()
    right[:, right.shape[1] // 2 :] = False
    rows, cols = np.nonzero(right)
    middle = np.abs(rows - rows.mean()) <= 2  # the lateral wall at mid depth
    far = np.flatnonzero(middle)[np.argmin(cols[middle])]
    centre = np.array([z, rows[far], cols[far]], dtype=float)
    lesion = lung & _ball(hu.shape, centre, 15.0, study.spacing_zyx)
    rng = np.random.default_rng(0)
    hu[lesion] = rng.normal(20.0, 15.0, int(lesion.sum()))
    return hu, study.spacing_zyx, lung, lesion


def test_pleural_consolidation_is_inside_the_envelope(pleural_consolidation) -> None:
    hu, spacing, lung, lesion = pleural_consolidation
    classical = aerated_lung_volume(hu, max_hole_px=400.0 / (spacing[1] * spacing[2]))
    envelope = lung_envelope(hu, spacing)
    assert (classical & lesion).sum() < 0.5 * lesion.sum()  # the air-following field carves it
    assert (lesion & ~envelope).sum() == 0
    assert (classical & ~envelope).sum() == 0  # never smaller than the classical field
    # ... and it does not spill far into the chest wall, mediastinum or below the diaphragm:
    # measured 6.3 % of the lung (classical field: 1.0 %), mostly the notch the descending
    # aorta leaves in the left lung and one-pixel rims (see docs/quantification.md).
    outside = envelope & ~lung
    assert outside.sum() < 0.08 * lung.sum(), outside.sum() / lung.sum()
    assert (envelope & (hu > 0) & ~lung).sum() < 0.03 * lung.sum()


def test_diaphragm_dome_stays_out_and_a_large_nodule_goes_in() -> None:
    """A soft-tissue dome rising into the lung from below is an enclosed hole in its top
    slices, like a big nodule; only the nodule is lung."""
    spacing = (2.0, 1.0, 1.0)
    shape = (40, 160, 160)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    z, y, x = np.indices(shape)
    body = (y - 80) ** 2 + (x - 80) ** 2 <= 75**2
    hu[body] = 40.0
    lung = ((y - 80) ** 2 + (x - 80) ** 2 <= 55**2) & (z >= 5)
    hu[lung] = -850.0
    dome = ((z - 5) * 2.0) ** 2 + (y - 80) ** 2 + (x - 80) ** 2 <= 30**2  # rises 30 mm
    hu[dome & lung] = 50.0
    nodule = _ball(shape, np.array([30, 80, 80]), 14.0, spacing)  # 616 mm² across
    hu[nodule] = 30.0
    envelope = lung_envelope(hu, spacing, superior_is_last=True)
    assert (nodule & ~envelope).sum() == 0
    # Only the dome's top slice, a hole under 400 mm² that the classical field fills too.
    classical = aerated_lung_volume(hu, max_hole_px=400.0)
    assert (envelope & dome & lung & ~classical).sum() == 0
    assert (envelope & dome & lung).sum() < 0.02 * (dome & lung).sum()
    # The same study stored feet last, and said so: the same envelope.
    flipped = lung_envelope(hu[::-1], spacing, superior_is_last=False)[::-1]
    assert (envelope == flipped).all()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'hu' must be a"):
        lung_envelope(np.zeros((4, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="'params'"):
        lung_envelope(np.zeros((2, 4, 4)), (1.0, 1.0, 1.0), EnvelopeParams(coarse_pixel_mm=0))
    with pytest.raises(ValueError, match="'spacing_zyx'"):
        lung_envelope(np.zeros((2, 4, 4)), (1.0, 0.0, 1.0))


def _four_d_lung() -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """The 4D-Lung CT (slices ascending in z: head last) and its tumour mask from the
    RTSTRUCT (contours in patient coordinates, rasterised per slice, even-odd for holes)."""
    series = [pydicom.dcmread(p) for p in sorted((FOUR_D_LUNG / "ct").glob("*.dcm"))]
    series.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in series]
    ).astype(np.float32)
    dy, dx = (float(v) for v in series[0].PixelSpacing)
    z_positions = np.array([float(ds.ImagePositionPatient[2]) for ds in series])
    spacing = (float(np.median(np.diff(z_positions))), dy, dx)
    rtstruct = pydicom.dcmread(FOUR_D_LUNG / "rtstruct.dcm")
    number = next(r.ROINumber for r in rtstruct.StructureSetROISequence if r.ROIName == "Tumor_c40")
    contours = next(
        c for c in rtstruct.ROIContourSequence if c.ReferencedROINumber == number
    ).ContourSequence
    tumour = np.zeros(hu.shape, dtype=bool)
    for contour in contours:
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        k = int(np.argmin(np.abs(z_positions - points[0, 2])))
        x0, y0 = (float(v) for v in series[k].ImagePositionPatient[:2])
        polygon = list(zip((points[:, 0] - x0) / dx, (points[:, 1] - y0) / dy, strict=True))
        image = Image.new("1", (hu.shape[2], hu.shape[1]), 0)
        ImageDraw.Draw(image).polygon(polygon, fill=1)
        tumour[k] ^= np.asarray(image, dtype=bool)
    return hu, spacing, tumour


@pytest.mark.skipif(not FOUR_D_LUNG.is_dir(), reason="no ../shared/data/4d-lung checkout")
@pytest.mark.xfail(
    strict=True,
    reason="open gap: the tumour lies against the aorta at the left hilum, where the aerated "
    "lung is open onto the mediastinum; 2.3 % of it is inside (docs/quantification.md)",
)
def test_four_d_lung_tumour_inside_the_envelope() -> None:
    hu, spacing, tumour = _four_d_lung()
    assert tumour.sum() > 20000  # 28 contours, about 25 mL
    envelope = lung_envelope(hu, spacing, superior_is_last=True)
    inside = float((envelope & tumour).sum() / tumour.sum())
    assert inside >= 0.95, f"only {inside:.3f} of the tumour is inside the envelope"
