"""Typed settings of the gRPC service, from defaults, a YAML file, the environment and overrides.

One place for configuration (12-factor): every field of :class:`ServiceSettings` can be set in a
YAML file (flat keys named like the fields), as an environment variable ``PULMOSEG_<FIELD>``
(e.g. ``PULMOSEG_PORT=50052``) or as a keyword override; overrides beat the environment, which
beats the file, which beats the defaults. Values are converted and checked once, here (with the
shared machinery of :mod:`service.core.settings_base`), so the rest of the service can trust
them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationInfo, field_validator, model_validator

from service.core.options import ApplicabilityPolicy
from service.core.settings_base import (
    SettingsModel,
    check_choice,
    is_optional,
)
from service.observability.logging_config import LOG_LEVELS, LogFormat

ENV_PREFIX = "PULMOSEG_"
MIB = 1024 * 1024
_PATH_FIELDS = (
    "model_path",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "quality_db_path",
    "capture_dir",
    "training_dir",
)


class ServiceSettings(SettingsModel):
    """Resolved settings of one server process (read-only; see :meth:`with_overrides`).

    ``host`` defaults to loopback so a developer's server is not exposed by accident; containers
    set ``PULMOSEG_HOST=0.0.0.0``. Port 0 binds a free port (tests); the bound port is reported
    by the running server.
    """

    model_config = ConfigDict(frozen=True)

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
    #: Studies that wait (FIFO) for a free study slot before RESOURCE_EXHAUSTED; 0 = no queue.
    #: Each waiting study holds a gRPC thread (the server adds them to max_workers), not its bytes.
    queue_length: int = 16
    #: Longest a study waits in the queue before it is refused with RESOURCE_EXHAUSTED.
    queue_max_wait_s: float = 600.0
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
    #: Seconds between looks at the model folder for a newer version (0: only on SIGHUP or a
    #: promotion). Replicas sharing a model volume set it so a promoted version reaches them.
    model_poll_s: float = 0.0
    log_level: str = "INFO"
    #: "text" (human-readable lines) or "json" (one JSON object per line, for log collectors).
    log_format: LogFormat = LogFormat.TEXT
    #: SQLite file of the per-study quality records; unset (and no URL) keeps them in memory.
    quality_db_path: Path | None = None
    #: Any SQLAlchemy database URL (e.g. PostgreSQL shared by several replicas); beats the path.
    quality_db_url: str | None = None
    #: Share of studies that get the label-free consistency check (a second inference).
    #: Unset: every study on a GPU provider, none on the CPU.
    consistency_fraction: float | None = None
    #: A study whose consistency VolDice of any class falls below this is flagged for review.
    consistency_flag_threshold: float = 0.8
    #: The label-free quality score (service.quality.quality_score) on every study.
    quality_score_enabled: bool = True
    #: A study scoring under this is flagged for review; unset: the threshold fitted by
    #: bench/quality_score_eval.py for the coefficient set used.
    quality_score_threshold: float | None = None
    #: Lesion volume (mL) at or under which a study is graded CT-0.
    severity_lesion_floor_ml: float = 1.0
    #: Send a DICOM SR (TID 1500) with the clinical summary beside the SEG.
    write_summary_sr: bool = True
    #: A study outside the model's declared range (service.quality.applicability) is segmented
    #: and flagged ("segment_and_flag") or refused with FAILED_PRECONDITION ("refuse").
    applicability_policy: ApplicabilityPolicy = ApplicabilityPolicy.SEGMENT_AND_FLAG
    #: Opt-in capture of served studies as training data (service.capture). Unset (the
    #: default): nothing is ever kept. Set: a study whose reference SEG is submitted becomes a
    #: labeled, de-identified case in this folder (a dataset with manifest.json).
    capture_dir: Path | None = None
    #: With capture_dir: also keep every segmented study as an unlabeled case.
    capture_unlabeled: bool = False
    #: Captured cases older than this many days are deleted (checked on every capture).
    capture_retention_days: float = 30.0
    #: At most this many captured cases are kept; beyond it the oldest are deleted.
    capture_max_studies: int = 500
    #: Without capture_unlabeled, a segmented study's volume waits this long (outside the
    #: dataset, in capture_dir/pending) for its reference, then is deleted.
    capture_pending_hours: float = 24.0
    #: Training jobs through the API (TrainingService, service.training_jobs). Off by default:
    #: a serving replica does not train unless asked to (and needs pulmoseg[train] to).
    training_enabled: bool = False
    #: Jobs' work folders (<dir>/jobs/<id>) and the model registry (<dir>/registry/<name>/<v>).
    training_dir: Path = Path("runs/training")
    #: Submissions beyond this many queued jobs are refused (RESOURCE_EXHAUSTED).
    training_max_queued: int = 4
    #: Jobs that train at the same time (each is its own process).
    training_max_running: int = 1

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Environment values are text: blank or "none" clears an optional setting, and
        numbers and booleans may carry stray spaces."""
        if not isinstance(value, str):
            return value
        annotation = cls.model_fields[info.field_name or ""].annotation
        text = value.strip()
        if is_optional(annotation) and text.lower() in ("", "none"):
            return None
        return text if annotation in (bool, int, float) else value

    @field_validator(*_PATH_FIELDS)
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return check_choice("Setting 'log_level'", value.strip().upper(), LOG_LEVELS)

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return check_choice("Setting 'log_format'", value.strip().lower(), list(LogFormat))

    @field_validator("applicability_policy", mode="before")
    @classmethod
    def _applicability_policy(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return ApplicabilityPolicy.parse(value, "Setting 'applicability_policy'")

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
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
        if self.queue_length < 0:
            raise ValueError(f"Setting 'queue_length' must be >= 0, got {self.queue_length}.")
        if not self.queue_max_wait_s > 0:
            raise ValueError(
                f"Setting 'queue_max_wait_s' must be > 0 seconds, got {self.queue_max_wait_s}."
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
        if self.consistency_fraction is not None and not 0 <= self.consistency_fraction <= 1:
            raise ValueError(
                "Setting 'consistency_fraction' must be in [0, 1], got "
                f"{self.consistency_fraction}."
            )
        if self.quality_score_threshold is not None and not (
            0 <= self.quality_score_threshold <= 1
        ):
            raise ValueError(
                "Setting 'quality_score_threshold' must be in [0, 1], got "
                f"{self.quality_score_threshold}."
            )
        if not 0 <= self.consistency_flag_threshold <= 1:
            raise ValueError(
                "Setting 'consistency_flag_threshold' must be in [0, 1], got "
                f"{self.consistency_flag_threshold}."
            )
        if self.severity_lesion_floor_ml < 0:
            raise ValueError(
                "Setting 'severity_lesion_floor_ml' must be >= 0, got "
                f"{self.severity_lesion_floor_ml}."
            )
        for name in ("capture_retention_days", "capture_pending_hours"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Setting '{name}' must be > 0, got {getattr(self, name)}.")
        if self.capture_max_studies < 1:
            raise ValueError(
                f"Setting 'capture_max_studies' must be >= 1, got {self.capture_max_studies}."
            )
        for name in ("training_max_queued", "training_max_running"):
            if getattr(self, name) < 1:
                raise ValueError(f"Setting '{name}' must be >= 1, got {getattr(self, name)}.")
        if self.model_poll_s < 0:
            raise ValueError(f"Setting 'model_poll_s' must be >= 0, got {self.model_poll_s}.")
        if self.grace_period_s < 0:
            raise ValueError(f"Setting 'grace_period_s' must be >= 0, got {self.grace_period_s}.")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None


def _check_port(name: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"Setting '{name}' must be a port number 0..65535, got {value}.")


def field_names() -> list[str]:
    return list(ServiceSettings.model_fields)


def load_settings(
    yaml_path: str | Path | None = None,
    env: Mapping[str, str] = os.environ,
    **overrides: Any,
) -> ServiceSettings:
    """Resolve settings: ``overrides`` > ``env`` (``PULMOSEG_*`` variables) > YAML > defaults.

    Unknown YAML keys or overrides raise ValueError with a "did you mean" hint; values of the
    wrong type raise TypeError naming the key, the value and where it came from.
    """
    settings = ServiceSettings.resolve(yaml_path, env, ENV_PREFIX, overrides)
    logging.getLogger(__name__).debug("resolved settings: %s", redacted(settings))
    return settings


def redacted(settings: ServiceSettings) -> dict[str, Any]:
    """Settings as a dict safe to log (the auth token is replaced)."""
    out = settings.model_dump()
    if out["auth_token"]:
        out["auth_token"] = "***"
    if out.get("quality_db_url"):  # may carry a database password
        from sqlalchemy.engine import make_url

        try:
            out["quality_db_url"] = make_url(out["quality_db_url"]).render_as_string(
                hide_password=True
            )
        except Exception:
            out["quality_db_url"] = "***"
    return out
