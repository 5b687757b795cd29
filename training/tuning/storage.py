"""Where studies are kept: Optuna's RDB storage on a database URL.

The study can live in the service's quality-records database (pass its URL): Optuna's tables
(``studies``, ``trials``, ...) do not clash with ``study_quality``/``study_prediction``. Both
sides use Alembic, and Optuna always keeps its revision in Alembic's default table
``alembic_version`` (not configurable); the records migrations therefore keep theirs in
``quality_alembic_version`` and move it out of ``alembic_version`` on their first run with
that code. A records database not yet opened by such a service still holds the records'
revision in ``alembic_version``; Optuna would misread it, so we say so instead.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from service.core.records_tables import RECORDS_VERSION_TABLE, STUDY_QUALITY_TABLE

#: The default study database, inside the ``--out`` folder of the search.
DEFAULT_STORAGE_FILE = "tune.sqlite"
#: How long a SQLite writer waits for another process's lock (parallel trials), seconds.
SQLITE_LOCK_TIMEOUT_S = 120


def default_storage_url(out: Path) -> str:
    """``sqlite:///<out>/tune.sqlite`` (absolute, so worker processes agree)."""
    return f"sqlite:///{(Path(out) / DEFAULT_STORAGE_FILE).resolve()}"


def _engine_kwargs(url: str) -> dict[str, object]:
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
    return {}


def _check_not_legacy_records(url: str) -> None:
    """Refuse a records database whose revision still sits in ``alembic_version``."""
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        tables = sqlalchemy.inspect(engine)
        if tables.has_table(STUDY_QUALITY_TABLE) and not tables.has_table(RECORDS_VERSION_TABLE):
            raise ValueError(
                f"Argument '--storage' ({safe_url(url)}) is a quality-records database whose "
                "Alembic revision is still in 'alembic_version', where Optuna keeps its own; "
                "open it once with the current service (pulmoseg serve) to move it, or pass "
                "another --storage."
            )
    finally:
        engine.dispose()


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<unparsable URL>"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on ``url``, created when new; clear errors for URLs that do not open."""
    try:
        make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError(
            f"Argument '--storage' must be a database URL such as sqlite:///tune.sqlite, "
            f"got {url!r}."
        ) from None
    try:
        _check_not_legacy_records(url)
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ValueError(
            f"Argument '--storage' ({safe_url(url)}) cannot be opened: {reason}."
        ) from None
