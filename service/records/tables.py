"""The tables of the records database (SQLAlchemy declarative models).

One row per study in ``study_quality`` (what lists and dashboards read), the study's prediction
in ``study_prediction`` (compressed labels + grid, read only when a reference arrives), and one
row per training job in ``training_jobs``. Rows carry the study hash, never a UID or patient
identifier. The schema evolves only through Alembic revisions in ``service/records/migrations``;
a test compares the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.core.records_tables import (
    AUDIT_TABLE,
    RECORDS_VERSION_TABLE,
    STUDY_PREDICTION_TABLE,
    STUDY_QUALITY_TABLE,
    TRAINING_JOBS_TABLE,
)

#: Alembic's version table of these migrations (see ``service.core.records_tables``).
VERSION_TABLE = RECORDS_VERSION_TABLE


class Base(DeclarativeBase):
    pass


class StudyQualityRow(Base):
    __tablename__ = STUDY_QUALITY_TABLE

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    flagged: Mapped[bool] = mapped_column(Boolean, index=True, default=False)
    review_required: Mapped[bool] = mapped_column(Boolean, index=True, default=False)
    #: The study's typed outcome (``service.core.study_outcome.StudyOutcome``) as JSON.
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON)
    reference_voldice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reference_cdice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reference_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reference_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StudyPredictionRow(Base):
    __tablename__ = STUDY_PREDICTION_TABLE

    study_hash: Mapped[str] = mapped_column(
        String(64),
        ForeignKey(f"{STUDY_QUALITY_TABLE}.study_hash", ondelete="CASCADE"),
        primary_key=True,
    )
    geometry: Mapped[str] = mapped_column(String(2048))
    labels_zlib: Mapped[bytes] = mapped_column(LargeBinary)


class TrainingJobRow(Base):
    """One training job of the TrainingService (``service.training_jobs``): its spec, state,
    latest progress, exported model and promotion decision. Same database as the quality
    records so that one store (and one migration chain) survives a restart."""

    __tablename__ = TRAINING_JOBS_TABLE

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    work_dir: Mapped[str] = mapped_column(String(1024))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(String(4096), default="")
    model_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    registry_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    val_voldice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    promotion: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class AuditRow(Base):
    """Who asked the TrainingService to submit, cancel or promote, and what came of it: the
    trail an operator needs when the served model changed. Identities are token names or
    certificate subjects, never a secret."""

    __tablename__ = AUDIT_TABLE

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    action: Mapped[str] = mapped_column(String(16), index=True)
    identity: Mapped[str] = mapped_column(String(256))
    job_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(1024), default="")
