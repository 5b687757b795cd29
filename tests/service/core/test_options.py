"""Options as StrEnums: ``Enum | str`` in, the enum out, one message with a hint for typos."""

from __future__ import annotations

import pytest

from service.client.client import LoadBalancing
from service.core.options import Option, SegmentationType
from service.core.settings_base import did_you_mean
from service.quality.transforms import ConsistencyTransform


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        (SegmentationType, SegmentationType.LABELMAP, SegmentationType.LABELMAP),
        (SegmentationType, "BINARY", SegmentationType.BINARY),
        (SegmentationType, "labelmap", SegmentationType.LABELMAP),
        (SegmentationType, " Binary\n", SegmentationType.BINARY),
        (LoadBalancing, "ROUND_ROBIN", LoadBalancing.ROUND_ROBIN),
        (ConsistencyTransform, "rot90", ConsistencyTransform.ROT90),
    ],
)
def test_parse_takes_the_enum_or_its_value_in_any_case(
    option: type[Option], value: object, expected: Option
) -> None:
    parsed = option.parse(value)  # type: ignore[arg-type]
    assert parsed is expected and parsed == expected.value  # a StrEnum is its value


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            SegmentationType,
            "binray",
            "Argument 'segmentation_type' must be one of 'BINARY', 'LABELMAP', got 'binray'. "
            "Did you mean 'BINARY'?",
        ),
        (SegmentationType, "FRACTIONAL", "got 'FRACTIONAL'.$"),  # no near miss: no hint
        (LoadBalancing, "round-robin", "Did you mean 'round_robin'?"),
        (ConsistencyTransform, "rot9", "Argument 'consistency_transform' .*'rot90'"),
    ],
)
def test_unknown_values_name_the_argument_the_choices_and_a_near_miss(
    option: type[Option], value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        option.parse(value)


def test_the_caller_names_the_value_and_wrong_types_are_type_errors() -> None:
    with pytest.raises(ValueError, match=r"^Setting 'segmentation_type' must be one of"):
        SegmentationType.parse("rgb", "Setting 'segmentation_type'")
    with pytest.raises(TypeError, match="'segmentation_type' must be a SegmentationType or str"):
        SegmentationType.parse(2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("word", "ignore_case", "hint"),
    [
        ("labelmpa", False, ""),
        ("labelmpa", True, " Did you mean 'LABELMAP'?"),
        ("LABELMPA", False, " Did you mean 'LABELMAP'?"),
        ("xyz", True, ""),
    ],
)
def test_one_did_you_mean_serves_settings_and_options(
    word: str, ignore_case: bool, hint: str
) -> None:
    assert did_you_mean(word, ["BINARY", "LABELMAP"], ignore_case=ignore_case) == hint
