"""The real gRPC server on a real PostgreSQL records database that goes away and comes back.

While the database is down, studies are still answered; each record that cannot be written is
counted (``pulmoseg_errors_total{method="RecordQuality"}``, alert PulmosegRecordsNotWritten)
and logged, never silently dropped. Once the database is back the next record lands without a
restart. A database that is down when the server starts is a clear start-up error.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from service.client.client import SegmentationClient
from service.records.database import RecordsDatabaseError
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings

RECORD_ERRORS = ("pulmoseg_errors_total", "RecordQuality")


def _settings(model: Path, url: str):
    return load_settings(
        env={},
        port=0,
        metrics_port=0,
        max_workers=4,
        max_concurrent_studies=1,
        model_path=model,
        quality_db_url=url,
        consistency_fraction=0.0,
    )


def _record_errors(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        exposition = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == RECORD_ERRORS[0] and sample.labels.get("method") == RECORD_ERRORS[1]
    )


def _stored_hashes(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                row[0] for row in connection.execute(text("SELECT study_hash FROM study_quality"))
            }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> list[Path]:
    from training.phantom import generate_dataset

    root = tmp_path_factory.mktemp("outage_phantoms")
    manifest = generate_dataset(
        root, studies=3, seed=515, size=64, slices=16, lesion_free_fraction=0.0, progress=False
    )
    return [root / s["dicom"] for s in json.loads(manifest.read_text())["studies"]]


@pytest.fixture
def server(postgres_server, hu_model) -> Iterator[tuple[RunningServer, str]]:
    if not postgres_server.running:
        postgres_server.start()
    url = postgres_server.create_database("outage_mid_run")
    running = build_server(_settings(hu_model, url))
    assert running.wait_until_ready(60), f"model did not load: {running.load_error!r}"
    yield running, url
    running.stop(grace=1)


def test_studies_are_answered_while_the_records_database_is_away(
    server, studies, postgres_server, caplog
):
    running, url = server
    with SegmentationClient(running.address, timeout_s=120) as client:
        first = client.segment_directory(studies[0])
        assert _stored_hashes(url) == {first.summary["study_uid_hash"]}
        assert _record_errors(running.metrics_port) == 0

        postgres_server.stop("immediate")  # the database crashes mid-run
        try:
            during = client.segment_directory(studies[1])
        finally:
            postgres_server.start()
        # The study was answered in full; its record is counted as lost and logged.
        assert during.seg_bytes and during.summary["study_uid_hash"]
        assert _record_errors(running.metrics_port) == 1
        assert any("could not record quality of study" in r.getMessage() for r in caplog.records)

        after = client.segment_directory(studies[2])  # back up: no restart needed
    assert _record_errors(running.metrics_port) == 1
    assert _stored_hashes(url) == {
        first.summary["study_uid_hash"],
        after.summary["study_uid_hash"],
    }


def test_a_records_database_down_at_start_stops_the_server_with_a_clear_error(
    postgres_server, hu_model
):
    if not postgres_server.running:
        postgres_server.start()
    url = postgres_server.create_database("down_before_start")
    postgres_server.stop()
    try:
        with pytest.raises(RecordsDatabaseError, match="cannot be reached") as raised:
            build_server(_settings(hu_model, url))
        assert "down_before_start" in str(raised.value)
    finally:
        postgres_server.start()
