"""The consistency pass that also measures the model's uncertainty about its lesion call.

The consistency check already runs the network once more, on a flipped or rotated copy
(``service.quality.consistency``). :class:`EntropyRecordingPredictor` is that pass's label
function: the same labels as ``Predictor.predict_labels`` (same batches, same resampling), and
while the class scores of each batch are in memory it adds up the predictive entropy of the
voxels called lesion. Uncertainty therefore costs a softmax and a log per batch at the
network's size, not another inference.

It walks the predictor's batches (``Predictor._batches``) rather than adding a method to the
predictor, whose public calls serve training and evaluation too; a test checks that its labels
equal ``predict_labels``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.predictor import LabelResampling, Predictor, softmax
from service.predictor.predictor import _upsample_nearest, argmax_classes, upsample_argmax
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
        #: Sum of the normalised entropy over the voxels (at the network's size) called lesion,
        #: and their count, of the last call.
        self.entropy_sum = 0.0
        self.lesion_voxels = 0

    def __call__(self, volume: np.ndarray) -> np.ndarray:
        p = self.predictor
        depth, height, width = p._check_volume(volume).shape
        labels = np.empty((depth, height, width), dtype=np.uint8)
        resize = (height, width) != tuple(p.geometry.input_size)
        mode = p.label_resampling if resize else LabelResampling.PROBABILITIES
        full_size_probs = resize and mode is LabelResampling.PROBABILITIES
        self.entropy_sum, self.lesion_voxels = 0.0, 0
        lesion = np.zeros(max(256, p.geometry.num_classes), dtype=bool)
        lesion[self.lesion_classes] = True
        batches = p._batches(
            volume,
            None,
            self.is_cancelled,
            need_probs=False,
            resize_back=full_size_probs,
        )
        for z, output in batches:
            out = labels[z[0] : z[-1] + 1]
            probs = output if full_size_probs else softmax(output)
            small = argmax_classes(probs, np.empty((len(z), *probs.shape[2:]), np.uint8))
            called = lesion[small]
            if called.any():
                entropy = normalised_entropy(probs, axis=1)
                self.entropy_sum += float(entropy[called].sum())
                self.lesion_voxels += int(called.sum())
            if not resize or mode is LabelResampling.PROBABILITIES:
                np.copyto(out, small)
            elif mode is LabelResampling.NEAREST:
                _upsample_nearest(small, out)
            else:
                upsample_argmax(probs, out)
        return labels
