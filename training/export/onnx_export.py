"""Export a trained checkpoint to ONNX: the hand-over from training to the service.

The exported graph takes raw Hounsfield units (the HU window is part of the model), has a
dynamic batch axis, and carries the model manifest in its metadata. Export is refused unless
ONNX Runtime reproduces PyTorch's output on the same input within a tolerance.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from service.core.classes import classes_for
from service.core.manifest import MANIFEST_KEY, ModelManifest
from service.predictor import softmax
from service.predictor.torch_backend import TorchBackend
from training.config import DataKind, TrainConfig, config_from_dict
from training.nn.networks import SegmentationEnsemble, SegmentationNet, build_network

log = logging.getLogger(__name__)

INPUT_NAME = "hu"
OUTPUT_NAME = "logits"


class ExportParityError(RuntimeError):
    """ONNX Runtime's output differs from PyTorch's beyond the tolerance."""


@dataclass
class ExportResult:
    onnx_path: Path
    manifest: ModelManifest
    max_abs_diff: float


def load_checkpoint(path: str | Path) -> tuple[SegmentationNet, TrainConfig, dict[str, Any]]:
    """Rebuild the network from a checkpoint's own resolved config and load its weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"'{path}' is not a pulmoseg training checkpoint (no model/config).")
    config = config_from_dict(state["config"])
    model = build_network(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, state


def _provenance(config: TrainConfig) -> dict[str, Any]:
    """What a reader of the model file needs to know about its data and intended use."""
    out: dict[str, Any] = {}
    data, window = config.data, config.data.pixel_window
    if window is not None:
        out["source_pixel_window_hu"] = list(window)
        if data.kind is DataKind.SLICES2D:
            # How training prepared and validated its 8-bit slices: `pulmoseg evaluate`
            # prepares a slice folder the same way (training.evaluation.evaluate).
            harmonize = data.harmonize_tissue_hu
            out["slice_preparation"] = {
                "pixel_window": list(window),
                "rotate90": data.rotate90,
                "harmonize_tissue_hu": None if harmonize is None else list(harmonize),
                "pad_square": data.pad_square,
                "lung_labels": data.lung_labels,
            }
    if config.data.lung_labels:
        out["lung_labels"] = "classical lung-field extraction (service.core.lung_field)"
    if config.export.intended_use:
        out["intended_use"] = config.export.intended_use
    if config.export.data_licence:
        out["data_licence"] = config.export.data_licence
    return out


def build_manifest(config: TrainConfig, state: dict[str, Any]) -> ModelManifest:
    return ModelManifest(
        name=config.export.name,
        version=config.export.version,
        classes=classes_for(config.model.class_names),
        slice_context=config.model.slice_context,
        hu_window=config.model.hu_window,
        input_size=config.model.input_size,
        training_summary={
            "data_root": str(config.data.root),
            "epochs": int(state.get("epoch", -1)) + 1,
            "seed": config.seed,
            "loss": config.optim.loss.value,
            "features": list(config.model.features),
            **_provenance(config),
        },
        validation_voldice={k: float(v) for k, v in state.get("best_dice", {}).items()},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        lung_field_margin_mm=config.export.lung_field_margin_mm,
        slice_thickness_mm_range=config.export.slice_thickness_mm_range,
        pixel_spacing_mm_range=config.export.pixel_spacing_mm_range,
    )


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    sample_hu: np.ndarray | None = None,
    tolerance: float | None = None,
    version: str | None = None,
) -> ExportResult:
    """Export ``checkpoint`` to ``output`` and verify ONNX Runtime parity with PyTorch.

    ``sample_hu`` (N, C, H, W) is the parity input; by default a synthetic HU batch spanning
    air to bone. The file appears at ``output`` only after parity passed. ``version`` replaces
    the config's ``export.version`` (a retrained model is a new version of the same model).
    """
    model, config, state = load_checkpoint(checkpoint)
    if version is not None:
        if not version.strip():
            raise ValueError("Argument 'version' must be a non-empty string.")
        config.export.version = version.strip()
    manifest = build_manifest(config, state)
    return _export_module(model, config, manifest, output, sample_hu, tolerance)


def export_ensemble(
    checkpoints: Sequence[str | Path],
    output: str | Path,
    *,
    sample_hu: np.ndarray | None = None,
    tolerance: float | None = None,
    name: str | None = None,
) -> ExportResult:
    """Export several checkpoints (e.g. cross-validation folds) as one averaging ONNX model.

    The members must agree on everything the service reads from the manifest (classes, slice
    context, HU window, input size); their widths may differ. The graph returns the log of
    the members' mean softmax, so the service's softmax/argmax see the ensemble's mean
    probabilities; parity is checked on those probabilities. The manifest's validation
    scores are the members' means; its name is ``name`` (default: the first member's name
    plus ``-ensemble``), so logs and metrics tell it from a single member.
    """
    if len(checkpoints) < 2:
        raise ValueError(f"An ensemble needs at least 2 checkpoints, got {len(checkpoints)}.")
    loaded = [load_checkpoint(path) for path in checkpoints]
    _, config, state = loaded[0]
    reference = build_manifest(config, state)
    for path, (_, member_config, member_state) in zip(checkpoints, loaded, strict=True):
        member = build_manifest(member_config, member_state)
        for key in ("classes", "slice_context", "hu_window", "input_size"):
            if getattr(member, key) != getattr(reference, key):
                raise ValueError(
                    f"Checkpoint '{path}' differs from '{checkpoints[0]}' in '{key}' "
                    f"({getattr(member, key)!r} vs {getattr(reference, key)!r}); ensemble "
                    "members must share the model's interface."
                )
        if member_config.model.standardize_input != config.model.standardize_input:
            raise ValueError(
                f"Checkpoint '{path}' differs from '{checkpoints[0]}' in "
                "'model.standardize_input'; ensemble members must share their preprocessing."
            )
    scores: dict[str, list[float]] = {}
    for _, _, member_state in loaded:
        for cls, value in member_state.get("best_dice", {}).items():
            scores.setdefault(cls, []).append(float(value))
    manifest = dataclasses.replace(
        reference,
        name=name or f"{reference.name}-ensemble",
        training_summary={**reference.training_summary, "ensemble_members": len(loaded)},
        validation_voldice={
            cls: float(np.mean(values))
            for cls, values in scores.items()
            if len(values) == len(loaded)
        },
    )
    model = SegmentationEnsemble([member for member, _, _ in loaded]).eval()
    return _export_module(model, config, manifest, output, sample_hu, tolerance)


def _export_module(
    model: torch.nn.Module,
    config: TrainConfig,
    manifest: ModelManifest,
    output: str | Path,
    sample_hu: np.ndarray | None,
    tolerance: float | None,
) -> ExportResult:
    """Trace ``model`` to ONNX with the manifest in its metadata; write only after the
    probabilities of ORT and PyTorch agree (:func:`check_parity`)."""
    tolerance = config.export.parity_tolerance if tolerance is None else tolerance
    c, (h, w) = config.model.slice_context, config.model.input_size
    if sample_hu is None:
        rng = np.random.default_rng(config.seed)
        sample_hu = rng.uniform(-1100.0, 1200.0, size=(2, c, h, w)).astype(np.float32)
    if sample_hu.ndim != 4 or sample_hu.shape[1:] != (c, h, w):
        raise ValueError(
            f"Argument 'sample_hu' must have shape (N, {c}, {h}, {w}), got {sample_hu.shape}."
        )

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        example = torch.from_numpy(sample_hu[:1].copy())
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=config.export.opset,
            verbose=False,
        )
        if program is None:  # only the legacy exporter (dynamo=False) returns nothing
            raise RuntimeError("torch.onnx.export (dynamo) returned no ONNX program.")
        program.save(str(tmp))
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in {
            MANIFEST_KEY: manifest.to_json(),
            "pulmoseg.model_name": manifest.name,
            "pulmoseg.model_version": manifest.version,
        }.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"pulmoseg {manifest.name} {manifest.version}"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        max_diff = check_parity(model, tmp, sample_hu, tolerance)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s (max |onnx - torch| = %.2e)", output, max_diff)
    return ExportResult(output, manifest, max_diff)


def check_parity(
    model: torch.nn.Module, onnx_path: Path, sample_hu: np.ndarray, tolerance: float
) -> float:
    """Max absolute difference of the class probabilities that ORT (CPU) and PyTorch give.

    Probabilities are what the service uses (softmax, argmax, volumes); raw logits are not
    comparable on a fixed absolute scale (large logits, or an ensemble's log-probabilities of
    near-impossible classes, magnify float rounding that changes no probability). Raises
    :class:`ExportParityError` beyond ``tolerance``.
    """
    from service.predictor.onnx_backend import OnnxBackend

    batch = np.ascontiguousarray(sample_hu.astype(np.float32))
    ort_probs = softmax(OnnxBackend(onnx_path, cpu_only=True).run(batch))
    torch_probs = softmax(TorchBackend(model).run(batch))
    max_diff = float(np.abs(ort_probs - torch_probs).max())
    if not max_diff <= tolerance:
        raise ExportParityError(
            f"ONNX Runtime probabilities differ from PyTorch by {max_diff:.3g} "
            f"(tolerance {tolerance:g}); the exported model was not written."
        )
    return max_diff
