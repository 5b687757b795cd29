"""The weak (slice-level) loss as an add-on to any stage's labeled loss.

Stages that train on labeled batches (supervised, TCSM) append a batch of weakly labeled slices
(:meth:`training.data.sources.DataSource.weak_batches`) to their labeled inputs, so one forward
pass serves both, and swap their loss for one that scores the dense part with the stage's loss
and the weak part with :class:`~training.nn.weak_losses.TopKLesionLoss`. Runs without weak
studies get their inputs and loss back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from service.core.classes import LESION_CLASS_NAMES
from training.config import TrainConfig
from training.data.sources import DataSource, WeakBatches
from training.nn.weak_losses import TopKLesionLoss
from training.stages.task import StepRandom

__all__ = ["LossFn", "WeakTerm", "weak_term"]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class WeakTerm:
    """Draws a weak batch per step and adds ``weight`` × its loss to the stage's loss."""

    batches: WeakBatches
    loss: TopKLesionLoss
    weight: float
    batch_size: int

    def extend(
        self, x: Tensor, loss_fn: LossFn, rnd: StepRandom
    ) -> tuple[Tensor, LossFn, dict[str, float]]:
        """``x`` with the weak slices appended, the combined loss, and a dict the loss fills
        with its parts (``weak_mil``, ``weak_outside``, ``dense``) when it is called."""
        batch = self.batches.sample(self.batch_size, rnd.numpy, rnd.torch)
        dense = x.shape[0]
        logged: dict[str, float] = {}

        def combined(logits: Tensor, y: Tensor) -> Tensor:
            sup = loss_fn(logits[:dense], y)
            device = logits.device
            parts = self.loss.terms(
                logits[dense:], batch.region.to(device), batch.positive.to(device)
            )
            weak = parts["mil"] + self.loss.outside_weight * parts["outside"]
            logged.update(
                dense=float(sup.detach()),
                weak_mil=float(parts["mil"].detach()),
                weak_outside=float(parts["outside"].detach()),
            )
            return sup + self.weight * weak

        return torch.cat([x, batch.x.to(x.device)]), combined, logged


def weak_term(config: TrainConfig, source: DataSource) -> WeakTerm | None:
    """The run's weak term, or None when it has no weak studies (or ``weak.batch_size`` 0)."""
    batches = source.weak_batches()
    if batches is None:
        return None
    names = list(config.model.class_names)
    loss = TopKLesionLoss([names.index(n) for n in LESION_CLASS_NAMES], top_k=config.weak.top_k)
    return WeakTerm(batches, loss, config.weak.weight, config.weak.batch_size)
