"""The demo's result table explains a low or undefined VolDice instead of printing a bare 0.000."""

from __future__ import annotations

import numpy as np
import pytest

from training.cli.demo_report import class_results, format_table, training_shares

NAMES = ("background", "lung", "ggo", "consolidation")


def _volumes() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((4, 10, 10), np.uint8)
    truth[:, 1:9, 1:9] = 1
    truth[1:3, 2:5, 2:5] = 2
    truth[2, 6:8, 6:8] = 3  # a small consolidation the model misses
    predicted = truth.copy()
    predicted[predicted == 3] = 1
    return predicted, truth


def test_a_missed_rare_class_is_explained():
    predicted, truth = _volumes()
    shares = training_shares(
        [{"lesion_voxels": {"ggo": 900, "consolidation": 100}}, {"lesion_voxels": {"ggo": 0}}]
    )
    assert shares == pytest.approx({"ggo": 0.9, "consolidation": 0.1})
    rows = {r.name: r for r in class_results(predicted, truth, NAMES, 0.5, shares)}
    assert rows["ggo"].voldice == 1.0 and rows["ggo"].note == ""
    missed = rows["consolidation"]
    assert missed.voldice == 0.0 and missed.truth_ml == 2.0 and missed.found_ml == 0.0
    assert missed.note == (
        "missed: the model found none of the 2.0 mL; only 10% of the lesion voxels the demo "
        "model trained on"
    )
    table = format_table(list(rows.values()))
    assert table[0].split() == ["class", "VolDice", "truth", "mL", "found", "mL", "note"]
    assert "longer run" in table[-1]


def test_an_absent_class_and_false_positives_are_named():
    predicted, truth = _volumes()
    truth[truth == 3] = 1  # no consolidation in the study at all
    absent = class_results(truth, truth, NAMES, 1.0)[2]
    assert absent.voldice == 1.0 and absent.note.startswith("absent from this study and none")
    predicted[0, 0, 0] = 3
    false_positive = class_results(predicted, truth, NAMES, 1.0)[2]
    assert false_positive.note == "absent from this study: all 1.0 mL found are false positives"
    assert "longer run" not in format_table([absent])[-1]


def test_grids_must_match():
    with pytest.raises(ValueError, match="same grid"):
        class_results(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), NAMES, 1.0)
