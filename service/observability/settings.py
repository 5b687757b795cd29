"""The ``log`` and ``metrics`` settings groups, shared by the server and the PACS gateway.

Both processes log and export metrics the same way, so they declare these groups once; each
process only picks its own default metrics port.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import field_validator

from service.core.settings_base import EnvSettingsModel, Port, check_choice
from service.observability.logging_config import LOG_LEVELS, LogFormat

__all__ = ["LogSettings", "MetricsSettings"]


class LogSettings(EnvSettingsModel):
    """How the process logs (``PULMOSEG_LOG_LEVEL``, ``PULMOSEG_LOG_FORMAT``)."""

    key_prefix: ClassVar[str] = "log."

    level: str = "INFO"
    #: "text" (human-readable lines) or "json" (one JSON object per line, for log collectors).
    format: LogFormat = LogFormat.TEXT

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return check_choice("Setting 'log.level'", value.strip().upper(), LOG_LEVELS)


class MetricsSettings(EnvSettingsModel):
    """The Prometheus endpoint (``/metrics``); port 0 binds a free port (tests)."""

    key_prefix: ClassVar[str] = "metrics."

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9090
