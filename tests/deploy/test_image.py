"""What runs inside the image, exercised here without Docker: the entry point (stack size,
secrets from files, command dispatch), the gRPC health probe against real servers, the
service running without the packages the lean image leaves out, and the size estimate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings
from tests.import_blocking import blocking_prelude, run_app_without, run_python

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO_ROOT / "docker" / "healthcheck.py"
VENV_BIN = str(Path(sys.executable).parent)


def entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_entrypoint_raises_the_stack_and_reads_secret_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    run = entrypoint(
        "sh",
        "-c",
        'echo "$(ulimit -s) ${PULMOSEG_AUTH_TOKEN} ${PULMOSEG_AUTH_TOKEN_FILE:-unset}"',
        PULMOSEG_STACK_KIB="16384",
        PULMOSEG_AUTH_TOKEN_FILE=str(token),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["16384", "s3cret", "unset"]


def test_entrypoint_stops_on_an_unreadable_secret_file(tmp_path: Path) -> None:
    run = entrypoint("sh", "-c", "echo started", PULMOSEG_AUTH_TOKEN_FILE=str(tmp_path / "nope"))
    assert run.returncode == 64
    assert "PULMOSEG_AUTH_TOKEN_FILE points at" in run.stderr and "started" not in run.stdout


def test_entrypoint_hands_subcommands_to_the_pulmoseg_cli() -> None:
    run = entrypoint("serve", "--help")
    assert run.returncode == 0, run.stderr
    assert "--model" in run.stdout and "--metrics-port" in run.stdout


def probe(
    port: int, timeout: float = 5.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the image's health probe as Docker/kubelet would, with only ``env`` as settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PULMOSEG_")}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--port", str(port), "--timeout", str(timeout)],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def serving(exported_model: Path) -> Iterator[RunningServer]:
    running = build_server(
        load_settings(env={}, model_path=exported_model, port=0, metrics_enabled=False)
    )
    assert running.wait_until_ready(120), f"model did not load: {running.load_error!r}"
    yield running
    running.stop(grace=1)


def test_healthcheck_passes_on_a_serving_server(serving: RunningServer) -> None:
    run = probe(serving.port)
    assert run.returncode == 0, run.stderr
    assert "SERVING" in run.stdout


def test_healthcheck_fails_while_the_model_is_not_loaded(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    running = build_server(load_settings(env={}, model_path=broken, port=0, metrics_enabled=False))
    try:
        deadline = time.monotonic() + 60
        while running.load_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running.load_error is not None, "the broken model should fail to load"
        run = probe(running.port)
    finally:
        running.stop(grace=0)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "NOT_SERVING" in run.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    run = probe(1, timeout=2)
    assert run.returncode == 2
    assert "UNAVAILABLE" in run.stderr


# Not in the image: torch and training, MONAI core, and what scripts/lock_serve.sh excludes.
LEAN_BLOCKED = {"torch", "training", "cupy", "cupy_backends", "fastrlock", "cuda", "perf_analyzer"}


def test_service_runs_without_what_the_lean_image_leaves_out(
    exported_model: Path, held_out_study, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = run_app_without(
        LEAN_BLOCKED,
        "lean image",
        held_out_study.dicom_dir,
        out,
        exported_model,
        extra="import service.serving.server, service.client.client",
    )
    assert run.returncode == 0 and "BLOCKED-RUN OK" in run.stdout, (
        run.stdout[-2000:] + run.stderr[-3000:]
    )
    assert pydicom.dcmread(out / "seg.dcm").Modality == "SEG"


def test_the_lean_block_really_blocks() -> None:
    run = run_python(blocking_prelude(LEAN_BLOCKED, "lean image") + "import cupy\n", 120)
    assert run.returncode != 0 and "lean image" in run.stderr


def test_size_estimate_counts_the_locked_packages_only() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "estimate_image_size.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(run.stdout)
    names = {p["name"] for p in report["packages"]}
    assert {"onnxruntime-gpu", "holoscan-cu13", "highdicom"} <= names
    assert not names & {"torch", "cupy-cuda13x", "monai"}
    assert report["total_bytes"] == sum(p["bytes"] for p in report["packages"])
    assert report["total_bytes"] > 300e6  # onnxruntime-gpu alone is about 350 MB


def test_healthcheck_speaks_tls_and_verifies_the_service_name(tmp_path: Path) -> None:
    """With TLS on (where kubelet's gRPC probe cannot connect) the probe follows the server's
    PULMOSEG_TLS_* settings and checks the certificate against the Service name."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=pulmoseg.imaging.svc", "-addext", "subjectAltName=DNS:pulmoseg.imaging.svc",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    settings = load_settings(
        env={}, port=0, metrics_enabled=False, model_path=tmp_path / "m.onnx",
        tls_cert=cert, tls_key=key,
    )  # fmt: skip
    running = build_server(settings, autoload=False)
    tls_env = {"PULMOSEG_TLS_CERT": str(cert), "PULMOSEG_TLS_KEY": str(key)}
    try:
        named = probe(
            running.port, env={**tls_env, "PULMOSEG_HEALTH_SERVER_NAME": "pulmoseg.imaging.svc"}
        )
        unnamed = probe(running.port, timeout=3, env=tls_env)
        plaintext = probe(running.port, timeout=3)
    finally:
        running.stop(grace=0)
    # Reached over TLS: the model is not loaded (autoload off), so NOT_SERVING.
    assert named.returncode == 1 and "NOT_SERVING" in named.stderr, named.stderr
    # 127.0.0.1 is not in the certificate: the handshake must fail, not pass unverified.
    assert unnamed.returncode == 2, unnamed.stdout + unnamed.stderr
    assert plaintext.returncode == 2
