"""Settings of ``pulmoseg pacs``: the same layering and one-sentence errors as the server's."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.main import main
from service.pacs.settings import DicomDestination, load_pacs_settings, redacted

DEST = {"destinations": ["ORTHANC@127.0.0.1:4242"]}


def test_environment_lists_are_comma_separated() -> None:
    settings = load_pacs_settings(
        env={
            "PULMOSEG_PACS_DESTINATIONS": "ORTHANC@pacs.local:4242, ARCHIVE@[::1]:104",
            "PULMOSEG_PACS_ALLOWED_CALLING_AETS": "CT_SCANNER, ORTHANC",
            "PULMOSEG_PACS_STOW_URL": "http://pacs.local:8042/dicom-web/",
        }
    )
    assert settings.destinations == (
        DicomDestination(ae_title="ORTHANC", host="pacs.local", port=4242),
        DicomDestination(ae_title="ARCHIVE", host="::1", port=104),
    )
    assert settings.allowed_calling_aets == ("CT_SCANNER", "ORTHANC")
    assert settings.destination_names == [
        "ORTHANC@pacs.local:4242",
        "ARCHIVE@::1:104",
        "http://pacs.local:8042/dicom-web",
    ]


def test_yaml_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "pacs.yaml"
    path.write_text("port: 11113\nstudy_timeout_s: 5\ndestinations: [A@h:1]\n")
    settings = load_pacs_settings(path, env={"PULMOSEG_PACS_PORT": "11114"}, study_timeout_s=7)
    assert (settings.port, settings.study_timeout_s) == (11114, 7.0)
    assert settings.spool.dead_letter_path == Path("pulmoseg-spool-dead-letter")


def test_groups_from_yaml_old_flat_names_and_both_env_spellings(tmp_path: Path) -> None:
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text(
        "destinations: [A@h:1]\nspool:\n  dir: /s\ngrpc:\n  target: gpu:50051\n"
        "retry:\n  max_attempts: 3\nmetrics:\n  port: 9100\n"
    )
    flat = tmp_path / "flat.yaml"
    flat.write_text(
        "destinations: [A@h:1]\nspool_dir: /s\ngrpc_target: gpu:50051\nmax_attempts: 3\n"
        "metrics_port: 9100\n"
    )
    settings = load_pacs_settings(grouped, env={})
    assert settings == load_pacs_settings(flat, env={})
    assert (settings.spool.dir, settings.grpc.target) == (Path("/s"), "gpu:50051")
    assert (settings.retry.max_attempts, settings.metrics.port) == (3, 9100)
    assert settings.spool.dead_letter_path == Path("/s-dead-letter")
    env = {"PULMOSEG_PACS_GRPC_TOKEN": "t", "PULMOSEG_PACS_RETRY__MAX_DELAY_S": "60"}
    settings = load_pacs_settings(env=env, **DEST)
    assert (settings.grpc.token, settings.retry.max_delay_s) == ("t", 60.0)
    assert redacted(settings)["grpc"]["token"] == "***"
    assert load_pacs_settings(env={}, **DEST).metrics.port == 9091  # not the server's 9090


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"destinations": ["pacs:4242"]}, ValueError, "must look like AE_TITLE@host:port"),
        ({"destinations": ["A@h:70000"]}, ValueError, "has port 70000; use 1..65535"),
        ({"ae_title": "A" * 17}, ValueError, "Setting 'ae_title' must be an AE title of 1 to 16"),
        ({"allowed_calling_aets": ["OK", "BAD\\AE"]}, ValueError, "allowed_calling_aets"),
        ({"destinations": []}, ValueError, "must name at least one place to send the SEG"),
        ({"stow_url": "pacs:8042"}, ValueError, "Setting 'stow_url' must be an http"),
        ({"study_timeout_s": 0}, ValueError, "Setting 'study_timeout_s' must be > 0, got 0"),
        ({"spool_max_bytes": 0}, ValueError, "Setting 'spool.max_bytes' must be >= 1"),
        ({"segmentation_type": "binray"}, ValueError, "Did you mean 'BINARY'"),
        ({"spool_dri": "/x"}, ValueError, "Unknown setting 'spool_dri'.*Did you mean 'spool.dir'"),
        ({"spool": {"dri": "/x"}}, ValueError, "Unknown setting 'spool.dri'.*'spool.dir'"),
        (
            {"retry": {"initial_delay_s": 10, "max_delay_s": 5}},
            ValueError,
            r"'retry.max_delay_s' \(5.0\) must be >= 'retry.initial_delay_s'",
        ),
        ({"grpc_timeout_s": -1}, ValueError, "Setting 'grpc.timeout_s' must be > 0"),
        ({"log_level": "loud"}, ValueError, "Setting 'log.level' must be one of"),
        ({"port": "eleven"}, TypeError, "Setting 'port' must be an integer"),
    ],
)
def test_bad_values_name_the_setting(changes, error, message) -> None:
    with pytest.raises(error, match=message):
        load_pacs_settings(env={}, **{**DEST, **changes})


def test_the_pacs_command_says_what_is_missing(capsys, monkeypatch) -> None:
    for name in ("PULMOSEG_PACS_DESTINATIONS", "PULMOSEG_PACS_STOW_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["pacs", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pulmoseg pacs: error: Setting 'destinations'")
