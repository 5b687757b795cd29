"""The consistency pass that also measures the model's uncertainty about its lesion call.

The consistency check already runs the network once more, on a flipped or rotated copy
(``service.quality.consistency``). :class:`EntropyRecordingPredictor` is that pass's label
function: ``Predictor.predict_labels`` itself, with an ``on_batch`` observer that adds up the
predictive entropy of the voxels called lesion while each batch's class scores are in memory.
Uncertainty therefore costs a softmax and a log per batch, not another inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.predictor import Predictor
from service.quality.score_signals import normalised_entropy


class EntropyRecordingPredictor:
    """``predict(volume) -> labels`` that keeps the lesion entropy of its last call."""

    def __init__(
        self,
        predictor: Predictor,
        lesion_classes: Sequence[int],
        is_cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.predictor = predictor
        self.lesion_classes = [int(c) for c in lesion_classes]
        self.is_cancelled = is_cancelled
        #: Sum of the normalised entropy over the voxels called lesion (at the resolution the
        #: labels are decided at), and their count, of the last call.
        self.entropy_sum = 0.0
        self.lesion_voxels = 0
        self._is_lesion = np.zeros(max(256, predictor.geometry.num_classes), dtype=bool)
        self._is_lesion[self.lesion_classes] = True

    def __call__(self, volume: np.ndarray) -> np.ndarray:
        self.entropy_sum, self.lesion_voxels = 0.0, 0
        return self.predictor.predict_labels(
            volume, is_cancelled=self.is_cancelled, on_batch=self._record
        )

    def _record(self, probabilities: np.ndarray, labels: np.ndarray) -> None:
        called = self._is_lesion[labels]
        if called.any():
            entropy = normalised_entropy(probabilities, axis=1)
            self.entropy_sum += float(entropy[called].sum())
            self.lesion_voxels += int(called.sum())
