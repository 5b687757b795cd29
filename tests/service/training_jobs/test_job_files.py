"""The job folder's typed files: what the server writes for the worker (job.json) and what the
worker reports (result.json), read back through their models; malformed files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.training_jobs.job_files import (
    RESULT_FILE,
    WORKER_JOB_FILE,
    JobFolder,
    JobResult,
    WorkerJob,
)
from service.training_jobs.registry import REGISTRY_ENTRY_FILE
from service.training_jobs.state import JobState


def test_the_worker_job_round_trips_through_its_file(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path)
    job = WorkerJob(
        job_id="abc123",
        training_dir=tmp_path / "training",
        data=tmp_path / "data",
        stages=["supervised", "tcsm"],
        max_steps=5,
        model_name="net",
    )
    folder.write_job(job)
    assert folder.read_job() == job
    written = json.loads((tmp_path / WORKER_JOB_FILE).read_text())
    assert written["data"] == str(tmp_path / "data") and written["model_version"] == ""


def test_a_result_is_written_atomically_and_read_as_a_job_state(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path)
    assert folder.read_result() is None
    result = JobResult(
        state=JobState.SUCCEEDED,
        model_name="net",
        model_version="3",
        registry_path="/r/net/3",
        val_voldice={"lung": 0.9},
    )
    folder.write_result(result)
    back = folder.read_result()
    assert back == result and back.state is JobState.SUCCEEDED and back.succeeded
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESULT_FILE]  # no temporary left
    folder.clear_result()
    assert folder.read_result() is None


def test_a_failed_result_needs_only_its_message() -> None:
    failed = JobResult.model_validate_json('{"state": "FAILED", "message": "RuntimeError: x"}')
    assert failed.state is JobState.FAILED and not failed.succeeded
    assert failed.message == "RuntimeError: x"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"state": "DONE"}', "state"),
        ('{"state": "CANCELLED"}', "must be SUCCEEDED or FAILED, got CANCELLED"),
        ('{"state": "SUCCEEDED", "model_name": "net"}', "must name 'model_name'"),
        ("{not json", "Invalid JSON"),
    ],
)
def test_a_malformed_result_is_a_value_error_naming_the_problem(
    tmp_path: Path, text: str, error: str
) -> None:
    (tmp_path / RESULT_FILE).write_text(text)
    with pytest.raises(ValidationError, match=error) as caught:
        JobFolder(tmp_path).read_result()
    assert isinstance(caught.value, ValueError)  # the scheduler fails such a job, not itself


def test_the_two_job_json_files_have_distinct_names_in_code() -> None:
    """Same name on disk (existing registries and job folders stay readable), two constants."""
    assert WORKER_JOB_FILE == REGISTRY_ENTRY_FILE == "job.json"
    assert JobFolder(Path("/j")).worker_job == Path("/j/job.json")
