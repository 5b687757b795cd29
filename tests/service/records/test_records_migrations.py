"""The records database: Alembic schema = tables, idempotent upgrade, one revision up and down on
a real SQLite file with a row written before it, and the version table Optuna does not use."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from service.core.records_tables import (
    AUDIT_TABLE,
    RECORDS_VERSION_TABLE,
    STUDY_PREDICTION_TABLE,
    STUDY_QUALITY_TABLE,
    TRAINING_JOBS_TABLE,
)
from service.records.database import MIGRATIONS, database_url, migrate, open_engine
from service.records.tables import VERSION_TABLE, Base

SCORE_COLUMNS = {"quality_score", "quality_flagged", "quality_signals"}


def _alembic(engine: Engine, action, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config, revision)


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(STUDY_QUALITY_TABLE)}


def test_migrations_build_exactly_the_tables(tmp_path):
    engine = create_engine(database_url(None, tmp_path / "q.sqlite"))
    migrate(engine)
    migrate(engine)  # idempotent: a restart on an up-to-date database changes nothing
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    assert set(inspect(engine).get_table_names()) == {
        VERSION_TABLE,
        STUDY_QUALITY_TABLE,
        STUDY_PREDICTION_TABLE,
        TRAINING_JOBS_TABLE,
        AUDIT_TABLE,
    }


def test_the_revision_ids_and_version_table_of_existing_databases_are_kept(tmp_path):
    """Databases made when the migrations lived in service/quality upgrade unchanged."""
    assert VERSION_TABLE == RECORDS_VERSION_TABLE == "quality_alembic_version"
    revisions = {r.revision for r in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    assert {"0001", "0002", "0003", "0004"} <= revisions
    engine = create_engine(database_url(None, tmp_path / "old.sqlite"))
    _alembic(engine, command.upgrade, "0004")
    engine = open_engine(database_url(None, tmp_path / "old.sqlite"))
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as connection:
        found = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
        assert list(found) == [head]
    engine.dispose()


def test_migration_0003_adds_and_removes_the_score_columns_keeping_old_records(tmp_path):
    engine = create_engine(database_url(None, tmp_path / "q.sqlite"))
    _alembic(engine, command.upgrade, "0002")
    assert not SCORE_COLUMNS & _columns(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO study_quality (study_hash, created_at, model_name, model_version, "
                "provider, num_instances, class_volumes_ml, flagged, stage_seconds) VALUES "
                "('00000000000000aa', "
                "'2026-11-01 12:00:00', 'net', '1.0', 'CPUExecutionProvider', 3, '{}', 0, '{}')"
            )
        )
    _alembic(engine, command.upgrade, "0003")
    assert _columns(engine) >= SCORE_COLUMNS
    with engine.connect() as connection:
        row = connection.execute(text("SELECT quality_score, quality_flagged FROM study_quality"))
        assert row.one() == (None, None)  # written before the score existed
    _alembic(engine, command.downgrade, "0002")
    assert not SCORE_COLUMNS & _columns(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM study_quality")).scalar() == 1
