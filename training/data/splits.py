"""Which items of a labeled set are held out: a seeded fraction, or one fold of k.

Study splits (3D) and slice-group splits (2D) share this rule, so training, ``pulmoseg
evaluate`` and the benchmarks always agree on the validation side. Cross-validation folds
partition one seeded permutation: over the k folds every item is validated exactly once.

Label-fraction runs (``data.labeled_count``) then keep the labels of only k of the training
items, a seeded subset stratified by lesion / consolidation presence
(:func:`stratified_subset`, :func:`split_labeled_subset`); the rest become unlabeled images.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Protocol, TypeVar, overload

import numpy as np

T = TypeVar("T")


class _MaybeLabeled(Protocol):
    @property
    def labeled(self) -> bool: ...


S = TypeVar("S", bound=_MaybeLabeled)


@overload
def check_fold(fold: tuple[int, int]) -> tuple[int, int]: ...


@overload
def check_fold(fold: None) -> None: ...


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


def split_studies(
    records: Sequence[S],
    val_fraction: float,
    seed: int,
    fold: tuple[int, int] | None = None,
) -> tuple[list[S], list[S]]:
    """Split *labeled* studies into train/validation by study (never by slice).

    Validation is about ``val_fraction`` of the labeled studies, or cross-validation fold
    ``fold=(i, k)`` (:func:`held_out`). Unlabeled studies always go to the training side
    (semi-supervised stages use them).
    """
    labeled = [r for r in records if r.labeled]
    unlabeled = [r for r in records if not r.labeled]
    if not labeled:
        raise ValueError(
            "The dataset has no labeled study; supervised training needs at least one."
        )
    val_positions = held_out(len(labeled), val_fraction, seed, fold)
    val = [r for i, r in enumerate(labeled) if i in val_positions]
    train = [r for i, r in enumerate(labeled) if i not in val_positions] + unlabeled
    return train, val


def natural_key(name: str) -> tuple[int | str, ...]:
    """Sort key that orders ``slice_2`` before ``slice_10`` (digit runs compare as numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def split_by_group(
    items: Sequence[T],
    val_fraction: float,
    seed: int,
    *,
    key: Callable[[T], str] | None = None,
    fold: tuple[int, int] | None = None,
) -> tuple[list[T], list[T]]:
    """Split items into (train, validation) by group; a group never lands on both sides.

    Slices of one CT volume are strongly correlated, so 2D data is split by volume/patient
    group, never by slice. ``key(item)`` gives the group (default: ``item.group``). About
    ``val_fraction`` of the *groups* (at least one when the fraction is > 0 and there are two
    or more groups), or the groups of cross-validation fold ``fold=(i, k)``, go to validation,
    chosen by a seeded permutation (:func:`held_out`) of the naturally sorted groups, so the
    choice does not depend on listing order; item order is kept within each side.
    """
    get: Callable[[T], str] = key if key is not None else attrgetter("group")
    groups = sorted({get(item) for item in items}, key=natural_key)
    val_groups = {groups[i] for i in held_out(len(groups), val_fraction, seed, fold)}
    train = [item for item in items if get(item) not in val_groups]
    val = [item for item in items if get(item) in val_groups]
    return train, val


def lesion_stratum(
    label: np.ndarray, lesion_values: Sequence[int], consolidation_value: int
) -> tuple[bool, bool]:
    """Stratum of a labeled slice for :func:`stratified_subset`: (has a lesion, has
    consolidation), from its class-index mask (``lesion_values``: every lesion class, e.g. GGO
    and consolidation; ``consolidation_value``: the consolidation class)."""
    label = np.asarray(label)
    has_lesion = bool(np.isin(label, list(lesion_values)).any())
    return has_lesion, bool((label == consolidation_value).any())


def stratified_subset(strata: Sequence[object], k: int, seed: int) -> list[int]:
    """Positions of ``k`` of the items, balanced over their strata and seeded.

    ``strata[i]`` is item i's stratum (any hashable, e.g. :func:`lesion_stratum`). Each stratum
    gets its proportional share of ``k`` (largest remainders, ties broken by the seeded draw),
    at least one item while ``k`` allows and the stratum has one, so a 20 % subset of 40
    slices keeps slices with consolidation, with GGO only and without lesion in the proportion
    of the whole. Items within a stratum are drawn by a seeded permutation; the result is
    sorted. ``k >= len(strata)`` returns every position.
    """
    n = len(strata)
    if k < 0:
        raise ValueError(f"Argument 'k' must be >= 0, got {k}.")
    if k >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    groups: dict[object, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    keys = sorted(groups, key=repr)  # fixed order whatever the listing order of the strata
    quota = {s: k * len(groups[s]) / n for s in keys}
    share = {s: min(len(groups[s]), int(np.floor(quota[s]))) for s in keys}
    # Every stratum gets one item first, when k allows (rare strata are the informative ones).
    for s in sorted(keys, key=lambda s: len(groups[s])):
        if share[s] == 0 and sum(share.values()) < k:
            share[s] = 1
    tiebreak = rng.random(len(keys))
    while sum(share.values()) < k:
        open_ = [j for j, s in enumerate(keys) if share[keys[j]] < len(groups[s])]
        j = max(open_, key=lambda j: (quota[keys[j]] - share[keys[j]], tiebreak[j]))
        share[keys[j]] += 1
    chosen: list[int] = []
    for s in keys:
        members = groups[s]
        picks = rng.permutation(len(members))[: share[s]]
        chosen += [members[int(p)] for p in picks]
    return sorted(chosen)


def split_labeled_subset(
    items: Sequence[T], k: int, seed: int, stratum: Callable[[T], object]
) -> tuple[list[T], list[T]]:
    """``(labeled, demoted)``: the ``k`` items of :func:`stratified_subset` (by
    ``stratum(item)``) keep their labels, the others are to be used as unlabeled images.
    ``k == 0`` means all items stay labeled. Order is kept on both sides."""
    if k == 0:
        return list(items), []
    keep = set(stratified_subset([stratum(item) for item in items], k, seed))
    labeled = [item for i, item in enumerate(items) if i in keep]
    demoted = [item for i, item in enumerate(items) if i not in keep]
    return labeled, demoted
