"""Done-when of training jobs, through the real gRPC server and real training processes: a job
on phantom data streams progress, survives a server restart (re-attached while it runs, or
resumed from its checkpoint when its process died), lands a model version in the registry, is
promoted and served after the hot swap; a worse model is refused with both figures."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from service.cli.main import main as pulmoseg
from service.client.client import SegmentationClient
from service.client.errors import ClientError
from service.training_jobs.process import is_job_process
from tests.service.training_jobs.jobs_helpers import (
    BETTER_CONFIG,
    WEAK_CONFIG,
    make_phantom,
    start_server,
    stop_and_cancel,
    train_and_export,
    wait_for,
)

NAME = "phantom-lesions"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("e2e_phantom"))


@pytest.fixture(scope="module")
def weak_model(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A barely trained model made outside the service (what is served before promotion)."""
    work = tmp_path_factory.mktemp("weak_model")
    return train_and_export(WEAK_CONFIG, data, work / "train", work / "model.onnx")


@pytest.fixture
def serving(tmp_path: Path, weak_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model folder serving version 1 (the weak model); jobs run with one thread each."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "serving" / "1").mkdir(parents=True)
    shutil.copy(weak_model, tmp_path / "serving" / "1" / "model.onnx")
    return tmp_path / "serving"


def _follow_until(client: SegmentationClient, job_id: str, until: Any) -> list[dict]:
    events = []
    for event in client.training.watch(job_id, timeout_s=300):
        events.append(event)
        if until(event):
            break
    return events


def _wait_succeeded(client: SegmentationClient, job_id: str) -> dict:
    events = _follow_until(client, job_id, lambda e: False)
    assert events[-1]["state"] == "SUCCEEDED", events[-1]
    return client.training.get(job_id)


def test_job_survives_restart_is_promoted_and_served(
    serving: Path, data: Path, tmp_path: Path
) -> None:
    first = start_server(serving, tmp_path, load=True, training_reference_set=str(data))
    servers = [first]
    try:
        with SegmentationClient(first.address, timeout_s=120) as client:
            assert client.model_info()["serving_version"] == "1"
            job = client.training.submit(str(data), config_yaml=BETTER_CONFIG, model_name=NAME)
            job_id = job["job_id"]
            early = _follow_until(
                client, job_id, lambda e: e["state"] == "RUNNING" and int(e["step"]) > 0
            )
        assert early[0]["state"] in ("QUEUED", "RUNNING")
        record = first.jobs.store.get(job_id) if first.jobs else None
        assert record is not None
        first.stop(grace=1)
        # The job is its own process: the server stopping does not stop it.
        assert is_job_process(record.pid, record.token), "the job died with the server"

        second = start_server(serving, tmp_path, load=True, training_reference_set=str(data))
        servers.append(second)
        with SegmentationClient(second.address, timeout_s=120) as client:
            events = _follow_until(client, job_id, lambda e: False)
            done = client.training.get(job_id)
            assert done["state"] == "SUCCEEDED", done
            assert done["attempts"] == 1  # re-attached, not started again
            steps = [int(e["step"]) for e in early + events if e["stage"] == "supervised"]
            assert steps == sorted(steps) and steps[-1] == 24
            assert any(int(e["total_steps"]) == 24 for e in events)
            assert any(e["val_voldice"].get("lung", 0) > 0 for e in events)

            entry = tmp_path / "training" / "registry" / NAME / done["model_version"]
            assert (entry / "model.onnx").is_file()
            meta = json.loads((entry / "job.json").read_text())
            assert meta["job_id"] == job_id and meta["data"] == str(data.resolve())
            assert meta["validation_voldice"] == pytest.approx(done["val_voldice"])

            promoted = client.training.promote(job_id)["record"]
            assert promoted["promoted"] and promoted["promoted_version"] == "2"
            assert promoted["candidate_voldice"] >= promoted["serving_voldice"]
            info = client.model_info()
            assert info["serving_version"] == "2" and info["name"] == NAME
            assert client.training.get(job_id)["promotion"]["promoted"] is True

            # A barely trained model must not replace the better one now served.
            weak = client.training.submit(str(data), config_yaml=WEAK_CONFIG, model_name=NAME)
            weak_done = _wait_succeeded(client, weak["job_id"])
            assert weak_done["model_version"] == "2"  # the registry's own numbering
            with pytest.raises(ClientError) as caught:
                client.training.promote(weak["job_id"])
            refused = client.training.get(weak["job_id"])["promotion"]
    finally:
        for running in servers[1:]:
            stop_and_cancel(running)
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    text = str(caught.value)
    assert f"{refused['candidate_voldice']:.4f}" in text
    assert f"{refused['serving_voldice']:.4f}" in text
    assert f"on the site reference set '{data}'" in text
    assert "own validation split (reported, not deciding)" in text
    assert refused["promoted"] is False and refused["serving_version"] == "2"
    assert refused["candidate_voldice"] < refused["serving_voldice"]
    assert sorted(p.name for p in serving.iterdir()) == ["1", "2"]


def test_job_whose_process_died_resumes_after_restart(
    serving: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = start_server(serving, tmp_path)
    servers = [first]
    try:
        with SegmentationClient(first.address, timeout_s=120) as client:
            job_id = client.training.submit(str(data), config_yaml=BETTER_CONFIG)["job_id"]
            _follow_until(client, job_id, lambda e: int(e["step"]) >= 8)
        record = first.jobs.store.get(job_id) if first.jobs else None
        assert record is not None and record.pid is not None
        first.stop(grace=1)
        os.killpg(record.pid, signal.SIGKILL)  # the machine went down with the server
        wait_for(lambda: not is_job_process(record.pid, record.token), "the job to die")
        assert (Path(record.work_dir) / "train" / "supervised" / "last.pt").is_file()

        second = start_server(serving, tmp_path)
        servers.append(second)
        # Followed from the command line this time: exit code 0 only once it succeeded.
        assert pulmoseg(["jobs", "watch", job_id, "--server", second.address]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[-1].startswith(f"{job_id} SUCCEEDED supervised epoch 2 step 24/24")
        with SegmentationClient(second.address, timeout_s=120) as client:
            done = client.training.get(job_id)
        assert done["state"] == "SUCCEEDED" and done["attempts"] == 2
        assert "--resume" in (Path(record.work_dir) / "train.log").read_text()
    finally:
        for running in servers[1:]:
            stop_and_cancel(running)


def _lesion_over_the_lung(data: Path, out: Path) -> Path:
    """A copy of ``data`` whose labels call the whole lung GGO: a dataset built so that a model
    trained on it wins on its own validation split (paint GGO over the lung, no consolidation
    to miss), while on real references it is poor."""
    import nibabel as nib
    import numpy as np

    shutil.copytree(data, out)
    for study in json.loads((out / "manifest.json").read_text())["studies"]:
        path = out / study["label"]
        image = nib.load(path)
        labels = np.asarray(image.dataobj)
        labels = np.where(labels >= 1, 2, labels).astype(labels.dtype)
        nib.save(nib.Nifti1Image(labels, image.affine, image.header), path)
    return out


def test_a_candidate_that_wins_on_its_own_split_but_loses_on_the_reference_set_is_refused(
    data: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("better_model")
    better = train_and_export(BETTER_CONFIG, data, work / "train", work / "model.onnx")
    serving = tmp_path / "serving"
    (serving / "1").mkdir(parents=True)
    shutil.copy(better, serving / "1" / "model.onnx")
    rigged = _lesion_over_the_lung(data, tmp_path / "rigged")
    running = start_server(serving, tmp_path, training_reference_set=str(data))
    try:
        with SegmentationClient(running.address, timeout_s=120) as client:
            job = client.training.submit(str(rigged), config_yaml=BETTER_CONFIG, model_name=NAME)
            done = _wait_succeeded(client, job["job_id"])
            with pytest.raises(ClientError) as caught:
                client.training.promote(job["job_id"])
            refused = client.training.get(job["job_id"])["promotion"]
    finally:
        stop_and_cancel(running)
    own = (done["val_voldice"]["ggo"] + done["val_voldice"]["consolidation"]) / 2
    assert own > refused["serving_voldice"], "the rigged candidate should win on its own split"
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused["promoted"] is False
    assert refused["candidate_voldice"] < refused["serving_voldice"]
    assert f"it scored {own:.4f}" in str(caught.value)
    assert sorted(p.name for p in serving.iterdir()) == ["1"]
