"""The records database on a real PostgreSQL server and on SQLite, through the same code.

Each test runs twice (fixture ``db_url`` in tests/conftest.py): on a SQLite file and on a fresh
database of a PostgreSQL server the test set-up starts with ``initdb`` + ``pg_ctl``
(tests/postgres_server.py). Covered: the Alembic migrations (schema = tables, both version
tables beside Optuna's), the quality records, the training-jobs store, Optuna's study storage
in the same database, and a database that is down at start or goes away mid-run.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from service.core.records_tables import (
    RECORDS_VERSION_TABLE,
    STUDY_PREDICTION_TABLE,
    STUDY_QUALITY_TABLE,
    TRAINING_JOBS_TABLE,
)
from service.core.study_outcome import (
    ApplicabilityOutcome,
    ConsistencyOutcome,
    QualityOutcome,
    StudyOutcome,
)
from service.quality.geometry import StudyGeometry
from service.quality.records import QualityStore, StudyRecord
from service.records.database import MIGRATIONS, RecordsDatabaseError, open_engine
from service.records.tables import Base
from service.training_jobs.spec import JobSpec
from service.training_jobs.store import JobState, JobStore
from training.tuning import open_storage

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
OPTUNA_VERSION_TABLE = "alembic_version"
GEOMETRY = StudyGeometry(
    shape=(3, 4, 5),
    spacing_zyx=(2.0, 0.5, 0.5),
    origin=(0.0, 0.0, 0.0),
    row_cosine=(1.0, 0.0, 0.0),
    column_cosine=(0.0, 1.0, 0.0),
    slice_normal=(0.0, 0.0, 1.0),
    frame_of_reference_hash="ef" * 8,
)
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _outcome(i: int, **changes) -> StudyOutcome:
    """A study's outcome as answered (stored whole as JSON; a few columns for the filters)."""
    outcome = StudyOutcome(
        study_uid_hash=f"{i:016x}",
        class_volumes_ml={"lung": 10.0 + i, "ggo": 1.5},
        num_instances=3,
        model_name="net",
        model_version="1.0" if i % 2 else "2.0",
        provider="CPUExecutionProvider",
        stage_seconds={"inference": 0.25, "total": 1.0},
        consistency=ConsistencyOutcome(
            transform="rot90", voldice={"lung": 0.99, "ggo": 0.5}, threshold=0.7, flagged=True
        ),
        flagged=i % 3 == 0,
        applicability=ApplicabilityOutcome(measurements={"slice_thickness_mm": 2.0}),
        quality=QualityOutcome(score=0.8, threshold=0.5, variant="v1", signals={"tta": 0.9}),
    )
    return outcome.model_copy(update=changes)


def _record(i: int, **changes) -> StudyRecord:
    return StudyRecord(
        study_hash=f"{i:016x}", created_at=T0 + timedelta(hours=i), outcome=_outcome(i, **changes)
    )


def _version(engine, table: str) -> list[str]:
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(text(f"SELECT version_num FROM {table}"))]


def test_migrations_build_exactly_the_tables_and_keep_their_own_version_table(db_url):
    engine = open_engine(db_url)
    open_engine(db_url).dispose()  # a second replica starting on the migrated database
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": RECORDS_VERSION_TABLE}
        )
        assert compare_metadata(context, Base.metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {RECORDS_VERSION_TABLE}
    assert {STUDY_QUALITY_TABLE, STUDY_PREDICTION_TABLE, TRAINING_JOBS_TABLE} <= tables
    assert _version(engine, RECORDS_VERSION_TABLE) == [HEAD]
    engine.dispose()


def test_quality_records_round_trip(db_url):
    store = QualityStore(db_url)
    labels = np.random.default_rng(3).integers(0, 4, GEOMETRY.shape).astype(np.uint8)
    for i in range(5):
        store.save_study(_record(i), labels, GEOMETRY)
    store.save_study(_record(2, num_instances=9), labels, GEOMETRY)  # segmented again: replaced
    store.set_reference(_record(3).study_hash, {"ggo": 0.75}, {"ggo": 0.8}, "BINARY")
    store.close()

    reopened = QualityStore(db_url)
    record = reopened.get(_record(3).study_hash)
    assert record.created_at == T0 + timedelta(hours=3)
    assert record.reference_voldice == {"ggo": 0.75} and record.reference_at is not None
    assert record.outcome == _outcome(3)  # the whole answer, through the JSON column
    assert reopened.get(_record(2).study_hash).outcome.num_instances == 9
    stored, geometry = reopened.prediction(_record(4).study_hash)
    assert geometry == GEOMETRY and np.array_equal(stored, labels)

    first, token = reopened.list(page_size=2)
    second, token2 = reopened.list(page_size=2, page_token=token)
    third, end = reopened.list(page_size=2, page_token=token2)
    hashes = [r.study_hash for r in first + second + third]
    assert hashes == [_record(i).study_hash for i in (4, 3, 2, 1, 0)] and end == ""
    flagged = reopened.list(flagged_only=True, since=T0 + timedelta(hours=1))[0]
    assert [r.study_hash for r in flagged] == [_record(3).study_hash]
    assert [r.study_hash for r in reopened.list(model_version="1.0")[0]] == [
        _record(3).study_hash,
        _record(1).study_hash,
    ]
    reopened.close()


def test_training_jobs_store(db_url):
    engine = open_engine(db_url)
    jobs = JobStore(engine)
    spec = JobSpec(dataset="capture", recipe="demo", stages=["supervised"], max_steps=5)
    first = jobs.create(spec, "/work")
    second = jobs.create(replace(spec, model_version="2"), "/work")
    jobs.update(first.job_id, state=JobState.RUNNING, pid=1234, progress={"epoch": 1})
    done = jobs.update(second.job_id, state=JobState.SUCCEEDED, val_voldice={"ggo": 0.6})
    assert done.finished_at is not None and done.val_voldice == {"ggo": 0.6}
    running = jobs.in_state(JobState.RUNNING)
    assert [j.job_id for j in running] == [first.job_id]
    assert running[0].spec == spec and running[0].progress == {"epoch": 1}
    assert jobs.count(JobState.SUCCEEDED) == 1
    page, token = jobs.list(page_size=1)
    assert [j.job_id for j in page] == [second.job_id] and token
    assert [j.job_id for j in jobs.list(page_size=1, page_token=token)[0]] == [first.job_id]
    engine.dispose()


@pytest.mark.parametrize("records_first", [True, False], ids=["records-first", "optuna-first"])
def test_optuna_study_storage_shares_the_database_with_both_version_tables(db_url, records_first):
    def records() -> None:
        store = QualityStore(db_url)
        store.save_study(_record(7), np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY)
        store.close()

    def optuna_study() -> None:
        storage = open_storage(db_url)
        study = optuna.create_study(study_name="pg", storage=storage, load_if_exists=True)
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
        storage.engine.dispose()

    for step in (records, optuna_study) if records_first else (optuna_study, records):
        step()
    engine = create_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {RECORDS_VERSION_TABLE, OPTUNA_VERSION_TABLE, STUDY_QUALITY_TABLE, "trials"} <= tables
    assert _version(engine, RECORDS_VERSION_TABLE) == [HEAD]
    assert HEAD not in _version(engine, OPTUNA_VERSION_TABLE)  # Optuna's own revision only
    engine.dispose()
    assert len(optuna.load_study(study_name="pg", storage=open_storage(db_url)).trials) == 2
    store = QualityStore(db_url)
    assert store.get(_record(7).study_hash).outcome.model_name == "net"
    store.close()


def test_a_database_that_is_down_at_start_is_a_clear_error(postgres_server):
    url = postgres_server.create_database("down_at_start")
    postgres_server.stop()
    try:
        with pytest.raises(RecordsDatabaseError) as raised:
            QualityStore(url)
        message = str(raised.value)
        assert "records database" in message and "cannot be reached" in message
        assert f"127.0.0.1:{postgres_server.port}/down_at_start" in message
        assert "records.db_url" in message
    finally:
        postgres_server.start()


def test_a_password_never_appears_in_the_error(postgres_server):
    url = postgres_server.url("nowhere").replace("pulmoseg@", "pulmoseg:s3cret-pw@")
    postgres_server.stop()
    try:
        with pytest.raises(RecordsDatabaseError) as raised:
            open_engine(url)
        assert "s3cret-pw" not in str(raised.value) and "***" in str(raised.value)
    finally:
        postgres_server.start()


def test_a_database_that_goes_away_mid_run_fails_the_write_and_recovers(postgres_server):
    url = postgres_server.create_database("goes_away")
    store = QualityStore(url)
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    store.save_study(_record(1), labels, GEOMETRY)
    postgres_server.stop("immediate")  # a crash: pooled connections are left dangling
    try:
        with pytest.raises(OperationalError):
            store.save_study(_record(2), labels, GEOMETRY)
    finally:
        postgres_server.start()
    # Back up: the pool drops its dead connections and the next write lands.
    store.save_study(_record(3), labels, GEOMETRY)
    hashes = {r.study_hash for r in store.list()[0]}
    assert hashes == {_record(1).study_hash, _record(3).study_hash}
    store.close()
