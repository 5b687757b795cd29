"""Tests for training.evaluation.paired_stats: bootstrap intervals, paired per-item differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.paired_stats import bootstrap_mean_ci, paired_difference


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    small = bootstrap_mean_ci(rng.normal(0.5, 0.1, 20), n_boot=2000)
    large = bootstrap_mean_ci(rng.normal(0.5, 0.1, 2000), n_boot=2000)
    assert small.ci_low < small.mean < small.ci_high
    assert large.ci_high - large.ci_low < small.ci_high - small.ci_low
    # The percentile interval of a mean is about ±1.96 standard errors.
    assert large.ci_high - large.ci_low == pytest.approx(2 * 1.96 * 0.1 / math.sqrt(2000), rel=0.2)
    assert bootstrap_mean_ci([0.3]) == bootstrap_mean_ci([0.3, math.nan])
    assert bootstrap_mean_ci([0.3]).ci_low == 0.3 and bootstrap_mean_ci([0.3]).n == 1
    assert bootstrap_mean_ci([]).n == 0 and math.isnan(bootstrap_mean_ci([]).mean)
    with pytest.raises(ValueError, match="'level' must be in"):
        bootstrap_mean_ci([1.0], level=1.0)


def test_paired_difference_is_per_item_and_seeded() -> None:
    a = {"s1": 0.9, "s2": 0.8, "s3": 0.5, "s4": 0.7}
    b = {"s1": 0.8, "s2": 0.8, "s3": 0.6, "s4": 0.4}
    d = paired_difference(a, b, n_boot=500, seed=1)
    assert d.mean == pytest.approx(np.mean([0.1, 0.0, -0.1, 0.3]))
    assert (d.wins, d.losses, d.ties, d.n) == (2, 1, 1, 4)
    assert d.ci_low <= d.mean <= d.ci_high
    assert d == paired_difference(a, b, n_boot=500, seed=1)
    # A constant shift has a zero-width interval: pairing removes the between-slice spread.
    shifted = {k: v + 0.05 for k, v in b.items()}
    s = paired_difference(shifted, b, n_boot=200)
    assert s.ci_low == pytest.approx(0.05) and s.ci_high == pytest.approx(0.05)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(a, {"s1": 0.1})
