"""ServiceSettings: precedence, conversion and the error messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.observability.logging_config import LogFormat
from service.serving.settings import MIB, ServiceSettings, load_settings, redacted


def test_defaults_without_file_or_env() -> None:
    settings = load_settings(env={})
    assert settings == ServiceSettings()
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 50051, 9090)
    assert settings.chunk_bytes == MIB
    assert settings.auth_token is None and not settings.tls_enabled
    assert (settings.log_level, settings.log_format) == ("INFO", LogFormat.TEXT)


def test_precedence_overrides_beat_env_beat_yaml(tmp_path: Path) -> None:
    config = tmp_path / "pulmoseg.yaml"
    config.write_text(
        "model_path: /models/from-yaml.onnx\nport: 6000\nmetrics_port: 6001\n"
        "max_concurrent_studies: 3\nrequire_gpu: true\n"
    )
    env = {"PULMOSEG_PORT": "7000", "PULMOSEG_METRICS_PORT": "7001", "OTHER_PORT": "1"}
    settings = load_settings(config, env=env, port=0)
    assert settings.port == 0  # override
    assert settings.metrics_port == 7001  # env beats YAML
    assert settings.max_concurrent_studies == 3  # YAML beats default
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
    assert load_settings(config, env=env, **overrides).log_level == expected


def test_unrelated_pulmoseg_variables_are_ignored() -> None:
    settings = load_settings(env={"PULMOSEG_SERVER": "x:1", "PULMOSEG_PORT": "1234"})
    assert settings.port == 1234


@pytest.mark.parametrize(
    ("raw", "expected"), [("json", LogFormat.JSON), (" JSON ", LogFormat.JSON), ("text", "text")]
)
def test_log_format_from_env(raw: str, expected: str) -> None:
    assert load_settings(env={"PULMOSEG_LOG_FORMAT": raw}).log_format == expected


def test_bad_log_format_names_the_variable_and_suggests() -> None:
    with pytest.raises(
        ValueError,
        match=r"'log_format' must be one of 'text', 'json', got 'jsno'\. Did you mean 'json'\? "
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
        ValueError, match=r"Unknown setting 'max_upload_byte'.*Did you mean 'max_upload_bytes'"
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
    assert "'max_workers' must be an integer, got 'many'" in message


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
        ValueError, match=r"'log_level' must be one of .*'LOUD' \(from settings file"
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
        ({"chunk_bytes": 5 * MIB}, r"'chunk_bytes' must be <= 3145728"),
        ({"max_workers": 2, "max_concurrent_studies": 2}, r"'max_workers' \(2\) must be greater"),
        ({"tls_cert": "c.pem"}, r"'tls_cert' and 'tls_key' must be set together"),
        ({"log_level": "chatty"}, r"'log_level' must be one of"),
        ({"max_upload_bytes": 0}, r"'max_upload_bytes' must be >= 1, got 0"),
    ],
)
def test_invalid_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(env={}, **overrides)


def test_port_zero_allowed_and_log_level_normalised() -> None:
    settings = load_settings(env={"PULMOSEG_LOG_LEVEL": "debug"}, port=0, metrics_port=0)
    assert (settings.port, settings.metrics_port, settings.log_level) == (0, 0, "DEBUG")


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
    assert (changed.port, changed.log_format, settings.log_format) == (1234, "json", "text")
    with pytest.raises(TypeError, match=r"'port' must be an integer, got 'x' \(from keyword"):
        settings.with_overrides(port="x")
    with pytest.raises(ValueError, match=r"Unknown setting 'log_formt'.*Did you mean 'log_format'"):
        settings.with_overrides(log_formt="json")
