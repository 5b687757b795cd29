"""Typed settings of the PACS gateway (``pulmoseg pacs``), resolved like the server's.

Same layering and messages as :mod:`service.serving.settings` (defaults < YAML file < environment
``PULMOSEG_PACS_<FIELD>`` < overrides), but a model of its own: the gateway is a separate
process with its own ports, and a gRPC server's settings file must not need gateway keys.
Destinations are written ``AE_TITLE@host:port`` (several separated by commas in the
environment) because that is how PACS administrators exchange them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from service.core.options import SegmentationType
from service.core.settings_base import SettingsModel, check_choice, is_optional
from service.observability.logging_config import LOG_LEVELS, LogFormat

ENV_PREFIX = "PULMOSEG_PACS_"
GIB = 1024**3
DAY_S = 24 * 3600.0
#: DICOM AE titles: 1..16 characters of the default character repertoire, no backslash.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_DESTINATION = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d+)$")


def check_ae_title(what: str, value: str) -> str:
    """``value`` stripped, if it is a valid AE title; otherwise a ValueError naming ``what``."""
    title = value.strip()
    if not _AE_TITLE.match(title):
        raise ValueError(
            f"{what} must be an AE title of 1 to 16 printable characters without '\\', "
            f"got {value!r}."
        )
    return title


class DicomDestination(BaseModel):
    """A C-STORE SCP that receives the SEG: ``AE_TITLE@host:port``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomDestination:
        match = _DESTINATION.match(text.strip())
        if match is None:
            raise ValueError(
                f"Setting 'destinations' entries must look like AE_TITLE@host:port "
                f"(e.g. ORTHANC@pacs.example.org:4242), got {text!r}."
            )
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise ValueError(
                f"Setting 'destinations' entry {text!r} has port {port}; use 1..65535."
            )
        aet = check_ae_title(f"Setting 'destinations' entry {text!r}", match["aet"])
        return cls(ae_title=aet, host=match["host"].strip("[]"), port=port)

    @property
    def name(self) -> str:
        """How logs, metrics and the spool name this destination."""
        return f"{self.ae_title}@{self.host}:{self.port}"


class PacsSettings(SettingsModel):
    """Resolved settings of one gateway process (read-only; see :meth:`with_overrides`).

    ``host`` defaults to loopback, as the server's does, so a developer's listener is not
    reachable from the network by accident; deployments set ``PULMOSEG_PACS_HOST=0.0.0.0``.
    An empty allow-list accepts every peer (a warning says so at start-up).
    """

    model_config = ConfigDict(frozen=True)

    ae_title: str = "PULMOSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    #: Calling AE titles allowed to associate; empty: any.
    allowed_calling_aets: tuple[str, ...] = ()
    #: Peer IP addresses allowed to associate; empty: any.
    allowed_hosts: tuple[str, ...] = ()
    spool_dir: Path = Path("pulmoseg-spool")
    #: Studies that fail for good (invalid study, destination down after the last retry) end
    #: here with a reason file; default ``<spool_dir>/../<spool_dir name>-dead-letter``.
    dead_letter_dir: Path | None = None
    #: The spool refuses instances (status Out of Resources) beyond this many bytes.
    spool_max_bytes: int = 20 * GIB
    #: Work older than this is moved to the dead-letter folder instead of being retried forever.
    spool_max_age_s: float = 7 * DAY_S
    #: A study is complete when no instance of it arrived for this many seconds.
    study_timeout_s: float = 30.0
    #: A study whose CT series was already segmented and delivered is skipped, unless this is set.
    resegment_duplicates: bool = False
    #: How long a delivered study is remembered for duplicate detection.
    dedup_window_s: float = 7 * DAY_S
    grpc_target: str = "127.0.0.1:50051"
    grpc_token: str | None = None
    grpc_tls_ca: Path | None = None
    grpc_timeout_s: float = 600.0
    segmentation_type: SegmentationType = SegmentationType.BINARY
    #: C-STORE destinations of the SEG, ``AE_TITLE@host:port``.
    destinations: tuple[DicomDestination, ...] = ()
    #: DICOMweb base URL for STOW-RS (e.g. ``http://pacs:8042/dicom-web``); optional.
    stow_url: str | None = None
    #: Attempts per destination (and for reaching the gRPC server) before the dead-letter folder.
    max_attempts: int = 8
    #: First retry delay; each further retry doubles it, up to ``retry_max_delay_s``.
    retry_initial_delay_s: float = 5.0
    retry_max_delay_s: float = 600.0
    #: Seconds to wait for a peer's network answers (association, C-STORE, STOW-RS).
    network_timeout_s: float = 30.0
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9091
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Environment values are text: blank or "none" clears an optional setting; lists are
        comma-separated."""
        if not isinstance(value, str):
            return value
        annotation = cls.model_fields[info.field_name or ""].annotation
        text = value.strip()
        if is_optional(annotation) and text.lower() in ("", "none"):
            return None
        if info.field_name in ("allowed_calling_aets", "allowed_hosts", "destinations"):
            return [part for part in (p.strip() for p in text.split(",")) if part]
        return text if annotation in (bool, int, float) else value

    @field_validator("destinations", mode="before")
    @classmethod
    def _destinations(cls, value: Any) -> Any:
        # Runs before the generic text handling, so it splits environment text itself.
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, list | tuple):
            return [DicomDestination.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title("Setting 'ae_title'", value)

    @field_validator("allowed_calling_aets")
    @classmethod
    def _allowed_aets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_ae_title("Setting 'allowed_calling_aets' entry", v) for v in value)

    @field_validator("spool_dir", "dead_letter_dir", "grpc_tls_ca")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("segmentation_type", mode="before")
    @classmethod
    def _segmentation_type(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return SegmentationType.parse(value, "Setting 'segmentation_type'")

    @field_validator("stow_url")
    @classmethod
    def _stow_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/]+", value):
            raise ValueError(
                f"Setting 'stow_url' must be an http(s) URL such as "
                f"http://pacs:8042/dicom-web, got {value!r}."
            )
        return value.rstrip("/") if value else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return check_choice("Setting 'log_level'", value.strip().upper(), LOG_LEVELS)

    @model_validator(mode="after")
    def _check(self) -> PacsSettings:
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"Setting '{name}' must be a port number 0..65535, got {value}.")
        for name in ("spool_max_bytes", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"Setting '{name}' must be >= 1, got {getattr(self, name)}.")
        for name in (
            "spool_max_age_s",
            "study_timeout_s",
            "dedup_window_s",
            "grpc_timeout_s",
            "retry_initial_delay_s",
            "retry_max_delay_s",
            "network_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"Setting '{name}' must be > 0 seconds, got {getattr(self, name)}."
                )
        if not self.destinations and not self.stow_url:
            raise ValueError(
                "Setting 'destinations' (AE_TITLE@host:port, ...) or 'stow_url' must name at "
                "least one place to send the SEG to."
            )
        if self.retry_max_delay_s < self.retry_initial_delay_s:
            raise ValueError(
                f"Setting 'retry_max_delay_s' ({self.retry_max_delay_s}) must be >= "
                f"'retry_initial_delay_s' ({self.retry_initial_delay_s})."
            )
        return self

    @property
    def dead_letter_path(self) -> Path:
        if self.dead_letter_dir is not None:
            return self.dead_letter_dir
        return self.spool_dir.parent / f"{self.spool_dir.name}-dead-letter"

    @property
    def destination_names(self) -> list[str]:
        """Every place a SEG goes: the C-STORE destinations, then STOW-RS if configured."""
        names = [d.name for d in self.destinations]
        if self.stow_url:
            names.append(self.stow_url)
        return names


def load_pacs_settings(
    yaml_path: str | Path | None = None,
    env: Mapping[str, str] = os.environ,
    **overrides: Any,
) -> PacsSettings:
    """Resolve settings: ``overrides`` > ``env`` (``PULMOSEG_PACS_*``) > YAML > defaults."""
    settings = PacsSettings.resolve(yaml_path, env, ENV_PREFIX, overrides)
    logging.getLogger(__name__).debug("resolved PACS settings: %s", redacted(settings))
    return settings


def redacted(settings: PacsSettings) -> dict[str, Any]:
    """Settings as a dict safe to log (the gRPC token is replaced)."""
    out = settings.model_dump()
    if out["grpc_token"]:
        out["grpc_token"] = "***"
    return out
