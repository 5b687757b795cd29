"""Write an exported pulmoseg ONNX model as a Triton Inference Server model repository.

Sites that already run Triton serve the same ONNX file there. The repository layout is
Triton's: ``<repo>/<model name>/config.pbtxt`` and ``<repo>/<model name>/<version>/model.onnx``.
Names, data types and dims in ``config.pbtxt`` are read from the ONNX graph itself (not from
training settings), so the config cannot disagree with the file Triton loads. The pulmoseg
manifest travels along as a model parameter, so a Triton client can read the classes, codes
and HU window from the model-config API.

What Triton returns is what the ONNX graph returns: logits at the network's input size. The
softmax and the resize back to the study's size are the client's job (the pulmoseg service does
both in ``service.predictor``). The config text is written directly (protobuf text format) so
that training needs no Triton package; tests parse it with Triton's own ``model_config_pb2``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from service.core.manifest import MANIFEST_KEY, ModelManifest
from service.core.options import Option

log = logging.getLogger(__name__)

#: Triton's name for an ONNX tensor element type (model_config.proto DataType).
ONNX_TO_TRITON_TYPE: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class InstanceKind(Option):
    """Where Triton runs the model instances (model_config.proto ``Kind``)."""

    GPU = "KIND_GPU"
    CPU = "KIND_CPU"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it: the batch axis is implied by max_batch_size."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TritonExport:
    config_path: Path
    model_path: Path
    model_name: str
    version: int


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    data_type = ONNX_TO_TRITON_TYPE.get(tensor.elem_type)
    if data_type is None:
        raise ValueError(
            f"ONNX tensor '{value.name}' has element type "
            f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which Triton cannot take."
        )
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if len(shape) < 2 or shape[0] != -1:
        raise ValueError(
            f"ONNX tensor '{value.name}' must have a dynamic batch axis first "
            f"(export with pulmoseg export), got shape {shape}."
        )
    return TensorSpec(value.name, data_type, tuple(shape[1:]))


def graph_tensors(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (minus initializers) and outputs of the graph, without their batch axis."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_tensor_spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor_spec(v) for v in model.graph.output]
    return inputs, outputs


def _quote(text: str) -> str:
    """A protobuf text-format string literal; non-ASCII characters stay UTF-8."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _tensor_block(kind: str, specs: list[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for i, spec in enumerate(specs):
        dims = ", ".join(str(d) for d in spec.dims)
        lines += [
            "  {",
            f"    name: {_quote(spec.name)}",
            f"    data_type: {spec.data_type}",
            f"    dims: [ {dims} ]",
            "  }" + ("," if i < len(specs) - 1 else ""),
        ]
    lines.append("]")
    return lines


def render_config(
    model_name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    max_batch_size: int,
    instance_kind: InstanceKind,
    instance_count: int,
    max_queue_delay_us: int,
    manifest_json: str,
) -> str:
    """config.pbtxt for the ONNX Runtime backend with dynamic batching."""
    preferred = sorted({b for b in (max_batch_size // 2, max_batch_size) if b >= 1})
    lines = [
        f"name: {_quote(model_name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        *_tensor_block("input", inputs),
        *_tensor_block("output", outputs),
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        f"    kind: {instance_kind.value}",
        "  }",
        "]",
        "version_policy: { latest: { num_versions: 1 } }",
        "parameters {",
        f"  key: {_quote(MANIFEST_KEY)}",
        f"  value: {{ string_value: {_quote(manifest_json)} }}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def export_triton_repository(
    onnx_path: str | Path,
    repository: str | Path,
    *,
    model_name: str | None = None,
    version: int = 1,
    max_batch_size: int = 16,
    instance_kind: InstanceKind | str = InstanceKind.GPU,
    instance_count: int = 1,
    max_queue_delay_us: int = 2000,
) -> TritonExport:
    """Add ``onnx_path`` to the Triton model repository ``repository`` as ``version``.

    ``model_name`` defaults to the manifest's model name. An existing version folder is
    refused (Triton versions are immutable: bump ``version`` instead); other versions and
    models in the repository are left alone.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model '{onnx_path}' does not exist.")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"Argument 'version' must be an integer >= 1, got {version!r}.")
    if max_batch_size < 1:
        raise ValueError(f"Argument 'max_batch_size' must be >= 1, got {max_batch_size}.")
    if instance_count < 1:
        raise ValueError(f"Argument 'instance_count' must be >= 1, got {instance_count}.")
    kind = InstanceKind.parse(instance_kind, "Argument 'instance_kind'")

    model = onnx.load(str(onnx_path), load_external_data=False)
    metadata = {p.key: p.value for p in model.metadata_props}
    if MANIFEST_KEY not in metadata:
        raise ValueError(
            f"'{onnx_path}' has no '{MANIFEST_KEY}' metadata: export it with pulmoseg."
        )
    manifest = ModelManifest.from_json(metadata[MANIFEST_KEY])
    name = model_name or manifest.name
    if not _MODEL_NAME.match(name):
        raise ValueError(
            f"Argument 'model_name' must be letters, digits, '.', '_' or '-', got {name!r}."
        )
    inputs, outputs = graph_tensors(model)

    model_dir = Path(repository) / name
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise FileExistsError(
            f"Triton model '{name}' already has version {version} at '{version_dir}'; "
            "choose a new version."
        )
    config = render_config(
        name,
        inputs,
        outputs,
        max_batch_size=max_batch_size,
        instance_kind=kind,
        instance_count=instance_count,
        max_queue_delay_us=max_queue_delay_us,
        manifest_json=manifest.to_json(),
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir))
    try:
        shutil.copyfile(onnx_path, staging / "model.onnx")
        staging.replace(version_dir)  # the version appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    config_path = model_dir / "config.pbtxt"
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=model_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(config)
    Path(tmp).replace(config_path)
    log.info("wrote Triton model %s version %d to %s", name, version, model_dir)
    return TritonExport(config_path, version_dir / "model.onnx", name, version)
