"""Persistent per-study quality records (SQLAlchemy; SQLite by default, any URL for replicas).

The schema is created and upgraded by Alembic on open (:func:`migrate`), so a server started on
an older database upgrades it and one started on an empty file creates it. Records hold the
study hash only. The prediction is stored compressed beside the record because a reference may
arrive days later, on another replica.
"""

from __future__ import annotations

import base64
import logging
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from service.core.errors import StudyNotFoundError
from service.quality.geometry import StudyGeometry
from service.quality.records_schema import StudyPredictionRow, StudyQualityRow

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class StudyRecord:
    """One study's quality record as the API and CLI show it."""

    study_hash: str
    created_at: datetime
    model_name: str
    model_version: str
    provider: str
    num_instances: int
    class_volumes_ml: dict[str, float]
    lung_volume_ml: float | None = None
    involvement_percent: float | None = None
    grade: str | None = None
    consistency_transform: str | None = None
    consistency_voldice: dict[str, float] | None = None
    flagged: bool = False
    reference_voldice: dict[str, float] | None = None
    reference_cdice: dict[str, float] | None = None
    reference_type: str | None = None
    reference_at: datetime | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: Failed applicability checks ([] inside the model's range; None when they did not run).
    applicability_reasons: list[str] | None = None
    applicability_measurements: dict[str, float | None] | None = None
    #: The label-free quality score, its flag and its signals (with "variant" and "threshold");
    #: None for records written before the score existed or with it disabled.
    quality_score: float | None = None
    quality_flagged: bool | None = None
    quality_signals: dict[str, Any] | None = None

    @property
    def quality_threshold(self) -> float | None:
        value = (self.quality_signals or {}).get("threshold")
        return None if value is None else float(value)


def database_url(url: str | None, path: Path | None) -> str:
    """The URL to open: an explicit URL, else a SQLite file, else in-memory SQLite."""
    if url:
        return url
    if path is not None:
        return f"sqlite:///{Path(path).expanduser().resolve()}"
    return "sqlite://"


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _to_record(row: StudyQualityRow) -> StudyRecord:
    created = _utc(row.created_at)
    assert created is not None  # the column is NOT NULL
    return StudyRecord(
        study_hash=row.study_hash,
        created_at=created,
        model_name=row.model_name,
        model_version=row.model_version,
        provider=row.provider,
        num_instances=row.num_instances,
        class_volumes_ml=dict(row.class_volumes_ml),
        lung_volume_ml=row.lung_volume_ml,
        involvement_percent=row.involvement_percent,
        grade=row.grade,
        consistency_transform=row.consistency_transform,
        consistency_voldice=row.consistency_voldice,
        flagged=bool(row.flagged),
        reference_voldice=row.reference_voldice,
        reference_cdice=row.reference_cdice,
        reference_type=row.reference_type,
        reference_at=_utc(row.reference_at),
        stage_seconds=dict(row.stage_seconds or {}),
        applicability_reasons=(
            list(row.applicability_reasons) if row.applicability_reasons is not None else None
        ),
        applicability_measurements=row.applicability_measurements,
        quality_score=row.quality_score,
        quality_flagged=None if row.quality_flagged is None else bool(row.quality_flagged),
        quality_signals=row.quality_signals,
    )


def encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode()


def decode_page_token(token: str) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("id:"):
            raise ValueError(text)
        return int(text[3:])
    except ValueError:
        raise ValueError(
            f"Argument 'page_token' {token!r} is not a token from a previous page."
        ) from None


class QualityStore:
    """Thread-safe access to the records (one short session per call)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite") and url.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite://"):
            # In-memory SQLite lives in one connection: share it across threads.
            self.engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            logger.warning(
                "quality records are in memory and will not survive a restart; set "
                "quality_db_path or quality_db_url to keep them"
            )
        else:
            connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
            self.engine = create_engine(url, connect_args=connect_args)
        self.url = self.engine.url.render_as_string(hide_password=True)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def _row(self, session: Session, study_hash: str) -> StudyQualityRow:
        row = session.scalars(
            select(StudyQualityRow).where(StudyQualityRow.study_hash == study_hash)
        ).first()
        if row is None:
            raise StudyNotFoundError(
                f"No quality record for study hash '{study_hash}': this service has not "
                "segmented that study (or its records database was replaced)."
            )
        return row

    def save_study(self, record: StudyRecord, labels: np.ndarray, geometry: StudyGeometry) -> None:
        """Insert or replace the record and prediction of ``record.study_hash``."""
        values: dict[str, Any] = {
            "created_at": record.created_at,
            "model_name": record.model_name,
            "model_version": record.model_version,
            "provider": record.provider,
            "num_instances": record.num_instances,
            "class_volumes_ml": record.class_volumes_ml,
            "lung_volume_ml": record.lung_volume_ml,
            "involvement_percent": record.involvement_percent,
            "grade": record.grade,
            "consistency_transform": record.consistency_transform,
            "consistency_voldice": record.consistency_voldice,
            "consistency_min": (
                min(record.consistency_voldice.values()) if record.consistency_voldice else None
            ),
            "flagged": record.flagged,
            "reference_voldice": None,
            "reference_cdice": None,
            "reference_type": None,
            "reference_at": None,
            "stage_seconds": record.stage_seconds,
            "applicability_reasons": record.applicability_reasons,
            "applicability_measurements": record.applicability_measurements,
            "quality_score": record.quality_score,
            "quality_flagged": record.quality_flagged,
            "quality_signals": record.quality_signals,
        }
        blob = zlib.compress(np.ascontiguousarray(labels, dtype=np.uint8).tobytes(), 6)
        with self._sessions.begin() as session:
            row = session.scalars(
                select(StudyQualityRow).where(StudyQualityRow.study_hash == record.study_hash)
            ).first()
            if row is None:
                row = StudyQualityRow(study_hash=record.study_hash, **values)
                session.add(row)
            else:  # the study was segmented again: the newer answer replaces the old one
                for key, value in values.items():
                    setattr(row, key, value)
            session.flush()
            prediction = session.get(StudyPredictionRow, record.study_hash)
            if prediction is None:
                session.add(
                    StudyPredictionRow(
                        study_hash=record.study_hash,
                        geometry=geometry.to_json(),
                        labels_zlib=blob,
                    )
                )
            else:
                prediction.geometry = geometry.to_json()
                prediction.labels_zlib = blob

    def get(self, study_hash: str) -> StudyRecord:
        with self._sessions() as session:
            return _to_record(self._row(session, study_hash))

    def prediction(self, study_hash: str) -> tuple[np.ndarray, StudyGeometry]:
        """The stored label volume and grid of a study."""
        with self._sessions() as session:
            self._row(session, study_hash)
            row = session.get(StudyPredictionRow, study_hash)
            if row is None:
                raise StudyNotFoundError(f"No stored prediction for study hash '{study_hash}'.")
            geometry = StudyGeometry.from_json(row.geometry)
            labels = np.frombuffer(zlib.decompress(row.labels_zlib), dtype=np.uint8)
            return labels.reshape(geometry.shape).copy(), geometry

    def set_reference(
        self,
        study_hash: str,
        voldice: dict[str, float],
        cdice: dict[str, float],
        segmentation_type: str,
    ) -> StudyRecord:
        """Store reference scores (a later reference replaces an earlier one)."""
        with self._sessions.begin() as session:
            row = self._row(session, study_hash)
            row.reference_voldice = voldice
            row.reference_cdice = cdice or None
            row.reference_type = segmentation_type
            row.reference_at = datetime.now(UTC)
            session.flush()
            return _to_record(row)

    def list(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model_version: str = "",
        flagged_only: bool = False,
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[list[StudyRecord], str]:
        """Newest first; returns a page and the token of the next one ("" at the end)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"Argument 'page_size' must be 1..{MAX_PAGE_SIZE}, got {page_size}.")
        query = select(StudyQualityRow).order_by(StudyQualityRow.id.desc())
        after = decode_page_token(page_token)
        if after is not None:
            query = query.where(StudyQualityRow.id < after)
        if since is not None:
            query = query.where(StudyQualityRow.created_at >= since)
        if until is not None:
            query = query.where(StudyQualityRow.created_at < until)
        if model_version:
            query = query.where(StudyQualityRow.model_version == model_version)
        if flagged_only:
            query = query.where(StudyQualityRow.flagged.is_(True))
        with self._sessions() as session:
            rows = list(session.scalars(query.limit(page_size + 1)))
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = encode_page_token(rows[-1].id) if more and rows else ""
        return [_to_record(r) for r in rows], token
