"""``python -m service.app``: the MONAI Deploy app / MAP entry point, as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.app.__main__ import main, resolve_model_path
from service.core.errors import ModelError
from tests.service.dicom.test_study_folder import write_fileset

REPO = Path(__file__).resolve().parents[3]


def test_python_dash_m_service_app(exported_model: Path, held_out_study, tmp_path: Path) -> None:
    """A CD-style export (a real DICOMDIR over the series, plus a README) is segmented, and
    what the study-folder rule skipped is printed and listed in summary.json."""
    study = tmp_path / "export"
    write_fileset(sorted(held_out_study.dicom_dir.iterdir()), study)
    (study / "README").write_text("Exported by the PACS on Monday.\n")
    out = tmp_path / "out"
    process = subprocess.run(
        [sys.executable, "-m", "service.app", "-i", str(study), "-o", str(out),
         "-m", str(exported_model.parent)],
        cwd=REPO, env={**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert sorted(p.name for p in out.iterdir()) == ["seg.dcm", "summary.json"]
    assert (out / "seg.dcm").read_bytes()[128:132] == b"DICM"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_instances"] == len(list(held_out_study.dicom_dir.iterdir()))
    assert list(summary["stage_seconds"]) == [
        "parsing", "selecting", "volume", "inference", "writing", "total"
    ]  # fmt: skip
    assert summary["provider"] == "CPUExecutionProvider"
    assert summary["skipped"] == [
        {"path": "DICOMDIR", "reason": "DICOMDIR index"},
        {"path": "README", "reason": "not DICOM"},
    ]
    assert "skipped 2 file(s):\n  DICOMDIR (DICOMDIR index)\n  README (not DICOM)\n" in (
        process.stdout
    )


def test_errors_are_one_line_and_exit_1(
    exported_model: Path, held_out_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["-i", str(tmp_path / "nope"), "-o", str(out), "-m", str(exported_model)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"service.app: error: Input folder '{tmp_path / 'nope'}' does not exist."
    )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.txt").write_text("not DICOM")
    assert main(["-i", str(tmp_path / "bad"), "-o", str(out), "-m", str(exported_model)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"service.app: error: Study folder '{tmp_path / 'bad'}' holds no DICOM instances; "
        "skipped 1 item: a.txt (not DICOM)."
    )
    assert not out.exists() or not any(out.iterdir())


def test_resolve_model_path(tmp_path: Path) -> None:
    model = tmp_path / "models" / "m.onnx"
    model.parent.mkdir()
    model.write_bytes(b"x")
    assert resolve_model_path(model) == model
    assert resolve_model_path(model.parent) == model
    (model.parent / "n.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="must hold exactly one .onnx file, found 2"):
        resolve_model_path(model.parent)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path(tmp_path / "missing.onnx")
