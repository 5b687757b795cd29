"""ServiceSettings: precedence, conversion and the error messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.observability.logging_config import LogFormat
from service.serving.settings import FLAT_NAMES, MIB, ServiceSettings, load_settings, redacted


def test_defaults_without_file_or_env() -> None:
    settings = load_settings(env={})
    assert settings == ServiceSettings()
    assert (settings.host, settings.port, settings.metrics.port) == ("127.0.0.1", 50051, 9090)
    assert settings.limits.chunk_bytes == MIB
    assert settings.auth_token is None and not settings.tls.enabled
    assert (settings.log.level, settings.log.format) == ("INFO", LogFormat.TEXT)


def test_precedence_overrides_beat_env_beat_yaml(tmp_path: Path) -> None:
    config = tmp_path / "pulmoseg.yaml"
    config.write_text(
        "model_path: /models/from-yaml.onnx\nport: 6000\nmetrics_port: 6001\n"
        "max_concurrent_studies: 3\nrequire_gpu: true\n"
    )
    env = {"PULMOSEG_PORT": "7000", "PULMOSEG_METRICS_PORT": "7001", "OTHER_PORT": "1"}
    settings = load_settings(config, env=env, port=0)
    assert settings.port == 0  # override
    assert settings.metrics.port == 7001  # env beats YAML
    assert settings.limits.max_concurrent_studies == 3  # YAML beats default
    assert settings.require_gpu is True
    assert settings.model_path == Path("/models/from-yaml.onnx")


@pytest.mark.parametrize(
    ("in_yaml", "in_env", "override", "expected"),
    [
        (False, False, False, "INFO"),
        (True, False, False, "ERROR"),
        (True, True, False, "WARNING"),
        (True, True, True, "DEBUG"),
        (False, True, False, "WARNING"),
        (False, False, True, "DEBUG"),
    ],
)
def test_each_layer_beats_the_one_below(
    tmp_path: Path, in_yaml: bool, in_env: bool, override: bool, expected: str
) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("log_level: error\n" if in_yaml else "")
    env = {"PULMOSEG_LOG_LEVEL": "warning"} if in_env else {}
    overrides = {"log_level": "debug"} if override else {}
    assert load_settings(config, env=env, **overrides).log.level == expected


def test_unrelated_pulmoseg_variables_are_ignored() -> None:
    settings = load_settings(env={"PULMOSEG_SERVER": "x:1", "PULMOSEG_PORT": "1234"})
    assert settings.port == 1234


@pytest.mark.parametrize(
    ("raw", "expected"), [("json", LogFormat.JSON), (" JSON ", LogFormat.JSON), ("text", "text")]
)
def test_log_format_from_env(raw: str, expected: str) -> None:
    assert load_settings(env={"PULMOSEG_LOG_FORMAT": raw}).log.format == expected


def test_bad_log_format_names_the_variable_and_suggests() -> None:
    with pytest.raises(
        ValueError,
        match=r"'log.format' must be one of 'text', 'json', got 'jsno'\. Did you mean 'json'\? "
        r"\(from environment variable PULMOSEG_LOG_FORMAT\)",
    ):
        load_settings(env={"PULMOSEG_LOG_FORMAT": "jsno"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), ("off", False), ("0", False)],
)
def test_booleans_from_env(raw: str, expected: bool) -> None:
    assert load_settings(env={"PULMOSEG_REQUIRE_GPU": raw}).require_gpu is expected


def test_empty_env_value_clears_optional_setting() -> None:
    settings = load_settings(env={"PULMOSEG_AUTH_TOKEN": ""}, model_path="m.onnx")
    assert settings.auth_token is None
    assert settings.model_path == Path("m.onnx")


def test_unknown_yaml_key_gets_did_you_mean_hint(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("max_upload_byte: 10\n")
    with pytest.raises(
        ValueError,
        match=r"Unknown setting 'max_upload_byte'.*Did you mean 'limits.max_upload_bytes'",
    ):
        load_settings(config, env={})


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"Unknown setting 'prot'.*Did you mean 'port'"):
        load_settings(env={}, prot=1)


def test_env_numbers_and_booleans_may_carry_spaces() -> None:
    settings = load_settings(env={"PULMOSEG_PORT": " 6000 ", "PULMOSEG_REQUIRE_GPU": " on "})
    assert (settings.port, settings.require_gpu) == (6000, True)


def test_errors_are_one_line_not_pydantic_reports() -> None:
    with pytest.raises(TypeError) as caught:
        load_settings(env={}, port="fifty", max_workers="many")
    message = str(caught.value)
    assert "\n" not in message and "pydantic" not in message
    assert "'port' must be an integer, got 'fifty'" in message
    assert "'limits.max_workers' must be an integer, got 'many'" in message


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(TypeError, match=r"'port' must be an integer, got True \(from keyword"):
        load_settings(env={}, port=True)


def test_type_error_names_key_value_and_source() -> None:
    with pytest.raises(TypeError, match=r"'port' must be an integer, got 'fifty'.*PULMOSEG_PORT"):
        load_settings(env={"PULMOSEG_PORT": "fifty"})
    with pytest.raises(TypeError, match=r"'require_gpu' must be a boolean.*'maybe'"):
        load_settings(env={"PULMOSEG_REQUIRE_GPU": "maybe"})


def test_yaml_type_error_names_file(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("port: [1, 2]\n")
    with pytest.raises(TypeError, match=r"'port' must be an integer, got \[1, 2\].*s.yaml"):
        load_settings(config, env={})


def test_yaml_value_error_names_file(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("log_level: loud\n")
    with pytest.raises(
        ValueError, match=r"'log.level' must be one of .*'LOUD' \(from settings file"
    ):
        load_settings(config, env={})


def test_invalid_yaml_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("port: [1, 2\n")
    with pytest.raises(ValueError, match=r"Settings file '.*s\.yaml' is not valid YAML"):
        load_settings(config, env={})


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("# nothing set\n")
    assert load_settings(config, env={}) == load_settings(env={})


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("- port\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_settings(config, env={})


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, r"'port' must be a port number 0..65535, got 70000"),
        ({"chunk_bytes": 5 * MIB}, r"'limits.chunk_bytes' must be <= 3145728"),
        (
            {"max_workers": 2, "max_concurrent_studies": 2},
            r"'limits.max_workers' \(2\) must be greater",
        ),
        ({"tls_cert": "c.pem"}, r"'tls.cert' and 'tls.key' must be set together"),
        ({"tls": {"client_ca": "ca.pem"}}, r"'tls.client_ca' \(mTLS\) needs 'tls.cert'"),
        ({"log_level": "chatty"}, r"'log.level' must be one of"),
        ({"max_upload_bytes": 0}, r"'limits.max_upload_bytes' must be >= 1, got 0"),
        ({"limits": {"queue_length": -1}}, r"'limits.queue_length' must be >= 0, got -1"),
        ({"grace_period_s": -1}, r"'grace_period_s' must be >= 0, got -1"),
    ],
)
def test_invalid_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(env={}, **overrides)


def test_port_zero_allowed_and_log_level_normalised() -> None:
    settings = load_settings(env={"PULMOSEG_LOG_LEVEL": "debug"}, port=0, metrics_port=0)
    assert (settings.port, settings.metrics.port, settings.log.level) == (0, 0, "DEBUG")


def test_direct_construction_converts_and_checks() -> None:
    assert ServiceSettings(model_path="a/b.onnx").model_path == Path("a/b.onnx")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'port' must be an integer, got 'one'"):
        ServiceSettings(port="one")  # type: ignore[arg-type]


def test_direct_construction_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown setting 'prot'\. Did you mean 'port'\?"):
        ServiceSettings(prot=1)  # type: ignore[call-arg]


def test_settings_are_frozen_and_token_redacted() -> None:
    settings = load_settings(env={}, auth_token="s3cret")
    with pytest.raises(AttributeError, match="read-only; use with_overrides"):
        settings.port = 1  # type: ignore[misc]
    assert redacted(settings)["auth_token"] == "***"
    assert settings.with_overrides(port="0").port == 0


def test_with_overrides_checks_like_load_settings() -> None:
    settings = load_settings(env={}, port=1234)
    changed = settings.with_overrides(log_format="json")
    assert (changed.port, changed.log.format, settings.log.format) == (1234, "json", "text")
    with pytest.raises(TypeError, match=r"'port' must be an integer, got 'x' \(from keyword"):
        settings.with_overrides(port="x")
    with pytest.raises(ValueError, match=r"Unknown setting 'log_formt'.*Did you mean 'log.format'"):
        settings.with_overrides(log_formt="json")
    assert settings.with_overrides(log={"format": "json"}) == changed


# --- the groups, the old flat names and their table ------------------------------------------


def test_nested_yaml_and_both_env_spellings(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("limits:\n  max_workers: 12\nquality:\n  score:\n    threshold: 0.3\n")
    env = {"PULMOSEG_TLS__CERT": "c.pem", "PULMOSEG_TLS_KEY": "k.pem"}
    settings = load_settings(config, env=env)
    assert settings.limits.max_workers == 12 and settings.quality.score.threshold == 0.3
    assert (settings.tls.cert, settings.tls.key) == (Path("c.pem"), Path("k.pem"))
    assert settings.tls.enabled


def test_the_nested_spelling_beats_the_flat_one_in_the_environment() -> None:
    env = {"PULMOSEG_METRICS_PORT": "7001", "PULMOSEG_METRICS__PORT": "7002"}
    assert load_settings(env=env).metrics.port == 7002


def test_errors_name_the_dotted_key_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"Setting 'capture.max_studies' must be >= 1, got 0 "
        r"\(from environment variable PULMOSEG_CAPTURE__MAX_STUDIES\)",
    ):
        load_settings(env={"PULMOSEG_CAPTURE__MAX_STUDIES": "0"})
    config = tmp_path / "s.yaml"
    config.write_text("training:\n  max_queued: many\n")
    with pytest.raises(TypeError, match=r"'training.max_queued' must be an integer.*settings file"):
        load_settings(config, env={})


def test_unknown_key_inside_a_group_gets_a_hint() -> None:
    with pytest.raises(
        ValueError,
        match=r"Unknown setting 'quality.consistency_fractoin'.*"
        r"Did you mean 'quality.consistency_fraction'\?.*Known settings of 'quality'",
    ):
        load_settings(env={}, quality={"consistency_fractoin": 0.5})


def test_old_and_new_name_of_one_setting_together_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'max_workers' is the old name of 'limits.max_workers'"):
        load_settings(env={}, max_workers=9, limits={"max_workers": 10})


#: The 39 fields of ServiceSettings before the groups.
BEFORE_THE_GROUPS = {
    *("model_path", "host", "port", "metrics_enabled", "metrics_host", "metrics_port"),
    *("require_gpu", "max_workers", "max_concurrent_studies", "queue_length"),
    *("queue_max_wait_s", "max_upload_bytes", "chunk_bytes", "auth_token", "tls_cert"),
    *("tls_key", "tls_client_ca", "grace_period_s", "model_poll_s", "log_level", "log_format"),
    *("quality_db_path", "quality_db_url", "consistency_fraction", "consistency_flag_threshold"),
    *("quality_score_enabled", "quality_score_threshold", "severity_lesion_floor_ml"),
    *("write_summary_sr", "applicability_policy", "capture_dir", "capture_unlabeled"),
    *("capture_retention_days", "capture_max_studies", "capture_pending_hours"),
    *("training_enabled", "training_dir", "training_max_queued", "training_max_running"),
}


def test_every_old_flat_name_reaches_its_group_from_yaml_env_and_overrides(tmp_path: Path) -> None:
    from service.core.settings_base import leaf_paths

    paths = set(leaf_paths(ServiceSettings))
    # Every setting from before the groups is still a top-level field or an old flat name.
    assert set(FLAT_NAMES) | {p[0] for p in paths if len(p) == 1} >= BEFORE_THE_GROUPS
    for old, path in FLAT_NAMES.items():
        assert path in paths, f"{old} names {path}, which is not a setting"
        assert old not in ServiceSettings.model_fields
    value = {"quality_db_path": "/r/q.db"}
    config = tmp_path / "s.yaml"
    config.write_text("quality_db_path: /r/q.db\n")
    expected = Path("/r/q.db")
    assert load_settings(env={}, **value).records.db_path == expected
    assert load_settings(config, env={}).records.db_path == expected
    assert load_settings(env={"PULMOSEG_QUALITY_DB_PATH": "/r/q.db"}).records.db_path == expected
    assert ServiceSettings(quality_db_path="/r/q.db").records.db_path == expected  # type: ignore[call-arg]


def test_every_setting_has_an_old_or_a_nested_environment_name() -> None:
    from service.core.settings_base import env_names

    names = env_names(ServiceSettings, "PULMOSEG_")
    assert names[("capture", "dir")] == ["PULMOSEG_CAPTURE_DIR", "PULMOSEG_CAPTURE__DIR"]
    assert names[("limits", "max_workers")] == [
        "PULMOSEG_MAX_WORKERS",
        "PULMOSEG_LIMITS__MAX_WORKERS",
    ]
    assert names[("port",)] == ["PULMOSEG_PORT"]
    spelled = [name for variables in names.values() for name in variables]
    assert len(spelled) == len(set(spelled)), "two settings must not share a variable"


def test_the_docs_list_every_old_name_with_its_new_name() -> None:
    from service.pacs.settings import FLAT_NAMES as PACS_FLAT_NAMES

    docs = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    rows = {
        (cells[1].strip(" `"), cells[2].strip(" `"))
        for line in docs.splitlines()
        if line.startswith("| `") and len(cells := line.split("|")) >= 4
    }
    for table in (FLAT_NAMES, PACS_FLAT_NAMES):
        for old, path in table.items():
            assert (old, ".".join(path)) in rows, f"docs/configuration.md misses {old}"
