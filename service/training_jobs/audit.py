"""The audit trail of the TrainingService (table ``audit``, migration 0006): who submitted,
cancelled or promoted what, and the outcome. Every entry also goes to the log, so a site
without a shared database still has the trail."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from service.records.database import utc
from service.records.tables import AuditRow

logger = logging.getLogger(__name__)

#: The actions recorded.
ACTIONS = ("submit", "cancel", "promote")
_DETAIL_CHARS = 1024


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    action: str
    identity: str
    job_id: str
    #: "ok", or the gRPC status name of a refusal (e.g. PERMISSION_DENIED).
    outcome: str
    detail: str = ""


class AuditLog:
    """Writes and reads audit rows, one short session per call (gRPC threads share it)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def record(
        self, action: str, identity: str, job_id: str, outcome: str, detail: str = ""
    ) -> AuditEntry:
        if action not in ACTIONS:
            raise ValueError(f"Audit action must be one of {ACTIONS}, got {action!r}.")
        entry = AuditEntry(
            datetime.now(UTC), action, identity, job_id, outcome, detail[:_DETAIL_CHARS]
        )
        logger.info(
            "audit: %s by %s of job %s: %s%s",
            action,
            identity,
            job_id or "-",
            outcome,
            f" ({entry.detail})" if entry.detail else "",
        )
        with self._sessions.begin() as session:
            session.add(AuditRow(**entry.__dict__))
        return entry

    def entries(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit))
            return [
                AuditEntry(utc(r.at) or r.at, r.action, r.identity, r.job_id, r.outcome, r.detail)
                for r in reversed(list(rows))
            ]
