"""Real DICOM peers for the gateway tests: Orthanc, dcmtk's storescu/echoscu, and the gateway
itself as a ``pulmoseg pacs`` subprocess (so it can be SIGKILLed and restarted).

A missing Debian binary fails the test with a pointer to ``scripts/setup.sh`` (which installs
it, as CI does) instead of skipping: a skipped PACS test would hide that nothing was checked.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from service.core.loopback import free_port
from tests.dicom_validation import dciodvfy_errors

ROOT = Path(__file__).resolve().parents[3]
SEG_TIMEOUT_S = 90
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
GATEWAY_AET = "PULMOSEG"


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        pytest.fail(
            f"{name} is not installed: run scripts/setup.sh (Debian package {package}).",
            pytrace=False,
        )
    return path


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# -- Orthanc ------------------------------------------------------------------------------------
@dataclass
class Orthanc:
    """One Orthanc server on loopback ports, with a config the test wrote."""

    workdir: Path
    http_port: int
    dicom_port: int
    aet: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def rest(self, method: str, path: str, body: bytes | dict | str | None = None) -> Any:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        data = data.encode() if isinstance(data, str) else data
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        ctype = response.headers.get("Content-Type", "")
        return json.loads(payload) if "json" in ctype else payload

    def upload(self, files: list[Path]) -> str:
        """POST every file; returns Orthanc's ID of their (single) study."""
        studies = {self.rest("POST", "/instances", f.read_bytes())["ParentStudy"] for f in files}
        assert len(studies) == 1, studies
        return studies.pop()

    def seg_instances(self, study_uid: str) -> list[str]:
        """Orthanc IDs of the SEG instances stored in the study with ``study_uid``."""
        series = self.rest(
            "POST",
            "/tools/find",
            {
                "Level": "Series",
                "Query": {"StudyInstanceUID": study_uid, "Modality": "SEG"},
                "Expand": True,
            },
        )
        return [i for s in series for i in s["Instances"]]

    def instance_file(self, instance_id: str) -> bytes:
        return self.rest("GET", f"/instances/{instance_id}/file")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def start_orthanc(
    workdir: Path,
    *,
    modalities: dict[str, list[Any]] | None = None,
    dicom_port: int | None = None,
    aet: str = "ORTHANC",
    lua_scripts: list[Path] | None = None,
    timeout: float = 30.0,
) -> Orthanc:
    """Write a loopback config into ``workdir``, start Orthanc and wait for its REST API."""
    binary = require_binary("Orthanc", "orthanc")
    if not ORTHANC_DICOMWEB_PLUGIN.exists():
        pytest.fail(
            f"{ORTHANC_DICOMWEB_PLUGIN} is missing: run scripts/setup.sh "
            "(Debian package orthanc-dicomweb).",
            pytrace=False,
        )
    workdir.mkdir(parents=True, exist_ok=True)
    orthanc = Orthanc(workdir, free_port(), dicom_port or free_port(), aet)
    config = {
        "Name": "pulmoseg-test",
        "StorageDirectory": str(workdir / "db"),
        "IndexDirectory": str(workdir / "db"),
        "HttpPort": orthanc.http_port,
        "DicomPort": orthanc.dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": modalities or {},
        "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
        "SaveJobs": False,
        "DicomAssociationCloseDelay": 0,
        "LuaScripts": [str(p) for p in lua_scripts or []],
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=1))
    log = (workdir / "orthanc.log").open("wb")
    orthanc.process = subprocess.Popen(
        [binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir
    )
    log.close()

    def ready() -> bool:
        if orthanc.process is not None and orthanc.process.poll() is not None:
            tail = (workdir / "orthanc.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"Orthanc exited with {orthanc.process.returncode}:\n{tail}")
        try:
            return bool(orthanc.rest("GET", "/system"))
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_until(ready, timeout, "Orthanc's REST API")
    except BaseException:
        orthanc.stop()
        raise
    return orthanc


# -- studies ------------------------------------------------------------------------------------
def copy_study(
    source_dir: Path,
    target_dir: Path,
    transfer_syntaxes: list[str] | None = None,
) -> tuple[str, list[Path]]:
    """A copy of a phantom study under new Study/Series/SOP UIDs (a study no test sent yet),
    optionally compressed (the i-th file with ``transfer_syntaxes[i % n]``)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for index, path in enumerate(sorted(source_dir.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if transfer_syntaxes:
            ds.compress(transfer_syntaxes[index % len(transfer_syntaxes)])
        out = target_dir / path.name
        ds.save_as(out, enforce_file_format=True)
        files.append(out)
    return study_uid, files


def add_non_ct_instances(ct_file: Path, target_dir: Path) -> list[Path]:
    """Instances a real study carries besides the axial CT: a localizer, a text SR (as dose
    reports are) and a secondary capture; none of them may reach the segmentation service."""
    target_dir.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(ct_file)
    out = []
    localizer = pydicom.dcmread(ct_file)
    localizer.SeriesInstanceUID = generate_uid()
    localizer.SeriesNumber = 900
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    localizer.SOPInstanceUID = localizer.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out.append(_save(localizer, target_dir / "localizer.dcm"))

    capture = pydicom.dcmread(ct_file)
    capture.Modality = "OT"
    capture.SeriesInstanceUID = generate_uid()
    capture.SeriesNumber = 901
    capture.SOPClassUID = capture.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    capture.SOPInstanceUID = capture.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out.append(_save(capture, target_dir / "capture.dcm"))

    sr = pydicom.Dataset()
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "StudyInstanceUID",
        "ReferringPhysicianName",
    ):
        setattr(sr, keyword, base.get(keyword, ""))
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.SOPInstanceUID = generate_uid()
    sr.Modality = "SR"
    sr.SeriesInstanceUID = generate_uid()
    sr.SeriesNumber = 902
    sr.InstanceNumber = 1
    sr.Manufacturer = "pulmoseg tests"
    sr.ContentDate, sr.ContentTime = base.StudyDate, base.StudyTime
    sr.ValueType = "CONTAINER"
    sr.ContinuityOfContent = "SEPARATE"
    sr.CompletionFlag, sr.VerificationFlag = "COMPLETE", "UNVERIFIED"
    concept = pydicom.Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "121070", "DCM"
    concept.CodeMeaning = "Findings"
    sr.ConceptNameCodeSequence = [concept]
    sr.file_meta = pydicom.dataset.FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    sr.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out.append(_save(sr, target_dir / "report.dcm"))
    return out


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# -- dcmtk --------------------------------------------------------------------------------------
def storescu(
    port: int,
    files: list[Path],
    calling_aet: str = "STORESCU",
    options: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu sends ``files`` in one association, proposing only the SOP classes they
    need (``-R``); compressed files need the matching option (``-xr`` RLE, ``-xv`` JPEG 2000
    lossless) so that they travel compressed."""
    binary = require_binary("storescu", "dcmtk")
    return subprocess.run(
        [
            binary,
            "-R",
            *options,
            "-aet",
            calling_aet,
            "-aec",
            GATEWAY_AET,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def echoscu(port: int, calling_aet: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("echoscu", "dcmtk")
    return subprocess.run(
        [binary, "-aet", calling_aet, "-aec", GATEWAY_AET, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- the gateway process ------------------------------------------------------------------------
@dataclass
class GatewayProcess:
    """``pulmoseg pacs`` in a subprocess, with its settings file, log and ports."""

    workdir: Path
    settings: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def port(self) -> int:
        return int(self.settings["port"])

    @property
    def metrics_port(self) -> int:
        return int(self.settings["metrics_port"])

    @property
    def spool_dir(self) -> Path:
        return Path(self.settings["spool_dir"])

    @property
    def dead_letter_dir(self) -> Path:
        return Path(self.settings["dead_letter_dir"])

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def start(self, timeout: float = 60.0, **changes: Any) -> GatewayProcess:
        self.settings.update(changes)
        settings_path = self.workdir / "pacs.yaml"
        settings_path.write_text(yaml.safe_dump(self.settings))
        log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULMOSEG_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "pacs", "--settings", str(settings_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
        log.close()
        self.starts += 1

        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"pulmoseg pacs exited with {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2
                ) as response:
                    return response.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_until(healthy, timeout, "the gateway's /healthz")
        return self

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed but what is already on disk."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, dict[tuple, float]]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def wait_for_metric(
        self, name: str, value: float, timeout: float = 10.0, **labels: str
    ) -> None:
        """Counters move right after the step they count; wait for them instead of racing."""
        wait_until(
            lambda: self.metric(name, **labels) == value,
            timeout,
            f"{name}{labels} == {value} (last: {self.metric(name, **labels)})",
        )

    def spool_files(self) -> list[Path]:
        return sorted(p for p in self.spool_dir.rglob("*") if p.is_file())


# -- what came back ------------------------------------------------------------------------------
def sop_uids(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def delivered_seg(orthanc: Orthanc, study_uid: str, ct_files: list[Path]) -> hd.seg.Segmentation:
    """Wait for the SEG of ``study_uid`` in Orthanc; check it covers exactly the CT series and
    passes dciodvfy."""
    (instance,) = wait_until(
        lambda: orthanc.seg_instances(study_uid), SEG_TIMEOUT_S, "the SEG in Orthanc"
    )
    blob = orthanc.instance_file(instance)
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(blob)))
    assert seg.StudyInstanceUID == study_uid
    assert {uid for _, _, uid in seg.get_source_image_uids()} == sop_uids(ct_files)
    assert seg.number_of_segments >= 1
    assert dciodvfy_errors(blob) == []
    return seg


def delivered_sr(orthanc: Orthanc, study_uid: str, seg: hd.seg.Segmentation) -> pydicom.Dataset:
    """The server's quality SR, sent after the SEG, found in Orthanc by its reference to it."""

    def find() -> pydicom.Dataset | None:
        series = orthanc.rest(
            "POST",
            "/tools/find",
            {
                "Level": "Series",
                "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"},
                "Expand": True,
            },
        )
        for instance in (i for s in series for i in s["Instances"]):
            blob = orthanc.instance_file(instance)
            if seg.SOPInstanceUID.encode() in blob:
                return pydicom.dcmread(io.BytesIO(blob))
        return None

    return wait_until(find, 30, "the SR that references the SEG")


def spool_is_empty(gateway: GatewayProcess) -> bool:
    """Nothing but the duplicate ledger is left once a study is delivered."""
    return not [p for p in gateway.spool_files() if "ledger" not in p.parts]
