"""ONNX export: parity with PyTorch, manifest contents, dynamic batch, refusal on mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.core.manifest import MANIFEST_KEY, read_model_manifest
from training.config import config_from_dict
from training.export.onnx_export import (
    ExportParityError,
    export_ensemble,
    export_onnx,
    load_checkpoint,
)
from training.nn.networks import SegmentationEnsemble, build_network

SCHEMA = Path(__file__).resolve().parents[3] / "protos/pulmoseg/v1/model_manifest.schema.json"


def _tiny_checkpoint(
    tmp_path: Path,
    seed: int = 0,
    model: dict | None = None,
    best: float = 0.5,
    export: dict | None = None,
) -> Path:
    config = config_from_dict(
        {
            "model": {"features": [4, 4, 8, 8, 16, 4], "input_size": [32, 32], **(model or {})},
            "export": {"name": "tiny", "version": "9.9.9", **(export or {})},
        }
    )
    torch.manual_seed(seed)
    net = build_network(config.model)
    path = tmp_path / f"tiny{seed}.pt"
    torch.save(
        {
            "model": net.state_dict(),
            "config": config.to_dict(),
            "epoch": 2,
            "best_dice": {"lung": best},
        },
        path,
    )
    return path


def test_export_matches_pytorch_and_carries_manifest(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path)
    result = export_onnx(ckpt, tmp_path / "m.onnx")
    assert result.max_abs_diff <= 1e-4

    manifest = read_model_manifest(tmp_path / "m.onnx")
    assert (manifest.name, manifest.version) == ("tiny", "9.9.9")
    assert [c.name for c in manifest.classes] == ["background", "lung", "ggo", "consolidation"]
    assert manifest.classes[2].property_type.value == "112120"
    assert manifest.slice_context == 3 and manifest.input_size == (32, 32)
    assert manifest.hu_window == (-1024.0, 400.0)
    assert manifest.validation_voldice == {"lung": 0.5}
    raw = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    jsonschema.validate(json.loads(raw[MANIFEST_KEY]), json.loads(SCHEMA.read_text()))

    # Dynamic batch and raw HU input: the HU window is inside the graph.
    model, _, _ = load_checkpoint(ckpt)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        hu = (
            np.random.default_rng(batch).uniform(-1500, 2000, (batch, 3, 32, 32)).astype(np.float32)
        )
        onnx_out = session.run(None, {"hu": hu})[0]
        with torch.no_grad():
            torch_out = model(torch.from_numpy(hu)).numpy()
        assert onnx_out.shape == (batch, 4, 32, 32)
        np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4)
    # Values beyond the window are clipped by the graph: -3000 HU behaves like -1024 HU.
    low = np.full((1, 3, 32, 32), -3000.0, np.float32)
    edge = np.full((1, 3, 32, 32), -1024.0, np.float32)
    np.testing.assert_allclose(
        session.run(None, {"hu": low})[0], session.run(None, {"hu": edge})[0]
    )


def test_export_declares_the_geometry_the_model_was_made_for(tmp_path: Path) -> None:
    """A phantom model declares its coarse voxels, so the service does not flag its own kind
    of study as outside the model's range; without the keys the service's defaults apply."""
    ranges = {"pixel_spacing_mm_range": [2.0, 6.0], "slice_thickness_mm_range": [2.5, 10.0]}
    export_onnx(_tiny_checkpoint(tmp_path, export=ranges), tmp_path / "m.onnx")
    manifest = read_model_manifest(tmp_path / "m.onnx")
    assert manifest.pixel_spacing_mm_range == (2.0, 6.0)
    assert manifest.slice_thickness_mm_range == (2.5, 10.0)
    export_onnx(_tiny_checkpoint(tmp_path, seed=1), tmp_path / "plain.onnx")
    assert read_model_manifest(tmp_path / "plain.onnx").pixel_spacing_mm_range is None
    with pytest.raises(ValueError, match=r"'export.pixel_spacing_mm_range' must be \[min, max\]"):
        config_from_dict({"export": {"pixel_spacing_mm_range": [6.0, 2.0]}})


def test_export_refuses_when_parity_fails_and_leaves_no_file(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path)
    with pytest.raises(ExportParityError, match="probabilities differ from PyTorch"):
        export_onnx(ckpt, tmp_path / "out" / "m.onnx", tolerance=0.0 - 1.0)
    assert not (tmp_path / "out" / "m.onnx").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temp files left behind


def test_parity_is_judged_on_probabilities_not_logit_scale(tmp_path: Path) -> None:
    """Large logits carry float rounding above 1e-4 that changes no probability: accept."""
    ckpt = _tiny_checkpoint(tmp_path)
    state = torch.load(ckpt, weights_only=False)
    for key in ("unet.final_conv.weight", "unet.final_conv.bias"):
        state["model"][key] = state["model"][key] * 300.0
    torch.save(state, ckpt)
    result = export_onnx(ckpt, tmp_path / "m.onnx")
    assert result.max_abs_diff <= 1e-4

    net, _, _ = load_checkpoint(ckpt)
    x = np.random.default_rng(0).uniform(-1000, 400, (2, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        logit_diff = np.abs(session.run(None, {"hu": x})[0] - net(torch.from_numpy(x)).numpy())
    assert logit_diff.max() > 1e-4  # an absolute check on logits would have refused this model


def test_export_rejects_non_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "x.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(ValueError, match="not a pulmoseg training checkpoint"):
        export_onnx(bogus, tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")


def test_standardized_input_model_exports_and_ignores_linear_intensity_changes(
    tmp_path: Path,
) -> None:
    config = config_from_dict(
        {
            "model": {
                "features": [4, 4, 8, 8, 16, 4],
                "input_size": [32, 32],
                "slice_context": 1,
                "class_names": ["background", "ggo", "consolidation"],
                "num_classes": 3,
                "hu_window": [0.0, 255.0],
                "standardize_input": True,
            },
        }
    )
    torch.manual_seed(1)
    net = build_network(config.model)
    ckpt = tmp_path / "std.pt"
    torch.save(
        {"model": net.state_dict(), "config": config.to_dict(), "epoch": 0, "best_dice": {}}, ckpt
    )
    result = export_onnx(ckpt, tmp_path / "std.onnx")
    assert result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "std.onnx"), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).uniform(20, 120, (1, 1, 32, 32)).astype(np.float32)
    brighter = (image * 1.5 + 40).astype(np.float32)  # another display window, still in 0..255
    np.testing.assert_allclose(
        session.run(None, {"hu": image})[0], session.run(None, {"hu": brighter})[0], atol=1e-3
    )


def test_ensemble_returns_log_of_the_members_mean_softmax() -> None:
    config = config_from_dict({"model": {"features": [4, 4, 8, 8, 16, 4]}})
    members = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        members.append(build_network(config.model).eval())
    ensemble = SegmentationEnsemble(members).eval()
    hu = torch.from_numpy(
        np.random.default_rng(0).uniform(-1100, 400, (2, 3, 32, 32)).astype(np.float32)
    )
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(hu), dim=1) for m in members]).mean(dim=0)
        out = ensemble(hu)
    torch.testing.assert_close(torch.softmax(out, dim=1), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(out.argmax(dim=1), expected.argmax(dim=1))
    with pytest.raises(ValueError, match="at least one member"):
        SegmentationEnsemble([])


def test_export_ensemble_runs_in_the_service_and_averages_member_scores(tmp_path: Path) -> None:
    from service.predictor.onnx_backend import load_onnx_predictor

    ckpts = [_tiny_checkpoint(tmp_path, seed, best=b) for seed, b in ((0, 0.4), (1, 0.6))]
    result = export_ensemble(ckpts, tmp_path / "ens.onnx")
    assert result.max_abs_diff <= 1e-4
    manifest = read_model_manifest(tmp_path / "ens.onnx")
    assert manifest.training_summary["ensemble_members"] == 2
    assert (manifest.name, manifest.version) == ("tiny-ensemble", "9.9.9")
    assert manifest.validation_voldice == pytest.approx({"lung": 0.5})
    raw = {p.key: p.value for p in onnx.load(str(tmp_path / "ens.onnx")).metadata_props}
    jsonschema.validate(json.loads(raw[MANIFEST_KEY]), json.loads(SCHEMA.read_text()))

    # The service reads it like any model; its probabilities are the members' mean.
    hu = np.random.default_rng(3).uniform(-1100, 400, (6, 32, 32)).astype(np.float32)
    probs = load_onnx_predictor(tmp_path / "ens.onnx").predict_probabilities(hu)
    members = [
        load_onnx_predictor(
            export_onnx(c, tmp_path / f"m{i}.onnx").onnx_path
        ).predict_probabilities(hu)
        for i, c in enumerate(ckpts)
    ]
    np.testing.assert_allclose(probs, np.mean(members, axis=0), atol=1e-4)


def test_export_ensemble_refuses_members_with_another_interface(tmp_path: Path) -> None:
    base = _tiny_checkpoint(tmp_path, 0)
    other_size = _tiny_checkpoint(tmp_path, 1, model={"input_size": [48, 48]})
    with pytest.raises(ValueError, match="'input_size'"):
        export_ensemble([base, other_size], tmp_path / "ens.onnx")
    standardized = _tiny_checkpoint(tmp_path, 2, model={"standardize_input": True})
    with pytest.raises(ValueError, match="standardize_input"):
        export_ensemble([base, standardized], tmp_path / "ens.onnx")
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        export_ensemble([base], tmp_path / "ens.onnx")
    with pytest.raises(ExportParityError, match="probabilities differ from PyTorch"):
        export_ensemble([base, _tiny_checkpoint(tmp_path, 3)], tmp_path / "ens.onnx", tolerance=-1)
    assert not (tmp_path / "ens.onnx").exists()


def test_a_retrained_model_can_be_exported_as_a_new_version(tmp_path: Path) -> None:
    from service.cli.main import main as cli_main

    ckpt = _tiny_checkpoint(tmp_path)
    out = tmp_path / "v2.onnx"
    assert (
        cli_main(
            ["export", "--checkpoint", str(ckpt), "--out", str(out), "--model-version", "10.0.0"]
        )
        == 0
    )
    assert read_model_manifest(out).version == "10.0.0"
    with pytest.raises(ValueError, match="'version' must be a non-empty string"):
        export_onnx(ckpt, tmp_path / "blank.onnx", version="  ")
    assert not (tmp_path / "blank.onnx").exists()
