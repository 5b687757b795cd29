"""Logging: the formatter, the wiring from settings, and the real server's log of one study.

The end-to-end test runs `pulmoseg serve` as a process (as an operator would), segments a
phantom study whose patient attributes carry distinctive values, and reads everything the
process wrote: INFO lines must be there, patient identifiers and the raw StudyInstanceUID
must not, and in JSON mode every line must be one JSON object.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest

from service.cli.main import main
from service.client.client import SegmentationClient
from service.core.identifiers import uid_hash
from service.observability.logging_config import LogFormat, configure_logging

REPO = Path(__file__).resolve().parents[3]
#: Distinctive patient attributes written into the uploaded copies of the phantom study.
PATIENT = {
    "PatientName": "Quixote^Zebulon",
    "PatientID": "PID-7731-QX",
    "PatientBirthDate": "19450317",
    "AccessionNumber": "ACC99812Q",
}


@pytest.fixture
def restore_root_logger():
    """configure_logging changes the process-wide root logger; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


# ------------------------------------------------------------------------------ formatting


def test_json_lines_hold_time_level_logger_message_and_extras(restore_root_logger) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = logging.getLogger("pulmoseg.test")
    log.debug("not shown")
    log.info("study %s segmented", "abc123", extra={"instances": 24, "path": Path("/x")})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "pulmoseg.test"
    assert first["message"] == "study abc123 segmented"
    assert (first["instances"], first["path"]) == (24, "/x")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["time"])
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exception"]


def test_text_format_and_a_second_call_replaces_the_first(restore_root_logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("DEBUG", stream=first)
    configure_logging("WARNING", LogFormat.TEXT, stream=second)
    logging.getLogger("pulmoseg.test").info("quiet now")
    logging.getLogger("pulmoseg.test").warning("loud")
    assert first.getvalue() == ""
    assert re.fullmatch(r"\S+ \S+ WARNING pulmoseg\.test: loud\n", second.getvalue())


@pytest.mark.parametrize(
    ("level", "fmt", "message"),
    [("chatty", "text", "Log level must be one of"), ("INFO", "xml", "Log format must be one of")],
)
def test_bad_level_or_format(level: str, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        configure_logging(level, fmt)


# ------------------------------------------------------------------- wiring in `pulmoseg serve`


@pytest.mark.parametrize(
    ("env_level", "argv", "expected"),
    [("ERROR", [], "ERROR"), ("info", [], "INFO"), ("ERROR", ["--debug"], "DEBUG")],
)
def test_serve_passes_the_log_settings_on(
    monkeypatch: pytest.MonkeyPatch,
    restore_root_logger,
    env_level: str,
    argv: list[str],
    expected: str,
) -> None:
    import service.serving.server

    seen = []
    monkeypatch.setattr(
        service.serving.server, "serve", lambda settings: seen.append(settings) or 0
    )
    monkeypatch.setenv("PULMOSEG_LOG_LEVEL", env_level)
    monkeypatch.setenv("PULMOSEG_LOG_FORMAT", "json")
    assert main([*argv, "serve", "--model", "m.onnx"]) == 0
    assert (seen[0].log.level, seen[0].log.format) == (expected, LogFormat.JSON)


def _serve(model: Path, level: str, fmt: str = "text") -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PULMOSEG_LOG_LEVEL": level,
        "PULMOSEG_LOG_FORMAT": fmt,
        "PULMOSEG_GRACE_PERIOD_S": "2",
        "HOLOSCAN_LOG_LEVEL": "ERROR",
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--model", str(model)]
    return subprocess.Popen(
        [*command, "--port", "0", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


@pytest.mark.parametrize(("level", "shows_info"), [("INFO", True), ("WARNING", False)])
def test_log_level_from_the_environment_takes_effect(
    tmp_path: Path, level: str, shows_info: bool
) -> None:
    # No model: the server binds (INFO), fails to load (ERROR) and exits 1, without a model.
    process = _serve(tmp_path / "missing.onnx", level)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert "Could not load the model" in output
    assert ("gRPC server bound to" in output) is shows_info, output


class _Collector:
    """Reads a process's output on a thread; tells when a line matches a pattern."""

    def __init__(self, process: subprocess.Popen[str], pattern: str) -> None:
        self.lines: list[str] = []
        self.match: re.Match[str] | None = None
        self.found = threading.Event()
        self._pattern = re.compile(pattern)
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)
            if self.match is None and (match := self._pattern.search(line)):
                self.match = match
                self.found.set()
        self.found.set()  # the process ended

    def join(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)


def _with_patient_attributes(files: list[Path]) -> list[bytes]:
    """Part-10 bytes of the study with distinctive patient values (the phantom leaves some
    empty), so a log line that carried them would be caught."""
    out = []
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in PATIENT.items():
            setattr(ds, keyword, value)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_served_study_is_logged_without_patient_identifiers(
    exported_model: Path, held_out_study, fmt: str
) -> None:
    files = sorted(p for p in held_out_study.dicom_dir.rglob("*") if p.is_file())
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    uploads = _with_patient_attributes(files)
    process = _serve(exported_model, "INFO", fmt)
    output = _Collector(process, r"gRPC server bound to (\d[\d.:]*\d)")
    try:
        assert output.found.wait(120) and output.match, "no bound address:\n" + output.join()
        with SegmentationClient(output.match.group(1), timeout_s=120) as client:
            client.wait_until_serving(timeout_s=120)
            result = client.segment_files(uploads)
        assert result.seg_bytes
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    log = output.join()

    messages = [json.loads(line)["message"] for line in log.splitlines()] if fmt == "json" else []
    if fmt == "json":
        assert all(isinstance(m, str) for m in messages)  # every line parsed as a JSON object
    text = "\n".join(messages) if messages else log
    assert re.search(r"model pulmoseg-test 0\.0\.1 loaded", text), log
    assert re.search(rf"study {uid_hash(study_uid)} segmented", text), log
    leaked = [k for k, v in {**PATIENT, "StudyInstanceUID": study_uid}.items() if v in log]
    sop_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    leaked += [f"SOPInstanceUID {uid}" for uid in sop_uids if uid in log]
    assert not leaked, f"log lines carry {leaked}:\n{log}"
    assert "Quixote" not in log and "Zebulon" not in log
