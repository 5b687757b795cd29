"""The capture settings: off by default, read from the environment, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.capture import CaptureConfig
from service.serving.settings import load_settings


def test_capture_is_off_by_default():
    settings = load_settings(env={})
    assert settings.capture_dir is None and settings.capture_unlabeled is False
    assert CaptureConfig.from_settings(settings) is None


def test_capture_settings_from_the_environment():
    settings = load_settings(
        env={
            "PULMOSEG_CAPTURE_DIR": "~/captured",
            "PULMOSEG_CAPTURE_UNLABELED": "true",
            "PULMOSEG_CAPTURE_RETENTION_DAYS": "7",
            "PULMOSEG_CAPTURE_MAX_STUDIES": " 20 ",
            "PULMOSEG_CAPTURE_PENDING_HOURS": "2.5",
        }
    )
    assert CaptureConfig.from_settings(settings) == CaptureConfig(
        root=Path("~/captured").expanduser(),
        unlabeled=True,
        retention_days=7.0,
        max_studies=20,
        pending_hours=2.5,
    )
    assert load_settings(env={"PULMOSEG_CAPTURE_DIR": ""}).capture_dir is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("capture_retention_days", 0, r"'capture_retention_days' must be > 0, got 0"),
        ("capture_pending_hours", -1, r"'capture_pending_hours' must be > 0, got -1"),
        ("capture_max_studies", 0, r"'capture_max_studies' must be >= 1, got 0"),
    ],
)
def test_bad_capture_limits_are_refused_naming_the_setting(name, value, message):
    with pytest.raises(ValueError, match=message):
        load_settings(env={}, **{name: value})
