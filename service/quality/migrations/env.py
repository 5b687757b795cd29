"""Alembic environment of the quality records; run by ``service.quality.records.migrate``.

The caller passes an open connection in ``config.attributes["connection"]`` (so in-memory SQLite
and tests work); ``alembic -x url=...`` from the command line works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from service.quality.records_schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
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
