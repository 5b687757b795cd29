"""Which items of a labeled set are held out: a seeded fraction, or one fold of k.

Study splits (3D) and slice-group splits (2D) share this rule, so training, ``pulmoseg
evaluate`` and the benchmarks always agree on the validation side. Cross-validation folds
partition one seeded permutation: over the k folds every item is validated exactly once.
"""

from __future__ import annotations

import numpy as np


def check_fold(fold: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate ``(index, folds)``: ``folds >= 2`` and ``0 <= index < folds``."""
    if fold is None:
        return None
    try:
        index, folds = (int(v) for v in fold)
    except (TypeError, ValueError):
        raise ValueError(f"Argument 'fold' must be a pair (index, folds), got {fold!r}.") from None
    if folds < 2:
        raise ValueError(f"Cross-validation needs at least 2 folds, got {folds}.")
    if not 0 <= index < folds:
        raise ValueError(f"Fold index must be in [0, {folds - 1}], got {index}.")
    return index, folds


def held_out(
    n: int, val_fraction: float, seed: int, fold: tuple[int, int] | None = None
) -> set[int]:
    """Positions (0..n-1) of the validation items.

    Without ``fold``: about ``val_fraction`` of the items (at least one when the fraction is
    > 0 and n >= 2, never all). With ``fold=(i, k)``: the i-th of k near-equal parts of a
    seeded permutation (``val_fraction`` is then ignored).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"Argument 'val_fraction' must be in [0, 1), got {val_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    fold = check_fold(fold)
    if fold is not None:
        index, folds = fold
        if n < folds:
            raise ValueError(f"Cannot make {folds} cross-validation folds of {n} item(s).")
        return {int(i) for i in np.array_split(order, folds)[index]}
    n_val = 0
    if val_fraction > 0 and n > 1:
        n_val = min(n - 1, max(1, round(val_fraction * n)))
    return {int(i) for i in order[:n_val]}
