"""The study storage shares one SQLite file with the quality records, in either order.

Both sides use Alembic. Optuna keeps its revision in the default ``alembic_version`` table and
cannot be told otherwise, so the records keep theirs in ``quality_alembic_version``; a records
database made before that keeps working (its revision is moved on the next migrate).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from service.core.study_outcome import StudyOutcome
from service.quality.geometry import StudyGeometry
from service.quality.records import QualityStore, StudyRecord
from service.records.database import MIGRATIONS, database_url, migrate
from service.records.tables import VERSION_TABLE, Base
from training.tuning import open_storage
from training.tuning.storage import default_storage_url

#: The records' newest revision (the migrations keep growing; the test must not care).
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
GEOMETRY = StudyGeometry(
    shape=(2, 3, 4),
    spacing_zyx=(2.0, 0.5, 0.5),
    origin=(0.0, 0.0, 0.0),
    row_cosine=(1.0, 0.0, 0.0),
    column_cosine=(0.0, 1.0, 0.0),
    slice_normal=(0.0, 0.0, 1.0),
    frame_of_reference_hash="cd" * 8,
)


def _save_record(url: str, study_hash: str) -> None:
    store = QualityStore(url)
    try:
        outcome = StudyOutcome(
            study_uid_hash=study_hash, model_name="net", model_version="1", num_instances=2
        )
        record = StudyRecord(study_hash=study_hash, created_at=datetime.now(UTC), outcome=outcome)
        store.save_study(record, np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY)
    finally:
        store.close()


def _record_hashes(url: str) -> list[str]:
    store = QualityStore(url)
    try:
        return sorted(r.study_hash for r in store.list()[0])
    finally:
        store.close()


def _tell_one_trial(url: str, name: str, value: float) -> None:
    study = optuna.create_study(
        study_name=name, storage=open_storage(url), direction="maximize", load_if_exists=True
    )
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    study.tell(trial, value)


def _revisions(url: str) -> dict[str, list[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: [r[0] for r in connection.execute(text(f"SELECT version_num FROM {table}"))]
                for table in ("alembic_version", VERSION_TABLE)
                if inspect(connection).has_table(table)
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("records_first", [True, False], ids=["records-first", "study-first"])
def test_records_and_study_share_one_sqlite_file(tmp_path: Path, records_first: bool) -> None:
    url = database_url(None, tmp_path / "quality.sqlite")
    if records_first:
        _save_record(url, "aa" * 8)
        _tell_one_trial(url, "s", 0.5)
    else:
        _tell_one_trial(url, "s", 0.5)
        _save_record(url, "aa" * 8)
    # Reopen both sides again (migrate and Optuna's version check run on every open).
    _save_record(url, "bb" * 8)
    _tell_one_trial(url, "s", 0.7)

    assert _record_hashes(url) == ["aa" * 8, "bb" * 8]
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    assert [t.value for t in study.trials] == [0.5, 0.7]
    revisions = _revisions(url)
    assert revisions[VERSION_TABLE] == [HEAD]
    assert len(revisions["alembic_version"]) == 1 and revisions["alembic_version"] != [HEAD]


def test_old_records_database_is_refused_then_adopted(tmp_path: Path) -> None:
    """A records file migrated before VERSION_TABLE existed: revision in alembic_version."""
    url = database_url(None, tmp_path / "old.sqlite")
    _save_record(url, "cc" * 8)
    engine = create_engine(url)
    with engine.begin() as connection:  # put it back the way the old code left it
        connection.execute(text(f"ALTER TABLE {VERSION_TABLE} RENAME TO alembic_version"))
    engine.dispose()

    with pytest.raises(ValueError, match=r"quality-records database .* 'alembic_version'"):
        open_storage(url)
    assert _revisions(url) == {"alembic_version": [HEAD]}  # refused before touching it

    engine = create_engine(url)
    migrate(engine)  # what the service does on start
    engine.dispose()
    assert _revisions(url) == {VERSION_TABLE: [HEAD]}
    _tell_one_trial(url, "s", 0.4)
    assert _record_hashes(url) == ["cc" * 8]


def test_optuna_tables_and_records_tables_are_disjoint(tmp_path: Path) -> None:
    """A new records table named like one of Optuna's would break the shared file."""
    url = database_url(None, tmp_path / "study_only.sqlite")
    _tell_one_trial(url, "s", 0.1)
    engine = create_engine(url)
    optuna_tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"studies", "trials", "alembic_version"} <= optuna_tables
    assert not optuna_tables & {*Base.metadata.tables, VERSION_TABLE}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", r"Argument '--storage' must be a database URL .* got 'not a url'"),
        (
            "sqlite:////nonexistent-dir/deeper/tune.sqlite",
            r"Argument '--storage' \(sqlite:////nonexistent-dir/deeper/tune.sqlite\) cannot be "
            r"opened: unable to open database file",
        ),
        ("nosuchdialect://host/db", r"Argument '--storage' .* cannot be opened: .*nosuchdialect"),
    ],
)
def test_storage_that_does_not_open_gets_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_storage(url)


def test_default_storage_is_an_absolute_sqlite_file_in_out(tmp_path: Path) -> None:
    url = default_storage_url(tmp_path / "search")
    assert url == f"sqlite:///{(tmp_path / 'search' / 'tune.sqlite').resolve()}"
