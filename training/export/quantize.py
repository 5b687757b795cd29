"""Post-training int8 quantization of an exported model (ONNX Runtime static quantization, QDQ).

Only the network's convolutions are quantized (weights per output channel, activations uint8
with min/max ranges calibrated on real slices); normalisation, activations and the HU window
stay float, which keeps the graph's Quantize/Dequantize pairs few. The manifest travels along,
marked with the method (version ``<version>+int8``) so logs, metrics and ``GetModelInfo`` tell
the variant from its fp32 source.

Whether int8 pays off depends on the CPU: with VNNI (AVX-512 VNNI / AVX-VNNI) ONNX Runtime's
int8 convolutions are several times faster than fp32; on plain AVX2 they may be no faster, so
``bench/vs_stock.py --quantize`` measures it side by side on the machine that will serve.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from service.core.manifest import MANIFEST_KEY, ModelManifest, read_model_manifest
from service.core.options import Option
from service.core.preprocessing import resize_planes, slice_context_stack

log = logging.getLogger(__name__)

#: Slices used for calibration by default (spread evenly over the calibration volumes).
DEFAULT_CALIBRATION_SLICES = 24


class QuantizeMethod(Option):
    """Quantized variants ``pulmoseg export --quantize`` can make."""

    #: Static int8: per-channel int8 weights, uint8 activations, QDQ format.
    INT8 = "int8"


@dataclass(frozen=True)
class QuantizeResult:
    onnx_path: Path
    manifest: ModelManifest
    calibration_slices: int


def calibration_inputs(
    volumes: Sequence[np.ndarray], manifest: ModelManifest, slices: int
) -> list[np.ndarray]:
    """Network inputs (1, C, H, W) float32 in HU for ``slices`` slices spread over ``volumes``.

    Built with the service's own 2.5D stacking and resize, so calibration sees what serving sees.
    """
    if not volumes:
        raise ValueError("Argument 'volumes' is empty; calibration needs at least one CT volume.")
    if slices < 1:
        raise ValueError(f"Argument 'slices' must be at least 1, got {slices}.")
    per_volume = max(1, -(-slices // len(volumes)))
    inputs = []
    for volume in volumes:
        if volume.ndim != 3:
            raise ValueError(
                f"Calibration volumes must be 3-D (z, y, x) HU arrays, got shape {volume.shape}."
            )
        depth = volume.shape[0]
        # Interior slices: the volume's ends are often outside the body and teach no range.
        picks = np.unique(np.linspace(depth * 0.1, depth * 0.9, per_volume).astype(int))
        stack = slice_context_stack(volume.astype(np.float32), manifest.slice_context, picks)
        for item in resize_planes(stack, manifest.input_size):
            inputs.append(np.ascontiguousarray(item[None]))
    return inputs[:slices]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over prepared inputs."""

    def __init__(self, input_name: str, inputs: Sequence[np.ndarray]) -> None:
        self._items: Iterator[np.ndarray] = iter(inputs)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {self._name: item}


def quantize_onnx(
    model: str | Path,
    output: str | Path,
    calibration_volumes: Sequence[np.ndarray],
    *,
    method: QuantizeMethod | str = QuantizeMethod.INT8,
    calibration_slices: int = DEFAULT_CALIBRATION_SLICES,
) -> QuantizeResult:
    """Write an int8 variant of the exported fp32 ``model`` to ``output`` (atomically)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    kind = QuantizeMethod.parse(method, "Argument 'method'")
    model, output = Path(model), Path(output)
    manifest = read_model_manifest(model)
    inputs = calibration_inputs(calibration_volumes, manifest, calibration_slices)
    input_name = onnx.load(str(model), load_external_data=False).graph.input[0].name

    class Reader(_Reader, CalibrationDataReader):  # ORT checks the base class
        pass

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=output.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "quantized.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(input_name, inputs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "ConvTranspose"],
            calibrate_method=CalibrationMethod.MinMax,
        )
        variant = dataclasses.replace(
            manifest,
            version=f"{manifest.version}+{kind.value}",
            training_summary={
                **manifest.training_summary,
                "quantization": {
                    "method": f"{kind.value}: ONNX Runtime static, QDQ, per-channel weights",
                    "calibration_slices": len(inputs),
                },
            },
        )
        proto = onnx.load(str(quantized))
        _set_manifest(proto, variant)
        fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=output.parent)
        os.close(fd)
        try:
            onnx.save(proto, tmp_name)
            Path(tmp_name).replace(output)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    log.info("quantized %s -> %s (%s, %d calibration slices)", model, output, kind, len(inputs))
    return QuantizeResult(output, variant, len(inputs))


def _set_manifest(proto: onnx.ModelProto, manifest: ModelManifest) -> None:
    values = {
        MANIFEST_KEY: manifest.to_json(),
        "pulmoseg.model_name": manifest.name,
        "pulmoseg.model_version": manifest.version,
    }
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for entry in kept:
        proto.metadata_props.add(key=entry.key, value=entry.value)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"pulmoseg {manifest.name} {manifest.version}"


def load_calibration_volumes(root: str | Path, max_studies: int = 4) -> list[np.ndarray]:
    """HU volumes of the first ``max_studies`` studies of a dataset folder (``manifest.json``)."""
    from training.data.volumes import load_study, read_dataset_manifest

    records = read_dataset_manifest(root)[:max_studies]
    return [load_study(record).hu for record in records]


@dataclass(frozen=True)
class VolDiceComparison:
    """Per-class mean VolDice (vs the reference labels) of the fp32 model and of its variant."""

    reference: dict[str, float]
    variant: dict[str, float]

    @property
    def difference(self) -> dict[str, float]:
        """variant − reference per class (negative: the variant is worse)."""
        return {c: self.variant[c] - self.reference[c] for c in self.reference if c in self.variant}

    @property
    def worst_drop(self) -> float:
        return max([0.0, *(-d for d in self.difference.values())])


def compare_voldice(
    reference_model: str | Path, variant_model: str | Path, dataset_root: str | Path
) -> VolDiceComparison:
    """Score both models on the labeled studies of ``dataset_root`` as the service runs them."""
    from training.evaluation.evaluate import evaluate_model

    def means(model: str | Path) -> dict[str, float]:
        summary = evaluate_model(model, dataset_root=dataset_root).summary["vol_dice"]
        return {c: float(mean) for c, v in summary.items() if (mean := v.get("mean")) is not None}

    return VolDiceComparison(means(reference_model), means(variant_model))
