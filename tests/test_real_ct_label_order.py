"""The COVID-CT-MD slice-label order: head first (Slice Location descending) by default."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO.parent / "shared" / "data" / "covid-ct-md"
sys.path.insert(0, str(REPO / "bench"))
import real_ct_studies  # noqa: E402
from real_ct_studies import StudyResult, label_order_agreement  # noqa: E402


def test_the_bench_reads_labels_head_first_unless_told_otherwise() -> None:
    assert real_ct_studies.build_parser().parse_args([]).label_order == "descending"
    told = real_ct_studies.build_parser().parse_args(["--label-order", "ascending"])
    assert told.label_order == "ascending"


def test_the_check_prints_both_orders() -> None:
    # Lesion area grows towards the feet (ascending rank 0 = feet); labels say the same head first.
    areas = [100.0, 80.0, 60.0, 0.0, 0.0, 0.0]
    result = StudyResult("s", 6, 0.0, 0, 4.0, 1.0, 1.0, "CT-1", 0.95, areas, [1, 1, 1, 0, 0, 0])
    agreement = label_order_agreement([result])["s"]
    assert agreement == {"as_used": 1.0, "reversed": 0.0}


@pytest.mark.skipif(not (STUDIES / "studies" / "cap002").is_dir(), reason="no shared COVID-CT-MD")
def test_training_slices_are_stored_head_first_with_the_tables_row_as_is() -> None:
    import real_ct_weak_slices

    row = real_ct_studies.label_rows(STUDIES)["cap002"]
    lobes = real_ct_studies.lobe_label_rows(STUDIES)["cap002"]
    arrays = real_ct_weak_slices.weak_study_arrays(
        STUDIES / "studies" / "cap002", row, lobes, (64, 64)
    )
    n = arrays["hu"].shape[0]
    assert n == 131 and arrays["hu"].shape[1:] == (64, 64)
    assert (np.diff(arrays["slice_location"]) < 0).all()  # head first
    np.testing.assert_array_equal(arrays["slice_labels"], row[:n])
    assert arrays["slice_labels"].sum() == 15 and arrays["lobe_labels"].shape == (n, 5)
    # The lung field is there on chest slices, and the HU are HU (air near -1000).
    assert arrays["lung"][n // 2].sum() > 200 and arrays["hu"].min() <= -900
