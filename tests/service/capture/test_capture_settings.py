"""The capture settings: off by default, read from the environment, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.capture import CaptureSettings, open_capture
from service.serving.settings import load_settings


def test_capture_is_off_by_default():
    settings = load_settings(env={})
    assert settings.capture.dir is None and settings.capture.unlabeled is False
    assert not settings.capture.enabled
    assert open_capture(settings.capture, None) is None


@pytest.mark.parametrize("nested", [False, True])
def test_capture_settings_from_the_environment(nested: bool):
    sep = "__" if nested else "_"
    settings = load_settings(
        env={
            f"PULMOSEG_CAPTURE{sep}DIR": "~/captured",
            f"PULMOSEG_CAPTURE{sep}UNLABELED": "true",
            f"PULMOSEG_CAPTURE{sep}RETENTION_DAYS": "7",
            f"PULMOSEG_CAPTURE{sep}MAX_STUDIES": " 20 ",
            f"PULMOSEG_CAPTURE{sep}PENDING_HOURS": "2.5",
        }
    )
    assert settings.capture == CaptureSettings(
        dir=Path("~/captured").expanduser(),
        unlabeled=True,
        retention_days=7.0,
        max_studies=20,
        pending_hours=2.5,
    )
    assert load_settings(env={"PULMOSEG_CAPTURE_DIR": ""}).capture.dir is None


def test_old_flat_keys_and_the_group_give_the_same_settings(tmp_path: Path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("capture_dir: /data/cap\ncapture_max_studies: 9\n")
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text("capture:\n  dir: /data/cap\n  max_studies: 9\n")
    assert load_settings(flat, env={}) == load_settings(grouped, env={})
    assert load_settings(flat, env={}).capture.max_studies == 9


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("capture_retention_days", 0, r"'capture.retention_days' must be > 0, got 0"),
        ("capture_pending_hours", -1, r"'capture.pending_hours' must be > 0, got -1"),
        ("capture_max_studies", 0, r"'capture.max_studies' must be >= 1, got 0"),
    ],
)
def test_bad_capture_limits_are_refused_naming_the_setting(name, value, message):
    with pytest.raises(ValueError, match=message):
        load_settings(env={}, **{name: value})


def test_the_capture_group_alone_names_its_dotted_keys():
    with pytest.raises(ValueError, match=r"Setting 'capture.max_studies' must be >= 1, got 0\."):
        CaptureSettings(max_studies=0)
    with pytest.raises(ValueError, match=r"Unknown setting 'capture.dri'.*'capture.dir'"):
        CaptureSettings(dri="/x")  # type: ignore[call-arg]
