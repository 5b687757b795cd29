"""Synthetic chest-CT phantom: HU volumes with known lung / GGO / consolidation masks.

No real patient data can be downloaded by this project, so benchmarks and tests run on phantoms.
A phantom is only useful if labels *matter*: lesion size, shape, contrast and count vary, image
noise varies per study, small vessels fall into the GGO HU range through partial volume, and lung
and body shape vary. Everything is plain numpy/scipy and deterministic per seed.

Array axes are ``(z, y, x)`` in the DICOM patient (LPS) frame: ``x`` grows towards the patient's
left (image columns), ``y`` towards posterior (image rows), ``z`` towards superior (slice index
0 is the most inferior slice). Coordinates inside this module are millimetres.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Label values; they match ``service.manifest.DEFAULT_CLASSES``.
BACKGROUND, LUNG, GGO, CONSOLIDATION = 0, 1, 2, 3

#: Physical extent the phantom covers whatever the matrix size (a typical adult chest FOV).
FIELD_OF_VIEW_MM = 350.0
#: Cranio-caudal extent covered (48 slices x 5 mm at the default size).
Z_EXTENT_MM = 240.0
#: Storage range of a 12-bit CT with RescaleIntercept -1024.
HU_MIN, HU_MAX = -1024, 3071

_AIR_HU = -1000.0
_FAT_HU = -100.0
_SOFT_HU = 40.0
_BLOOD_HU = 40.0


@dataclass(frozen=True)
class LesionMix:
    """Which lesions a study with lesions gets; the defaults are the demo's (and tests') mix.

    Benchmarks pick their own mix to set how hard the data is: e.g. consolidation in every
    study, so that a per-study consolidation score never compares two empty masks. Counts
    are inclusive ranges; radii are in mm (a lower bound of 0 means "the smallest lesion the
    voxel size resolves").
    """

    ggo_count: tuple[int, int] = (1, 7)
    consolidation_probability: float = 0.6
    consolidation_count: tuple[int, int] = (1, 4)
    consolidation_radius_mm: tuple[float, float] = (0.0, 22.0)

    def __post_init__(self) -> None:
        for name in ("ggo_count", "consolidation_count"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(
                    f"Argument '{name}' must be (lo, hi) with 0 <= lo <= hi, got ({lo}, {hi})."
                )
        if self.ggo_count[1] < 1:
            raise ValueError("Argument 'ggo_count' must allow at least one GGO lesion.")
        _check_fraction("consolidation_probability", self.consolidation_probability)
        lo, hi = self.consolidation_radius_mm
        if not 0.0 <= lo < hi:
            raise ValueError(
                "Argument 'consolidation_radius_mm' must be (lo, hi) with 0 <= lo < hi, "
                f"got ({lo}, {hi})."
            )

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LesionSpec:
    """One lesion as drawn: kept so that manifests and tests can reason about what was made."""

    kind: str  # "ggo" or "consolidation"
    center_mm: tuple[float, float, float]  # (z, y, x) in the phantom frame
    radius_mm: float
    hu: float


@dataclass(frozen=True)
class PhantomStudy:
    """One synthetic study: the noisy image, its noise-free twin and the label map."""

    #: HU with noise, int16, clipped to [HU_MIN, HU_MAX]; axes (z, y, x).
    hu: np.ndarray
    #: HU before noise (after the scanner blur), float32; lets tests check HU per label.
    hu_clean: np.ndarray
    #: uint8 labels: 0 background, 1 lung, 2 GGO, 3 consolidation.
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
        return bool(np.any(self.label >= GGO))

    def lesion_voxels(self) -> dict[str, int]:
        return {
            "ggo": int(np.count_nonzero(self.label == GGO)),
            "consolidation": int(np.count_nonzero(self.label == CONSOLIDATION)),
        }


def study_seed(seed: int, index: int) -> int:
    """Seed of study ``index`` of a data set: depends on (seed, index) only, so appending
    studies never changes the ones already generated."""
    _check_int("seed", seed, minimum=0)
    _check_int("index", index, minimum=0)
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def phantom_spacing(size: int, slices: int) -> tuple[float, float, float]:
    """(dz, dy, dx) in mm: the matrix always spans the same chest, so smaller matrices get
    coarser voxels (128 px -> 2.73 mm in-plane, 48 slices -> 5 mm)."""
    _check_int("size", size, minimum=32, maximum=1024)
    _check_int("slices", slices, minimum=8, maximum=1024)
    d_xy = FIELD_OF_VIEW_MM / size
    return (Z_EXTENT_MM / slices, d_xy, d_xy)


def is_lesion_free(seed: int, index: int, lesion_free_fraction: float) -> bool:
    """Whether study ``index`` has no lesions.

    A Beatty sequence with a seeded phase: every prefix of N studies holds floor or ceil of
    ``N * fraction`` lesion-free studies, and study ``index`` does not depend on N.
    """
    _check_fraction("lesion_free_fraction", lesion_free_fraction)
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
    _check_int("seed", seed, minimum=0)
    spacing = phantom_spacing(size, slices)
    rng = np.random.default_rng(seed)
    grid = _Grid(size, slices, spacing)
    anatomy = _Anatomy.sample(rng, grid)

    hu = np.full(grid.shape, _AIR_HU, dtype=np.float32)
    anatomy.paint_body(hu, rng)
    lung = anatomy.lung_field()
    parenchyma = anatomy.parenchyma_hu(rng)
    hu[lung] = parenchyma[lung]

    vessels = _render_trees(grid, anatomy.vessel_segments(rng, lung))
    hu += np.where(lung, vessels * (_BLOOD_HU - hu), 0.0).astype(np.float32)
    anatomy.paint_airways(hu, rng, lung)

    label = np.zeros(grid.shape, dtype=np.uint8)
    label[lung] = LUNG
    lesions: tuple[LesionSpec, ...] = ()
    if with_lesions:
        mix = LesionMix() if lesion_mix is None else lesion_mix
        lesions = _paint_lesions(hu, label, lung, parenchyma, grid, rng, mix)

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


def generate_dataset(
    out_dir: Path,
    studies: int,
    seed: int,
    size: int = 128,
    slices: int = 48,
    labeled_fraction: float = 1.0,
    lesion_free_fraction: float = 0.2,
    progress: bool = True,
    lesion_mix: LesionMix | None = None,
) -> Path:
    """Write a phantom data set; see :func:`training.phantom_io.generate_dataset`.

    Lives here too so callers find it next to the synthesis; the import is deferred because
    writing needs pydicom/nibabel, which synthesis alone does not.
    """
    from training.phantom_io import generate_dataset as _generate

    return _generate(
        out_dir,
        studies,
        seed,
        size=size,
        slices=slices,
        labeled_fraction=labeled_fraction,
        lesion_free_fraction=lesion_free_fraction,
        progress=progress,
        lesion_mix=lesion_mix,
    )


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"Argument '{name}' must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"Argument '{name}' must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Argument '{name}' must be <= {maximum}, got {value}")


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"Argument '{name}' must be a float, got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"Argument '{name}' must be in [0, 1], got {value}")


# --------------------------------------------------------------------------------------------
# geometry


class _Grid:
    """Voxel-centre coordinates in mm, as broadcastable 1-D axes."""

    def __init__(self, size: int, slices: int, spacing: tuple[float, float, float]) -> None:
        self.shape = (slices, size, size)
        self.spacing = spacing
        dz, dy, dx = spacing
        x0 = -(size - 1) / 2 * dx
        y0 = -(size - 1) / 2 * dy
        z0 = -(slices - 1) / 2 * dz
        self.origin_lps = (x0, y0, z0)
        self.x = (x0 + np.arange(size) * dx).astype(np.float32)[None, None, :]
        self.y = (y0 + np.arange(size) * dy).astype(np.float32)[None, :, None]
        self.z = (z0 + np.arange(slices) * dz).astype(np.float32)[:, None, None]
        #: 0 at the most inferior slice centre, 1 at the most superior.
        self.zeta = (self.z - self.z.min()) / max(float(self.z.max() - self.z.min()), 1e-6)

    def index_of(self, point_zyx: np.ndarray) -> tuple[int, int, int] | None:
        """Voxel index of a point in mm, or None outside the volume."""
        origin_zyx = (self.origin_lps[2], self.origin_lps[1], self.origin_lps[0])
        idx = [int(round((point_zyx[a] - origin_zyx[a]) / self.spacing[a])) for a in range(3)]
        if all(0 <= idx[a] < self.shape[a] for a in range(3)):
            return idx[0], idx[1], idx[2]
        return None

    def axis(self, a: int) -> np.ndarray:
        return (self.z, self.y, self.x)[a].reshape(-1)


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]
) -> np.ndarray:
    """Smooth random field, unit variance: Gaussian-kernel interpolation of a coarse grid.

    Separable matrix products instead of ``ndimage.zoom``: same look, ~20x faster.
    """
    field = rng.standard_normal(coarse).astype(np.float32)
    for axis, (n, c) in enumerate(zip(shape, coarse, strict=True)):
        t = (np.arange(n, dtype=np.float32) + 0.5) / n
        nodes = (np.arange(c, dtype=np.float32) + 0.5) / c
        basis = np.exp(-0.5 * ((t[:, None] - nodes[None, :]) * c) ** 2)
        basis /= np.sqrt((basis**2).sum(axis=1, keepdims=True))
        field = np.moveaxis(np.tensordot(basis, np.moveaxis(field, axis, 0), axes=1), 0, axis)
    return np.ascontiguousarray(field, dtype=np.float32)


def _superellipse(
    x: np.ndarray, y: np.ndarray, a: float | np.ndarray, b: float | np.ndarray, p: float
) -> np.ndarray:
    """Normalised radius of a super-ellipse: < 1 inside."""
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


@dataclass
class _Anatomy:
    """Per-study random anatomy: everything that makes two phantoms look like two patients."""

    grid: _Grid
    a: float  # body half-width (mm)
    b: float  # body half-depth
    p: float  # super-ellipse exponent of the body outline
    fat: float
    wall: float
    lung_params: tuple[tuple[float, float, float, float, float], ...]  # (cx, cy, lx, ly, apex)
    dia_base: tuple[float, float]
    dia_height: float
    mediastinum_half: float
    heart: tuple[float, float, float, float, float, float]  # (cx, cy, cz, rx, ry, rz)
    spine_y: float
    spine_r: float
    aorta: tuple[float, float, float]  # (cx, cy, r)
    carina_z: float
    trachea_r: float
    rib_pitch: float
    rib_slope: float
    rib_hu: float
    lung_hu: float
    deform: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, grid: _Grid) -> _Anatomy:
        a = float(rng.uniform(135.0, 166.0))
        b = float(rng.uniform(95.0, 126.0))
        fat = float(rng.uniform(4.0, 22.0))
        wall = float(rng.uniform(12.0, 20.0))
        ac, bc = a - fat - wall, b - fat - wall
        lungs = []
        for side in (-1.0, 1.0):  # -1: patient right (x < 0), +1: left
            lungs.append(
                (
                    side * ac * rng.uniform(0.5, 0.58),
                    bc * rng.uniform(0.0, 0.12),
                    ac * rng.uniform(0.5, 0.62),
                    bc * rng.uniform(0.9, 1.05),
                    float(rng.uniform(0.9, 1.02)),
                )
            )
        spine_r = float(rng.uniform(13.0, 19.0))
        spine_y = bc - spine_r * 1.1
        aorta_r = float(rng.uniform(10.0, 14.0))
        return cls(
            grid=grid,
            a=a,
            b=b,
            p=float(rng.uniform(2.0, 2.7)),
            fat=fat,
            wall=wall,
            lung_params=tuple(lungs),
            dia_base=(float(rng.uniform(0.02, 0.14)), float(rng.uniform(-0.02, 0.1))),
            dia_height=float(rng.uniform(0.15, 0.3)),
            mediastinum_half=ac * float(rng.uniform(0.12, 0.2)),
            heart=(
                ac * float(rng.uniform(0.15, 0.28)),
                -bc * float(rng.uniform(0.25, 0.4)),
                float(rng.uniform(0.18, 0.32)),
                ac * float(rng.uniform(0.28, 0.38)),
                bc * float(rng.uniform(0.35, 0.48)),
                float(rng.uniform(0.2, 0.28)),
            ),
            spine_y=spine_y,
            spine_r=spine_r,
            aorta=(spine_r * 0.5 + aorta_r + 4.0, spine_y - spine_r - aorta_r * 0.2, aorta_r),
            carina_z=float(rng.uniform(0.55, 0.7)),
            trachea_r=float(rng.uniform(7.5, 10.5)),
            rib_pitch=float(rng.uniform(22.0, 30.0)),
            rib_slope=float(rng.uniform(18.0, 32.0)),
            rib_hu=float(rng.uniform(450.0, 850.0)),
            lung_hu=float(rng.uniform(-880.0, -820.0)),
            deform=_smooth_field(rng, grid.shape, (4, 5, 5)),
        )

    @property
    def cavity(self) -> tuple[float, float]:
        return self.a - self.fat - self.wall, self.b - self.fat - self.wall

    def paint_body(self, hu: np.ndarray, rng: np.random.Generator) -> None:
        """Body outline, fat, chest wall with ribs, spine, mediastinum, heart, aorta, abdomen."""
        g = self.grid
        x, y, z, zeta = g.x, g.y, g.z, g.zeta
        taper = 1.0 - 0.05 * zeta
        r_body = _superellipse(x, y, self.a * taper, self.b, self.p)
        body = r_body <= 1.0
        hu[np.broadcast_to(body, hu.shape)] = _FAT_HU
        a_in, b_in = self.a * taper - self.fat, self.b - self.fat
        muscle = _superellipse(x, y, a_in, b_in, self.p) <= 1.0
        hu[np.broadcast_to(muscle, hu.shape)] = _SOFT_HU + 15.0
        ac, bc = self.cavity
        ac_t = ac * taper
        r_cav = _superellipse(x, y, ac_t, bc, 2.0)
        cavity = r_cav <= 1.0
        # Mediastinum and everything inside the ribs: a fat / soft-tissue mix.
        mix = _smooth_field(rng, hu.shape, (5, 8, 8))
        inner = np.where(mix > 0.3, -90.0, _SOFT_HU).astype(np.float32)
        cav_b = np.broadcast_to(cavity, hu.shape)
        hu[cav_b] = inner[cav_b]
        # Ribs: a shell outside the cavity, cut into oblique bands that descend anteriorly.
        shell = (r_cav > 1.0) & (_superellipse(x, y, ac_t + 9.0, bc + 9.0, 2.0) <= 1.0)
        phi = np.arctan2(np.abs(x), y)  # 0 posterior midline, pi anterior midline
        band = np.mod(z + self.rib_slope * phi, self.rib_pitch) < 10.0
        ribs = shell & band & (phi > 0.18)
        cartilage = ribs & (phi > 2.55)
        hu[ribs & ~cartilage] = self.rib_hu
        hu[cartilage] = 120.0
        sternum = shell & (np.abs(x) < 14.0) & (y < 0)
        hu[np.broadcast_to(sternum, hu.shape)] = self.rib_hu * 0.7
        # Heart and descending aorta (blood, no contrast).
        hx, hy, hz, rx, ry, rz = self.heart
        heart = ((x - hx) / rx) ** 2 + ((y - hy) / ry) ** 2 + ((zeta - hz) / rz) ** 2 <= 1.0
        hu[heart & cav_b] = _BLOOD_HU
        axx, ayy, ar = self.aorta
        aorta = np.broadcast_to((x - axx) ** 2 + (y - ayy) ** 2 <= ar**2, hu.shape)
        hu[aorta & (zeta < 0.8)] = _BLOOD_HU
        self._paint_spine(hu)
        # Below the diaphragm: liver / spleen soft tissue, sometimes a gastric air bubble.
        below = cav_b & (zeta < self._diaphragm(x, y, np.sign(x) + (x == 0)) - 0.02)
        hu[below & ~self._spine_mask()] = 55.0
        if rng.random() < 0.5:
            cz = float(rng.uniform(0.0, 0.12))
            bubble = ((x - 0.45 * ac) / 35.0) ** 2 + ((y + 0.2 * bc) / 25.0) ** 2 + (
                (zeta - cz) / 0.06
            ) ** 2 <= 1.0
            hu[bubble & below] = _AIR_HU

    def _spine_mask(self) -> np.ndarray:
        x, y = self.grid.x, self.grid.y
        return np.broadcast_to(
            x**2 + (y - self.spine_y) ** 2 <= (self.spine_r + 6.0) ** 2, self.grid.shape
        )

    def _paint_spine(self, hu: np.ndarray) -> None:
        x, y, z = self.grid.x, self.grid.y, self.grid.z
        r2 = x**2 + (y - self.spine_y) ** 2
        body = np.broadcast_to(r2 <= self.spine_r**2, hu.shape)
        disc = np.broadcast_to(np.mod(z, 26.0) < 5.0, hu.shape)
        cortex = np.broadcast_to(r2 >= (self.spine_r - 2.5) ** 2, hu.shape)
        hu[body] = 260.0
        hu[body & cortex] = 750.0
        hu[body & disc] = 85.0
        canal_y = self.spine_y + self.spine_r + 8.0
        rc2 = x**2 + (y - canal_y) ** 2
        arch = np.broadcast_to((rc2 <= 14.0**2) & (rc2 > 7.0**2), hu.shape)
        spinous = np.broadcast_to(
            (np.abs(x) < 4.5) & (y > canal_y) & (y < canal_y + 32.0), hu.shape
        )
        transverse = np.broadcast_to(
            (np.abs(x) < self.spine_r + 24.0) & (np.abs(y - canal_y + 3.0) < 4.5), hu.shape
        )
        bone = (arch | spinous | transverse) & ~disc
        hu[bone] = 600.0
        hu[np.broadcast_to(rc2 <= 7.0**2, hu.shape)] = 15.0

    def _diaphragm(self, x: np.ndarray, y: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Dome height (in zeta) under each lung; the right dome sits higher (liver)."""
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
        for i, (cx, cy, lx, ly, _apex) in enumerate(self.lung_params):
            rho2 = ((x - cx) / lx) ** 2 + ((y - cy) / ly) ** 2
            dome = self.dia_base[i] + self.dia_height * np.clip(1.0 - rho2, 0.0, 1.0)
            dome = dome - 0.08 * (y - cy) / ly  # posterior recesses reach lower
            out = np.where(side == (-1.0 if i == 0 else 1.0), dome, out)
        return out

    def lung_field(self) -> np.ndarray:
        """Boolean lung-field mask: parenchyma incl. intrapulmonary vessels and airways."""
        g = self.grid
        x, y, zeta = g.x, g.y, g.zeta
        ac, bc = self.cavity
        taper = 1.0 - 0.05 * zeta
        inside_cavity = _superellipse(x, y, ac * taper - 2.0, bc - 2.0, 2.0) <= 1.0
        field = np.zeros(g.shape, dtype=bool)
        side = np.where(x < 0, -1.0, 1.0)
        dia = self._diaphragm(x, y, side)
        for cx, cy, lx, ly, apex in self.lung_params:
            # Cross-section shrinks towards the apex like a dome.
            top = np.clip((apex - zeta) / 0.45, 0.0, 1.0)
            scale = np.sqrt(top * (2.0 - top)) * (0.9 + 0.1 * (1.0 - zeta))
            scale = np.maximum(scale, 1e-3)
            q = ((x - cx) / (lx * scale)) ** 2 + ((y - cy) / (ly * scale)) ** 2
            q = q + 0.22 * self.deform
            field |= (q <= 1.0) & (np.sign(x) == np.sign(cx))
        field &= inside_cavity & (zeta >= dia)
        medial = self.mediastinum_half * (1.25 - 0.45 * y / bc + 0.25 * self.deform)
        field &= np.abs(x) > medial
        hx, hy, hz, rx, ry, rz = self.heart
        heart = ((x - hx) / (rx + 4)) ** 2 + ((y - hy) / (ry + 4)) ** 2 + (
            (zeta - hz) / rz
        ) ** 2 <= 1.0
        field &= ~heart
        field &= ~self._spine_mask()
        axx, ayy, ar = self.aorta
        field &= ~((x - axx) ** 2 + (y - ayy) ** 2 <= (ar + 3.0) ** 2)
        # Keep the two largest components: drop slivers cut off by the deformation.
        labels, n = ndimage.label(field)
        if n > 2:
            sizes = ndimage.sum_labels(field, labels, index=np.arange(1, n + 1))
            keep = np.argsort(sizes)[-2:] + 1
            field = np.isin(labels, keep)
        return field

    def parenchyma_hu(self, rng: np.random.Generator) -> np.ndarray:
        """Lung background HU: per-study level, gravity gradient (denser posteriorly), texture."""
        g = self.grid
        _, bc = self.cavity
        gradient = 30.0 * np.clip((g.y + bc) / (2 * bc), 0.0, 1.0)
        texture = 12.0 * _smooth_field(rng, g.shape, (8, 16, 16))
        return (self.lung_hu + gradient + texture).astype(np.float32)

    def _hila(self) -> list[np.ndarray]:
        z_h = float(self.grid.z.min() + (self.grid.z.max() - self.grid.z.min()) * 0.52)
        out = []
        for cx, cy, _lx, _ly, _apex in self.lung_params:
            side = np.sign(cx)
            out.append(np.array([z_h, cy - 5.0, side * (self.mediastinum_half + 14.0)]))
        return out

    def vessel_segments(self, rng: np.random.Generator, lung: np.ndarray) -> list[_Segment]:
        grower = _TreeGrower(rng, self.grid, lung, min_radius=1.0)
        for hilum in self._hila():
            side = np.sign(hilum[2])
            for n in range(5):  # trunks fanning out from the hilum, up and down
                polar = math.pi * (n + rng.uniform(0.1, 0.9)) / 5
                azimuth = float(rng.uniform(-1.2, 1.2))
                direction = np.array(
                    [
                        math.cos(polar),
                        math.sin(polar) * math.sin(azimuth),
                        side * math.sin(polar) * math.cos(azimuth),
                    ]
                )
                length, radius = float(rng.uniform(25, 40)), float(rng.uniform(3.5, 5.5))
                grower.grow(hilum, direction, length, radius, depth=6)
        return grower.segments

    def paint_airways(self, hu: np.ndarray, rng: np.random.Generator, lung: np.ndarray) -> None:
        """Trachea, main bronchi and intrapulmonary bronchi: air lumen inside a soft wall."""
        g = self.grid
        zmin, zmax = float(g.z.min()), float(g.z.max())
        z_car = zmin + (zmax - zmin) * self.carina_z
        y_t = float(self.heart[1] * 0.3)
        carina = np.array([z_car, y_t, 0.0])
        central: list[_Segment] = [
            _Segment(np.array([zmax + 10.0, y_t, 0.0]), carina, self.trachea_r)
        ]
        grower = _TreeGrower(rng, g, lung, min_radius=1.2)
        for hilum in self._hila():
            central.append(_Segment(carina, hilum, self.trachea_r * 0.7))
            side = np.sign(hilum[2])
            for dz, dy, dxs in ((0.9, 0.1, 0.6), (-0.8, 0.3, 0.5), (-0.3, -0.6, 0.6)):
                direction = np.array([dz, dy, side * dxs]) + rng.normal(0, 0.2, 3)
                length = float(rng.uniform(25, 35))
                grower.grow(hilum, direction, length, self.trachea_r * 0.5, depth=4)
        peripheral = grower.segments
        cav_a, cav_b = self.cavity
        in_cavity = _superellipse(g.x, g.y, cav_a, cav_b, 2.0) <= 1.0
        for segs, region in ((central, np.broadcast_to(in_cavity, g.shape)), (peripheral, lung)):
            outer = _render_trees(g, segs)
            lumen = _render_trees(g, [_Segment(s.start, s.end, s.radius * 0.72) for s in segs])
            wall = np.clip(outer - lumen, 0.0, 1.0)
            painted = hu * (1.0 - outer) + _SOFT_HU * wall + _AIR_HU * lumen
            hu[:] = np.where(region & (outer > 0), painted, hu)


# --------------------------------------------------------------------------------------------
# branching tubes (vessels, airways)


@dataclass(frozen=True)
class _Segment:
    start: np.ndarray  # (z, y, x) mm
    end: np.ndarray
    radius: float


@dataclass
class _TreeGrower:
    """Grows bifurcating tubes (vessels, bronchi) that stay inside a mask."""

    rng: np.random.Generator
    grid: _Grid
    mask: np.ndarray
    min_radius: float
    segments: list[_Segment] = field(default_factory=list)

    def inside(self, point: np.ndarray) -> bool:
        idx = self.grid.index_of(point)
        return idx is not None and bool(self.mask[idx])

    def grow(
        self, start: np.ndarray, direction: np.ndarray, length: float, radius: float, depth: int
    ) -> None:
        rng = self.rng
        direction = direction / np.linalg.norm(direction)
        end = start + direction * length
        for _attempt in range(3):  # deflect or shorten a branch that would leave the mask
            if self.inside(end):
                break
            direction = direction + rng.normal(0.0, 0.6, 3)
            direction /= max(float(np.linalg.norm(direction)), 1e-6)
            length *= 0.7
            end = start + direction * length
        else:
            return
        self.segments.append(_Segment(start, end, radius))
        child_r = radius * float(rng.uniform(0.72, 0.82))
        if depth <= 0 or child_r < self.min_radius:
            return
        perp = np.cross(direction, rng.normal(size=3))
        perp /= max(float(np.linalg.norm(perp)), 1e-6)
        for sign in (1.0, -1.0):
            angle = math.radians(float(rng.uniform(18.0, 45.0)))
            child = math.cos(angle) * direction + sign * math.sin(angle) * perp
            child_len = length * float(rng.uniform(0.7, 0.85))
            self.grow(end, child, child_len, child_r, depth - 1)


def _soft_fraction(dist: np.ndarray, radius: float, voxel: float) -> np.ndarray:
    """Partial-volume occupancy of a tube; thin tubes never fill a voxel (they look like GGO)."""
    edge = np.clip((radius - dist) / voxel + 0.5, 0.0, 1.0)
    return edge * min(1.0, 2.0 * radius / voxel)


def _render_trees(grid: _Grid, segments: list[_Segment]) -> np.ndarray:
    """Max-composite occupancy of capsules, each evaluated only inside its bounding box."""
    out = np.zeros(grid.shape, dtype=np.float32)
    voxel = float(grid.spacing[1])
    axes = [grid.axis(a) for a in range(3)]
    for seg in segments:
        lo = np.minimum(seg.start, seg.end) - seg.radius - voxel
        hi = np.maximum(seg.start, seg.end) + seg.radius + voxel
        sl = []
        for a in range(3):
            i0 = int(np.searchsorted(axes[a], lo[a]))
            i1 = int(np.searchsorted(axes[a], hi[a], side="right"))
            sl.append(slice(i0, i1))
        if any(s.stop <= s.start for s in sl):
            continue
        pz = axes[0][sl[0]][:, None, None] - seg.start[0]
        py = axes[1][sl[1]][None, :, None] - seg.start[1]
        px = axes[2][sl[2]][None, None, :] - seg.start[2]
        d = seg.end - seg.start
        t = np.clip((pz * d[0] + py * d[1] + px * d[2]) / max(float(d @ d), 1e-6), 0.0, 1.0)
        dist = np.sqrt((pz - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (px - t * d[2]) ** 2)
        block = out[tuple(sl)]
        np.maximum(block, _soft_fraction(dist, seg.radius, voxel), out=block)
    return out


# --------------------------------------------------------------------------------------------
# lesions


def _paint_lesions(
    hu: np.ndarray,
    label: np.ndarray,
    lung: np.ndarray,
    parenchyma: np.ndarray,
    grid: _Grid,
    rng: np.random.Generator,
    mix: LesionMix,
) -> tuple[LesionSpec, ...]:
    """Draw GGO then consolidation blobs (counts and sizes from ``mix``); intensity and label
    are masked to the lung field.

    Lesion HU ramps beyond the label edge (soft GGO margins), so a thin unlabeled rim is as
    ambiguous as a real reader's boundary. A study meant to have lesions always gets some
    labeled lesion voxels (a lesion clipped away by the pleura is redrawn elsewhere).
    """
    if not lung.any():
        return ()
    core = ndimage.binary_erosion(lung, structure=np.ones((1, 3, 3)), iterations=3)
    peripheral = lung & ~core
    candidates = (np.argwhere(lung), np.argwhere(peripheral) if peripheral.any() else None)
    min_r = max(3.0, 1.6 * grid.spacing[1])
    n_ggo = int(rng.integers(mix.ggo_count[0], mix.ggo_count[1] + 1))
    with_cons = rng.random() < mix.consolidation_probability
    n_cons = (
        int(rng.integers(mix.consolidation_count[0], mix.consolidation_count[1] + 1))
        if with_cons
        else 0
    )
    cons_lo = max(min_r, mix.consolidation_radius_mm[0])
    cons_hi = max(cons_lo, mix.consolidation_radius_mm[1])
    plan: list[tuple[str, float, np.ndarray | None]] = []
    for i in range(n_ggo):
        lo = min_r * (2.0 if i == 0 else 1.0)  # the first lesion is never sub-voxel
        plan.append(("ggo", math.exp(rng.uniform(math.log(lo), math.log(32.0))), None))
    for _ in range(n_cons):
        r = math.exp(rng.uniform(math.log(cons_lo), math.log(cons_hi)))
        centre = _pick_centre(rng, candidates)
        if rng.random() < 0.5:  # consolidation with a ground-glass halo
            plan.append(("ggo", r * float(rng.uniform(1.4, 2.0)), centre))
        plan.append(("consolidation", r, centre))
    canvas = _LesionCanvas(hu, lung, parenchyma, grid, rng)
    specs = [
        canvas.draw(kind, radius, centre if centre is not None else _pick_centre(rng, candidates))
        for kind, radius, centre in plan
    ]
    interior = (np.argwhere(core) if core.any() else candidates[0], None)
    for _retry in range(5):
        if canvas.ggo.any() or canvas.consolidation.any():
            break
        radius = float(rng.uniform(2.0, 4.0)) * min_r
        specs.append(canvas.draw("ggo", radius, _pick_centre(rng, interior)))
    label[canvas.ggo] = GGO
    label[canvas.consolidation] = CONSOLIDATION
    return tuple(specs)


@dataclass
class _LesionCanvas:
    """The volume being painted plus the lesion masks drawn so far."""

    hu: np.ndarray
    lung: np.ndarray
    parenchyma: np.ndarray
    grid: _Grid
    rng: np.random.Generator

    def __post_init__(self) -> None:
        self.ggo = np.zeros(self.grid.shape, dtype=bool)
        self.consolidation = np.zeros(self.grid.shape, dtype=bool)

    def draw(self, kind: str, radius: float, centre_vox: np.ndarray) -> LesionSpec:
        """Paint one blob (max-composite) and mark its label voxels."""
        rng, grid = self.rng, self.grid
        centre = np.array([grid.axis(a)[centre_vox[a]] for a in range(3)], dtype=np.float64)
        if kind == "ggo":
            target, texture = float(rng.uniform(-650.0, -320.0)), 30.0
            edge_mm, shift = float(rng.uniform(2.0, 6.0)), 0.05
        else:
            target, texture = float(rng.uniform(-80.0, 30.0)), 12.0
            edge_mm, shift = float(rng.uniform(0.8, 2.5)), 0.2
        sl, u = _blob(rng, grid, centre, radius, min(edge_mm / radius, 0.45))
        inside = self.lung[sl]
        mask = self.ggo if kind == "ggo" else self.consolidation
        np.logical_or(mask[sl], inside & (u >= 0.5), out=mask[sl])
        u = np.clip(u / (1.0 - shift), 0.0, 1.0) * inside  # denser core, still 0 at the rim
        u = u * u * (3.0 - 2.0 * u)  # smoothstep: soft edges without a kink
        local_hu = target + texture * _smooth_field(rng, u.shape, (2, 2, 2))
        lesion_hu = self.parenchyma[sl] * (1.0 - u) + local_hu * u
        hu = self.hu[sl]
        np.maximum(hu, np.where(u > 0, lesion_hu, hu), out=hu)
        return LesionSpec(kind, tuple(float(c) for c in centre), round(radius, 2), round(target, 1))


def _pick_centre(
    rng: np.random.Generator, candidates: tuple[np.ndarray, np.ndarray | None]
) -> np.ndarray:
    """Lesion centre voxel (z, y, x); COVID-type lesions favour the subpleural periphery."""
    pool = candidates[1] if candidates[1] is not None and rng.random() < 0.65 else candidates[0]
    return pool[int(rng.integers(len(pool)))]


def _blob(
    rng: np.random.Generator, grid: _Grid, centre: np.ndarray, radius: float, soft: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Irregular soft blob: union of 1-3 random ellipsoids, perturbed by smooth noise.

    Returns the bounding-box slices and a linear edge ramp in [0, 1] (>= 0.5 is "inside").
    """
    extent = radius * 2.2 + grid.spacing[1]
    sl = []
    axes = [grid.axis(a) for a in range(3)]
    for a in range(3):
        i0 = int(np.searchsorted(axes[a], centre[a] - extent))
        i1 = int(np.searchsorted(axes[a], centre[a] + extent, side="right"))
        sl.append(slice(i0, max(i1, i0 + 1)))
    pz = axes[0][sl[0]][:, None, None]
    py = axes[1][sl[1]][None, :, None]
    px = axes[2][sl[2]][None, None, :]
    shape = (pz.shape[0], py.shape[1], px.shape[2])
    level = np.full(shape, -np.inf, dtype=np.float32)
    for n in range(int(rng.integers(1, 4))):
        offset = rng.normal(0.0, 0.35 * radius, 3) if n else np.zeros(3)
        semi = radius * rng.uniform(0.6, 1.2, 3) * (1.0 if n == 0 else 0.7)
        rot = _random_rotation(rng)
        c = centre + offset
        dz, dy, dx = pz - c[0], py - c[1], px - c[2]
        local = [rot[r, 0] * dz + rot[r, 1] * dy + rot[r, 2] * dx for r in range(3)]
        rr = np.sqrt(sum((local[r] / semi[r]) ** 2 for r in range(3)))
        np.maximum(level, 1.0 - rr, out=level)
    coarse = tuple(max(2, min(s, 4)) for s in shape)
    level = level + float(rng.uniform(0.15, 0.45)) * _smooth_field(rng, shape, coarse)
    u = np.clip(level / (2.0 * soft) + 0.5, 0.0, 1.0)
    return tuple(sl), u.astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise, slightly correlated in-plane like reconstructed CT noise."""
    white = rng.standard_normal(shape, dtype=np.float32)
    corr = float(rng.uniform(0.0, 0.9))
    if corr > 0.05:
        white = ndimage.gaussian_filter(white, sigma=(0.0, corr, corr), mode="wrap")
        white /= max(float(white.std()), 1e-6)
    return white * np.float32(std)


__all__ = [
    "BACKGROUND",
    "CONSOLIDATION",
    "GGO",
    "LUNG",
    "LesionMix",
    "LesionSpec",
    "PhantomStudy",
    "generate_dataset",
    "is_lesion_free",
    "phantom_spacing",
    "study_seed",
    "synthesize_study",
]
