"""A tiny, untrained but real ONNX segmentation model for the quality tests.

It classifies each voxel of the centre slice by its HU value (nearest class centre), plus an
in-plane ramp on the GGO logit. The ramp makes it deliberately *not* invariant to flips and
in-plane rotations, so the consistency check has something to find, while its predictions stay
deterministic and cheap: the quality tests need minutes less than with a trained model, and
still run ONNX Runtime through the service's one predictor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.core.classes import DEFAULT_CLASSES
from service.core.manifest import MANIFEST_KEY, ModelManifest

#: Class centres and widths in HU: background (air), lung, GGO, consolidation.
CENTRES = (-1000.0, -850.0, -500.0, -50.0)
WIDTHS = (150.0, 100.0, 200.0, 120.0)
SLICE_CONTEXT = 3


def hu_model_manifest(size: int, version: str = "0.9.0") -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-hu-test",
        version=version,
        classes=list(DEFAULT_CLASSES),
        slice_context=SLICE_CONTEXT,
        hu_window=(-1024.0, 400.0),
        input_size=(size, size),
    )


def write_hu_model(path: Path, size: int, *, ramp: float = 1.5, version: str = "0.9.0") -> Path:
    """Write the model (input ``(N, 3, size, size)`` HU, output 4 logits) with its manifest."""
    k = len(CENTRES)
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ramp_map = (2.0 * (i + 2 * j) / (3 * (size - 1)) - 1.0).astype(np.float32)
    weights = np.zeros((1, k, size, size), np.float32)
    weights[0, 2] = ramp * ramp_map
    inits = [
        numpy_helper.from_array(np.array(SLICE_CONTEXT // 2, np.int64), "centre"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(CENTRES, np.float32).reshape(1, k, 1, 1), "mu"),
        numpy_helper.from_array(np.array(WIDTHS, np.float32).reshape(1, k, 1, 1), "sigma"),
        numpy_helper.from_array(weights, "ramp"),
    ]
    nodes = [
        helper.make_node("Gather", ["hu", "centre"], ["c"], axis=1),
        helper.make_node("Unsqueeze", ["c", "axis1"], ["c4"]),
        helper.make_node("Sub", ["c4", "mu"], ["d"]),
        helper.make_node("Div", ["d", "sigma"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("Neg", ["z2"], ["nz2"]),
        helper.make_node("Add", ["nz2", "ramp"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hu_model",
        [helper.make_tensor_value_info("hu", TensorProto.FLOAT, ["N", SLICE_CONTEXT, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {MANIFEST_KEY: hu_model_manifest(size, version).to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
