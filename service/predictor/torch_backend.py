"""PyTorch backend: a model in memory, for validation during training (no export needed).

Imported only by training; a serve-only install never loads this module or torch.
"""

from __future__ import annotations

import numpy as np
import torch

from service.predictor.backend import InferenceBackend


class TorchBackend(InferenceBackend):
    """Runs ``model`` in eval mode without gradients; restores its training flag afterwards."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str | None = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"Argument 'model' must be a torch.nn.Module, got {type(model).__name__}."
            )
        self.model = model
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.provider = f"torch:{self.device.type}"

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model(torch.from_numpy(batch).to(self.device))
        finally:
            self.model.train(was_training)
        result: np.ndarray = output.float().cpu().numpy()
        return result
