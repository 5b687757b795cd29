"""Quality monitoring end to end: the real gRPC server on loopback, real ONNX Runtime, real
highdicom references, a real SQLite file across a restart, real /metrics and a real Prometheus.

Three phantom studies are segmented; each gets one reference written independently with
highdicom from the returned SEG: a perfect copy, one with GGO eroded, and one from "another
tool" (segments in reverse order, empty frames omitted). The expected VolDice are computed from
the SEG the client received, so the test checks the whole path, not a shortcut.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_tools import require_binary
from scipy.ndimage import binary_erosion

from service.cli.main import main as cli_main
from service.client.client import ClientError, SegmentationClient
from service.core.classes import DEFAULT_CLASSES
from service.core.loopback import free_port
from service.core.segmentation_metrics import dice
from service.dicom.seg_reader import read_seg_labels
from service.dicom.volume import series_to_volume
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings
from tests.dicom_validation import dciodvfy_errors
from tests.service.quality.reader_seg import reader_seg

CLASSES = {c.name: c for c in DEFAULT_CLASSES}


def _settings(db: Path, **overrides):
    base = {
        "port": 0,
        "metrics_port": 0,
        "max_workers": 4,
        "max_concurrent_studies": 1,
        "quality_db_path": db,
        "consistency_fraction": 1.0,
        "consistency_flag_threshold": 0.999,
        "severity_lesion_floor_ml": 0.05,
    }
    return load_settings(env={}, **{**base, **overrides})


def _start(settings) -> RunningServer:
    running = build_server(settings)
    assert running.wait_until_ready(60), f"model did not load: {running.load_error!r}"
    return running


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> list[Path]:
    from training.phantom import generate_dataset

    root = tmp_path_factory.mktemp("quality_phantoms")
    manifest = generate_dataset(
        root, studies=3, seed=909, size=64, slices=24, lesion_free_fraction=0.0, progress=False
    )
    return [root / s["dicom"] for s in json.loads(manifest.read_text())["studies"]]


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quality_db") / "quality.sqlite"


@pytest.fixture(scope="module")
def server(hu_model: Path, db_path: Path) -> Iterator[RunningServer]:
    running = _start(_settings(db_path, model_path=hu_model))
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory) -> Iterator[str]:
    """A real Prometheus on loopback scraping the server's /metrics every second."""
    binary = require_binary("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pulmoseg\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.metrics_port}']\n"
    )
    port = free_port()
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {(root / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("prometheus did not become ready within 30 s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _query(url: str, promql: str) -> list[dict]:
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def segmented(server, studies, prometheus) -> list[dict]:
    """Each study segmented once: its summary, SEG, SR, source datasets and received labels."""
    out = []
    with SegmentationClient(server.address, timeout_s=120) as client:
        for folder in studies:
            result = client.segment_directory(folder)
            volume = series_to_volume([pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))])
            uids = [str(ds.SOPInstanceUID) for ds in volume.datasets]
            out.append(
                {
                    "summary": result.summary,
                    "seg": result.seg_bytes,
                    "sr": result.sr_bytes,
                    "sources": volume.datasets,
                    "labels": read_seg_labels(result.seg_bytes, uids),
                }
            )
    return out


def _reference(sources, labels: np.ndarray, names: list[str]) -> bytes:
    """A BINARY reference SEG by "another tool": segments ``names`` numbered in that order."""
    return reader_seg(sources, labels, names)


def _eroded(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    ggo = labels == CLASSES["ggo"].index
    out[ggo & ~binary_erosion(ggo)] = CLASSES["lung"].index
    return out


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_summary_carries_clinical_consistency_and_a_conformant_sr(segmented):
    for study in segmented:
        summary = study["summary"]
        clinical = summary["clinical"]
        volumes = clinical["class_volumes_ml"]
        lesions = volumes["ggo"] + volumes["consolidation"]
        lung = volumes["lung"] + lesions
        assert clinical["lung_volume_ml"] == pytest.approx(lung)
        assert clinical["involvement_percent"] == pytest.approx(100 * lesions / lung)
        assert clinical["severity_grade"] in {"CT-0", "CT-1", "CT-2", "CT-3", "CT-4"}
        consistency = summary["consistency"]
        assert set(consistency["voldice"]) == {"lung", "ggo", "consolidation"}
        low = min(consistency["voldice"].values()) < 0.999
        assert summary["flagged"] is consistency["flagged"] is low
        assert study["sr"] and dciodvfy_errors(study["sr"]) == []
        assert dciodvfy_errors(study["seg"]) == []
        assert "quality" in summary["stage_seconds"]
    # the HU model has a deliberate in-plane ramp: some study is inconsistent and flagged
    assert any(s["summary"]["flagged"] for s in segmented)


def test_references_score_the_expected_voldice(server, segmented):
    perfect, eroded, other_order = segmented
    with SegmentationClient(server.address, timeout_s=60) as client:
        answer = client.submit_reference(
            perfect["summary"]["study_uid_hash"],
            _reference(perfect["sources"], perfect["labels"], ["lung", "ggo", "consolidation"]),
        )
        assert answer["voldice"] == {"lung": 1.0, "ggo": 1.0, "consolidation": 1.0}
        assert answer["reference_type"] == "BINARY" and answer["continuous_dice"] == {}

        labels = eroded["labels"]
        worse = _eroded(labels)
        answer = client.submit_reference(
            eroded["summary"]["study_uid_hash"],
            _reference(eroded["sources"], worse, ["lung", "ggo", "consolidation"]),
        )
        expected = dice(labels == 2, worse == 2)
        assert 0.0 < expected < 0.99  # the erosion really removed GGO
        assert answer["voldice"]["ggo"] == pytest.approx(expected)
        assert answer["voldice"]["lung"] == pytest.approx(dice(labels == 1, worse == 1))

        answer = client.submit_reference(
            other_order["summary"]["study_uid_hash"],
            _reference(
                list(reversed(other_order["sources"])),
                other_order["labels"][::-1],
                ["consolidation", "ggo", "lung"],
            ),
        )
        assert answer["voldice"] == {"lung": 1.0, "ggo": 1.0, "consolidation": 1.0}

        # a reference on another grid is refused with what differs; nothing is stored
        shifted = [pydicom.dcmread(io.BytesIO(_part10(ds))) for ds in perfect["sources"]]
        for ds in shifted:
            ds.PixelSpacing = [v * 1.5 for v in ds.PixelSpacing]
        with pytest.raises(ClientError, match="PixelSpacing is .* the study's") as error:
            client.submit_reference(
                perfect["summary"]["study_uid_hash"],
                _reference(shifted, perfect["labels"], ["ggo"]),
            )
        assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ClientError, match="No quality record for study hash") as error:
            client.submit_reference("0123456789abcdef", b"x")
        assert error.value.code is grpc.StatusCode.NOT_FOUND
        with pytest.raises(ClientError, match="must be the hex study hash") as error:
            client.study_quality("Robert^Smith")
        assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT

    metrics = _scrape(server.metrics_port)
    version = perfect["summary"]["model_version"]
    ggo = (("class", "ggo"), ("model_version", version))
    assert metrics["pulmoseg_study_voldice_count"][ggo] == 3
    assert metrics["pulmoseg_study_voldice_sum"][ggo] == pytest.approx(2 + expected)
    assert metrics["pulmoseg_consistency_voldice_count"][ggo] == 3
    assert metrics["pulmoseg_quality_studies_total"][(("model_version", version),)] == 3
    flagged = sum(s["summary"]["flagged"] for s in segmented)
    assert metrics["pulmoseg_flagged_studies_total"][(("model_version", version),)] == flagged
    grades = metrics["pulmoseg_severity_grade_total"]
    assert sum(grades.values()) == 3
    errors = metrics["pulmoseg_errors_total"]
    assert errors[(("method", "SubmitReference"), ("reason", "invalid_reference"))] == 1
    assert errors[(("method", "SubmitReference"), ("reason", "study_not_found"))] == 1
    assert metrics["process_resident_memory_bytes"][()] > 0


def _part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_cli_reference_and_quality_commands(server, segmented, capsys):
    study = segmented[0]
    h = study["summary"]["study_uid_hash"]
    assert cli_main(["quality", "show", h, "--server", server.address]) == 0
    shown = capsys.readouterr().out
    assert f"study {h}" in shown
    assert "reference    consolidation 1.000, ggo 1.000, lung 1.000 (BINARY)" in shown
    assert cli_main(["quality", "list", "--server", server.address, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["study_hash"] for r in listed} == {s["summary"]["study_uid_hash"] for s in segmented}
    assert cli_main(["quality", "list", "--flagged", "--server", server.address, "--json"]) == 0
    flagged = json.loads(capsys.readouterr().out)
    assert {r["study_hash"] for r in flagged} == {
        s["summary"]["study_uid_hash"] for s in segmented if s["summary"]["flagged"]
    }
    assert cli_main(["quality", "show", "00000000deadbeef", "--server", server.address]) == 1
    assert "No quality record for study hash '00000000deadbeef'" in capsys.readouterr().err


def test_cli_reference_prints_voldice(server, segmented, tmp_path, capsys):
    study = segmented[0]
    path = tmp_path / "ref.dcm"
    path.write_bytes(_reference(study["sources"], study["labels"], ["ggo", "lung"]))
    h = study["summary"]["study_uid_hash"]
    argv = ["reference", str(path), "--study-hash", h, "--server", server.address]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "VolDice          ggo 1.000, lung 1.000" in out


def test_prometheus_scraped_the_studies_and_answers_on_the_voldice_histogram(
    prometheus, server, segmented
):
    """After the references above (three, plus the CLI's), Prometheus must agree with /metrics."""
    version = segmented[0]["summary"]["model_version"]

    def served(name: str, cls: str) -> float:
        labels = {"class": cls, "model_version": version}
        return server.metrics.registry.get_sample_value(name, labels) or 0.0

    truth = {c: served("pulmoseg_study_voldice_count", c) for c in ("lung", "ggo", "consolidation")}
    assert truth["ggo"] >= 3
    deadline = time.monotonic() + 20
    counts: dict[str, float] = {}
    while time.monotonic() < deadline:
        result = _query(prometheus, "sum by (class) (pulmoseg_study_voldice_count)")
        counts = {r["metric"]["class"]: float(r["value"][1]) for r in result}
        if counts == truth:
            break
        time.sleep(0.5)
    assert counts == truth
    ggo = 'class="ggo"'
    mean = _query(
        prometheus,
        f"sum(pulmoseg_study_voldice_sum{{{ggo}}}) / sum(pulmoseg_study_voldice_count{{{ggo}}})",
    )
    expected_mean = served("pulmoseg_study_voldice_sum", "ggo") / truth["ggo"]
    assert float(mean[0]["value"][1]) == pytest.approx(expected_mean)
    # all but one reference are perfect: the median lies in the top bucket (0.99, 1]
    median = _query(
        prometheus, f"histogram_quantile(0.5, sum by (le) (pulmoseg_study_voldice_bucket{{{ggo}}}))"
    )
    assert 0.99 < float(median[0]["value"][1]) <= 1.0
    studies = _query(prometheus, "sum(pulmoseg_quality_studies_total)")
    assert float(studies[0]["value"][1]) == 3.0
    up = _query(prometheus, 'up{job="pulmoseg"}')
    assert float(up[0]["value"][1]) == 1.0


def test_records_survive_a_restart_and_hold_no_identifiers(server, segmented, hu_model, db_path):
    hashes = [s["summary"]["study_uid_hash"] for s in segmented]
    before = {h: server.monitor.store.get(h) for h in hashes}
    for study in segmented:  # the record holds the outcome the client was answered, field by field
        assert before[study["summary"]["study_uid_hash"]].outcome.as_dict() == study["summary"]
    server.stop(grace=1)
    restarted = _start(_settings(db_path, model_path=hu_model))
    try:
        with SegmentationClient(restarted.address, timeout_s=60) as client:
            for h in hashes:
                record = client.study_quality(h)
                assert record["reference"]["voldice"] == before[h].reference_voldice
                stored = before[h].outcome
                assert record["consistency"]["voldice"] == stored.consistency.voldice
                assert record["flagged"] == stored.flagged
                assert record["clinical"]["severity_grade"] == stored.clinical.severity_grade
            page, token = client.list_study_quality(page_size=2)
            rest, end = client.list_study_quality(page_size=2, page_token=token)
            assert [r["study_hash"] for r in page + rest] == hashes[::-1] and end == ""
    finally:
        restarted.stop(grace=1)
    # privacy: the database holds hashes only, never a UID, a name or a patient ID
    connection = sqlite3.connect(db_path)
    dump = "\n".join(connection.iterdump())
    connection.close()
    for study in segmented:
        ds = study["sources"][0]
        for value in (ds.StudyInstanceUID, ds.SOPInstanceUID, ds.PatientID, str(ds.PatientName)):
            assert str(value) not in dump


def test_map_entry_point_writes_the_sr_with_quality(hu_model, studies, tmp_path):
    """``python -m service.app --quality``: the same operator in the MAP graph writes sr.dcm."""
    from service.app.__main__ import main as app_main

    out = tmp_path / "out"
    assert app_main(["-i", str(studies[0]), "-o", str(out), "-m", str(hu_model), "--quality"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seg.dcm", "sr.dcm", "summary.json"]
    assert dciodvfy_errors(out / "sr.dcm") == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clinical"]["severity_grade"] in {"CT-0", "CT-1", "CT-2", "CT-3", "CT-4"}
    assert set(summary["consistency"]["voldice"]) == {"lung", "ggo", "consolidation"}
    assert "quality" in summary["stage_seconds"]


def test_quality_service_requires_the_token_like_segmentation(hu_model):
    settings = load_settings(
        env={},
        model_path=hu_model,
        port=0,
        metrics_enabled=False,
        max_workers=3,
        max_concurrent_studies=1,
        auth_token="let-me-in",
    )
    running = _start(settings)
    try:
        with SegmentationClient(running.address, timeout_s=30) as anonymous:
            with pytest.raises(ClientError) as error:
                anonymous.submit_reference("0123456789abcdef", b"x")
            assert error.value.code is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(ClientError) as error:
                anonymous.list_study_quality()
            assert error.value.code is grpc.StatusCode.UNAUTHENTICATED
        with SegmentationClient(running.address, token="let-me-in", timeout_s=30) as client:
            assert client.list_study_quality() == ([], "")  # in-memory records: none yet
            with pytest.raises(ClientError) as error:
                client.study_quality("0123456789abcdef")
            assert error.value.code is grpc.StatusCode.NOT_FOUND
    finally:
        running.stop(grace=1)
