"""Who may train and promote, through the real server and CLI: training never starts open to
anyone, promotion needs its own credential, datasets stay inside the data root, and every
submit, cancel and promote is audited with the caller's identity."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.cli.main import main as pulmoseg
from service.client.client import SegmentationClient
from service.client.errors import ClientError
from service.serving.server import RunningServer
from service.training_jobs.audit import AuditLog
from tests.service.training_jobs.jobs_helpers import (
    LONG_CONFIG,
    make_phantom,
    start_server,
    stop_and_cancel,
)

SEGMENTATION_TOKEN = "segmentation-secret"
PROMOTE_TOKEN = "promote-secret"


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pulmoseg serve`` with training on, as an operator would start it."""
    variables = {
        **os.environ,
        "PULMOSEG_TRAINING_ENABLED": "true",
        "PULMOSEG_TRAINING_DIR": str(tmp_path / "training"),
        "PULMOSEG_METRICS_ENABLED": "false",
        "PULMOSEG_QUALITY_DB_PATH": str(tmp_path / "records.sqlite"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--model", str(tmp_path / "m"), *args],
        capture_output=True,
        text=True,
        env=variables,
        timeout=120,
        check=False,
    )


def test_training_without_authentication_refuses_to_start(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--port", "0")
    assert done.returncode == 1, done.stderr
    assert "authenticates nobody" in done.stderr and "'auth_token'" in done.stderr
    assert "training.allow_unauthenticated" in done.stderr and "Traceback" not in done.stderr


def test_the_development_setting_is_for_loopback_only(tmp_path: Path) -> None:
    done = _serve(
        tmp_path, "--host", "0.0.0.0", "--port", "0", PULMOSEG_TRAINING_ALLOW_UNAUTHENTICATED="1"
    )
    assert done.returncode == 1, done.stderr
    assert "loopback only" in done.stderr and "'0.0.0.0'" in done.stderr


def test_the_promote_token_must_differ_from_the_segmentation_token(tmp_path: Path) -> None:
    done = _serve(
        tmp_path,
        "--port",
        "0",
        PULMOSEG_AUTH_TOKEN="same",
        PULMOSEG_TRAINING_PROMOTE_TOKEN="same",
    )
    assert done.returncode == 1
    assert "'training.promote_token' must differ from 'auth_token'" in done.stderr


def test_start_up_line_warns_when_training_is_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.serving.server")
    running = start_server(tmp_path / "serving", tmp_path)
    running.stop(grace=1)
    line = next(r for r in caplog.records if "training service on" in r.getMessage())
    assert line.levelno == logging.WARNING
    assert "no 'auth_token' and no mTLS" in line.getMessage()
    assert f"jobs in '{tmp_path / 'training'}'" in line.getMessage()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data root: a phantom dataset ``ds`` and a folder outside the root with a manifest."""
    base = tmp_path_factory.mktemp("access")
    make_phantom(base / "root" / "ds")
    outside = base / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text((base / "root" / "ds" / "manifest.json").read_text())
    (base / "root" / "escape").symlink_to(outside)
    evil = base / "root" / "evil"
    evil.mkdir()
    studies = [{"id": "x", "image": "../../outside/manifest.json"}]
    (evil / "manifest.json").write_text(json.dumps({"studies": studies}))
    broken = base / "root" / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"studies": [\n  {"id": "a",}\n]}\n')
    return base / "root"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("access_server")
    (tmp / "serving" / "1").mkdir(parents=True)  # a model folder (never loaded here)
    running = start_server(
        tmp / "serving",
        tmp,
        auth_token=SEGMENTATION_TOKEN,
        training_promote_token=PROMOTE_TOKEN,
        training_allow_unauthenticated=False,
        training_data_root=root,
    )
    yield running
    stop_and_cancel(running)


def _refused(
    server: RunningServer, token: str | None, call: str, *args: str, **kwargs: str
) -> ClientError:
    with (
        SegmentationClient(server.address, token=token, timeout_s=30) as client,
        pytest.raises(ClientError) as caught,
    ):
        getattr(client.training, call)(*args, **kwargs)
    return caught.value


def test_calls_without_a_token_are_unauthenticated(server: RunningServer, root: Path) -> None:
    error = _refused(server, None, "submit", str(root / "ds"), recipe="demo")
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    error = _refused(server, None, "promote", "abc123")
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert "'training.promote_token'" in str(error)


def test_the_segmentation_token_may_not_promote(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _refused(server, SEGMENTATION_TOKEN, "promote", "abc123")
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    assert "may not promote" in str(error)
    connect = ["--server", server.address, "--token", SEGMENTATION_TOKEN, "--timeout", "30"]
    assert pulmoseg(["jobs", "promote", "abc123", *connect]) == 1
    err = capsys.readouterr().err
    assert "PERMISSION_DENIED" in err and "may not promote" in err and "Traceback" not in err


def test_the_promote_token_passes_and_promotion_needs_a_reference_set(
    server: RunningServer,
) -> None:
    error = _refused(server, PROMOTE_TOKEN, "promote", "abc123")
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "'training.reference_set'" in str(error)


@pytest.mark.parametrize(
    ("dataset", "code", "named"),
    [
        ("outside", grpc.StatusCode.PERMISSION_DENIED, "outside the server's data root"),
        ("../outside", grpc.StatusCode.INVALID_ARGUMENT, "must not contain '..'"),
        ("ds/../../outside", grpc.StatusCode.INVALID_ARGUMENT, "must not contain '..'"),
        ("escape", grpc.StatusCode.PERMISSION_DENIED, "through a symbolic link"),
        ("evil", grpc.StatusCode.PERMISSION_DENIED, "names image '../../outside"),
        ("nothing_here", grpc.StatusCode.INVALID_ARGUMENT, "does not exist"),
        ("broken", grpc.StatusCode.INVALID_ARGUMENT, "is not valid JSON"),
    ],
)
def test_datasets_stay_inside_the_data_root(
    server: RunningServer, root: Path, dataset: str, code: grpc.StatusCode, named: str
) -> None:
    if dataset == "outside":
        dataset = str(root.parent / "outside")  # an absolute path elsewhere on the server
    error = _refused(server, SEGMENTATION_TOKEN, "submit", dataset, recipe="demo")
    assert error.code is code, error
    assert named in str(error)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        assert "'" in str(error) and (dataset in str(error) or str(root) in str(error))


def test_a_broken_manifest_names_its_file_and_line(server: RunningServer, root: Path) -> None:
    error = _refused(server, SEGMENTATION_TOKEN, "submit", str(root / "broken"), recipe="demo")
    assert f"'{root / 'broken' / 'manifest.json'}'" in str(error)
    assert "line 2" in str(error)


def test_every_submit_cancel_and_promote_is_audited(
    server: RunningServer, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.training_jobs.audit")
    assert server.monitor is not None
    audit = AuditLog(server.monitor.store.engine)
    before = len(audit.entries(1000))
    with SegmentationClient(server.address, token=SEGMENTATION_TOKEN, timeout_s=30) as client:
        job = client.training.submit(str(root / "ds"), config_yaml=LONG_CONFIG)
        client.training.cancel(job["job_id"])
    _refused(server, SEGMENTATION_TOKEN, "promote", job["job_id"])
    _refused(server, None, "cancel", job["job_id"])
    _refused(server, PROMOTE_TOKEN, "promote", job["job_id"])
    rows = [(e.action, e.identity, e.job_id, e.outcome) for e in audit.entries(1000)[before:]]
    assert rows == [
        ("submit", "token:auth_token", job["job_id"], "OK"),
        ("cancel", "token:auth_token", job["job_id"], "OK"),
        ("promote", "token:auth_token", "", "PERMISSION_DENIED"),
        ("cancel", "anonymous", "", "UNAUTHENTICATED"),
        ("promote", "token:training.promote_token", job["job_id"], "FAILED_PRECONDITION"),
    ]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit: ")]
    assert f"audit: submit by token:auth_token of job {job['job_id']}: OK" in logged
    assert len(logged) == len(rows)
