"""Clinical summary: involvement of the lungs and the MosMedData CT grade."""

from __future__ import annotations

import pytest

from service.quality.clinical import SeverityGrade, clinical_summary, severity_grade


@pytest.mark.parametrize(
    ("lung", "ggo", "cons", "involvement", "grade"),
    [
        (1000.0, 0.0, 0.0, 0.0, "CT-0"),
        (1000.0, 0.5, 0.3, 0.8 * 100 / 1000.8, "CT-0"),  # under the 1 mL floor
        (900.0, 80.0, 20.0, 10.0, "CT-1"),
        (750.0, 200.0, 50.0, 25.0, "CT-2"),  # 25 % is CT-2, not CT-1
        (500.0, 300.0, 200.0, 50.0, "CT-3"),
        (260.0, 500.0, 240.0, 74.0, "CT-3"),
        (250.0, 500.0, 250.0, 75.0, "CT-4"),
    ],
)
def test_grade_by_involvement(lung, ggo, cons, involvement, grade):
    summary = clinical_summary({"lung": lung, "ggo": ggo, "consolidation": cons})
    assert summary.lung_volume_ml == pytest.approx(lung + ggo + cons)
    assert summary.involvement_percent == pytest.approx(involvement)
    assert summary.severity_grade == SeverityGrade(grade)


def test_floor_is_a_setting_and_models_without_lung_get_no_grade():
    assert severity_grade(10.0, 0.8, lesion_floor_ml=0.5) is SeverityGrade.CT1
    assert severity_grade(10.0, 0.8, lesion_floor_ml=1.0) is SeverityGrade.CT0
    lesion_only = clinical_summary({"ggo": 3.0, "consolidation": 1.0})
    assert lesion_only.severity_grade is None and lesion_only.involvement_percent is None
    assert lesion_only.class_volumes_ml == {"ggo": 3.0, "consolidation": 1.0}
    with pytest.raises(ValueError, match="lesion_floor_ml"):
        clinical_summary({"lung": 1.0}, lesion_floor_ml=-1)
