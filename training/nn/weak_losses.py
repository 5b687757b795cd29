"""Slice-level (weak) labels as a training signal: a multiple-instance lesion loss.

A slice label says "this slice shows infection somewhere" or "nowhere", not where. Treating the
slice's pixels as a bag of instances (multiple-instance learning), the bag's score is the mean
lesion probability of its ``top_k`` strongest pixels inside the region where lesions can lie
(the dilated lung field): for a negative slice that score is pushed to 0 (no confident lesion
anywhere in the lung: the liver dome, chest-wall strips and dependent density are penalised
wherever they appear), for a positive one to 1 (at least ``top_k`` pixels of lesion, about the
area the slice-level decision rule counts). Outside the region every pixel is background, on
any slice. Top-k pooling sits between max pooling (one pixel decides; noisy gradients) and mean
pooling (a small lesion drowns in the lung).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["TopKLesionLoss", "lesion_probability"]

_EPS = 1e-6


def lesion_probability(logits: Tensor, lesion_indices: Sequence[int]) -> Tensor:
    """Softmax probability of any lesion class, (B, K, H, W) logits → (B, H, W)."""
    if logits.ndim != 4:
        raise ValueError(
            f"Argument 'logits' must be (B, K, H, W), got shape {tuple(logits.shape)}."
        )
    return torch.softmax(logits, dim=1)[:, list(lesion_indices)].sum(dim=1)


class TopKLesionLoss(nn.Module):
    """Multiple-instance loss of slice-level lesion labels (see the module docstring).

    Args:
        lesion_indices: model class indices that count as lesion (GGO, consolidation).
        top_k: pixels whose mean lesion probability scores a slice.
        background_index: the class every pixel outside the region must be.
        outside_weight: weight of the background term outside the region.
    """

    def __init__(
        self,
        lesion_indices: Sequence[int],
        top_k: int = 16,
        background_index: int = 0,
        outside_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not lesion_indices:
            raise ValueError("Argument 'lesion_indices' must name at least one class.")
        if top_k < 1:
            raise ValueError(f"Argument 'top_k' must be >= 1, got {top_k}.")
        self.lesion_indices = [int(i) for i in lesion_indices]
        self.top_k = int(top_k)
        self.background_index = int(background_index)
        self.outside_weight = float(outside_weight)

    def slice_scores(self, logits: Tensor, region: Tensor) -> Tensor:
        """(B,) mean lesion probability of each slice's ``top_k`` strongest region pixels."""
        probability = lesion_probability(logits, self.lesion_indices)
        inside = probability.masked_fill(~region.bool(), 0.0).flatten(1)
        k = min(self.top_k, inside.shape[1])
        return inside.topk(k, dim=1).values.mean(dim=1)

    def terms(self, logits: Tensor, region: Tensor, positive: Tensor) -> dict[str, Tensor]:
        """The loss parts: ``mil`` (bag BCE) and ``outside`` (background CE outside region)."""
        expected = logits.shape[:1] + logits.shape[2:]
        if region.shape != expected:
            raise ValueError(
                f"Argument 'region' must be (B, H, W) = {tuple(expected)}, got "
                f"{tuple(region.shape)}."
            )
        if positive.shape != logits.shape[:1]:
            raise ValueError(
                f"Argument 'positive' must be (B,) = ({logits.shape[0]},), got "
                f"{tuple(positive.shape)}."
            )
        score = self.slice_scores(logits, region).clamp(_EPS, 1.0 - _EPS)
        target = positive.to(score.dtype)
        mil = -(target * score.log() + (1.0 - target) * (1.0 - score).log()).mean()
        outside = ~region.bool()
        log_background = torch.log_softmax(logits, dim=1)[:, self.background_index]
        count = outside.sum().clamp(min=1)
        background = -(log_background * outside).sum() / count
        return {"mil": mil, "outside": background}

    def forward(self, logits: Tensor, region: Tensor, positive: Tensor) -> Tensor:
        parts = self.terms(logits, region, positive)
        return parts["mil"] + self.outside_weight * parts["outside"]
