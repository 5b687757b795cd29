"""Validation during training, through the same predictor the service and evaluation use.

A checkpoint is chosen by the number this module computes; because it runs
:class:`service.predictor.Predictor` (torch backend) with the service's preprocessing, that
number is what ``pulmoseg evaluate`` reports for the exported ONNX model and what the service
would produce (a test checks the two agree within 1e-3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from service.core.segmentation_metrics import dice, per_class_vol_dice
from service.predictor import InputGeometry, Predictor
from service.predictor.torch_backend import TorchBackend
from training.config import ModelConfig
from training.data.slice_folders import LoadedSlice
from training.data.volumes import LoadedStudy


def torch_predictor(model: torch.nn.Module, config: ModelConfig) -> Predictor:
    """The one predictor around an in-memory model, with the geometry of ``config``."""
    height, width = config.input_size
    geometry = InputGeometry(config.slice_context, (height, width), len(config.class_names))
    return Predictor(TorchBackend(model), geometry)


def _mean_per_class(scores: dict[str, list[float]]) -> dict[str, float]:
    return {name: float(np.mean(v)) if v else float("nan") for name, v in scores.items()}


def validate_volumes(
    model: torch.nn.Module, studies: Sequence[LoadedStudy], config: ModelConfig
) -> dict[str, float]:
    """Mean VolDice per foreground class over the labeled validation studies."""
    predictor = torch_predictor(model, config)
    names = config.class_names
    scores: dict[str, list[float]] = {name: [] for name in names[1:]}
    for study in studies:
        if study.label is None:
            continue
        pred = predictor.predict_labels(study.hu)
        per_class = per_class_vol_dice(pred, study.label, range(1, len(names)))
        for index, name in enumerate(names[1:], start=1):
            scores[name].append(per_class[index])
    return _mean_per_class(scores)


def validate_slices(
    model: torch.nn.Module,
    slices: Sequence[LoadedSlice],
    config: ModelConfig,
    scored: Sequence[str],
) -> dict[str, float]:
    """Mean per-slice Dice of each ``scored`` class, at each slice's own resolution."""
    predictor = torch_predictor(model, config)
    names = config.class_names
    scores: dict[str, list[float]] = {name: [] for name in scored}
    for item in slices:
        if item.label is None:
            continue
        pred = predictor.predict_slice_probabilities(item.image.astype(np.float32)).argmax(axis=0)
        for name in scored:
            index = names.index(name)
            scores[name].append(dice(pred == index, item.label == index))
    return _mean_per_class(scores)
