"""What a predictor needs from an inference engine: network input in, network output out."""

from __future__ import annotations

import abc

import numpy as np


class InferenceBackend(abc.ABC):
    """Runs the network on one batch; knows nothing about volumes, resizing or softmax.

    Input is (n, slice_context, h, w) float32 in the model's input units (Hounsfield units for
    volume models: the intensity window is part of the network); output is (n, K, h, w) logits
    or log-probabilities (softmax of either gives the class probabilities).
    """

    #: Where the network runs, e.g. ``CUDAExecutionProvider`` or ``torch:cpu``.
    provider: str

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Network output for ``batch``."""
