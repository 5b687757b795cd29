"""Triton model repository export: config.pbtxt parsed by Triton's own protobuf, checked
against the ONNX graph it sits next to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format

from service.cli.main import main as pulmoseg_main
from service.core.manifest import MANIFEST_KEY
from training.config import config_from_dict
from training.export.triton import export_triton_repository
from training.nn.networks import build_network

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32"}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained network exported by the real `pulmoseg export` (weights don't matter)."""
    root = tmp_path_factory.mktemp("triton")
    config = config_from_dict(
        {
            "model": {"features": [4, 4, 8, 8, 16, 4], "input_size": [32, 48], "slice_context": 5},
            "export": {"name": "lung-tiny", "version": "2.1.0"},
        }
    )
    torch.manual_seed(0)
    checkpoint = root / "tiny.pt"
    torch.save(
        {"model": build_network(config.model).state_dict(), "config": config.to_dict()}, checkpoint
    )
    out = root / "model.onnx"
    rc = pulmoseg_main(
        [
            "export",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--triton-repo",
            str(root / "repo"),
            "--triton-max-batch-size",
            "8",
        ]
    )
    assert rc == 0
    return out


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def test_cli_writes_a_repository_triton_can_parse(onnx_model: Path) -> None:
    model_dir = onnx_model.parent / "repo" / "lung-tiny"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_model.read_bytes()
    config = parse_config(model_dir / "config.pbtxt")
    assert config.name == "lung-tiny"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
    assert config.version_policy.latest.num_versions == 1


def test_names_types_and_dims_match_the_onnx_model(onnx_model: Path) -> None:
    config = parse_config(onnx_model.parent / "repo" / "lung-tiny" / "config.pbtxt")
    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    for declared, actual in (
        (config.input, session.get_inputs()),
        (config.output, session.get_outputs()),
    ):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, node in zip(declared, actual, strict=True):
            assert model_config_pb2.DataType.Name(tensor.data_type) == ORT_TO_TRITON[node.type]
            # Triton's dims leave out the batch axis, which ORT reports as symbolic.
            assert not isinstance(node.shape[0], int)
            assert list(tensor.dims) == node.shape[1:]
    assert list(config.input[0].dims) == [5, 32, 48]
    assert list(config.output[0].dims) == [4, 32, 48]
    # A full batch of max_batch_size runs through the graph as configured.
    batch = np.zeros((config.max_batch_size, *config.input[0].dims), dtype=np.float32)
    (logits,) = session.run(None, {config.input[0].name: batch})
    assert logits.shape == (config.max_batch_size, *config.output[0].dims)


def test_manifest_travels_as_a_model_parameter(onnx_model: Path) -> None:
    config = parse_config(onnx_model.parent / "repo" / "lung-tiny" / "config.pbtxt")
    metadata = {p.key: p.value for p in onnx.load(str(onnx_model)).metadata_props}
    assert config.parameters[MANIFEST_KEY].string_value == metadata[MANIFEST_KEY]


def test_new_version_beside_the_old_and_cpu_instances(onnx_model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    export_triton_repository(onnx_model, repo, version=1)
    result = export_triton_repository(
        onnx_model, repo, version=2, model_name="lung", instance_kind="KIND_CPU", instance_count=2
    )
    assert result.model_path == repo / "lung" / "2" / "model.onnx"
    assert sorted(p.name for p in (repo / "lung-tiny").iterdir()) == ["1", "config.pbtxt"]
    (group,) = parse_config(result.config_path).instance_group
    assert (group.kind, group.count) == (model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)
    assert not [p for p in (repo / "lung").iterdir() if p.name.startswith(".")], (
        "staging left behind"
    )


def test_existing_version_is_refused(onnx_model: Path, tmp_path: Path) -> None:
    export_triton_repository(onnx_model, tmp_path, version=3)
    with pytest.raises(FileExistsError, match="already has version 3"):
        export_triton_repository(onnx_model, tmp_path, version=3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"version": 0}, ValueError, "'version' must be an integer >= 1, got 0"),
        ({"max_batch_size": 0}, ValueError, "'max_batch_size' must be >= 1"),
        ({"instance_kind": "GPU"}, ValueError, "one of 'KIND_GPU', 'KIND_CPU', got 'GPU'"),
        ({"model_name": "lung/v2"}, ValueError, "'model_name' must be letters"),
    ],
)
def test_bad_arguments_name_the_argument(
    onnx_model: Path, tmp_path: Path, kwargs: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        export_triton_repository(onnx_model, tmp_path, **kwargs)
    assert not any(tmp_path.iterdir()), "nothing may be written for bad arguments"


def test_onnx_without_manifest_or_batch_axis_is_refused(onnx_model: Path, tmp_path: Path) -> None:
    plain = onnx.load(str(onnx_model))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="no 'pulmoseg.manifest' metadata"):
        export_triton_repository(tmp_path / "plain.onnx", tmp_path / "repo")
    fixed = onnx.load(str(onnx_model))
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(fixed, str(tmp_path / "fixed.onnx"))
    with pytest.raises(ValueError, match="dynamic batch axis first"):
        export_triton_repository(tmp_path / "fixed.onnx", tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_triton_repository(tmp_path / "missing.onnx", tmp_path / "repo")


def test_cli_checks_triton_options_before_exporting(tmp_path: Path, capsys) -> None:
    rc = pulmoseg_main(
        ["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.onnx"),
         "--triton-repo", str(tmp_path / "repo"), "--triton-version", "0"]
    )  # fmt: skip
    assert rc != 0
    assert "--triton-version and --triton-max-batch-size must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
