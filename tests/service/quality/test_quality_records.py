"""Quality records: Alembic schema = models, persistence across reopen, filters and paging."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.core.errors import StudyNotFoundError
from service.quality.geometry import StudyGeometry
from service.quality.records import QualityStore, StudyRecord, database_url, migrate
from service.quality.records_schema import VERSION_TABLE, Base

GEOMETRY = StudyGeometry(
    shape=(3, 4, 5),
    spacing_zyx=(2.0, 0.5, 0.5),
    origin=(0.0, 0.0, 0.0),
    row_cosine=(1.0, 0.0, 0.0),
    column_cosine=(0.0, 1.0, 0.0),
    slice_normal=(0.0, 0.0, 1.0),
    frame_of_reference_hash="ab" * 8,
)
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _record(i: int, **changes) -> StudyRecord:
    base = StudyRecord(
        study_hash=f"{i:016x}",
        created_at=T0 + timedelta(hours=i),
        model_name="net",
        model_version="1.0" if i % 2 else "2.0",
        provider="CPUExecutionProvider",
        num_instances=3,
        class_volumes_ml={"lung": 10.0 + i, "ggo": 1.0},
        lung_volume_ml=11.0 + i,
        involvement_percent=100 / (11.0 + i),
        grade="CT-1",
        consistency_transform="rot90",
        consistency_voldice={"lung": 0.99, "ggo": 0.5 if i % 3 == 0 else 0.9},
        flagged=i % 3 == 0,
        stage_seconds={"inference": 0.5, "total": 1.0},
    )
    return replace(base, **changes)


def test_migrations_build_exactly_the_models_schema(tmp_path):
    engine = create_engine(database_url(None, tmp_path / "q.sqlite"))
    migrate(engine)
    migrate(engine)  # idempotent: a restart on an up-to-date database changes nothing
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    assert set(inspect(engine).get_table_names()) == {
        VERSION_TABLE,
        "study_quality",
        "study_prediction",
        "training_jobs",
    }


def test_records_survive_reopening_and_keep_the_prediction(tmp_path):
    url = database_url(None, tmp_path / "quality.sqlite")
    labels = np.random.default_rng(1).integers(0, 4, GEOMETRY.shape).astype(np.uint8)
    store = QualityStore(url)
    store.save_study(_record(3), labels, GEOMETRY)
    store.set_reference(_record(3).study_hash, {"ggo": 0.7}, {}, "BINARY")
    store.close()

    reopened = QualityStore(url)
    record = reopened.get(_record(3).study_hash)
    assert record.reference_voldice == {"ggo": 0.7} and record.reference_type == "BINARY"
    assert record.created_at == T0 + timedelta(hours=3)
    assert record.flagged and record.consistency_voldice == {"lung": 0.99, "ggo": 0.5}
    stored, geometry = reopened.prediction(_record(3).study_hash)
    np.testing.assert_array_equal(stored, labels)
    assert geometry == GEOMETRY
    with pytest.raises(StudyNotFoundError, match="No quality record for study hash 'ffff'"):
        reopened.get("ffff")


def test_segmenting_again_replaces_the_record_and_clears_the_old_reference():
    store = QualityStore("sqlite://")
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    store.save_study(_record(1), labels, GEOMETRY)
    store.set_reference(_record(1).study_hash, {"ggo": 0.7}, {}, "BINARY")
    store.save_study(_record(1, model_version="3.0"), labels + 1, GEOMETRY)
    record = store.get(_record(1).study_hash)
    assert record.model_version == "3.0" and record.reference_voldice is None
    assert store.prediction(_record(1).study_hash)[0].max() == 1
    assert len(store.list()[0]) == 1


def test_list_filters_and_pages_newest_first():
    store = QualityStore("sqlite://")
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    for i in range(10):
        store.save_study(_record(i), labels, GEOMETRY)
    seen, token = [], ""
    while True:
        page, token = store.list(page_size=4, page_token=token)
        seen += [r.study_hash for r in page]
        if not token:
            break
    assert seen == [_record(i).study_hash for i in reversed(range(10))]
    flagged, _ = store.list(flagged_only=True)
    assert [r.study_hash for r in flagged] == [_record(i).study_hash for i in (9, 6, 3, 0)]
    v1, _ = store.list(
        model_version="1.0", since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=8)
    )
    assert [r.study_hash for r in v1] == [_record(i).study_hash for i in (7, 5, 3)]
    with pytest.raises(ValueError, match="page_token"):
        store.list(page_token="garbage!")
    with pytest.raises(ValueError, match="page_size"):
        store.list(page_size=0)
