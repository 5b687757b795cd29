"""Held-out selection shared by study and slice-group splits: fractions and k-fold CV."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.slice_folders import group_of
from training.data.splits import check_fold, held_out, natural_key, split_by_group, split_studies
from training.data.volumes import StudyRecord


@pytest.mark.parametrize(("n", "folds"), [(50, 5), (13, 4), (3, 3)])
def test_folds_partition_the_items(n: int, folds: int) -> None:
    parts = [held_out(n, 0.2, seed=7, fold=(i, folds)) for i in range(folds)]
    assert sorted(i for part in parts for i in part) == list(range(n))  # each exactly once
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts != [held_out(n, 0.2, seed=8, fold=(i, folds)) for i in range(folds)]


def test_fraction_split_keeps_its_rule() -> None:
    assert len(held_out(50, 0.2, seed=0)) == 10
    assert len(held_out(2, 0.01, seed=0)) == 1  # at least one
    assert len(held_out(2, 0.9, seed=0)) == 1  # never all
    assert held_out(1, 0.5, seed=0) == set() and held_out(9, 0.0, seed=0) == set()
    # Fold 0 of k is the first n/k positions of the same permutation as the fraction split.
    assert held_out(50, 0.2, seed=3, fold=(0, 5)) == held_out(50, 0.2, seed=3)


@pytest.mark.parametrize(
    ("fold", "n", "message"),
    [
        ((0, 1), 10, "at least 2 folds, got 1"),
        ((5, 5), 10, r"Fold index must be in \[0, 4\], got 5"),
        ((-1, 5), 10, r"Fold index must be in \[0, 4\], got -1"),
        ((0, 5), 3, "Cannot make 5 cross-validation folds of 3 item"),
        ("ab", 10, "must be a pair"),
    ],
)
def test_bad_folds_are_refused(fold: object, n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        held_out(n, 0.2, seed=0, fold=fold)  # type: ignore[arg-type]


def test_check_fold_passes_none_through() -> None:
    assert check_fold(None) is None and check_fold((1, 3)) == (1, 3)


def test_group_folds_never_split_a_group() -> None:
    names = [f"vol{v}_{s}.jpg" for v in range(7) for s in range(v % 3 + 1)] + ["a.jpg", "b.jpg"]
    items = [(n, group_of(n)) for n in names]
    seen: list[str] = []
    for i in range(3):
        train, val = split_by_group(items, 0.0, 5, key=lambda it: it[1], fold=(i, 3))
        assert sorted(train + val) == sorted(items)
        assert not {g for _, g in train} & {g for _, g in val}
        seen += [n for n, _ in val]
    assert sorted(seen) == sorted(names)


def test_study_folds_keep_unlabeled_studies_for_training(tmp_path: Path) -> None:
    records = [
        StudyRecord(
            f"s{i}", tmp_path / f"{i}.nii.gz", tmp_path / f"{i}_label.nii.gz" if i < 6 else None
        )
        for i in range(8)
    ]
    validated = []
    for i in range(3):
        train, val = split_studies(records, 0.2, seed=1, fold=(i, 3))
        assert all(r.labeled for r in val) and len(val) == 2
        assert {"s6", "s7"} <= {r.study_id for r in train}
        validated += [r.study_id for r in val]
    assert sorted(validated) == [f"s{i}" for i in range(6)]


def test_split_by_group_never_leaks_a_group() -> None:
    names = [f"vol{v}_{s}.jpg" for v in range(9) for s in range(1, 1 + v % 4 + 1)]
    names += [f"{i}.jpg" for i in range(6)]  # groups of their own
    items = [(n, group_of(n)) for n in names]
    for seed in range(10):
        train, val = split_by_group(items, 0.25, seed, key=lambda it: it[1])
        assert sorted(train + val) == sorted(items)
        assert not {g for _, g in train} & {g for _, g in val}
        assert len({g for _, g in val}) == 4  # round(0.25 * 15 groups)
    a = split_by_group(items, 0.25, 3, key=lambda it: it[1])
    assert a == split_by_group(items, 0.25, 3, key=lambda it: it[1])
    assert split_by_group(items, 0.0, 0, key=lambda it: it[1]) == (items, [])
    with pytest.raises(ValueError, match="'val_fraction' must be in"):
        split_by_group(items, 1.0, 0, key=lambda it: it[1])


def test_natural_key_orders_numbered_names_numerically() -> None:
    names = ["vol_10", "vol_2", "vol_1", "a_3", "vol_1b"]
    assert sorted(names, key=natural_key) == ["a_3", "vol_1", "vol_1b", "vol_2", "vol_10"]


def test_stratified_subset_keeps_the_strata_proportions_and_is_seeded() -> None:
    from training.data.splits import stratified_subset

    # 40 slices: 20 with GGO only, 12 with consolidation, 8 without lesion.
    strata = [(True, False)] * 20 + [(True, True)] * 12 + [(False, False)] * 8
    chosen = stratified_subset(strata, 8, seed=4)
    assert len(chosen) == 8 and chosen == sorted(set(chosen))
    counts = {s: sum(1 for i in chosen if strata[i] == s) for s in set(strata)}
    assert counts == {(True, False): 4, (True, True): 2, (False, False): 2}  # 8·20/40 etc.
    assert chosen == stratified_subset(strata, 8, seed=4)
    assert chosen != stratified_subset(strata, 8, seed=5)
    # A rare stratum still gets one item; k >= n keeps everything.
    rare = [0] * 19 + [1]
    assert any(strata_i == 1 for strata_i in (rare[i] for i in stratified_subset(rare, 3, 0)))
    assert stratified_subset(rare, 25, 0) == list(range(20))
    assert stratified_subset(rare, 0, 0) == []
    with pytest.raises(ValueError, match="'k' must be >= 0"):
        stratified_subset(rare, -1, 0)


def test_lesion_stratum_and_labeled_subset_split() -> None:
    import numpy as np

    from training.data.splits import lesion_stratum, split_labeled_subset

    label = np.zeros((4, 4), dtype=np.int64)
    assert lesion_stratum(label, [1, 2], 2) == (False, False)
    label[0, 0] = 1
    assert lesion_stratum(label, [1, 2], 2) == (True, False)
    label[1, 1] = 2
    assert lesion_stratum(label, [1, 2], 2) == (True, True)
    items = list(range(10))
    labeled, rest = split_labeled_subset(items, 3, 0, stratum=lambda i: i % 2)
    assert len(labeled) == 3 and sorted(labeled + rest) == items
    assert split_labeled_subset(items, 0, 0, stratum=lambda i: 0) == (items, [])
