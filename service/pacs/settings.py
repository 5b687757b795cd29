"""Typed settings of the PACS gateway (``pulmoseg pacs``), resolved like the server's.

Same layering, groups and messages as :mod:`service.serving.settings` (defaults < YAML file <
environment ``PULMOSEG_PACS_<FIELD>`` or ``PULMOSEG_PACS_<GROUP>__<FIELD>`` < overrides; the
flat names from before the groups, :data:`FLAT_NAMES`, stay valid), but a model of its own:
the gateway is a separate process with its own ports, and a gRPC server's settings file must
not need gateway keys. The ``log`` and ``metrics`` groups are the server's.
Destinations are written ``AE_TITLE@host:port`` (several separated by commas in the
environment) because that is how PACS administrators exchange them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.core.options import SegmentationType
from service.core.settings_base import AtLeastOne, EnvSettingsModel, Port, Positive
from service.observability.settings import LogSettings, MetricsSettings

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


class SpoolSettings(EnvSettingsModel):
    """Where received studies wait until their SEG is delivered (or given up)."""

    key_prefix: ClassVar[str] = "spool."

    dir: Path = Path("pulmoseg-spool")
    #: Studies that fail for good (invalid study, destination down after the last retry) end
    #: here with a reason file; default ``<dir>/../<dir name>-dead-letter``.
    dead_letter_dir: Path | None = None
    #: The spool refuses instances (status Out of Resources) beyond this many bytes.
    max_bytes: AtLeastOne = 20 * GIB
    #: Work older than this is moved to the dead-letter folder instead of being retried forever.
    max_age_s: Positive = 7 * DAY_S

    @property
    def dead_letter_path(self) -> Path:
        if self.dead_letter_dir is not None:
            return self.dead_letter_dir
        return self.dir.parent / f"{self.dir.name}-dead-letter"


class GrpcSettings(EnvSettingsModel):
    """How the gateway reaches the pulmoseg server."""

    key_prefix: ClassVar[str] = "grpc."

    target: str = "127.0.0.1:50051"
    token: str | None = None
    tls_ca: Path | None = None
    timeout_s: Positive = 600.0


class RetrySettings(EnvSettingsModel):
    """Retries of a destination (and of the gRPC server) before the dead-letter folder."""

    key_prefix: ClassVar[str] = "retry."

    max_attempts: AtLeastOne = 8
    #: First retry delay; each further retry doubles it, up to ``max_delay_s``.
    initial_delay_s: Positive = 5.0
    max_delay_s: Positive = 600.0

    @model_validator(mode="after")
    def _check(self) -> RetrySettings:
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError(
                f"Setting 'retry.max_delay_s' ({self.max_delay_s}) must be >= "
                f"'retry.initial_delay_s' ({self.initial_delay_s})."
            )
        return self


#: The flat names from before the groups (still accepted in files, environment and overrides)
#: and the value each one names now. docs/configuration.md shows this table.
FLAT_NAMES: dict[str, tuple[str, ...]] = {
    "spool_dir": ("spool", "dir"),
    "dead_letter_dir": ("spool", "dead_letter_dir"),
    "spool_max_bytes": ("spool", "max_bytes"),
    "spool_max_age_s": ("spool", "max_age_s"),
    "grpc_target": ("grpc", "target"),
    "grpc_token": ("grpc", "token"),
    "grpc_tls_ca": ("grpc", "tls_ca"),
    "grpc_timeout_s": ("grpc", "timeout_s"),
    "max_attempts": ("retry", "max_attempts"),
    "retry_initial_delay_s": ("retry", "initial_delay_s"),
    "retry_max_delay_s": ("retry", "max_delay_s"),
    "metrics_enabled": ("metrics", "enabled"),
    "metrics_host": ("metrics", "host"),
    "metrics_port": ("metrics", "port"),
    "log_level": ("log", "level"),
    "log_format": ("log", "format"),
}


class PacsSettings(EnvSettingsModel):
    """Resolved settings of one gateway process (read-only; see :meth:`with_overrides`).

    ``host`` defaults to loopback, as the server's does, so a developer's listener is not
    reachable from the network by accident; deployments set ``PULMOSEG_PACS_HOST=0.0.0.0``.
    An empty allow-list accepts every peer (a warning says so at start-up).
    """

    flat_names: ClassVar[Mapping[str, tuple[str, ...]]] = FLAT_NAMES

    ae_title: str = "PULMOSEG"
    host: str = "127.0.0.1"
    port: Port = 11112
    #: Calling AE titles allowed to associate; empty: any.
    allowed_calling_aets: tuple[str, ...] = ()
    #: Peer IP addresses allowed to associate; empty: any.
    allowed_hosts: tuple[str, ...] = ()
    #: A study is complete when no instance of it arrived for this many seconds.
    study_timeout_s: Positive = 30.0
    #: A study whose CT series was already segmented and delivered is skipped, unless this is set.
    resegment_duplicates: bool = False
    #: How long a delivered study is remembered for duplicate detection.
    dedup_window_s: Positive = 7 * DAY_S
    segmentation_type: SegmentationType = SegmentationType.BINARY
    #: C-STORE destinations of the SEG, ``AE_TITLE@host:port``.
    destinations: tuple[DicomDestination, ...] = ()
    #: DICOMweb base URL for STOW-RS (e.g. ``http://pacs:8042/dicom-web``); optional.
    stow_url: str | None = None
    #: Seconds to wait for a peer's network answers (association, C-STORE, STOW-RS).
    network_timeout_s: Positive = 30.0
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings(port=9091))
    log: LogSettings = Field(default_factory=LogSettings)

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

    @field_validator("stow_url")
    @classmethod
    def _stow_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/]+", value):
            raise ValueError(
                f"Setting 'stow_url' must be an http(s) URL such as "
                f"http://pacs:8042/dicom-web, got {value!r}."
            )
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _check(self) -> PacsSettings:
        if not self.destinations and not self.stow_url:
            raise ValueError(
                "Setting 'destinations' (AE_TITLE@host:port, ...) or 'stow_url' must name at "
                "least one place to send the SEG to."
            )
        return self

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
    if out["grpc"]["token"]:
        out["grpc"]["token"] = "***"
    return out
