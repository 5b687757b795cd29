"""Tests for training.stages.registry: every stage name has a builder, and an unknown name fails
naming the value, the known stages and the closest one."""

from __future__ import annotations

import pytest

from training.config import StageName
from training.stages.registry import STAGE_BUILDERS, stage_builder


def test_every_stage_name_has_exactly_one_builder() -> None:
    assert list(STAGE_BUILDERS) == list(StageName)  # in the order the method uses them


@pytest.mark.parametrize("name", [*StageName, *(str(n) for n in StageName)])
def test_names_and_members_find_the_same_builder(name: StageName | str) -> None:
    assert stage_builder(name) is STAGE_BUILDERS[StageName(name)]


@pytest.mark.parametrize(
    ("name", "hint"),
    [("tcms", "tcsm"), ("pretrain_globl", "pretrain_global"), ("supervized", "supervised")],
)
def test_an_unknown_stage_names_the_value_the_choices_and_the_closest(name: str, hint: str) -> None:
    listed = ", ".join(f"'{n}'" for n in StageName)
    with pytest.raises(ValueError) as err:
        stage_builder(name)
    assert str(err.value) == (
        f"Stage name must be one of {listed}, got '{name}'. Did you mean '{hint}'?"
    )


def test_a_name_like_nothing_gets_no_hint_and_a_non_string_a_type_error() -> None:
    with pytest.raises(ValueError, match=r"got 'xyz'\.$"):
        stage_builder("xyz")
    with pytest.raises(TypeError, match="must be a StageName or str, got int"):
        stage_builder(3)  # type: ignore[arg-type]
