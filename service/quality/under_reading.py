"""The under-reading flag: the label-free abnormal-density burden against the model's lesions.

A lesion model can miss faint ground glass that HU shows plainly, and nothing in its own output
says so. The density burden (``service.quality.density``: voxels −700…−250 HU inside the lung
envelope after a 2-pixel opening) needs no training and cannot under-read; a normal lung holds
some of it too (dependent atelectasis, partial volume at vessels and fissures). When the density
burden exceeds the model's lesion burden, both as fractions of the envelope, by more than a
normal study shows, the study is flagged for review with the reason ``UNDER_READING``.

``DEFAULT_MARGIN`` (how it was chosen): on the normal COVID-CT-MD study ``normal002`` (the only
normal study in ``../shared``) the density burden is 0.59 % of the envelope (26.7 mL) against a
lesion output of about 0.1 mL: an excess of 0.59 percentage points where nothing is missed.
The margin is 2.5 times that, 1.5 points. The two patients model 2.0.0 under-reads (issue 29)
show 3.46 (P002: 4.23 % density, 30 mL = 0.77 % lesion) and 1.72 points (cap002: 2.17 % and
18 mL = 0.45 %), so both are flagged; cap002 only just. One normal study is a thin
calibration: re-derive the constant from the leave-study-out folds and the controlled
under-reading phantoms (``docs/quantification.md``) when more normal studies are at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core.study_outcome import UnderReadingOutcome
from service.quality.density import DensityQuantification

__all__ = ["DEFAULT_MARGIN", "UNDER_READING", "UnderReading", "under_reading"]

#: The reason label of a study flagged by this check (metrics, records, API).
UNDER_READING = "under_reading"
#: Largest excess of density burden over lesion burden (fractions of the envelope) that is
#: still normal; see the module doc for how it was chosen.
DEFAULT_MARGIN = 0.015


@dataclass(frozen=True)
class UnderReading:
    """The check's verdict and the numbers it compared (fractions of the lung envelope)."""

    flagged: bool
    reason: str | None
    density_fraction: float
    lesion_fraction: float
    margin: float

    @property
    def excess(self) -> float:
        return self.density_fraction - self.lesion_fraction

    def message(self) -> str:
        """One sentence for a reviewer (no patient data)."""
        verdict = "exceeds" if self.flagged else "is within"
        return (
            f"abnormal density {100 * self.density_fraction:.1f} % of the lung envelope vs "
            f"model lesions {100 * self.lesion_fraction:.1f} %: the excess {verdict} the "
            f"normal margin of {100 * self.margin:.1f} points"
        )

    def outcome(self) -> UnderReadingOutcome:
        """The study outcome's ``under_reading`` part (fractions to 1e-6)."""
        return UnderReadingOutcome(
            flagged=self.flagged,
            reason=self.reason,
            density_fraction=round(self.density_fraction, 6),
            lesion_fraction=round(self.lesion_fraction, 6),
            margin=self.margin,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "flagged": self.flagged,
            "reason": self.reason,
            "density_fraction": self.density_fraction,
            "lesion_fraction": self.lesion_fraction,
            "margin": self.margin,
        }


def under_reading(
    density: DensityQuantification, lesion_volume_ml: float, *, margin: float = DEFAULT_MARGIN
) -> UnderReading:
    """Flag a study whose density burden exceeds its lesion burden by more than ``margin``.

    ``lesion_volume_ml`` is the model's lesion volume (GGO + consolidation) of the study; it is
    compared as a share of the same envelope the density burden is measured in. A study with
    no envelope (no lungs found) is never flagged here: the applicability check speaks to it.
    """
    if not isinstance(density, DensityQuantification):
        raise TypeError(
            f"Argument 'density' must be a DensityQuantification, got {type(density).__name__}."
        )
    if not lesion_volume_ml >= 0:
        raise ValueError(f"Argument 'lesion_volume_ml' must be >= 0, got {lesion_volume_ml}.")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"Argument 'margin' must be in [0, 1), got {margin}.")
    if density.envelope_ml <= 0:
        return UnderReading(False, None, 0.0, 0.0, margin)
    lesion_fraction = min(1.0, float(lesion_volume_ml) / density.envelope_ml)
    flagged = density.abnormal_fraction - lesion_fraction > margin
    return UnderReading(
        flagged=flagged,
        reason=UNDER_READING if flagged else None,
        density_fraction=density.abnormal_fraction,
        lesion_fraction=lesion_fraction,
        margin=margin,
    )
