"""The durable spool and the worker's pure rules, on a real filesystem (no network)."""

from __future__ import annotations

import json
import os
import stat
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pacs_peers import free_port
from pydicom.uid import generate_uid

from service.client.retry import RetryPolicy
from service.core.identifiers import uid_hash
from service.pacs.metrics import PacsMetrics
from service.pacs.settings import load_pacs_settings
from service.pacs.spool import REASON_FILE, Spool, SpoolFullError
from service.pacs.worker import Worker, retry_policy, series_key
from service.serving.server import build_server
from service.serving.settings import load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_spool(tmp_path: Path, clock: Clock, max_bytes: int = 10_000) -> Spool:
    return Spool(tmp_path / "spool", tmp_path / "dead", max_bytes, clock=clock)


def test_store_writes_the_instance_privately_under_hashed_names(tmp_path, clock) -> None:
    spool = make_spool(tmp_path, clock)
    path = spool.store("1.2.3", "1.2.3.4", b"x" * 100, calling_aet="CT1")
    assert (
        path == tmp_path / "spool" / "incoming" / uid_hash("1.2.3") / f"{uid_hash('1.2.3.4')}.dcm"
    )
    assert path.read_bytes() == b"x" * 100
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert spool.used_bytes == 100
    assert spool.open_studies() == {uid_hash("1.2.3"): clock.now}
    # The same instance again replaces the file and does not count twice.
    spool.store("1.2.3", "1.2.3.4", b"y" * 100)
    assert spool.used_bytes == 100


def test_a_full_spool_refuses_without_writing(tmp_path, clock) -> None:
    spool = make_spool(tmp_path, clock, max_bytes=250)
    spool.store("1.2", "1.2.1", b"a" * 200)
    with pytest.raises(
        SpoolFullError, match="holds 200 bytes; 100 more would exceed its limit of 250"
    ):
        spool.store("1.2", "1.2.2", b"b" * 100)
    assert spool.used_bytes == 200
    assert len(list((tmp_path / "spool").rglob("*.dcm"))) == 1


def test_recovery_drops_half_written_files_and_reopens_studies(tmp_path, clock) -> None:
    spool = make_spool(tmp_path, clock)
    spool.store("1.2", "1.2.1", b"a" * 50)
    study_dir = tmp_path / "spool" / "incoming" / uid_hash("1.2")
    (study_dir / "partial.dcm.1234abcd.tmp").write_bytes(b"half")
    clock.now += 500  # the restart comes much later than the last instance

    again = make_spool(tmp_path, clock)
    assert not list(study_dir.glob("*.tmp"))
    assert again.used_bytes == 50
    # Counted as active at the restart, so the sender gets a full timeout to resume.
    assert again.open_studies() == {uid_hash("1.2"): clock.now}
    assert again.close_idle(timeout_s=10) == []


def test_closing_an_idle_study_moves_it_to_work_and_late_instances_start_anew(
    tmp_path, clock
) -> None:
    spool = make_spool(tmp_path, clock)
    spool.store("1.2", "1.2.1", b"a" * 10, calling_aet="CT1")
    spool.store("1.2", "1.2.2", b"b" * 10, calling_aet="CT1")
    clock.now += 5
    assert spool.close_idle(timeout_s=10) == []
    clock.now += 5
    (batch,) = spool.close_idle(timeout_s=10)
    assert batch.study_hash == uid_hash("1.2")
    assert batch.calling_aets == ["CT1"]
    assert len(batch.instance_files()) == 2
    assert json.loads((batch.path / "batch.json").read_text())["state"] == "segment"
    assert spool.open_studies() == {}
    spool.store("1.2", "1.2.3", b"c" * 10)
    assert list(spool.open_studies()) == [uid_hash("1.2")]
    assert [b.batch_id for b in spool.batches()] == [batch.batch_id]
    assert spool.used_bytes == 30


def test_dead_letter_keeps_the_files_with_a_reason_and_frees_the_spool(tmp_path, clock) -> None:
    spool = make_spool(tmp_path, clock)
    spool.store("1.2", "1.2.1", b"a" * 10)
    (batch,) = spool.close_idle(timeout_s=0)
    target = spool.to_dead_letter(batch, "not segmented: no CT series")
    assert (target / REASON_FILE).read_text() == "not segmented: no CT series\n"
    assert len(list((target / "instances").glob("*.dcm"))) == 1
    assert spool.batches() == []
    assert spool.used_bytes == 0


def test_the_duplicate_ledger_forgets_after_its_window(tmp_path, clock) -> None:
    spool = make_spool(tmp_path, clock)
    spool.mark_delivered("abc")
    entry = tmp_path / "spool" / "ledger" / "abc"
    os.utime(entry, (clock.now, clock.now))
    assert spool.is_delivered("abc", window_s=100)
    clock.now += 101
    assert not spool.is_delivered("abc", window_s=100)
    spool.prune_ledger(window_s=100)
    assert not entry.exists()


def test_the_worker_retries_by_the_clients_policy_with_the_settings_budget() -> None:
    settings = load_pacs_settings(
        env={},
        destinations=["NOWHERE@127.0.0.1:9"],
        max_attempts=4,
        retry_initial_delay_s=5,
        retry_max_delay_s=60,
    )
    policy = retry_policy(settings)
    assert policy == RetryPolicy(max_attempts=4, initial_backoff_s=5.0, max_backoff_s=60.0)
    steps = [policy.backoff_s(n, rng=lambda: 0.0) for n in (1, 2, 3, 4, 5, 9)]
    assert steps == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_series_key_ignores_order_and_tells_series_apart() -> None:
    def ds(uid: str) -> pydicom.Dataset:
        d = pydicom.Dataset()
        d.SOPInstanceUID = uid
        return d

    assert series_key([ds("1"), ds("2")]) == series_key([ds("2"), ds("1")])
    assert series_key([ds("1"), ds("2")]) != series_key([ds("1"), ds("3")])


def _sr_instance(study_uid: str) -> bytes:
    sr = pydicom.Dataset()
    sr.StudyInstanceUID, sr.SeriesInstanceUID = study_uid, generate_uid()
    sr.SOPInstanceUID = generate_uid()
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.Modality = "SR"
    sr.file_meta = pydicom.dataset.FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    sr.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out = BytesIO()
    sr.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _worker(tmp_path: Path, clock: Clock, **settings) -> tuple[Worker, Spool, PacsMetrics]:
    s = load_pacs_settings(
        env={},
        spool_dir=tmp_path / "spool",
        dead_letter_dir=tmp_path / "dead",
        destinations=["NOWHERE@127.0.0.1:9"],
        study_timeout_s=1,
        **settings,
    )
    spool = Spool(s.spool.dir, s.spool.dead_letter_path, s.spool.max_bytes, clock=clock)
    metrics = PacsMetrics()
    return Worker(s, spool, metrics, clock=clock), spool, metrics


def test_a_study_without_ct_goes_to_the_dead_letter_folder_with_the_services_reason(
    tmp_path, clock
) -> None:
    worker, spool, metrics = _worker(tmp_path, clock)
    study = generate_uid()
    spool.store(study, "1.2.3", _sr_instance(study))
    clock.now += 2
    worker.run_once()
    (reason,) = (tmp_path / "dead").glob("*/reason.txt")
    assert "No CT series in the study: found SR (1 instance)" in reason.read_text()
    assert (
        metrics.registry.get_sample_value(
            "pulmoseg_pacs_studies_completed_total", {"outcome": "dead_letter"}
        )
        == 1
    )


def test_an_unreachable_segmentation_server_is_retried_then_dead_lettered(
    tmp_path, clock, held_out_study
) -> None:
    worker, spool, metrics = _worker(
        tmp_path,
        clock,
        grpc_target=f"127.0.0.1:{free_port()}",
        grpc_timeout_s=5,
        max_attempts=3,
        retry_initial_delay_s=10,
        retry_max_delay_s=10,
    )
    for path in sorted(held_out_study.dicom_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        spool.store(str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), path.read_bytes())
    clock.now += 2
    worker.run_once()
    (batch,) = spool.batches()
    assert batch.segment_attempts == 1
    assert clock.now + 5 < batch.next_attempt_at <= clock.now + 10  # 10 s, jittered down
    worker.run_once()  # too early: no new attempt
    assert spool.batches()[0].segment_attempts == 1
    for _ in range(2):
        clock.now += 10
        worker.run_once()
    (reason,) = (tmp_path / "dead").glob("*/reason.txt")
    assert "segmentation failed after 3 attempt(s): Could not reach the pulmoseg server" in (
        reason.read_text()
    )
    assert (
        metrics.registry.get_sample_value("pulmoseg_pacs_segment_calls_total", {"result": "retry"})
        == 2
    )


def test_a_server_that_always_answers_unavailable_gets_exactly_max_attempts_calls(
    tmp_path, clock, held_out_study
) -> None:
    """One layer of retries: the worker's budget is the number of calls the server sees (the
    worker's client does not retry on its own, which would multiply them)."""
    server = build_server(
        load_settings(env={}, port=0, metrics_enabled=False, model_path=tmp_path / "none.onnx"),
        autoload=False,  # never loads its model: every SegmentStudy is UNAVAILABLE
    )
    try:
        worker, spool, metrics = _worker(
            tmp_path,
            clock,
            grpc_target=server.address,
            grpc_timeout_s=30,
            max_attempts=3,
            retry_initial_delay_s=10,
            retry_max_delay_s=10,
        )
        _spool_study(spool, held_out_study.dicom_dir)
        clock.now += 2
        for _ in range(5):  # more passes than the budget: the last ones find nothing to do
            worker.run_once()
            clock.now += 10
        calls = server.metrics.registry.get_sample_value(
            "pulmoseg_requests_total", {"method": "SegmentStudy", "code": "UNAVAILABLE"}
        )
    finally:
        server.stop(grace=0)
    assert calls == 3
    (reason,) = (tmp_path / "dead").glob("*/reason.txt")
    assert "segmentation failed after 3 attempt(s)" in reason.read_text()
    assert "still loading" in reason.read_text()
    retries = metrics.registry.get_sample_value(
        "pulmoseg_pacs_segment_calls_total", {"result": "retry"}
    )
    assert retries == 2


def _spool_study(spool: Spool, study_dir: Path) -> list[pydicom.Dataset]:
    headers = []
    for path in sorted(study_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        spool.store(str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), path.read_bytes())
        headers.append(ds)
    return headers


@pytest.mark.parametrize("resegment", [False, True])
def test_a_delivered_ct_series_is_skipped_unless_resegmenting_is_asked_for(
    tmp_path, clock, held_out_study, resegment: bool
) -> None:
    worker, spool, metrics = _worker(
        tmp_path,
        clock,
        grpc_target=f"127.0.0.1:{free_port()}",
        grpc_timeout_s=5,
        resegment_duplicates=resegment,
    )
    headers = _spool_study(spool, held_out_study.dicom_dir)
    spool.mark_delivered(series_key(headers))
    clock.now += 2
    worker.run_once()
    duplicates = metrics.registry.get_sample_value(
        "pulmoseg_pacs_studies_completed_total", {"outcome": "duplicate"}
    )
    if resegment:  # it went on to the (unreachable) server and waits for a retry
        assert duplicates is None
        (batch,) = spool.batches()
        assert batch.segment_attempts == 1
    else:
        assert duplicates == 1
        assert spool.batches() == []
        assert spool.used_bytes == 0


def test_work_older_than_the_age_limit_goes_to_the_dead_letter_folder(
    tmp_path, clock, held_out_study
) -> None:
    worker, spool, _ = _worker(
        tmp_path,
        clock,
        grpc_target=f"127.0.0.1:{free_port()}",
        grpc_timeout_s=5,
        spool_max_age_s=3600,
    )
    _spool_study(spool, held_out_study.dicom_dir)
    clock.now += 2
    worker.run_once()  # the server is down: a retry is scheduled
    assert len(spool.batches()) == 1
    clock.now += 3601
    worker.run_once()
    (reason,) = (tmp_path / "dead").glob("*/reason.txt")
    assert reason.read_text() == "still not done after 3600 s\n"
    assert spool.batches() == []
