"""``pulmoseg export --quantize int8``: a smaller, faster-on-VNNI model that serves like fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from service.app.study_runner import StudyRunner
from service.cli.main import main as pulmoseg
from service.core.manifest import read_model_manifest
from training.export.quantize import QuantizeMethod, calibration_inputs, compare_voldice


def test_export_quantize_int8_serves_within_001_voldice_of_fp32(
    trained_checkpoint: Path, phantom_dataset: Path, held_out_study, tmp_path: Path
) -> None:
    fp32 = tmp_path / "model.onnx"
    code = pulmoseg(
        [
            "export",
            "--checkpoint",
            str(trained_checkpoint),
            "--out",
            str(fp32),
            "--quantize",
            "int8",
            "--calibration-data",
            str(phantom_dataset),
            "--check-data",
            str(held_out_study.root),
        ]
    )
    assert code == 0
    int8 = tmp_path / "model.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    manifest = read_model_manifest(int8)
    assert manifest.version == read_model_manifest(fp32).version + "+int8"
    assert manifest.training_summary["quantization"]["calibration_slices"] > 0

    quantized = StudyRunner.load(int8).segment_directory(held_out_study.dicom_dir)
    reference = StudyRunner.load(fp32).segment_directory(held_out_study.dicom_dir)
    assert quantized.seg_bytes[128:132] == b"DICM"
    assert np.mean(quantized.labels == reference.labels) > 0.99

    comparison = compare_voldice(fp32, int8, held_out_study.root)
    assert set(comparison.difference) >= {"lung", "ggo", "consolidation"}
    assert max(abs(d) for d in comparison.difference.values()) <= 0.01, comparison


def test_quantize_names_the_choices_for_an_unknown_method() -> None:
    with pytest.raises(ValueError, match=r"^Argument 'method' must be one of 'int8', got 'int4'\."):
        QuantizeMethod.parse("int4", "Argument 'method'")
    assert QuantizeMethod.parse(" INT8 ") is QuantizeMethod.INT8


def test_calibration_inputs_are_network_inputs_of_interior_slices(exported_model: Path) -> None:
    manifest = read_model_manifest(exported_model)
    volume = np.full((20, 50, 70), -1000.0, dtype=np.float32)
    inputs = calibration_inputs([volume, volume], manifest, slices=6)
    assert len(inputs) == 6
    assert all(x.shape == (1, manifest.slice_context, *manifest.input_size) for x in inputs)
    with pytest.raises(ValueError, match="at least one CT volume"):
        calibration_inputs([], manifest, slices=6)
