"""What ``pulmoseg segment`` prints about a study's quality, from the client's outcome."""

from __future__ import annotations

from service.cli.main import _print_quality
from service.core.study_outcome import (
    ClinicalOutcome,
    DensityOutcome,
    StudyOutcome,
    UnderReadingOutcome,
)


def _outcome(flagged: bool) -> StudyOutcome:
    return StudyOutcome(
        study_uid_hash="ab12",
        clinical=ClinicalOutcome(
            class_volumes_ml={"lung": 3000.0, "ggo": 10.0},
            lung_volume_ml=3010.0,
            lesion_volume_ml=10.0,
            involvement_percent=0.33,
            severity_grade="CT-1",
        ),
        density=DensityOutcome(
            envelope_ml=3100.0, abnormal_ml=93.0, abnormal_fraction=0.03, well_aerated_fraction=0.85
        ),
        under_reading=UnderReadingOutcome(
            flagged=flagged,
            reason="under_reading" if flagged else None,
            density_fraction=0.03,
            lesion_fraction=0.0033,
            margin=0.015,
        ),
    )


def test_density_and_the_under_reading_flag_are_printed(capsys):
    outcome = _outcome(flagged=True)
    assert outcome.review_required
    _print_quality(outcome.as_dict())
    out = capsys.readouterr().out
    assert "lung involvement 0.3 %, CT grade CT-1" in out
    assert "lung envelope 3100 mL: well aerated 85.0 %, abnormal density 3.0 %" in out
    assert "UNDER-READING suspected -> FLAGGED for review: abnormal density 3.0 %" in out
    assert "lesion 0.3 % (margin 1.5 points)" in out


def test_no_flag_line_when_the_density_agrees(capsys):
    outcome = _outcome(flagged=False)
    assert not outcome.review_required
    _print_quality(outcome.as_dict())
    assert "UNDER-READING" not in capsys.readouterr().out
