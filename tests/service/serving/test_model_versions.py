"""Model versions: a directory of versions, GetModelInfo listing them, hot swap on reload.

Real server on loopback with the session's exported model copied in as versions; a call held
open across the swap shows that nothing in flight fails; a corrupt version is refused.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.client.client import SegmentationClient
from service.core.errors import ModelError
from service.serving.model_versions import list_model_versions, newest_model_version
from service.serving.server import build_server
from service.serving.settings import load_settings


def test_versions_are_listed_in_natural_order(tmp_path: Path) -> None:
    for name in ("9", "10", "1.10.0", ".incoming"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"x")
    (tmp_path / "2.onnx").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty").mkdir()
    assert [v.version for v in list_model_versions(tmp_path)] == ["1.10.0", "2", "9", "10"]
    assert newest_model_version(tmp_path).path == tmp_path / "10" / "model.onnx"
    assert [v.version for v in list_model_versions(tmp_path / "2.onnx")] == ["2.onnx"]
    with pytest.raises(ModelError, match=r"holds no model version: expected '<version>/model"):
        newest_model_version(tmp_path / "empty")
    with pytest.raises(ModelError, match="does not exist"):
        list_model_versions(tmp_path / "missing")


def test_new_version_is_swapped_in_without_failing_a_call_in_flight(
    exported_model: Path, held_out_study, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    (models / "1").mkdir(parents=True)
    shutil.copy(exported_model, models / "1" / "model.onnx")
    running = build_server(load_settings(env={}, port=0, metrics_enabled=False, model_path=models))
    files = sorted(p for p in held_out_study.dicom_dir.rglob("*") if p.is_file())
    try:
        assert running.wait_until_ready(120), running.load_error
        first_pipeline = running.pipeline
        with SegmentationClient(running.address, timeout_s=120) as client:
            info = client.model_info()
            assert (info["serving_version"], info["available_versions"]) == ("1", ["1"])

            in_flight: dict[str, object] = {}
            started = threading.Event()

            def slow_study() -> None:
                def progress(stage, fraction) -> None:
                    started.set()

                in_flight["result"] = client.segment_files(files, progress)

            thread = threading.Thread(target=slow_study)
            thread.start()
            assert started.wait(60)
            (models / "2").mkdir()
            shutil.copy(exported_model, models / "2" / "model.onnx")
            assert running.reload() is True
            thread.join(120)
            assert in_flight["result"].summary["num_instances"] == len(files)  # type: ignore[attr-defined]
            assert running.pipeline is not first_pipeline

            (models / "3").mkdir()
            (models / "3" / "model.onnx").write_bytes(b"not an onnx model")
            assert running.reload() is False
            info = client.model_info()
            assert info["serving_version"] == "2"
            assert info["available_versions"] == ["1", "2", "3"]
            assert info["last_reload_error"].startswith("ModelError: Model file")
            assert "3/model.onnx' is not a readable ONNX model" in info["last_reload_error"]
            assert client.segment_files(files).summary["num_instances"] == len(files)

            (models / "4").mkdir()
            mismatched_manifest(exported_model, models / "4" / "model.onnx")
            assert running.reload() is False  # loads, but cannot segment: refused at warm-up
            info = client.model_info()
            assert info["serving_version"] == "2"
            assert info["last_reload_error"].startswith(
                "ModelError: The model could not segment the warm-up study"
            )
            assert re.search(r"expected \(\d+, 5, ", info["last_reload_error"])  # the mismatch
            assert client.segment_files(files).summary["num_instances"] == len(files)
    finally:
        running.stop(grace=0)


def mismatched_manifest(model: Path, out: Path) -> None:
    """The model with one class too many in its manifest: a readable file the network's output
    (four classes) contradicts."""
    import onnx

    from service.core.classes import ClassInfo
    from service.core.manifest import MANIFEST_KEY, ModelManifest

    proto = onnx.load(str(model))
    (entry,) = [p for p in proto.metadata_props if p.key == MANIFEST_KEY]
    manifest = ModelManifest.from_json(entry.value)
    extra = dataclasses.replace(manifest.classes[-1], index=len(manifest.classes), name="extra")
    assert isinstance(extra, ClassInfo)
    entry.value = dataclasses.replace(manifest, classes=[*manifest.classes, extra]).to_json()
    onnx.save(proto, str(out))


def test_sighup_makes_pulmoseg_serve_pick_up_a_new_version(
    exported_model: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    (models / "1").mkdir(parents=True)
    shutil.copy(exported_model, models / "1" / "model.onnx")
    env = {**os.environ, "PULMOSEG_MODEL_PATH": str(models), "PULMOSEG_PORT": "0"}
    env["PULMOSEG_METRICS_ENABLED"] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "service.serving.server"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        address = None
        assert process.stderr is not None
        for line in process.stderr:
            match = re.search(r"gRPC server bound to (\S+)", line)
            if match:
                address = match.group(1)
                break
        assert address, "the server never logged its bound address"
        threading.Thread(target=process.stderr.read, daemon=True).start()
        with SegmentationClient(address, timeout_s=10) as client:
            client.wait_until_serving(timeout_s=120)
            assert client.model_info()["serving_version"] == "1"
            (models / "2").mkdir()
            shutil.copy(exported_model, models / "2" / "model.onnx")
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while client.model_info()["serving_version"] != "2":
                assert time.monotonic() < deadline, "SIGHUP did not swap in version 2"
                time.sleep(0.2)
            assert client.health() == "SERVING"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_model_that_fails_its_warm_up_never_reports_serving(
    exported_model: Path, tmp_path: Path
) -> None:
    mismatched_manifest(exported_model, tmp_path / "model.onnx")
    running = build_server(
        load_settings(env={}, port=0, metrics_enabled=False, model_path=tmp_path / "model.onnx")
    )
    try:
        assert running.wait_until_ready(120) is False
        assert isinstance(running.load_error, ModelError)
        assert "could not segment the warm-up study" in str(running.load_error)
        with SegmentationClient(running.address, timeout_s=10) as client:
            assert client.health() == "NOT_SERVING"
    finally:
        running.stop(grace=0)


def test_model_poll_serves_a_new_version_without_a_signal_and_skips_a_broken_one(
    exported_model: Path, tmp_path: Path
) -> None:
    """Replicas sharing a model volume (Kubernetes) see a promoted version by polling."""
    models = tmp_path / "models"
    (models / "1").mkdir(parents=True)
    shutil.copy(exported_model, models / "1" / "model.onnx")
    settings = load_settings(
        env={}, port=0, metrics_enabled=False, model_path=models, model_poll_s=0.2
    )
    running = build_server(settings)
    try:
        assert running.wait_until_ready(120), running.load_error
        assert running.model_watch is not None
        with SegmentationClient(running.address, timeout_s=30) as client:
            (models / "2").mkdir()
            (models / "2" / "model.onnx").write_bytes(b"not an onnx model")
            deadline = time.monotonic() + 120
            while not client.model_info()["last_reload_error"]:
                assert time.monotonic() < deadline, "the watch never tried version 2"
                time.sleep(0.2)
            assert client.model_info()["serving_version"] == "1"
            # refused once, not retried on every poll: the next check does nothing
            assert running.model_watch.check_once() is False

            (models / "3").mkdir()
            shutil.copy(exported_model, models / "3" / "model.onnx")
            while client.model_info()["serving_version"] != "3":
                assert time.monotonic() < deadline, "the watch did not swap in version 3"
                time.sleep(0.2)
            assert client.model_info()["last_reload_error"] == ""
    finally:
        running.stop(grace=0)
    assert not running.model_watch._thread.is_alive()


def test_model_poll_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="Setting 'model_poll_s' must be >= 0, got -1"):
        load_settings(env={"PULMOSEG_MODEL_POLL_S": "-1"})
