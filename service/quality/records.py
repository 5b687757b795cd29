"""Persistent per-study quality records, a store on the records database (``service.records``).

Records hold the study hash only. The prediction is stored compressed beside the record because
a reference may arrive days later, on another replica. Opening, migrations, paging and the
tables belong to ``service.records``; this module maps rows to :class:`StudyRecord`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.core.errors import StudyNotFoundError
from service.core.study_outcome import StudyOutcome
from service.quality.geometry import StudyGeometry
from service.records.database import open_engine, safe_url, utc
from service.records.paging import check_page_size, decode_page_token, split_page
from service.records.tables import StudyPredictionRow, StudyQualityRow

MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class StudyRecord:
    """One study's quality record: its outcome as answered, and the reference scores that a
    radiologist's SEG later added (None until one arrives)."""

    study_hash: str
    created_at: datetime
    outcome: StudyOutcome
    reference_voldice: dict[str, float] | None = None
    reference_cdice: dict[str, float] | None = None
    reference_type: str | None = None
    reference_at: datetime | None = None


def _to_record(row: StudyQualityRow) -> StudyRecord:
    created = utc(row.created_at)
    if created is None:  # pragma: no cover - the column is NOT NULL
        raise ValueError(f"Record of study '{row.study_hash}' has no creation time.")
    return StudyRecord(
        study_hash=row.study_hash,
        created_at=created,
        outcome=StudyOutcome.model_validate(row.outcome),
        reference_voldice=row.reference_voldice,
        reference_cdice=row.reference_cdice,
        reference_type=row.reference_type,
        reference_at=utc(row.reference_at),
    )


class QualityStore:
    """Thread-safe access to the records (one short session per call)."""

    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        self.url = safe_url(self.engine)
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
        outcome = record.outcome
        values: dict[str, Any] = {
            "created_at": record.created_at,
            # The columns lists filter on; everything else is in the outcome.
            "model_version": outcome.model_version,
            "flagged": outcome.flagged,
            "review_required": outcome.review_required,
            "outcome": outcome.model_dump(mode="json"),
            "reference_voldice": None,
            "reference_cdice": None,
            "reference_type": None,
            "reference_at": None,
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
        check_page_size(page_size, MAX_PAGE_SIZE)
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
        page, token = split_page(rows, page_size)
        return [_to_record(r) for r in page], token
