"""Label-free lung density quantification: the quantitative-CT bands of the literature, per
lung and per zone, as a fraction of the lung envelope and in millilitres.

These numbers need no training and cannot under-read a dense lesion, so they are the reference
the learned lesion classes are judged by (``service.quality.under_reading``). Bands (HU ranges
are half-open, ``low <= HU < high``; sources in ``docs/quantification.md``):

* ``well_aerated`` −950…−700: Colombi et al., Radiology 2020 (well-aerated lung, %S-WAL);
* ``hyperinflated`` −1000…−900, ``normally_aerated`` −900…−500, ``poorly_aerated`` −500…−100,
  ``non_aerated`` −100…+100: Gattinoni et al., N Engl J Med 2006 (the ARDS aeration bands);
* ``compromised`` −500…+100: Lanza et al., Eur Radiol 2020 (compromised lung, %CL).

Regions: the whole envelope, each lung and each zone. Left and right are split slice by slice
in the mediastinum: the middle of the widest empty column gap between the lungs, or the column
of least envelope where they touch at the anterior junction line (where connected components
would merge both lungs into one), see :func:`midline_columns`. Zones are the upper, middle and lower
thirds of each lung's own cranio-caudal extent (slices, so that a lung that starts lower keeps
three thirds); "upper" sums both lungs' upper thirds.

The abnormal-density burden is the shared reference baseline's measure (``../shared/tools/
density_baseline.py``): voxels −700…−250 HU inside the envelope after a 2-pixel in-plane
opening (drops vessels and fissures seen partly in that range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from service.core.study_outcome import DensityBandOutcome, DensityOutcome, DensityRegionOutcome

__all__ = [
    "ABNORMAL_HU",
    "BANDS",
    "BandMeasure",
    "DensityBand",
    "DensityQuantification",
    "RegionDensity",
    "abnormal_density_mask",
    "midline_columns",
    "quantify_density",
    "volume_orientation",
]


@dataclass(frozen=True)
class DensityBand:
    """One HU band (``low_hu <= HU < high_hu``) and the publication that defines it."""

    name: str
    low_hu: float
    high_hu: float
    source: str

    def mask(self, hu: np.ndarray) -> np.ndarray:
        return (hu >= self.low_hu) & (hu < self.high_hu)


COLOMBI_2020 = "Colombi et al., Radiology 2020;296:E86-E96"
GATTINONI_2006 = "Gattinoni et al., N Engl J Med 2006;354:1775-1786"
LANZA_2020 = "Lanza et al., Eur Radiol 2020;30:6770-6778"

BANDS: tuple[DensityBand, ...] = (
    DensityBand("well_aerated", -950.0, -700.0, COLOMBI_2020),
    DensityBand("hyperinflated", -1000.0, -900.0, GATTINONI_2006),
    DensityBand("normally_aerated", -900.0, -500.0, GATTINONI_2006),
    DensityBand("poorly_aerated", -500.0, -100.0, GATTINONI_2006),
    DensityBand("non_aerated", -100.0, 100.0, GATTINONI_2006),
    DensityBand("compromised", -500.0, 100.0, LANZA_2020),
)

#: The abnormal-density range of the reference density baseline (HU, half-open).
ABNORMAL_HU: tuple[float, float] = (-700.0, -250.0)
#: Iterations of the in-plane opening (4-connected cross) applied to abnormal voxels.
ABNORMAL_OPENING = 2

SIDES = ("left", "right")
ZONES = ("upper", "middle", "lower")


@dataclass(frozen=True)
class BandMeasure:
    """One band in one region: its volume and its share of the region's envelope."""

    band: str
    volume_ml: float
    fraction: float


@dataclass(frozen=True)
class RegionDensity:
    """The bands of one region (``whole``, ``left``, ``right_lower``, ``upper`` …)."""

    region: str
    envelope_ml: float
    bands: tuple[BandMeasure, ...]

    def band(self, name: str) -> BandMeasure:
        for measure in self.bands:
            if measure.band == name:
                return measure
        raise KeyError(f"No band {name!r}; bands are {[m.band for m in self.bands]}.")


@dataclass(frozen=True)
class DensityQuantification:
    """Every band in every region, plus the abnormal-density burden of the whole envelope."""

    envelope_ml: float
    regions: tuple[RegionDensity, ...]
    abnormal_ml: float
    abnormal_fraction: float

    def region(self, name: str) -> RegionDensity:
        for region in self.regions:
            if region.region == name:
                return region
        raise KeyError(f"No region {name!r}; regions are {[r.region for r in self.regions]}.")

    def outcome(self) -> DensityOutcome:
        """The study outcome's ``density`` part (mL to 0.001, fractions to 1e-6)."""
        whole = [r for r in self.regions if r.region == "whole"]
        well = whole[0].band("well_aerated").fraction if whole else 0.0
        return DensityOutcome(
            envelope_ml=round(self.envelope_ml, 3),
            abnormal_ml=round(self.abnormal_ml, 3),
            abnormal_fraction=round(self.abnormal_fraction, 6),
            well_aerated_fraction=round(well, 6),
            regions=[
                DensityRegionOutcome(
                    region=r.region,
                    envelope_ml=round(r.envelope_ml, 3),
                    bands=[
                        DensityBandOutcome(
                            band=m.band,
                            volume_ml=round(m.volume_ml, 3),
                            fraction=round(m.fraction, 6),
                        )
                        for m in r.bands
                    ],
                )
                for r in self.regions
            ],
        )

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready numbers: ``regions[name][band] = {"ml", "fraction"}``."""
        return {
            "envelope_ml": self.envelope_ml,
            "abnormal_ml": self.abnormal_ml,
            "abnormal_fraction": self.abnormal_fraction,
            "abnormal_hu": list(ABNORMAL_HU),
            "bands": {b.name: {"hu": [b.low_hu, b.high_hu], "source": b.source} for b in BANDS},
            "regions": {
                r.region: {
                    "envelope_ml": r.envelope_ml,
                    **{m.band: {"ml": m.volume_ml, "fraction": m.fraction} for m in r.bands},
                }
                for r in self.regions
            },
        }


def volume_orientation(
    row_cosine: Sequence[float], slice_normal: Sequence[float]
) -> tuple[bool, bool]:
    """(superior_is_last, left_is_high_column) of a (z, y, x) volume from its LPS direction
    cosines (x along ``row_cosine``, z along ``slice_normal``): LPS +z is superior, +x left."""
    return float(slice_normal[2]) > 0, float(row_cosine[0]) > 0


def midline_columns(envelope: np.ndarray) -> np.ndarray:
    """Per slice, the column that splits the lungs (the first column of the left-or-right
    half that begins there): the middle of the widest empty gap between them, or the column
    of least occupancy where they touch, searched in the middle 40 % of the envelope's
    left-right extent over the whole volume (so that a slice holding one lung only still
    puts it on its own side)."""
    columns = np.flatnonzero(envelope.any(axis=(0, 1)))
    out = np.full(envelope.shape[0], envelope.shape[2] // 2, dtype=int)
    if columns.size == 0:
        return out
    lo, hi = int(columns[0]), int(columns[-1])
    start, stop = lo + int(0.3 * (hi - lo)), lo + int(0.7 * (hi - lo)) + 1
    for z in np.flatnonzero(envelope.any(axis=(1, 2))):
        occupancy = envelope[z, :, start:stop].sum(axis=0)
        empty = occupancy == 0
        if empty.any():
            runs, count = ndimage.label(empty)
            lengths = ndimage.sum_labels(empty, runs, index=np.arange(1, count + 1))
            run = np.flatnonzero(runs == int(np.argmax(lengths)) + 1)
            out[z] = start + int(run[len(run) // 2])
        else:
            out[z] = start + int(np.argmin(occupancy))
    return out


def abnormal_density_mask(
    hu: np.ndarray, envelope: np.ndarray, opening: int = ABNORMAL_OPENING
) -> np.ndarray:
    """Voxels of ``ABNORMAL_HU`` inside the envelope, opened in-plane by ``opening`` pixels
    (see module doc; a caller on every second pixel passes half of ``ABNORMAL_OPENING``)."""
    low, high = ABNORMAL_HU
    raw = envelope & (hu >= low) & (hu < high)
    out = np.zeros_like(raw)
    for z in np.flatnonzero(raw.any(axis=(1, 2))):
        out[z] = ndimage.binary_opening(raw[z], iterations=opening)
    return out


def _zone_masks(present: np.ndarray, superior_is_last: bool) -> dict[str, np.ndarray]:
    """Per-slice masks of the upper / middle / lower thirds of one lung's cranio-caudal extent
    (``present``: the slices it is in; slice k of its n falls in third floor(3k / n))."""
    slices = np.flatnonzero(present)
    masks = {zone: np.zeros(present.shape[0], dtype=bool) for zone in ZONES}
    if slices.size == 0:
        return masks
    first, count = int(slices[0]), int(slices[-1]) - int(slices[0]) + 1
    order = ZONES[::-1] if superior_is_last else ZONES  # the first slice is the lowest one
    for k in range(count):
        masks[order[(3 * k) // count]][first + k] = True
    return masks


def quantify_density(
    hu: np.ndarray,
    envelope: np.ndarray,
    spacing_zyx: Sequence[float],
    *,
    superior_is_last: bool = True,
    left_is_high_column: bool = True,
    opening: int = ABNORMAL_OPENING,
) -> DensityQuantification:
    """The density bands of ``hu`` inside ``envelope`` (both (D, H, W)), per region.

    ``superior_is_last``: slice index grows towards the head (a service ``CTVolume`` of an axial
    series; see :func:`volume_orientation`). ``left_is_high_column``: column index grows
    towards the patient's left (the usual row cosine (1, 0, 0)). ``opening``: pixels of the
    abnormal-density opening (``ABNORMAL_OPENING`` at full resolution).
    """
    if hu.ndim != 3:
        raise ValueError(f"Argument 'hu' must be a (D, H, W) volume, got shape {hu.shape}.")
    if envelope.shape != hu.shape:
        raise ValueError(
            f"Argument 'envelope' has shape {envelope.shape}; 'hu' has shape {hu.shape}."
        )
    if len(spacing_zyx) != 3 or not all(float(s) > 0 for s in spacing_zyx):
        raise ValueError(f"Argument 'spacing_zyx' must be 3 positive mm, got {spacing_zyx}.")
    envelope = envelope.astype(bool)
    voxel_ml = float(np.prod([float(s) for s in spacing_zyx])) / 1000.0
    mid = midline_columns(envelope)
    high = np.arange(hu.shape[2])[None, :] >= mid[:, None]  # (D, W)
    left = high if left_is_high_column else ~high
    # Every envelope voxel gets a cell code 3 * side + zone (side 0 left, 1 right); the bands
    # are counted per cell once and summed into the regions.
    z, _y, x = np.nonzero(envelope)
    side = np.where(left[z, x], 0, 1)
    zone = np.zeros(z.size, dtype=int)
    for s_index in range(len(SIDES)):
        present = np.zeros(hu.shape[0], dtype=bool)
        present[z[side == s_index]] = True
        for z_index, slices in enumerate(_zone_masks(present, superior_is_last).values()):
            zone[(side == s_index) & slices[z]] = z_index
    cell = 3 * side + zone
    values = hu[envelope]
    totals = np.bincount(cell, minlength=6)
    counts = {band.name: np.bincount(cell[band.mask(values)], minlength=6) for band in BANDS}
    cells = {f"{s}_{zz}": [3 * i + j] for i, s in enumerate(SIDES) for j, zz in enumerate(ZONES)}
    groups: dict[str, list[int]] = {"whole": list(range(6))}
    groups |= {s: [3 * i + j for j in range(3)] for i, s in enumerate(SIDES)}
    groups |= {zz: [j, 3 + j] for j, zz in enumerate(ZONES)}
    groups |= cells

    def measure(name: str, members: list[int]) -> RegionDensity:
        total = int(totals[members].sum())
        bands = tuple(
            BandMeasure(band.name, volume_ml=n * voxel_ml, fraction=n / total if total else 0.0)
            for band in BANDS
            for n in [int(counts[band.name][members].sum())]
        )
        return RegionDensity(name, total * voxel_ml, bands)

    regions = tuple(measure(name, members) for name, members in groups.items())
    abnormal = int(np.count_nonzero(abnormal_density_mask(hu, envelope, opening)))
    total = int(np.count_nonzero(envelope))
    return DensityQuantification(
        envelope_ml=total * voxel_ml,
        regions=regions,
        abnormal_ml=abnormal * voxel_ml,
        abnormal_fraction=abnormal / total if total else 0.0,
    )
