"""``bench/real_ct_negatives.py``: lesion-free training slices from studies with slice labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO.parent / "shared" / "data" / "covid-ct-md"
sys.path.insert(0, str(REPO / "bench"))
import real_ct_negatives as negatives  # noqa: E402
from real_ct_studies import label_rows  # noqa: E402


def test_a_slice_is_negative_only_in_both_label_orders_and_away_from_positives() -> None:
    labels = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    # Ascending: positive at 4; descending (reversed): positive at 5; guard 1 → 3..6 excluded.
    assert negatives.negative_indices(labels, 10, guard=1) == [0, 1, 2, 7, 8, 9]
    assert negatives.negative_indices(labels, 10, guard=0) == [0, 1, 2, 3, 6, 7, 8, 9]
    assert negatives.negative_indices(None, 4, guard=2) == [0, 1, 2, 3]


def test_hu_become_the_windows_pixels() -> None:
    pixels = negatives.to_pixels(np.array([-2000.0, -1140.0, -442.0, 256.0, 900.0]), (-1140, 256))
    assert pixels.tolist() == [0, 0, 128, 255, 255]


def test_the_body_box_holds_the_body_and_leaves_the_table_out() -> None:
    hu = np.full((100, 120), -1000.0)
    yy, xx = np.mgrid[:100, :120]
    hu[(yy - 45) ** 2 + (xx - 60) ** 2 <= 30**2] = 40.0  # the body
    hu[90:93, 5:115] = 200.0  # the table, apart from the body
    rows, cols = negatives.body_box(hu, margin=2)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (13, 78, 28, 93)


@pytest.mark.skipif(not (STUDIES / "studies" / "cap002").is_dir(), reason="no shared COVID-CT-MD")
def test_a_labeled_studys_negatives_are_written_with_lung_and_nothing_else(
    tmp_path: Path,
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    labels = label_rows(STUDIES)["cap002"]
    count = negatives.write_study_negatives(
        STUDIES / "studies" / "cap002",
        labels,
        tmp_path,
        window=(-1140.0, 256.0),
        lung_index=1,
        every=8,
        guard=2,
        like_annotated=True,
    )
    written = sorted(p.stem for p in (tmp_path / "masks").iterdir())
    assert len(written) == count > 5
    positive = np.asarray(labels[:131]) > 0
    for stem in written:
        rank = int(stem.split("_")[1])
        near = slice(max(rank - 2, 0), rank + 3)
        assert not positive[near].any() and not positive[::-1][near].any(), stem
        mask = np.asarray(Image.open(tmp_path / "masks" / f"{stem}.png"))
        with Image.open(tmp_path / "images" / f"{stem}.jpg") as jpeg:  # like the annotated ones
            assert jpeg.format == "JPEG"
            image = np.asarray(jpeg)
        assert mask.shape == image.shape and max(mask.shape) <= 512
        assert image.shape[0] < 512  # cropped to the body: the air above it is gone
        assert set(np.unique(mask).tolist()) <= {0, 1}
    lung_fractions = [
        (np.asarray(Image.open(tmp_path / "masks" / f"{s}.png")) == 1).mean() for s in written
    ]
    assert max(lung_fractions) > 0.1  # mid-chest slices are mostly lung


def test_the_label_order_check_scores_both_orders_without_a_threshold() -> None:
    from real_ct_studies import StudyResult, label_order_agreement, rank_auc

    assert rank_auc([5.0, 3.0, 0.0, 0.0], [1, 1, 0, 0]) == 1.0
    assert rank_auc([0.0, 0.0, 5.0, 3.0], [1, 1, 0, 0]) == 0.0
    assert rank_auc([1.0, 1.0], [1, 0]) == 0.5  # a tie counts half
    assert np.isnan(rank_auc([1.0, 2.0], [0, 0]))
    # Lesion areas high at the end, labels positive at the start: they agree only reversed.
    study = StudyResult(
        "s", 6, 0.0, 0, 4.0, 10.0, 0.25, "CT-1", 0.97, [0, 0, 0, 0, 90, 80], [1, 1, 0, 0, 0, 0]
    )
    normal = StudyResult("n", 6, 0.0, 0, 4.0, 0.0, 0.0, "CT-0", 0.97, [0.0] * 6, [-1] * 6)
    # As used: positives (0, 0) tie with two negatives (0, 0) and lose to (90, 80): 0.25.
    assert label_order_agreement([study, normal]) == {"s": {"as_used": 0.25, "reversed": 1.0}}
