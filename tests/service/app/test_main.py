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

REPO = Path(__file__).resolve().parents[3]


def test_python_dash_m_service_app(exported_model: Path, held_out_study, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.run(
        [sys.executable, "-m", "service.app", "-i", str(held_out_study.dicom_dir), "-o", str(out),
         "-m", str(exported_model.parent)],
        cwd=REPO, env={**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert sorted(p.name for p in out.iterdir()) == ["seg.dcm", "summary.json"]
    assert (out / "seg.dcm").read_bytes()[128:132] == b"DICM"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["instances"] == len(list(held_out_study.dicom_dir.iterdir()))
    assert list(summary["seconds"]) == [
        "parsing", "selecting", "volume", "inference", "writing", "total"
    ]  # fmt: skip
    assert summary["provider"] == "CPUExecutionProvider"


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
    assert "service.app: error: Study folder" in err and "not DICOM: a.txt" in err
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
