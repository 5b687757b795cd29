"""Phantom lesions: ground-glass opacity and consolidation blobs, and how many of each."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from training.phantom.checks import check_fraction
from training.phantom.grid import Grid, smooth_field
from training.phantom.labels import CONSOLIDATION, GGO


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
        check_fraction("consolidation_probability", self.consolidation_probability)
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


def paint_lesions(
    hu: np.ndarray,
    label: np.ndarray,
    lung: np.ndarray,
    parenchyma: np.ndarray,
    grid: Grid,
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
    grid: Grid
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
        local_hu = target + texture * smooth_field(rng, u.shape, (2, 2, 2))
        lesion_hu = self.parenchyma[sl] * (1.0 - u) + local_hu * u
        hu = self.hu[sl]
        np.maximum(hu, np.where(u > 0, lesion_hu, hu), out=hu)
        z, y, x = (float(c) for c in centre)
        return LesionSpec(kind, (z, y, x), round(radius, 2), round(target, 1))


def _pick_centre(
    rng: np.random.Generator, candidates: tuple[np.ndarray, np.ndarray | None]
) -> np.ndarray:
    """Lesion centre voxel (z, y, x); COVID-type lesions favour the subpleural periphery."""
    pool = candidates[1] if candidates[1] is not None and rng.random() < 0.65 else candidates[0]
    return pool[int(rng.integers(len(pool)))]


def _blob(
    rng: np.random.Generator, grid: Grid, centre: np.ndarray, radius: float, soft: float
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
    jittered = level + float(rng.uniform(0.15, 0.45)) * smooth_field(rng, shape, coarse)
    u = np.clip(jittered / (2.0 * soft) + 0.5, 0.0, 1.0)
    return tuple(sl), u.astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))
