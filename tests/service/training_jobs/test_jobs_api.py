"""The TrainingService through the real gRPC server and CLI: switched off by default, clear
errors for bad arguments, a bounded queue, and cancellation that leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.cli.main import main as pulmoseg
from service.client.client import SegmentationClient
from service.client.errors import ClientError
from service.serving.server import RunningServer
from service.training_jobs.process import is_job_process
from tests.service.training_jobs.jobs_helpers import (
    LONG_CONFIG,
    make_phantom,
    start_server,
    stop_and_cancel,
    wait_for,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("jobs_phantom"))


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def server(tmp_path: Path, one_thread: None) -> Iterator[RunningServer]:
    # The model is never loaded: the TrainingService does not need one.
    running = start_server(tmp_path / "serving", tmp_path, training_max_queued=1)
    yield running
    stop_and_cancel(running)


def test_training_is_off_by_default_and_says_which_setting(tmp_path: Path, data: Path) -> None:
    running = start_server(tmp_path / "serving", tmp_path, training_enabled=False)
    try:
        with (
            SegmentationClient(running.address, timeout_s=30) as client,
            pytest.raises(ClientError) as caught,
        ):
            client.training.submit(str(data), recipe="demo")
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "'training.enabled'" in str(caught.value)
        assert not (tmp_path / "training").exists()
    finally:
        running.stop(grace=1)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"recipe": "no_such_recipe"}, "'recipe'"),
        ({"recipe": "demo", "dataset": "no_such_folder"}, "'dataset'"),
        ({"recipe": "demo", "dataset": "captured"}, "capture_dir"),
        ({"config_yaml": "- just\n- a list\n"}, "'config_yaml'"),
        ({"recipe": "demo", "max_steps": -3}, "'max_steps'"),
        ({}, "'recipe'"),
    ],
)
def test_bad_arguments_are_invalid_argument_naming_them(
    server: RunningServer, data: Path, arguments: dict, named: str
) -> None:
    dataset = arguments.pop("dataset", str(data))
    with SegmentationClient(server.address, timeout_s=30) as client:
        with pytest.raises(ClientError) as caught:
            client.training.submit(dataset, **arguments)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert named in str(caught.value)
        assert client.training.list()[0] == []  # nothing was queued


def test_queue_is_bounded_and_cancel_leaves_nothing_behind(
    server: RunningServer, data: Path, tmp_path: Path
) -> None:
    with SegmentationClient(server.address, timeout_s=30) as client:
        running = client.training.submit(str(data), config_yaml=LONG_CONFIG)
        job_id = running["job_id"]

        def stepping() -> dict | None:
            job = client.training.get(job_id)
            return job if int(job["progress"]["step"]) else None

        job = wait_for(stepping, "the long job to report training steps")
        assert job["state"] == "RUNNING" and job["progress"]["stage"] == "supervised"
        # Watches are bounded (a quarter of max_workers=4: one), so they cannot starve calls.
        watching = client.training.watch(job_id, timeout_s=60)
        assert next(watching)["job_id"] == job_id
        with pytest.raises(ClientError) as caught:
            next(client.training.watch(job_id, timeout_s=60))
        assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        watching.close()
        queued = client.training.submit(str(data), config_yaml=LONG_CONFIG)
        assert queued["state"] == "QUEUED"  # training_max_running is 1
        with pytest.raises(ClientError) as caught:
            client.training.submit(str(data), config_yaml=LONG_CONFIG)
        assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "training_max_queued" in str(caught.value)

        record = server.jobs.store.get(job_id) if server.jobs else None
        assert record is not None and record.pid is not None
        assert is_job_process(record.pid, record.token)
        work = Path(record.work_dir)
        assert (work / "train" / "supervised" / "last.pt").exists() or work.is_dir()
        # The queued one first (so the scheduler cannot start it), then the running one.
        assert client.training.cancel(queued["job_id"])["state"] == "CANCELLED"
        assert client.training.cancel(job_id)["state"] == "CANCELLED"
        assert not is_job_process(record.pid, record.token)
        _assert_group_gone(record.pid)
        assert not work.exists()
        assert list((tmp_path / "training" / "jobs").iterdir()) == []
        assert not list((tmp_path / "training").glob("registry/*/.job-*"))
        with pytest.raises(ClientError) as caught:
            client.training.cancel(job_id)
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION


def _assert_group_gone(pgid: int) -> None:
    """No live process of the job's process group (the worker and the training under it)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            assert not (int(fields[2]) == pgid and fields[0] != "Z"), f"pid {entry.name} lives"


def test_cli_submits_lists_shows_and_cancels(
    server: RunningServer, data: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "long.yaml"
    config.write_text(LONG_CONFIG)
    connect = ["--server", server.address, "--timeout", "30"]
    assert pulmoseg(["jobs", "submit", str(data), "--config", str(config), *connect]) == 0
    out = capsys.readouterr().out
    assert out.startswith("submitted training job ")
    job_id = out.split()[3]
    assert pulmoseg(["jobs", "list", *connect]) == 0
    assert job_id in capsys.readouterr().out
    assert pulmoseg(["jobs", "show", job_id, *connect]) == 0
    assert "inline config on" in capsys.readouterr().out
    assert pulmoseg(["jobs", "cancel", job_id, *connect]) == 0
    assert "cancelled training job" in capsys.readouterr().out
    assert pulmoseg(["jobs", "show", "nosuchjob", *connect]) == 1
    err = capsys.readouterr().err
    assert "No training job with id 'nosuchjob'" in err and "Traceback" not in err
    assert pulmoseg(["jobs", "submit", str(data), "--recipe", "nope", *connect]) == 1
    assert "Argument 'recipe'" in capsys.readouterr().err


def test_promotion_needs_a_model_folder(tmp_path: Path, data: Path, one_thread: None) -> None:
    single = tmp_path / "model.onnx"
    single.write_bytes(b"not loaded in this test")
    running = start_server(single, tmp_path)
    try:
        with (
            SegmentationClient(running.address, timeout_s=30) as client,
            pytest.raises(ClientError) as caught,
        ):
            client.training.promote("abc123")
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "single file" in str(caught.value) and "model_path" in str(caught.value)
    finally:
        running.stop(grace=1)
