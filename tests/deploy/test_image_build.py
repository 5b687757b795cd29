"""The service image, built and run on this machine without a Docker engine.

scripts/build_image.sh builds the project's Dockerfile with buildah (vfs storage, chroot
isolation) on a Debian bookworm base made by mmdebstrap; the tests here then run the image with
podman: `pulmoseg serve --help`, the user and contents of the image, and a real study through
the containerised server (model mounted read-only, client on the host, SEG read back with
highdicom and checked with dciodvfy, health probe and metrics from inside and outside).

The build is skipped, with the reason, where the tools are missing, where the process is not
root, or where the Debian base cannot be made (no mirror); any other build failure fails. The
image and the base stay in the container storage by tag (localhost/pulmoseg:debian-bookworm,
localhost/pulmoseg-base:bookworm) with their layers, so a second run rebuilds from the cache;
`buildah --storage-driver=vfs rmi --all` frees the space. Containers are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from service.client.client import SegmentationClient
from service.client.errors import ClientError
from tests.conftest import PhantomStudyPaths
from tests.dicom_validation import dciodvfy_errors

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_image.sh"
DOCKERFILE = REPO_ROOT / "Dockerfile"
MODEL = REPO_ROOT / "models" / "pulmoseg-real-ct.onnx"
IMAGE = "localhost/pulmoseg:debian-bookworm"
#: What the image build needs here (root: chroot isolation and mmdebstrap's root mode).
TOOLS = ("buildah", "podman", "mmdebstrap", "runc")
#: Exit codes of build_image.sh that mean "cannot build here" rather than "the build is broken".
UNAVAILABLE = {69: "a build tool is missing", 75: "the Debian base could not be made",
               77: "not root"}  # fmt: skip
#: The image's own container storage (scripts/build_image.sh, same variable and default).
STORAGE = Path(os.environ.get("PULMOSEG_IMAGE_STORAGE", "/var/lib/containers/pulmoseg"))
RUN_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
#: No network where none is needed (podman's default bridge needs CNI plugins).
OFFLINE = (*RUN_FLAGS, "--network", "none")
BUILD_TIMEOUT_S = 800  # below the suite's 900 s per-test timeout


def lock_names(lock: Path) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)==", lock.read_text(), re.MULTILINE))


def test_debian_lock_pins_the_same_packages_as_the_production_lock() -> None:
    # The Debian variant must test the production image's package set, not a different one;
    # it adds only the CUDA runtime library that the production base image provides.
    production = lock_names(REPO_ROOT / "requirements" / "serve.lock")
    debian = lock_names(REPO_ROOT / "requirements" / "serve-py311.lock")
    assert len(production) > 30
    assert production <= debian, f"missing from the Debian lock: {production - debian}"
    assert debian - production == {"nvidia-cuda-runtime"}


def test_build_script_sets_only_arguments_the_dockerfile_declares() -> None:
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), re.MULTILINE))
    passed = dict(re.findall(r"--build-arg\s+['\"]?(\w+)=([^'\"\s]*)", BUILD_SCRIPT.read_text()))
    assert {"BASE_IMAGE", "PYTHON", "SERVE_LOCK", "PIP_CERT"} <= set(passed)
    assert set(passed) <= declared, f"not declared in the Dockerfile: {set(passed) - declared}"
    lock = passed["SERVE_LOCK"]
    assert (REPO_ROOT / lock).exists()
    allowed = [line[1:] for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]  # fmt: skip
    assert lock in allowed, f"{lock} is not in the build context (.dockerignore)"


def test_build_script_rejects_an_unknown_argument() -> None:
    run = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--tga", "x"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 64
    assert "unknown argument '--tga'" in run.stderr


def build_image() -> str:
    """Build (or rebuild from the layer cache) and return the image tag; skip where impossible."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"image build needs {', '.join(missing)} (scripts/setup_image_tools.sh)")
    if os.geteuid() != 0:
        pytest.skip("image build needs root (buildah chroot isolation, mmdebstrap root mode)")
    started = time.monotonic()
    run = subprocess.run(
        ["nice", "-n", "10", "bash", str(BUILD_SCRIPT), "--tag", IMAGE],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    if run.returncode in UNAVAILABLE:
        pytest.skip(f"image build: {UNAVAILABLE[run.returncode]}: {run.stderr.strip()[-800:]}")
    assert run.returncode == 0, f"image build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    steps = [line for line in run.stdout.splitlines() if line.startswith("[build_image]")]
    print(f"image build {time.monotonic() - started:.0f} s", *steps, sep="\n")
    return IMAGE


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """podman on the build's storage. runc, not crun: crun cannot set RLIMIT_NOFILE in this
    sandbox and does not support its hybrid cgroups; runc works with the rlimits of RUN_FLAGS."""
    driver = (STORAGE / "driver").read_text().strip()
    command = ["podman", "--root", str(STORAGE / "root"), "--runroot", str(STORAGE / "run"),
               f"--storage-driver={driver}", "--runtime", "runc", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def test_serve_help_runs_in_the_image(image: str) -> None:
    run = podman("run", "--rm", *OFFLINE, image, "serve", "--help")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--model" in run.stdout and "--metrics-port" in run.stdout


def test_image_runs_as_uid_10001_without_training_code_or_torch(image: str) -> None:
    # monai is a namespace here (monai.deploy): MONAI core would bring monai.networks.
    script = (
        "import importlib.util as u, os, sys; "
        "print(os.getuid(), sys.version_info[:2], "
        "[m for m in ('torch', 'training', 'cupy', 'monai.networks') if u.find_spec(m)])"
    )
    run = podman("run", "--rm", *OFFLINE, image, "python", "-c", script)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "10001 (3, 11) []"


def test_image_keeps_its_healthcheck_and_user(image: str) -> None:
    # The OCI image format has no HEALTHCHECK: build_image.sh must build the docker format.
    run = podman("image", "inspect", "--format", "{{.HealthCheck.Test}} {{.User}}", image)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["[CMD", "pulmoseg-healthcheck", "--timeout", "5]", "10001:10001"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[dict[str, object]]:
    """`pulmoseg serve` in the image on the host network, the shipped model mounted read-only."""
    name = f"pulmoseg-test-{uuid.uuid4().hex[:8]}"
    port, metrics = free_port(), free_port()
    started = podman(
        "run", "--detach", "--name", name, "--network", "host", *RUN_FLAGS,
        "--volume", f"{MODEL}:/models/model.onnx:ro", image,
        "serve", "--model", "/models/model.onnx", "--port", str(port),
        "--metrics-port", str(metrics),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        wait_until_serving(name, port, deadline=time.monotonic() + 300)
        yield {"name": name, "port": port, "metrics": metrics}
    finally:
        podman("rm", "--force", "--time", "10", name, timeout=120)


def wait_until_serving(name: str, port: int, deadline: float) -> None:
    """Wait for SERVING; fail at once, with the server's log, if the container stops."""
    with SegmentationClient(f"127.0.0.1:{port}", timeout_s=30) as client:
        while True:
            try:
                client.wait_until_serving(timeout_s=5)
                return
            except ClientError:
                state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
                if state != "running" or time.monotonic() > deadline:
                    logs = podman("logs", name)
                    pytest.fail(
                        f"container {state}, not SERVING:\n{(logs.stdout + logs.stderr)[-4000:]}"
                    )


def test_health_probe_in_the_container_reports_serving(container: dict[str, object]) -> None:
    run = podman(
        "exec", str(container["name"]), "pulmoseg-healthcheck", "--port", str(container["port"])
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SERVING" in run.stdout


def test_containerised_server_segments_a_study(
    container: dict[str, object], held_out_study: PhantomStudyPaths, tmp_path: Path
) -> None:
    with SegmentationClient(f"127.0.0.1:{container['port']}", timeout_s=300) as client:
        result = client.segment_directory(held_out_study.dicom_dir)
    out = tmp_path / "seg.dcm"
    out.write_bytes(result.seg_bytes)
    seg_ds = pydicom.dcmread(out)
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    sources = [pydicom.dcmread(p, stop_before_pixels=True)
               for p in sorted(held_out_study.dicom_dir.iterdir())]  # fmt: skip
    assert seg_ds.Modality == "SEG"
    assert seg_ds.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = {
        ref.ReferencedSOPInstanceUID
        for series in seg_ds.ReferencedSeriesSequence
        for ref in series.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    labels = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    assert labels == ["lung", "ggo", "consolidation"]
    assert dciodvfy_errors(out) == []
    # No GPU and no CUDA libraries in the Debian variant: the provider really used is the CPU's.
    assert result.summary["provider"] == "CPUExecutionProvider"
    with urllib.request.urlopen(
        f"http://127.0.0.1:{container['metrics']}/metrics", timeout=30
    ) as r:
        metrics = r.read().decode()
    assert re.search(r"^pulmoseg_\w+", metrics, re.MULTILINE), metrics[:500]


def test_the_image_writes_its_records_to_postgresql(
    image: str, postgres_server, held_out_study: PhantomStudyPaths
) -> None:
    """The image has the PostgreSQL driver: started with a postgresql:// records URL (a real
    server on loopback, tests/postgres_server.py) it migrates the database and writes the
    study's record there."""
    from sqlalchemy import create_engine, text

    if not postgres_server.running:
        postgres_server.start()
    url = postgres_server.create_database("image_records")
    name = f"pulmoseg-pg-{uuid.uuid4().hex[:8]}"
    port, metrics = free_port(), free_port()
    started = podman(
        "run", "--detach", "--name", name, "--network", "host", *RUN_FLAGS,
        "--env", f"PULMOSEG_QUALITY_DB_URL={url}",
        "--volume", f"{MODEL}:/models/model.onnx:ro", image,
        "serve", "--model", "/models/model.onnx", "--port", str(port),
        "--metrics-port", str(metrics),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        wait_until_serving(name, port, deadline=time.monotonic() + 300)
        with SegmentationClient(f"127.0.0.1:{port}", timeout_s=300) as client:
            result = client.segment_directory(held_out_study.dicom_dir)
    finally:
        podman("rm", "--force", "--time", "10", name, timeout=120)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            hashes = [
                r[0] for r in connection.execute(text("SELECT study_hash FROM study_quality"))
            ]
    finally:
        engine.dispose()
    assert hashes == [result.summary["study_uid_hash"]]
