"""The applicability policy through the real gRPC server on loopback, both ways.

``segment_and_flag`` (the default): a head CT from the DICOM corpus is segmented and its
summary, summary.json schema, SR (dciodvfy-clean), quality record and /metrics name the
reasons. ``refuse``: the same study ends with FAILED_PRECONDITION naming the reasons, is
counted on /metrics, and the server goes on serving a chest CT.
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import highdicom as hd
import numpy as np
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from service.client.client import ClientError, SegmentationClient
from service.quality.applicability import ApplicabilityReason
from service.quality.sr_writer import reason_code
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings
from tests.dicom_validation import dciodvfy_errors
from training.phantom import synthesize_study, write_ct_series

HEAD_CT = "J2K_pixelrep_mismatch.dcm"  # pydicom's 512² head CT slice (BodyPartExamined HEAD)


@pytest.fixture(scope="module")
def chest_ct(tmp_path_factory) -> list[Path]:
    """A complete phantom chest CT inside the default range (0.91 mm pixels, 4 mm slices)."""
    study = synthesize_study(33, size=384, slices=60)
    return write_ct_series(
        study.hu,
        study.spacing_zyx,
        tmp_path_factory.mktemp("chest"),
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Chest",
        patient_id="PC0001",
        seed=2,
    )


def _server(hu_model: Path, policy: str | None) -> RunningServer:
    overrides = {"applicability_policy": policy} if policy else {}
    settings = load_settings(
        env={},
        port=0,
        metrics_port=0,
        max_workers=4,
        max_concurrent_studies=1,
        model_path=hu_model,
        **overrides,
    )
    running = build_server(settings)
    assert running.wait_until_ready(60), f"model did not load: {running.load_error!r}"
    return running


@pytest.fixture(scope="module")
def flagging_server(hu_model) -> Iterator[RunningServer]:
    running = _server(hu_model, None)  # the default policy
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def refusing_server(hu_model) -> Iterator[RunningServer]:
    running = _server(hu_model, "refuse")
    yield running
    running.stop(grace=1)


def _metrics(server: RunningServer) -> dict[str, dict[tuple, float]]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _sr_codes(sr_bytes: bytes) -> set[str]:
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(sr_bytes)))

    def walk(item):
        for child in getattr(item, "ContentSequence", []):
            if getattr(child, "ValueType", "") == "CODE":
                yield child.ConceptCodeSequence[0].CodeValue
            yield from walk(child)

    return set(walk(sr))


def test_segment_and_flag_segments_a_head_ct_and_names_the_reasons_everywhere(
    flagging_server, chest_ct
):
    version = "0.9.0"  # the HU model's
    with SegmentationClient(flagging_server.address, timeout_s=120) as client:
        head = client.segment_files([get_testdata_file(HEAD_CT)])
        chest = client.segment_files(chest_ct)
        record = client.study_quality(head.summary["study_uid_hash"])
    applicability = head.summary["applicability"]
    assert applicability["applicable"] is False
    assert {"no_aerated_lung", "partial_thorax"} <= set(applicability["reasons"])
    assert "cm²" in applicability["details"]["no_aerated_lung"]
    assert applicability["measurements"]["max_lung_area_cm2"] < 50
    assert head.seg_bytes  # still segmented: the policy flags, it does not refuse
    # The SR says so beside the volumes, and stays conformant.
    assert dciodvfy_errors(head.sr_bytes) == []
    codes = _sr_codes(head.sr_bytes)
    assert "373067005" in codes  # "No": not within the model's declared range
    assert reason_code(ApplicabilityReason.NO_AERATED_LUNG).value in codes
    # The quality record keeps the reasons and the measurements.
    assert set(record["applicability"]["reasons"]) == set(applicability["reasons"])
    assert record["applicability"]["applicable"] is False
    # The chest CT inside the range passes.
    assert chest.summary["applicability"]["applicable"] is True
    assert chest.summary["applicability"]["reasons"] == []
    assert "373066001" in _sr_codes(chest.sr_bytes)  # "Yes"
    metrics = _metrics(flagging_server)
    mv = (("model_version", version),)
    assert metrics["pulmoseg_applicability_checks_total"][mv] == 2
    assert metrics["pulmoseg_not_applicable_studies_total"][mv] == 1
    reasons = metrics["pulmoseg_not_applicable_reasons_total"]
    for reason in applicability["reasons"]:
        assert reasons[(("model_version", version), ("reason", reason))] == 1


def test_pulmoseg_segment_says_the_result_is_not_to_be_trusted(flagging_server, tmp_path, capsys):
    from service.cli.main import main as cli_main

    study = tmp_path / "head"
    study.mkdir()
    shutil.copy(get_testdata_file(HEAD_CT), study / "head.dcm")
    code = cli_main(
        ["segment", str(study), "--server", flagging_server.address, "--no-progress",
         "--out", str(tmp_path / "seg.dcm"), "--summary-json", str(tmp_path / "summary.json")]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "OUTSIDE the model's declared range" in out and "no_aerated_lung (" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "no_aerated_lung" in summary["applicability"]["reasons"]


def test_refuse_answers_failed_precondition_naming_the_reasons_and_keeps_serving(
    refusing_server, chest_ct
):
    with SegmentationClient(refusing_server.address, timeout_s=120) as client:
        with pytest.raises(ClientError) as refused:
            client.segment_files([get_testdata_file(HEAD_CT)])
        small = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        buffer = io.BytesIO()
        small.save_as(buffer)
        with pytest.raises(ClientError) as refused_small:
            client.segment_files([buffer.getvalue()])
        chest = client.segment_files(chest_ct)  # the server goes on serving
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    message = str(refused.value)
    assert "no_aerated_lung" in message and "partial_thorax" in message
    assert "refuse" in message
    assert refused_small.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "hu_calibration" in str(refused_small.value)
    assert chest.summary["applicability"]["applicable"] is True
    metrics = _metrics(refusing_server)
    mv = (("model_version", "0.9.0"),)
    assert metrics["pulmoseg_applicability_checks_total"][mv] == 3
    assert metrics["pulmoseg_not_applicable_studies_total"][mv] == 2
    reasons = metrics["pulmoseg_not_applicable_reasons_total"]
    assert reasons[(("model_version", "0.9.0"), ("reason", "no_aerated_lung"))] == 2
    errors = metrics["pulmoseg_errors_total"]
    assert errors[(("method", "SegmentStudy"), ("reason", "study_not_applicable"))] == 2
    requests = metrics["pulmoseg_requests_total"]
    assert requests[(("code", "FAILED_PRECONDITION"), ("method", "SegmentStudy"))] == 2
    assert np.isclose(requests[(("code", "OK"), ("method", "SegmentStudy"))], 1)
