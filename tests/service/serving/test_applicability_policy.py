"""The applicability policy setting: default, environment, YAML-free override, CLI flag."""

from __future__ import annotations

import pytest

import service.serving.server as server_module
from service.cli import main as cli
from service.core.options import ApplicabilityPolicy
from service.serving.settings import load_settings


def test_the_default_segments_and_flags() -> None:
    assert load_settings(env={}).applicability_policy is ApplicabilityPolicy.SEGMENT_AND_FLAG


@pytest.mark.parametrize("raw", ["refuse", " REFUSE ", "Refuse"])
def test_policy_from_env(raw: str) -> None:
    settings = load_settings(env={"PULMOSEG_APPLICABILITY_POLICY": raw})
    assert settings.applicability_policy is ApplicabilityPolicy.REFUSE


def test_bad_policy_names_the_setting_the_choices_and_a_hint() -> None:
    with pytest.raises(
        ValueError,
        match=r"'applicability_policy' must be one of 'segment_and_flag', 'refuse', got "
        r"'refuze'\. Did you mean 'refuse'\?",
    ):
        load_settings(env={"PULMOSEG_APPLICABILITY_POLICY": "refuze"})


def test_serve_flag_reaches_the_settings(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(server_module, "serve", lambda settings: seen.append(settings) or 0)
    assert cli.main(["serve", "--applicability-policy", "refuse", "--port", "0"]) == 0
    assert seen[0].applicability_policy is ApplicabilityPolicy.REFUSE


def test_serve_flag_rejects_an_unknown_policy(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--applicability-policy", "ignore"])
    assert "segment_and_flag" in capsys.readouterr().err
