"""Whole-volume prediction with a PyTorch model, for validation during training.

Serving and ``pulmoseg evaluate`` use the ONNX model instead (``service.predictor.onnx_backend``); this
module exists so training can validate every epoch without exporting.
"""

from __future__ import annotations

import numpy as np
import torch

from service.core.segmentation_metrics import per_class_vol_dice
from service.core.preprocessing import slice_context_stack
from training.datasets import LoadedStudy, resize_batch


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    hu: np.ndarray,
    *,
    slice_context: int,
    input_size: tuple[int, int],
    batch_size: int = 16,
) -> np.ndarray:
    """Label volume (z, y, x) for a HU volume, slice by slice with 2.5D context."""
    was_training = model.training
    model.eval()
    depth, height, width = hu.shape
    labels = np.empty((depth, height, width), dtype=np.uint8)
    device = next(model.parameters()).device  # validation may run on a GPU
    for start in range(0, depth, batch_size):
        z = np.arange(start, min(start + batch_size, depth))
        x = torch.from_numpy(np.ascontiguousarray(slice_context_stack(hu, slice_context, z)))
        x, _ = resize_batch(x, None, input_size)
        logits = model(x.float().to(device)).float().cpu()
        if tuple(logits.shape[-2:]) != (height, width):
            logits = torch.nn.functional.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        labels[z] = logits.argmax(dim=1).numpy().astype(np.uint8)
    model.train(was_training)
    return labels


def validate_studies(
    model: torch.nn.Module,
    studies: list[LoadedStudy],
    *,
    slice_context: int,
    input_size: tuple[int, int],
    class_names: tuple[str, ...],
) -> dict[str, float]:
    """Mean VolDice per foreground class over the labeled validation studies."""
    scores: dict[str, list[float]] = {name: [] for name in class_names[1:]}
    for study in studies:
        if study.label is None:
            continue
        pred = predict_volume(model, study.hu, slice_context=slice_context, input_size=input_size)
        per_class = per_class_vol_dice(pred, study.label, range(1, len(class_names)))
        for index, name in enumerate(class_names[1:], start=1):
            scores[name].append(per_class[index])
    return {name: float(np.mean(v)) if v else float("nan") for name, v in scores.items()}
