"""Per-item comparisons of two models scored on the same items: paired differences and
percentile-bootstrap 95 % confidence intervals.

Benchmarks pool out-of-fold per-slice scores (every labeled slice scored once, by the fold
model that never saw it); two methods scored on the same slices are compared by the mean of
their per-slice differences, with a bootstrap over slices (resampling slices, keeping each
slice's pair together), which is what decides whether a method "pays off".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["MeanCI", "PairedDifference", "bootstrap_mean_ci", "paired_difference"]


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` finite values and its percentile-bootstrap interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference(MeanCI):
    """Mean of ``a − b`` over the paired items, its interval, and how often ``a`` won."""

    wins: int = 0
    losses: int = 0
    ties: int = 0


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> MeanCI:
    """Mean and percentile-bootstrap ``level`` interval of the finite ``values`` (NaN ones are
    dropped; no finite value gives NaNs and n = 0; one value gives a zero-width interval)."""
    if n_boot < 1:
        raise ValueError(f"Argument 'n_boot' must be >= 1, got {n_boot}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"Argument 'level' must be in (0, 1), got {level}.")
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return MeanCI(float(arr.mean()), float(lo), float(hi), int(arr.size))


def paired_difference(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Per-item ``a[k] − b[k]`` over the items both score (they must score the same items),
    with the mean's bootstrap interval and wins/losses/ties of ``a`` (|diff| <= 1e-9 ties).
    Items whose difference is not finite are left out of every count."""
    if a.keys() != b.keys():
        only = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"Paired scores must cover the same items; they differ in {only}.")
    keys = sorted(a)
    diff = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    diff = diff[np.isfinite(diff)]
    ci = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed, level=level)
    return PairedDifference(
        ci.mean,
        ci.ci_low,
        ci.ci_high,
        ci.n,
        wins=int((diff > 1e-9).sum()),
        losses=int((diff < -1e-9).sum()),
        ties=int((np.abs(diff) <= 1e-9).sum()),
    )
