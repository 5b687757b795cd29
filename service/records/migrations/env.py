"""Alembic environment of the records database; run by ``service.records.database.migrate``.

The caller passes an open connection in ``config.attributes["connection"]`` (so in-memory SQLite
and tests work); ``alembic -x url=...`` from the command line works too.
"""

from __future__ import annotations

from alembic import context
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, text

from service.records.tables import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata
#: Where databases made before ``VERSION_TABLE`` existed keep our revision (Alembic's default).
_LEGACY_VERSION_TABLE = "alembic_version"


def _adopt_legacy_version(connection: Connection) -> None:
    """Move our revision out of ``alembic_version`` into ``VERSION_TABLE`` (once).

    The default table is left to other Alembic projects sharing the database (Optuna's study
    storage of ``pulmoseg tune`` stamps its own revision there, and cannot be told otherwise).
    """
    tables = inspect(connection)
    if tables.has_table(VERSION_TABLE) or not tables.has_table(_LEGACY_VERSION_TABLE):
        return
    script = ScriptDirectory.from_config(config)
    ours = {revision.revision for revision in script.walk_revisions()}
    rows = connection.execute(text(f"SELECT version_num FROM {_LEGACY_VERSION_TABLE}"))
    found = [row[0] for row in rows if row[0] in ours]
    if not found:
        return
    MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).stamp(
        script, found[0]
    )
    connection.execute(
        text(f"DELETE FROM {_LEGACY_VERSION_TABLE} WHERE version_num = :v"), {"v": found[0]}
    )
    if connection.execute(text(f"SELECT COUNT(*) FROM {_LEGACY_VERSION_TABLE}")).scalar() == 0:
        connection.execute(text(f"DROP TABLE {_LEGACY_VERSION_TABLE}"))


def _run(connection: Connection) -> None:
    _adopt_legacy_version(connection)
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit(
            "Pass the database URL: alembic -x url=sqlite:///quality.sqlite upgrade head"
        )
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
