"""The quality score in the records: migration 0003 up and down on a real SQLite file with a
record written before it, and the score's round trip through the store and the gRPC message."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text
from test_quality_records import GEOMETRY, _record

from service.grpc_api.quality_messages import record_message
from service.quality.records import MIGRATIONS, QualityStore, database_url

SCORE_COLUMNS = {"quality_score", "quality_flagged", "quality_signals"}


def _alembic(engine, action, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config, revision)


def _columns(engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("study_quality")}


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


def test_the_score_round_trips_through_the_store_and_the_record_message():
    store = QualityStore("sqlite://")
    signals = {
        "variant": "with_tta",
        "threshold": 0.4,
        "lung_field_dice": 0.9,
        "lesion_entropy": None,
    }
    record = replace(_record(1), quality_score=0.31, quality_flagged=True, quality_signals=signals)
    store.save_study(record, np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY)
    back = store.get(record.study_hash)
    assert (back.quality_score, back.quality_flagged) == (0.31, True)
    assert back.quality_signals == signals and back.quality_threshold == 0.4
    message = record_message(back).quality
    assert (message.score, message.flagged, message.threshold) == (0.31, True, 0.4)
    assert message.variant == "with_tta"
    assert dict(message.signals) == {"lung_field_dice": 0.9}  # None: not measured, left out
    store.save_study(_record(2), np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY)
    assert not record_message(store.get(_record(2).study_hash)).HasField("quality")
    store.close()
