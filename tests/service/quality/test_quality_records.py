"""Quality records store: persistence across reopen, replacement, filters and paging.

The schema and migrations are tested with the records package (tests/service/records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from service.core.errors import StudyNotFoundError
from service.core.study_outcome import ClinicalOutcome, ConsistencyOutcome, StudyOutcome
from service.quality.geometry import StudyGeometry
from service.quality.records import QualityStore, StudyRecord
from service.records.database import database_url

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
    """Record ``i``; ``changes`` replace fields of its outcome."""
    outcome = StudyOutcome(
        study_uid_hash=f"{i:016x}",
        class_volumes_ml={"lung": 10.0 + i, "ggo": 1.0},
        num_instances=3,
        model_name="net",
        model_version="1.0" if i % 2 else "2.0",
        provider="CPUExecutionProvider",
        stage_seconds={"inference": 0.5, "total": 1.0},
        clinical=ClinicalOutcome(
            class_volumes_ml={"lung": 10.0 + i, "ggo": 1.0},
            lung_volume_ml=11.0 + i,
            lesion_volume_ml=1.0,
            involvement_percent=100 / (11.0 + i),
            severity_grade="CT-1",
        ),
        consistency=ConsistencyOutcome(
            transform="rot90",
            voldice={"lung": 0.99, "ggo": 0.5 if i % 3 == 0 else 0.9},
            threshold=0.8,
            flagged=i % 3 == 0,
        ),
        flagged=i % 3 == 0,
    )
    return StudyRecord(
        study_hash=outcome.study_uid_hash,
        created_at=T0 + timedelta(hours=i),
        outcome=outcome.model_copy(update=changes),
    )


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
    assert record.outcome == _record(3).outcome  # every outcome field comes back as written
    assert record.outcome.consistency.voldice == {"lung": 0.99, "ggo": 0.5}
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
    assert record.outcome.model_version == "3.0" and record.reference_voldice is None
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
