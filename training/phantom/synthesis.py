"""Assembling one phantom study: anatomy, vessels, airways, lesions, scanner blur and noise.

Also decides what varies between the studies of a data set (:func:`study_seed`,
:func:`is_lesion_free`) so that a study depends only on its own seed and index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.phantom.anatomy import AIR_HU, BLOOD_HU, Anatomy, render_trees
from training.phantom.checks import check_fraction, check_int
from training.phantom.grid import Grid
from training.phantom.labels import CONSOLIDATION, GGO, LUNG
from training.phantom.lesions import LesionMix, LesionSpec, paint_lesions

#: Physical extent the phantom covers whatever the matrix size (a typical adult chest FOV).
FIELD_OF_VIEW_MM = 350.0
#: Cranio-caudal extent covered (48 slices x 5 mm at the default size).
Z_EXTENT_MM = 240.0
#: Storage range of a 12-bit CT with RescaleIntercept -1024.
HU_MIN, HU_MAX = -1024, 3071


@dataclass(frozen=True)
class PhantomStudy:
    """One synthetic study: the noisy image, its noise-free twin and the label map."""

    #: HU with noise, int16, clipped to [HU_MIN, HU_MAX]; axes (z, y, x).
    hu: np.ndarray
    #: HU before noise (after the scanner blur), float32; lets tests check HU per label.
    hu_clean: np.ndarray
    #: uint8 label map, values from :mod:`training.phantom.labels` (the class catalogue).
    label: np.ndarray
    #: Voxel size (dz, dy, dx) in mm.
    spacing_zyx: tuple[float, float, float]
    #: LPS position (x, y, z) in mm of the centre of voxel (0, 0, 0).
    origin_lps: tuple[float, float, float]
    seed: int
    noise_std_hu: float
    lesions: tuple[LesionSpec, ...]

    @property
    def has_lesions(self) -> bool:
        return bool(np.any((self.label == GGO) | (self.label == CONSOLIDATION)))

    def lesion_voxels(self) -> dict[str, int]:
        return {
            "ggo": int(np.count_nonzero(self.label == GGO)),
            "consolidation": int(np.count_nonzero(self.label == CONSOLIDATION)),
        }


def study_seed(seed: int, index: int) -> int:
    """Seed of study ``index`` of a data set: depends on (seed, index) only, so appending
    studies never changes the ones already generated."""
    check_int("seed", seed, minimum=0)
    check_int("index", index, minimum=0)
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def phantom_spacing(size: int, slices: int) -> tuple[float, float, float]:
    """(dz, dy, dx) in mm: the matrix always spans the same chest, so smaller matrices get
    coarser voxels (128 px -> 2.73 mm in-plane, 48 slices -> 5 mm)."""
    check_int("size", size, minimum=32, maximum=1024)
    check_int("slices", slices, minimum=8, maximum=1024)
    d_xy = FIELD_OF_VIEW_MM / size
    return (Z_EXTENT_MM / slices, d_xy, d_xy)


def is_lesion_free(seed: int, index: int, lesion_free_fraction: float) -> bool:
    """Whether study ``index`` has no lesions.

    A Beatty sequence with a seeded phase: every prefix of N studies holds floor or ceil of
    ``N * fraction`` lesion-free studies, and study ``index`` does not depend on N.
    """
    check_fraction("lesion_free_fraction", lesion_free_fraction)
    phase = np.random.default_rng([seed, 0x5EED]).random()
    return math.floor((index + 1) * lesion_free_fraction + phase) > math.floor(
        index * lesion_free_fraction + phase
    )


def synthesize_study(
    seed: int,
    size: int = 128,
    slices: int = 48,
    *,
    with_lesions: bool = True,
    lesion_mix: LesionMix | None = None,
) -> PhantomStudy:
    """Build one phantom study from ``seed`` (use :func:`study_seed` inside a data set)."""
    check_int("seed", seed, minimum=0)
    spacing = phantom_spacing(size, slices)
    rng = np.random.default_rng(seed)
    grid = Grid(size, slices, spacing)
    anatomy = Anatomy.sample(rng, grid)

    hu = np.full(grid.shape, AIR_HU, dtype=np.float32)
    anatomy.paint_body(hu, rng)
    lung = anatomy.lung_field()
    parenchyma = anatomy.parenchyma_hu(rng)
    hu[lung] = parenchyma[lung]

    vessels = render_trees(grid, anatomy.vessel_segments(rng, lung))
    hu += np.where(lung, vessels * (BLOOD_HU - hu), 0.0).astype(np.float32)
    anatomy.paint_airways(hu, rng, lung)

    label = np.zeros(grid.shape, dtype=np.uint8)
    label[lung] = LUNG
    lesions: tuple[LesionSpec, ...] = ()
    if with_lesions:
        mix = LesionMix() if lesion_mix is None else lesion_mix
        lesions = paint_lesions(hu, label, lung, parenchyma, grid, rng, mix)

    # Scanner blur, physical (mm) so that coarse matrices are not smeared further.
    blur = tuple(mm / d for mm, d in zip((1.5, 1.3, 1.3), spacing, strict=True))
    hu_clean = ndimage.gaussian_filter(hu, sigma=blur, mode="nearest")
    noise_std = float(rng.uniform(10.0, 30.0))
    noisy = hu_clean + _correlated_noise(rng, grid.shape, noise_std)
    hu_int = np.clip(np.rint(noisy), HU_MIN, HU_MAX).astype(np.int16)
    return PhantomStudy(
        hu=hu_int,
        hu_clean=hu_clean.astype(np.float32),
        label=label,
        spacing_zyx=spacing,
        origin_lps=grid.origin_lps,
        seed=seed,
        noise_std_hu=round(noise_std, 3),
        lesions=lesions,
    )


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise, slightly correlated in-plane like reconstructed CT noise."""
    white = rng.standard_normal(shape, dtype=np.float32)
    corr = float(rng.uniform(0.0, 0.9))
    if corr > 0.05:
        white = ndimage.gaussian_filter(white, sigma=(0.0, corr, corr), mode="wrap")
        white /= max(float(white.std()), 1e-6)
    return white * np.float32(std)


__all__ = [
    "FIELD_OF_VIEW_MM",
    "HU_MAX",
    "HU_MIN",
    "Z_EXTENT_MM",
    "PhantomStudy",
    "is_lesion_free",
    "phantom_spacing",
    "study_seed",
    "synthesize_study",
]
