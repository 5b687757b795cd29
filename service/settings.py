"""Typed settings of the gRPC service, from defaults, a YAML file, the environment and overrides.

One place for configuration (12-factor): every field of :class:`ServiceSettings` can be set in a
YAML file (flat keys named like the fields), as an environment variable ``PULMOSEG_<FIELD>``
(e.g. ``PULMOSEG_PORT=50052``) or as a keyword override; overrides beat the environment, which
beats the file, which beats the defaults. Values are converted and checked once, here, so the
rest of the service can trust them.
"""

from __future__ import annotations

import difflib
import logging
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "PULMOSEG_"
MIB = 1024 * 1024
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


@dataclass(frozen=True)
class ServiceSettings:
    """Resolved settings of one server process.

    ``host`` defaults to loopback so a developer's server is not exposed by accident; containers
    set ``PULMOSEG_HOST=0.0.0.0``. Port 0 binds a free port (tests); the bound port is reported
    by the running server.
    """

    model_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9090
    require_gpu: bool = False
    #: gRPC worker threads; must exceed max_concurrent_studies so health checks, model info and
    #: "busy" answers still get a thread while every study slot is taken.
    max_workers: int = 8
    max_concurrent_studies: int = 2
    max_upload_bytes: int = 2048 * MIB
    #: Payload size of SEG chunks sent back (and the client's default upload chunk size).
    chunk_bytes: int = MIB
    #: When set, SegmentStudy/GetModelInfo need metadata ``authorization: Bearer <token>``.
    auth_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: When set (with cert and key), clients must present a certificate signed by this CA (mTLS).
    tls_client_ca: Path | None = None
    #: Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    grace_period_s: float = 10.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # Direct construction (e.g. ServiceSettings(model_path="m.onnx")) gets the same
        # conversion and type errors as values from a file or the environment.
        for f in fields(self):
            object.__setattr__(self, f.name, _convert(f.name, getattr(self, f.name), "arguments"))
        _check_port("port", self.port)
        _check_port("metrics_port", self.metrics_port)
        for name in ("max_workers", "max_concurrent_studies", "max_upload_bytes", "chunk_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Setting '{name}' must be >= 1, got {getattr(self, name)}.")
        if self.max_workers <= self.max_concurrent_studies:
            raise ValueError(
                f"Setting 'max_workers' ({self.max_workers}) must be greater than "
                f"'max_concurrent_studies' ({self.max_concurrent_studies}) so health checks and "
                "busy answers still get a thread."
            )
        if self.chunk_bytes > 3 * MIB:
            raise ValueError(
                f"Setting 'chunk_bytes' must be <= {3 * MIB} (3 MiB) to stay under gRPC's default "
                f"4 MiB message limit, got {self.chunk_bytes}."
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                "Settings 'tls_cert' and 'tls_key' must be set together, got "
                f"tls_cert={self.tls_cert!r}, tls_key={self.tls_key!r}."
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("Setting 'tls_client_ca' (mTLS) needs 'tls_cert' and 'tls_key' too.")
        if self.log_level not in _LOG_LEVELS:
            raise ValueError(
                f"Setting 'log_level' must be one of {', '.join(_LOG_LEVELS)}, "
                f"got {self.log_level!r}."
            )
        if self.grace_period_s < 0:
            raise ValueError(f"Setting 'grace_period_s' must be >= 0, got {self.grace_period_s}.")

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    def with_overrides(self, **overrides: Any) -> ServiceSettings:
        """A copy with some fields replaced (values converted and checked like any other)."""
        return replace(self, **_convert_all(overrides, source="override"))


def _check_port(name: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"Setting '{name}' must be a port number 0..65535, got {value}.")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(ServiceSettings)


def field_names() -> list[str]:
    return [f.name for f in fields(ServiceSettings)]


def _convert(name: str, value: Any, source: str) -> Any:
    """Convert one raw value (str from env, YAML scalar, Python override) to the field's type."""
    hint = _field_types()[name]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    where = f" (from {source})"
    if value is None or (
        optional and isinstance(value, str) and value.strip().lower() in ("", "none")
    ):
        if optional:
            return None
        raise TypeError(f"Setting '{name}' must not be empty{where}.")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise TypeError(f"Setting '{name}' must be a boolean (true/false), got {value!r}{where}.")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise TypeError(f"Setting '{name}' must be an integer, got {value!r}{where}.")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise TypeError(f"Setting '{name}' must be a number, got {value!r}{where}.")
    if base is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value).expanduser()
        raise TypeError(f"Setting '{name}' must be a file path, got {value!r}{where}.")
    if base is str:
        if isinstance(value, str):
            return value.strip().upper() if name == "log_level" else value
        raise TypeError(f"Setting '{name}' must be a string, got {value!r}{where}.")
    raise TypeError(f"Setting '{name}' has an unsupported type {hint!r}.")  # pragma: no cover


def _unknown_key_error(key: str, source: str) -> ValueError:
    hint = difflib.get_close_matches(key, field_names(), n=1)
    suggestion = f" Did you mean '{hint[0]}'?" if hint else ""
    return ValueError(
        f"Unknown setting '{key}' in {source}.{suggestion} "
        f"Known settings: {', '.join(field_names())}."
    )


def _convert_all(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    known = set(field_names())
    out = {}
    for key, value in raw.items():
        if key not in known:
            raise _unknown_key_error(key, source)
        out[key] = _convert(key, value, source)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"Settings file '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"Settings file '{path}' is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"Settings file '{path}' must hold a mapping of setting names to values, "
            f"got {type(data).__name__}."
        )
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Fields set as PULMOSEG_<FIELD>; other PULMOSEG_* variables belong to other components."""
    out = {}
    for name in field_names():
        key = ENV_PREFIX + name.upper()
        if key in env:
            out[name] = _convert(name, env[key], f"environment variable {key}")
    return out


def load_settings(
    yaml_path: str | Path | None = None,
    env: Mapping[str, str] = os.environ,
    **overrides: Any,
) -> ServiceSettings:
    """Resolve settings: ``overrides`` > ``env`` (``PULMOSEG_*`` variables) > YAML > defaults.

    Unknown YAML keys or overrides raise ValueError with a "did you mean" hint; values of the
    wrong type raise TypeError naming the key, the value and where it came from.
    """
    values: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        values.update(_convert_all(_read_yaml(path), source=f"settings file '{path}'"))
    values.update(_from_env(env))
    values.update(_convert_all(overrides, source="keyword overrides"))
    settings = ServiceSettings(**values)
    logging.getLogger(__name__).debug("resolved settings: %s", redacted(settings))
    return settings


def redacted(settings: ServiceSettings) -> dict[str, Any]:
    """Settings as a dict safe to log (the auth token is replaced)."""
    out = {f.name: getattr(settings, f.name) for f in fields(settings)}
    if out["auth_token"]:
        out["auth_token"] = "***"
    return out
