"""Typed settings of the gRPC service, from defaults, a YAML file, the environment and overrides.

One place for configuration (12-factor). The settings come in groups (``limits``, ``tls``,
``metrics``, ``log``, ``records``, ``quality``, ``capture``, ``training``) beside a few
top-level ones (``port``, ``model_path``, ...). Each value can be set in a YAML file (nested
keys, e.g. ``capture: {dir: /data}``), as an environment variable (``PULMOSEG_CAPTURE_DIR``,
or ``PULMOSEG_CAPTURE__DIR``) or as a keyword override; overrides beat the environment, which
beats the file, which beats the defaults. The flat names from before the groups
(``capture_dir``, ``max_workers``, ...) stay valid everywhere: :data:`FLAT_NAMES` maps them,
and docs/configuration.md lists them. Values are converted and checked once, here (with
:mod:`service.core.settings_base`), so the rest of the service can trust them; each part of
the service is handed its group as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from service.capture.settings import CaptureSettings
from service.core.options import ApplicabilityPolicy
from service.core.settings_base import (
    AtLeastOne,
    Count,
    EnvSettingsModel,
    NonNegative,
    Port,
    Positive,
    leaf_paths,
)
from service.observability.settings import LogSettings, MetricsSettings
from service.quality.assessment import QualityConfig

ENV_PREFIX = "PULMOSEG_"
MIB = 1024 * 1024


class LimitsSettings(EnvSettingsModel):
    """How much work the server takes on at once, and how big its messages are."""

    key_prefix: ClassVar[str] = "limits."

    #: gRPC worker threads; must exceed max_concurrent_studies so health checks, model info and
    #: "busy" answers still get a thread while every study slot is taken.
    max_workers: AtLeastOne = 8
    max_concurrent_studies: AtLeastOne = 2
    #: Studies that wait (FIFO) for a free study slot before RESOURCE_EXHAUSTED; 0 = no queue.
    #: Each waiting study holds a gRPC thread (the server adds them to max_workers), not its bytes.
    queue_length: Count = 16
    #: Longest a study waits in the queue before it is refused with RESOURCE_EXHAUSTED.
    queue_max_wait_s: Positive = 600.0
    max_upload_bytes: AtLeastOne = 2048 * MIB
    #: Payload size of SEG chunks sent back (and the client's default upload chunk size).
    chunk_bytes: AtLeastOne = MIB

    @model_validator(mode="after")
    def _check(self) -> LimitsSettings:
        if self.max_workers <= self.max_concurrent_studies:
            raise ValueError(
                f"Setting 'limits.max_workers' ({self.max_workers}) must be greater than "
                f"'limits.max_concurrent_studies' ({self.max_concurrent_studies}) so health "
                "checks and busy answers still get a thread."
            )
        if self.chunk_bytes > 3 * MIB:
            raise ValueError(
                f"Setting 'limits.chunk_bytes' must be <= {3 * MIB} (3 MiB) to stay under gRPC's "
                f"default 4 MiB message limit, got {self.chunk_bytes}."
            )
        return self


class TlsSettings(EnvSettingsModel):
    """TLS of the gRPC port: off unless ``cert`` and ``key`` are set."""

    key_prefix: ClassVar[str] = "tls."

    cert: Path | None = None
    key: Path | None = None
    #: When set (with cert and key), clients must present a certificate signed by this CA (mTLS).
    client_ca: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError(
                "Settings 'tls.cert' and 'tls.key' must be set together, got "
                f"cert={self.cert!r}, key={self.key!r}."
            )
        if self.client_ca is not None and self.cert is None:
            raise ValueError("Setting 'tls.client_ca' (mTLS) needs 'tls.cert' and 'tls.key' too.")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert is not None


class RecordsSettings(EnvSettingsModel):
    """Where the per-study quality records (and training jobs) are kept."""

    key_prefix: ClassVar[str] = "records."

    #: SQLite file; unset (and no URL) keeps the records in memory.
    db_path: Path | None = None
    #: Any SQLAlchemy database URL (e.g. PostgreSQL shared by several replicas); beats the path.
    db_url: str | None = None


class TrainingSettings(EnvSettingsModel):
    """Training jobs through the API (TrainingService, service.training_jobs). Off by default:
    a serving replica does not train unless asked to (and needs pulmoseg[train] to)."""

    key_prefix: ClassVar[str] = "training."

    enabled: bool = False
    #: Jobs' work folders (<dir>/jobs/<id>) and the model registry (<dir>/registry/<name>/<v>).
    dir: Path = Path("runs/training")
    #: Submissions beyond this many queued jobs are refused (RESOURCE_EXHAUSTED).
    max_queued: AtLeastOne = 4
    #: Jobs that train at the same time (each is its own process).
    max_running: AtLeastOne = 1
    #: Datasets a job may read lie under this folder (or are 'captured'); '..' and symlinks
    #: leading out of it are refused. Unset: only 'captured'.
    data_root: Path | None = None
    #: Bearer token that PromoteModel needs, distinct from 'auth_token' (a segmentation client
    #: cannot replace the served model). Unset: promotion is refused (except development mode).
    promote_token: str | None = None
    #: The site-held reference dataset (a folder with manifest.json, or 'captured') on which a
    #: promotion is decided; never the candidate's own validation split. Unset: no promotion.
    reference_set: str | None = None
    #: Development only: let training run without 'auth_token' or mTLS ('tls.client_ca'), which
    #: is otherwise refused at start; the server must then listen on loopback.
    allow_unauthenticated: bool = False


#: The flat names from before the groups (still accepted in files, environment and overrides)
#: and the value each one names now, plus the same flat spelling for settings added since.
#: docs/configuration.md shows this table.
FLAT_NAMES: dict[str, tuple[str, ...]] = {
    "metrics_enabled": ("metrics", "enabled"),
    "metrics_host": ("metrics", "host"),
    "metrics_port": ("metrics", "port"),
    "max_workers": ("limits", "max_workers"),
    "max_concurrent_studies": ("limits", "max_concurrent_studies"),
    "queue_length": ("limits", "queue_length"),
    "queue_max_wait_s": ("limits", "queue_max_wait_s"),
    "max_upload_bytes": ("limits", "max_upload_bytes"),
    "chunk_bytes": ("limits", "chunk_bytes"),
    "tls_cert": ("tls", "cert"),
    "tls_key": ("tls", "key"),
    "tls_client_ca": ("tls", "client_ca"),
    "log_level": ("log", "level"),
    "log_format": ("log", "format"),
    "quality_db_path": ("records", "db_path"),
    "quality_db_url": ("records", "db_url"),
    "consistency_fraction": ("quality", "consistency_fraction"),
    "consistency_flag_threshold": ("quality", "consistency_flag_threshold"),
    "quality_score_enabled": ("quality", "score", "enabled"),
    "quality_score_threshold": ("quality", "score", "threshold"),
    "severity_lesion_floor_ml": ("quality", "severity_lesion_floor_ml"),
    "write_summary_sr": ("quality", "write_summary_sr"),
    "capture_dir": ("capture", "dir"),
    "capture_unlabeled": ("capture", "unlabeled"),
    "capture_retention_days": ("capture", "retention_days"),
    "capture_max_studies": ("capture", "max_studies"),
    "capture_pending_hours": ("capture", "pending_hours"),
    "training_enabled": ("training", "enabled"),
    "training_dir": ("training", "dir"),
    "training_max_queued": ("training", "max_queued"),
    "training_max_running": ("training", "max_running"),
    "training_data_root": ("training", "data_root"),
    "training_promote_token": ("training", "promote_token"),
    "training_reference_set": ("training", "reference_set"),
    "training_allow_unauthenticated": ("training", "allow_unauthenticated"),
}


class ServiceSettings(EnvSettingsModel):
    """Resolved settings of one server process (read-only; see :meth:`with_overrides`).

    ``host`` defaults to loopback so a developer's server is not exposed by accident; containers
    set ``PULMOSEG_HOST=0.0.0.0``. Port 0 binds a free port (tests); the bound port is reported
    by the running server.
    """

    flat_names: ClassVar[Mapping[str, tuple[str, ...]]] = FLAT_NAMES

    model_path: Path | None = None
    host: str = "127.0.0.1"
    port: Port = 50051
    require_gpu: bool = False
    #: When set, SegmentStudy/GetModelInfo need metadata ``authorization: Bearer <token>``.
    auth_token: str | None = None
    #: Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    grace_period_s: NonNegative = 10.0
    #: Seconds between looks at the model folder for a newer version (0: only on SIGHUP or a
    #: promotion). Replicas sharing a model volume set it so a promoted version reaches them.
    model_poll_s: NonNegative = 0.0
    #: A study outside the model's declared range (service.quality.applicability) is segmented
    #: and flagged ("segment_and_flag") or refused with FAILED_PRECONDITION ("refuse").
    applicability_policy: ApplicabilityPolicy = ApplicabilityPolicy.SEGMENT_AND_FLAG
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    records: RecordsSettings = Field(default_factory=RecordsSettings)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)


def field_paths() -> list[str]:
    """Every setting's dotted name (``capture.dir``), through the groups."""
    return [".".join(path) for path in leaf_paths(ServiceSettings)]


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
    if out["training"].get("promote_token"):
        out["training"]["promote_token"] = "***"
    records = out["records"]
    if records.get("db_url"):  # may carry a database password
        from sqlalchemy.engine import make_url

        try:
            records["db_url"] = make_url(records["db_url"]).render_as_string(hide_password=True)
        except Exception:
            records["db_url"] = "***"
    return out
