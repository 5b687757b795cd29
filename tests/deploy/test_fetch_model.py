"""The chart's model-download init step (helm/pulmoseg/files/fetch-model.py) against a real
HTTP server on loopback: the file appears only complete and with the expected SHA-256."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "helm" / "pulmoseg" / "files" / "fetch-model.py"
PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("www")
    (root / "model.onnx").write_bytes(PAYLOAD)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch(url: str, dest: Path, sha256: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "MODEL_URL": url, "MODEL_DEST": str(dest)}
    if sha256:
        env["MODEL_SHA256"] = sha256
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_downloads_and_checks_the_digest(http_root: str, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "model.onnx"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    run = fetch(f"{http_root}/model.onnx", dest, digest.upper())
    assert run.returncode == 0, run.stderr
    assert dest.read_bytes() == PAYLOAD
    assert digest in run.stdout
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.onnx"]


def test_wrong_digest_leaves_no_file(http_root: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    run = fetch(f"{http_root}/model.onnx", dest, "0" * 64)
    assert run.returncode == 1
    assert "MODEL_SHA256 expects 000" in run.stderr
    assert list(tmp_path.iterdir()) == [], "neither the model nor a partial file may remain"


def test_missing_object_and_bad_scheme_fail_clearly(http_root: str, tmp_path: Path) -> None:
    run = fetch(f"{http_root}/nope.onnx", tmp_path / "m.onnx")
    assert run.returncode == 1 and "404" in run.stderr
    run = fetch("s3://bucket/model.onnx", tmp_path / "m.onnx")
    assert run.returncode == 1 and "must start with https:// or http://" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_environment_is_named(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT)], env={"PATH": os.environ["PATH"]}, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "MODEL_URL is not set" in run.stderr
