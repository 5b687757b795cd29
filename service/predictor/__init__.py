"""The one predictor (volume or slice in, probabilities out) and its inference backends.

``Predictor`` and ``InferenceBackend`` import no runtime; the ONNX Runtime backend
(``service.predictor.onnx_backend``) and the torch backend (``service.predictor.torch_backend``)
are imported by whoever needs them, so serving never loads torch and training never needs ORT
except to evaluate an export.
"""

from service.predictor.backend import InferenceBackend
from service.predictor.predictor import InputGeometry, LabelResampling, Predictor, softmax

__all__ = ["InferenceBackend", "InputGeometry", "LabelResampling", "Predictor", "softmax"]
