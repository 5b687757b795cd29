"""Opening the records database: its URL, the engine, and the Alembic upgrade on open.

SQLite by default, any SQLAlchemy URL for replicas. The schema is created and upgraded by
Alembic on open (:func:`migrate`), so a server started on an older database upgrades it and one
started on an empty file creates it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

logger = logging.getLogger(__name__)

#: The Alembic script directory of the records (revision ids and version table are stable).
MIGRATIONS = Path(__file__).with_name("migrations")


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


class RecordsDatabaseError(RuntimeError):
    """The records database cannot be opened at start (down, unreachable, no driver, refused).

    The message names the URL without its password and the setting to check; the server does
    not start without its records (a pod restarts until the database is reachable).
    """


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def open_engine(url: str) -> Engine:
    """An engine on ``url``, shareable across threads, migrated to the newest schema.

    A server database (not SQLite) gets ``pool_pre_ping``: a connection that died with a
    database restart is replaced before use, so the first write after an outage does not fail.
    """
    where = f"The records database {_safe(url)}"
    check = "; check the setting records.db_url (or records.db_path)"
    try:
        if url.startswith("sqlite") and url.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite://"):
            # In-memory SQLite lives in one connection: share it across threads.
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            logger.warning(
                "quality records are in memory and will not survive a restart; set "
                "records.db_path or records.db_url to keep them"
            )
        elif url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False})
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except ArgumentError as exc:
        raise RecordsDatabaseError(f"{where} is not a database URL ({exc}){check}.") from None
    except ImportError as exc:  # the URL's driver is not installed
        raise RecordsDatabaseError(
            f"{where} needs a database driver that is not installed ({exc}); PostgreSQL's "
            f"(psycopg) comes with pulmoseg[serve]{check}."
        ) from exc
    try:
        migrate(engine)
    except DBAPIError as exc:
        engine.dispose()
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise RecordsDatabaseError(
            f"{where} cannot be reached or refused the schema upgrade: {reason}{check}, that "
            "the database is up, and that the network policy lets the pod reach it "
            "(networkPolicy.database in the chart)."
        ) from exc
    return engine


def safe_url(engine: Engine) -> str:
    """The engine's URL without its password, for logs."""
    return engine.url.render_as_string(hide_password=True)


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
