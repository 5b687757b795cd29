"""The product path: `pulmoseg serve` (a real process) + `pulmoseg segment` → a valid SEG."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from service.cli.main import main as cli_main
from service.client.client import SegmentationClient
from service.core.loopback import free_port
from service.core.segmentation_metrics import per_class_vol_dice
from service.dicom.seg_reader import read_seg_labels
from service.dicom.study_input import load_instances_from_dir, select_ct_series
from service.dicom.volume import series_to_volume
from tests.dicom_validation import dciodvfy_errors
from training.data.volumes import load_nifti_zyx


@pytest.fixture(scope="module")
def server(exported_model: Path, tmp_path_factory: pytest.TempPathFactory):
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli.main",
                "serve",
                "--model",
                str(exported_model),
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    try:
        with SegmentationClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            client.wait_until_serving(timeout_s=120)
        yield {"target": f"127.0.0.1:{port}", "metrics": metrics_port, "log": log, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_segment_cli_against_real_server(
    server, held_out_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seg.dcm"
    assert (
        cli_main(
            [
                "segment",
                str(held_out_study.dicom_dir),
                "--server",
                server["target"],
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "lung" in capsys.readouterr().out

    # A real receiver's view: highdicom reads it, geometry and references match the source.
    seg_ds = pydicom.dcmread(out)
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    series = select_ct_series(load_instances_from_dir(held_out_study.dicom_dir))
    volume = series_to_volume(series)
    source = volume.datasets[0]
    assert seg_ds.Modality == "SEG" and seg_ds.StudyInstanceUID == source.StudyInstanceUID
    assert seg_ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert (seg_ds.Rows, seg_ds.Columns) == (source.Rows, source.Columns)
    referenced = {
        ref.ReferencedSOPInstanceUID
        for s in seg_ds.ReferencedSeriesSequence
        for ref in s.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in volume.datasets}
    assert [d.segment_label for d in map(seg.get_segment_description, seg.segment_numbers)] == [
        "lung",
        "ggo",
        "consolidation",
    ]
    assert seg.get_segment_description(2).segmented_property_type.value == "112120"
    assert dciodvfy_errors(out) == []

    labels = read_seg_labels(out, [ds.SOPInstanceUID for ds in volume.datasets])
    truth, _ = load_nifti_zyx(held_out_study.label)
    assert labels.shape == truth.shape
    scores = per_class_vol_dice(labels, truth, [1, 2, 3])
    assert scores[1] >= 0.85, scores  # lung; lesions are too hard for a 30-second model
    assert np.isfinite(list(scores.values())).all()

    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics").read().decode()
    )
    assert 'pulmoseg_requests_total{code="OK",method="SegmentStudy"}' in metrics
    # No patient identifiers in the server's log.
    text = server["log"].read_text()
    assert str(source.PatientName) not in text and str(source.PatientID) not in text
    assert source.StudyInstanceUID not in text


def test_segment_cli_reports_bad_input_and_server_survives(
    server, held_out_study, tmp_path: Path, capsys
) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a DICOM file")
    assert (
        cli_main(
            ["segment", str(junk), "--server", server["target"], "--out", str(tmp_path / "x.dcm")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "error:" in err and "DICOM" in err and "Traceback" not in err
    assert not (tmp_path / "x.dcm").exists()
    assert (
        cli_main(
            [
                "segment",
                str(held_out_study.dicom_dir),
                "--server",
                server["target"],
                "--out",
                str(tmp_path / "ok.dcm"),
            ]
        )
        == 0
    )


def test_segment_cli_unreachable_server(held_out_study, tmp_path: Path, capsys) -> None:
    port = free_port()
    code = cli_main(
        [
            "segment",
            str(held_out_study.dicom_dir),
            "--server",
            f"127.0.0.1:{port}",
            "--out",
            str(tmp_path / "x.dcm"),
            "--timeout",
            "5",
        ]
    )
    assert code == 1
    assert "Could not reach" in capsys.readouterr().err


def test_serve_without_model_fails_with_sentence() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli.main",
            "serve",
            "--model",
            "/nonexistent.onnx",
            "--port",
            "0",
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "nonexistent.onnx" in run.stderr and "Traceback" not in run.stderr
