"""What a user reads when a job fails or a reader goes away, through the real server, a real
training process and the CLI: the tool's own sentence (no exception wrapper, no warnings), and
a quiet exit 0 when ``jobs watch`` writes into a closed pipe (``| head -0``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from service.client.client import SegmentationClient
from service.serving.server import RunningServer
from tests.service.training_jobs.jobs_helpers import (
    WEAK_CONFIG,
    make_phantom,
    start_server,
    stop_and_cancel,
    wait_for,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("failure_text_server")
    running = start_server(tmp / "serving", tmp)
    yield running
    stop_and_cancel(running)


@pytest.fixture(scope="module")
def failed_job(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """A job that passes every submit-time check and fails in training: a study file is gone."""
    data = make_phantom(tmp_path_factory.mktemp("failure_text_phantom"))
    manifest = json.loads((data / "manifest.json").read_text())
    missing = data / manifest["studies"][0]["image"]
    missing.unlink()
    with SegmentationClient(server.address, timeout_s=30) as client:
        job_id = client.training.submit(str(data), config_yaml=WEAK_CONFIG)["job_id"]

        def ended() -> dict | None:
            job = client.training.get(job_id)
            return job if job["state"] in ("FAILED", "SUCCEEDED") else None

        return job_id, wait_for(ended, "the job to fail", timeout_s=300)


def test_a_failed_job_shows_the_tool_s_one_sentence(failed_job: tuple[str, dict]) -> None:
    _, job = failed_job
    assert job["state"] == "FAILED"
    message = job["progress"]["message"]
    assert message and "\n" not in message, message
    assert "RuntimeError" not in message and "exited with code" not in message
    assert "Warning" not in message and not message.startswith("pulmoseg train")


def test_watch_into_a_closed_pipe_exits_quietly(
    server: RunningServer, failed_job: tuple[str, dict]
) -> None:
    job_id, _ = failed_job
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -0` once head has exited
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "jobs", "watch", job_id,
             "--server", server.address],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
