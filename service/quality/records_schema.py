"""The tables of the quality records (SQLAlchemy declarative models).

One row per study in ``study_quality`` (what lists and dashboards read), and the study's
prediction in ``study_prediction`` (compressed labels + grid, read only when a reference
arrives). Rows carry the study hash, never a UID or patient identifier. The schema evolves only
through Alembic revisions in ``service/quality/migrations``; a test compares the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Alembic's version table of these migrations. Not the default ``alembic_version``: that one
#: belongs to whatever else shares the database (Optuna's study storage, ``pulmoseg tune``).
VERSION_TABLE = "quality_alembic_version"


class Base(DeclarativeBase):
    pass


class StudyQualityRow(Base):
    __tablename__ = "study_quality"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    num_instances: Mapped[int] = mapped_column(Integer)
    class_volumes_ml: Mapped[dict[str, Any]] = mapped_column(JSON)
    lung_volume_ml: Mapped[float | None] = mapped_column(Float, nullable=True)
    involvement_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    grade: Mapped[str | None] = mapped_column(String(8), nullable=True)
    consistency_transform: Mapped[str | None] = mapped_column(String(16), nullable=True)
    consistency_voldice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    consistency_min: Mapped[float | None] = mapped_column(Float, nullable=True)
    flagged: Mapped[bool] = mapped_column(Boolean, index=True, default=False)
    reference_voldice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reference_cdice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reference_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reference_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    stage_seconds: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Failed applicability checks (a list of reason names; [] = applicable; NULL = not run).
    applicability_reasons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    applicability_measurements: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Label-free quality score (0 worst … 1 best), whether it fell below the flag threshold,
    #: and the signals it combines (NULL for records written before the score existed).
    quality_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    quality_flagged: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    quality_signals: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class StudyPredictionRow(Base):
    __tablename__ = "study_prediction"

    study_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("study_quality.study_hash", ondelete="CASCADE"), primary_key=True
    )
    geometry: Mapped[str] = mapped_column(String(2048))
    labels_zlib: Mapped[bytes] = mapped_column(LargeBinary)


class TrainingJobRow(Base):
    """One training job of the TrainingService (``service.training_jobs``): its spec, state,
    latest progress, exported model and promotion decision. Same database as the quality
    records so that one store (and one migration chain) survives a restart."""

    __tablename__ = "training_jobs"

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
