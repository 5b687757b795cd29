"""The number that picks a checkpoint is the number the service produces.

Training validates with the one predictor (torch backend); ``pulmoseg evaluate`` scores the
exported ONNX file with the same predictor (ONNX Runtime backend), which is also what the
service runs. Both must agree on the validation studies within 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.cli.main import main as pulmoseg
from service.core.manifest import read_model_manifest
from service.predictor import InputGeometry, Predictor
from service.predictor.onnx_backend import load_onnx_predictor
from service.predictor.torch_backend import TorchBackend
from training.export.onnx_export import load_checkpoint


def test_validation_voldice_equals_pulmoseg_evaluate_on_the_export(
    trained_checkpoint: Path, exported_model: Path, phantom_dataset: Path, tmp_path: Path
) -> None:
    state = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)
    validation = state["best_dice"]
    config = state["config"]
    assert set(validation) == {"lung", "ggo", "consolidation"}
    out = tmp_path / "metrics.json"
    code = pulmoseg(
        [
            "evaluate",
            "--model",
            str(exported_model),
            "--data",
            str(phantom_dataset),
            "--split",
            "val",
            "--val-fraction",
            str(config["data"]["val_fraction"]),
            "--seed",
            str(config["seed"]),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    evaluated = json.loads(out.read_text())["summary"]["vol_dice"]
    for name, score in validation.items():
        assert evaluated[name]["mean"] == pytest.approx(score, abs=1e-3), name
    # The manifest carries the same validation figures the service reports.
    manifest = read_model_manifest(exported_model)
    assert manifest.validation_voldice == pytest.approx(validation)


def test_torch_and_onnx_backends_give_the_same_probabilities(
    trained_checkpoint: Path, exported_model: Path
) -> None:
    model, _, _ = load_checkpoint(trained_checkpoint)
    onnx_predictor = load_onnx_predictor(exported_model, cpu_only=True)
    torch_predictor = Predictor(
        TorchBackend(model), InputGeometry.from_manifest(onnx_predictor.manifest)
    )
    rng = np.random.default_rng(3)
    # Another in-plane size than the network's, so both resizes are exercised.
    volume = rng.uniform(-1000, 400, size=(5, 50, 70)).astype(np.float32)
    a = onnx_predictor.predict_probabilities(volume)
    b = torch_predictor.predict_probabilities(volume)
    assert a.shape == b.shape == (4, 5, 50, 70)
    np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-5)
    assert np.abs(a - b).max() < 1e-4
