"""Training jobs in the records database (``service.records``: table ``training_jobs``, 0004).

One short session per call, so the gRPC threads and the scheduler thread share it safely; rows
are returned as frozen :class:`JobRecord` snapshots.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from service.records.database import utc
from service.records.paging import check_page_size, decode_page_token, split_page
from service.records.tables import TrainingJobRow
from service.training_jobs.errors import JobNotFoundError
from service.training_jobs.spec import JobSpec
from service.training_jobs.state import FINISHED, JobState

MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    state: JobState
    spec: JobSpec
    created_at: datetime
    updated_at: datetime
    work_dir: str
    finished_at: datetime | None = None
    pid: int | None = None
    token: str | None = None
    attempts: int = 0
    progress: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    model_name: str | None = None
    model_version: str | None = None
    registry_path: str | None = None
    val_voldice: dict[str, float] | None = None
    promotion: dict[str, Any] | None = None


def _record(row: TrainingJobRow) -> JobRecord:
    created, updated = utc(row.created_at), utc(row.updated_at)
    assert created is not None and updated is not None  # NOT NULL columns
    return JobRecord(
        job_id=row.job_id,
        state=JobState(row.state),
        spec=JobSpec.from_json(row.spec),
        created_at=created,
        updated_at=updated,
        work_dir=row.work_dir,
        finished_at=utc(row.finished_at),
        pid=row.pid,
        token=row.token,
        attempts=row.attempts,
        progress=dict(row.progress or {}),
        message=row.message or "",
        model_name=row.model_name,
        model_version=row.model_version,
        registry_path=row.registry_path,
        val_voldice=row.val_voldice,
        promotion=row.promotion,
    )


class JobStore:
    """CRUD on ``training_jobs``; the engine is the records database's (already migrated)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(self, spec: JobSpec, work_root: str) -> JobRecord:
        job_id = uuid.uuid4().hex[:12]
        now = datetime.now(UTC)
        row = TrainingJobRow(
            job_id=job_id,
            state=JobState.QUEUED.value,
            created_at=now,
            updated_at=now,
            spec=spec.to_json(),
            work_dir=f"{work_root}/{job_id}",
            attempts=0,
            progress={},
            message="queued",
        )
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()
            return _record(row)

    def get(self, job_id: str) -> JobRecord:
        with self._sessions() as session:
            row = session.scalars(select(TrainingJobRow).where(TrainingJobRow.job_id == job_id))
            found = row.first()
            if found is None:
                raise JobNotFoundError(f"No training job with id {job_id!r} on this server.")
            return _record(found)

    def update(self, job_id: str, **values: Any) -> JobRecord:
        """Set columns (a JobState is stored by value); ``updated_at`` is always refreshed."""
        values = {k: (v.value if isinstance(v, JobState) else v) for k, v in values.items()}
        values["updated_at"] = datetime.now(UTC)
        if values.get("state") in {s.value for s in FINISHED}:
            values.setdefault("finished_at", values["updated_at"])
        with self._sessions.begin() as session:
            rows = session.scalars(select(TrainingJobRow).where(TrainingJobRow.job_id == job_id))
            row = rows.first()
            if row is None:
                raise JobNotFoundError(f"No training job with id {job_id!r} on this server.")
            for key, value in values.items():
                setattr(row, key, value)
            session.flush()
            return _record(row)

    def in_state(self, *states: JobState) -> list[JobRecord]:
        """Jobs in any of ``states``, oldest first (the queue's order)."""
        query = (
            select(TrainingJobRow)
            .where(TrainingJobRow.state.in_([s.value for s in states]))
            .order_by(TrainingJobRow.id)
        )
        with self._sessions() as session:
            return [_record(r) for r in session.scalars(query)]

    def count(self, state: JobState) -> int:
        query = select(func.count()).where(TrainingJobRow.state == state.value)
        with self._sessions() as session:
            return int(session.scalar(query.select_from(TrainingJobRow)) or 0)

    def list(self, page_size: int = 50, page_token: str = "") -> tuple[list[JobRecord], str]:
        """Newest first; a page and the next page's token ("" at the end)."""
        check_page_size(page_size, MAX_PAGE_SIZE)
        query = select(TrainingJobRow).order_by(TrainingJobRow.id.desc())
        after = decode_page_token(page_token)
        if after is not None:
            query = query.where(TrainingJobRow.id < after)
        with self._sessions() as session:
            rows = list(session.scalars(query.limit(page_size + 1)))
        page, token = split_page(rows, page_size)
        return [_record(r) for r in page], token
