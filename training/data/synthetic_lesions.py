"""Synthetic COVID-19 lesions inserted into lesion-free lung of real CT slices in HU.

No public chest CT with lesion voxel masks in Hounsfield units can be had here; every dense
lesion label this project owns is an 8-bit JPEG. Inserting lesions into the lesion-free lung of
real DICOM slices gives masks in true HU with real anatomy around them: the diaphragm and liver
dome, the chest wall, the heart borders and the table stay exactly as the scanner saw them, and
only the inserted region is lesion. The recipe follows the published insertion approach for
COVID-19 pneumonia (Yao et al., "Label-free segmentation of COVID-19 lesions in lung CT", IEEE
TMI 40(10), 2021): lesion shapes from thresholded smooth noise, placed in the lung with a
preference for the periphery, HU drawn from the ranges of the two patterns, a low-frequency
texture, soft edges, and the original anatomy kept where it is denser (vessels cross GGO).

* **GGO**: hazy increase to -750…-350 HU, vessels and bronchial walls still visible.
* **Consolidation**: -150…+50 HU, obscuring what lies within; sometimes as the dense core of a
  GGO patch (the "mixed" pattern of later disease).

Everything random comes from the generator handed in, so a seed reproduces a lesion exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["CONSOLIDATION", "GGO", "LesionRecipe", "SyntheticLesions", "insert_lesions"]

#: Lesion label values of :class:`SyntheticLesions` (0 = no lesion).
GGO = 1
CONSOLIDATION = 2


@dataclass(frozen=True)
class LesionRecipe:
    """How lesions are drawn; HU and sizes are those reported for COVID-19 pneumonia on CT."""

    #: Mean HU of a ground-glass patch, drawn uniformly in this range.
    ggo_hu: tuple[float, float] = (-760.0, -330.0)
    #: Mean HU of a consolidation, drawn uniformly in this range.
    consolidation_hu: tuple[float, float] = (-550.0, 40.0)
    #: Equivalent radius of one lesion in mm, drawn uniformly.
    radius_mm: tuple[float, float] = (6.0, 40.0)
    #: Lesions per slice, drawn uniformly in 1..max_lesions.
    max_lesions: int = 4
    #: Chance that a lesion is a consolidation; and that a GGO patch gets a consolidated core.
    consolidation_prob: float = 0.3
    mixed_prob: float = 0.25
    #: Share of lesions whose centre lies within ``subpleural_mm`` of the lung border (COVID-19
    #: is peripheral and subpleural); the others anywhere in the lung.
    peripheral_share: float = 0.8
    subpleural_mm: float = 15.0
    #: Standard deviation of the lesion's low-frequency texture, HU.
    texture_hu: float = 40.0
    #: Irregularity of the outline (weight of the noise against the ellipse).
    irregularity: float = 0.35

    def __post_init__(self) -> None:
        for name in ("ggo_hu", "consolidation_hu", "radius_mm"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(
                    f"LesionRecipe.{name} must be (lo, hi) with lo <= hi, got {lo, hi}."
                )
        if self.radius_mm[0] <= 0:
            raise ValueError(f"LesionRecipe.radius_mm must be positive, got {self.radius_mm}.")
        if self.max_lesions < 1:
            raise ValueError(f"LesionRecipe.max_lesions must be >= 1, got {self.max_lesions}.")
        for name in ("consolidation_prob", "mixed_prob", "peripheral_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LesionRecipe.{name} must be in [0, 1], got {value}.")


@dataclass
class SyntheticLesions:
    """A slice with lesions inserted: ``hu`` (H, W) float32 and ``label`` (H, W) uint8 with
    0 = unchanged, :data:`GGO`, :data:`CONSOLIDATION`."""

    hu: np.ndarray
    label: np.ndarray


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered white noise."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(sigma, 0.5))
    std = float(field.std())
    return ((field - field.mean()) / std if std > 0 else field).astype(np.float32)


def _centre(
    lung: np.ndarray, depth_mm: np.ndarray, recipe: LesionRecipe, rng: np.random.Generator
) -> tuple[int, int] | None:
    peripheral = lung & (depth_mm <= recipe.subpleural_mm)
    pool = peripheral if rng.random() < recipe.peripheral_share and peripheral.any() else lung
    rows, cols = np.nonzero(pool)
    if rows.size == 0:
        return None
    pick = int(rng.integers(rows.size))
    return int(rows[pick]), int(cols[pick])


def _shape(
    shape: tuple[int, int],
    centre: tuple[int, int],
    radius_px: tuple[float, float],
    recipe: LesionRecipe,
    rng: np.random.Generator,
) -> np.ndarray:
    """Normalised radius of an irregular rotated ellipse: < 1 inside, < 0.5 in its core."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    angle = rng.uniform(0.0, np.pi)
    dy, dx = rows - centre[0], cols - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    q = np.sqrt((u / radius_px[0]) ** 2 + (v / radius_px[1]) ** 2)
    noise = _smooth_noise(shape, sigma=min(radius_px) / 2.0, rng=rng)
    result: np.ndarray = q + recipe.irregularity * noise
    return result


def insert_lesions(
    hu: np.ndarray,
    lung: np.ndarray,
    spacing_mm: tuple[float, float],
    rng: np.random.Generator,
    recipe: LesionRecipe | None = None,
) -> SyntheticLesions:
    """Insert 1…``recipe.max_lesions`` lesions into the lung of one axial slice.

    ``hu`` (H, W) in Hounsfield units, ``lung`` (H, W) bool: the lesion-free lung (lesions are
    confined to it), ``spacing_mm`` (row, column) pixel size. Returns the new slice and the
    lesion label; where ``lung`` is empty the slice comes back unchanged with an empty label.
    """
    recipe = recipe or LesionRecipe()
    hu = np.asarray(hu, dtype=np.float32)
    lung = np.asarray(lung, dtype=bool)
    if hu.ndim != 2 or hu.shape != lung.shape:
        raise ValueError(
            f"Arguments 'hu' and 'lung' must be 2-D arrays of one shape, got {hu.shape} and "
            f"{lung.shape}."
        )
    if len(spacing_mm) != 2 or min(spacing_mm) <= 0:
        raise ValueError(f"Argument 'spacing_mm' must be two positive sizes, got {spacing_mm}.")
    out = hu.copy()
    label = np.zeros(hu.shape, dtype=np.uint8)
    if not lung.any():
        return SyntheticLesions(out, label)
    depth_mm = ndimage.distance_transform_edt(lung, sampling=spacing_mm)
    pixel_mm = float(np.sqrt(spacing_mm[0] * spacing_mm[1]))
    for _ in range(int(rng.integers(1, recipe.max_lesions + 1))):
        centre = _centre(lung, depth_mm, recipe, rng)
        if centre is None:
            break
        radius = rng.uniform(*recipe.radius_mm) / pixel_mm
        aspect = rng.uniform(0.5, 1.0)
        q = _shape(hu.shape, centre, (radius, radius * aspect), recipe, rng)
        inside = (q < 1.0) & lung
        if not inside.any():
            continue
        consolidation = rng.random() < recipe.consolidation_prob
        hu_range = recipe.consolidation_hu if consolidation else recipe.ggo_hu
        target = rng.uniform(*hu_range) + recipe.texture_hu * _smooth_noise(
            hu.shape, sigma=1.5, rng=rng
        )
        # Soft edge: the blend weight rises over about one pixel at the outline.
        alpha = np.clip((1.0 - q) * max(radius, 1.0), 0.0, 1.0) * lung
        blended = out + alpha * (target - out)
        kind = np.full(hu.shape, CONSOLIDATION if consolidation else GGO, dtype=np.uint8)
        if not consolidation and rng.random() < recipe.mixed_prob:
            core = q < 0.5
            dense = rng.uniform(*recipe.consolidation_hu) + recipe.texture_hu * _smooth_noise(
                hu.shape, sigma=1.5, rng=rng
            )
            blended = np.where(core & lung, dense, blended)
            kind = np.where(core, CONSOLIDATION, kind).astype(np.uint8)
        # Anatomy denser than the lesion (vessels, bronchial walls) stays visible through it.
        out = np.maximum(out, blended).astype(np.float32)
        labeled = inside & (alpha >= 0.5)
        label = np.where(labeled, np.maximum(label, kind), label).astype(np.uint8)
    return SyntheticLesions(out, label)
