"""Phantom anatomy: body, fat, ribs, spine, heart, lungs, vessel and airway trees (in HU).

Everything is drawn in millimetres on a :class:`~training.phantom.grid.Grid`, so the same
seed gives the same chest at any matrix size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from training.phantom.grid import Grid, smooth_field

#: Reference densities (HU) the anatomy is painted with.
AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_HU = 40.0
BLOOD_HU = 40.0


def _superellipse(
    x: np.ndarray, y: np.ndarray, a: float | np.ndarray, b: float | np.ndarray, p: float
) -> np.ndarray:
    """Normalised radius of a super-ellipse: < 1 inside."""
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


@dataclass
class Anatomy:
    """Per-study random anatomy: everything that makes two phantoms look like two patients."""

    grid: Grid
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
    def sample(cls, rng: np.random.Generator, grid: Grid) -> Anatomy:
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
            deform=smooth_field(rng, grid.shape, (4, 5, 5)),
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
        hu[np.broadcast_to(body, hu.shape)] = FAT_HU
        a_in, b_in = self.a * taper - self.fat, self.b - self.fat
        muscle = _superellipse(x, y, a_in, b_in, self.p) <= 1.0
        hu[np.broadcast_to(muscle, hu.shape)] = SOFT_HU + 15.0
        ac, bc = self.cavity
        ac_t = ac * taper
        r_cav = _superellipse(x, y, ac_t, bc, 2.0)
        cavity = r_cav <= 1.0
        # Mediastinum and everything inside the ribs: a fat / soft-tissue mix.
        mix = smooth_field(rng, hu.shape, (5, 8, 8))
        inner = np.where(mix > 0.3, -90.0, SOFT_HU).astype(np.float32)
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
        hu[heart & cav_b] = BLOOD_HU
        axx, ayy, ar = self.aorta
        aorta = np.broadcast_to((x - axx) ** 2 + (y - ayy) ** 2 <= ar**2, hu.shape)
        hu[aorta & (zeta < 0.8)] = BLOOD_HU
        self._paint_spine(hu)
        # Below the diaphragm: liver / spleen soft tissue, sometimes a gastric air bubble.
        below = cav_b & (zeta < self._diaphragm(x, y, np.sign(x) + (x == 0)) - 0.02)
        hu[below & ~self._spine_mask()] = 55.0
        if rng.random() < 0.5:
            cz = float(rng.uniform(0.0, 0.12))
            bubble = ((x - 0.45 * ac) / 35.0) ** 2 + ((y + 0.2 * bc) / 25.0) ** 2 + (
                (zeta - cz) / 0.06
            ) ** 2 <= 1.0
            hu[bubble & below] = AIR_HU

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
        texture = 12.0 * smooth_field(rng, g.shape, (8, 16, 16))
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
            outer = render_trees(g, segs)
            lumen = render_trees(g, [_Segment(s.start, s.end, s.radius * 0.72) for s in segs])
            wall = np.clip(outer - lumen, 0.0, 1.0)
            painted = hu * (1.0 - outer) + SOFT_HU * wall + AIR_HU * lumen
            hu[:] = np.where(region & (outer > 0), painted, hu)


@dataclass(frozen=True)
class _Segment:
    start: np.ndarray  # (z, y, x) mm
    end: np.ndarray
    radius: float


@dataclass
class _TreeGrower:
    """Grows bifurcating tubes (vessels, bronchi) that stay inside a mask."""

    rng: np.random.Generator
    grid: Grid
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


def render_trees(grid: Grid, segments: list[_Segment]) -> np.ndarray:
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
