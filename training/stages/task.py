"""What a stage hands the shared loop: its task, the randomness of a step, and the helpers every
stage builds its step from.

These types live with the stages, not with ``training.loop``, so that stages (and
``training.checkpoints``, which saves a task's state) depend only on this interface and never on
the loop that runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from training.nn.networks import SegmentationNet

__all__ = ["AutocastForward", "StageTask", "StepRandom", "trainable"]


@dataclass
class StepRandom:
    """The random sources of one optimisation step (numpy for sampling, torch for augmenting)."""

    numpy: np.random.Generator
    torch: torch.Generator


class AutocastForward(nn.Module):
    """Runs the wrapped module under bf16 autocast (when enabled) and returns float32."""

    def __init__(self, module: nn.Module, enabled: bool, device_type: str) -> None:
        super().__init__()
        self.module = module
        self.enabled = enabled
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.enabled):
            out = self.module(x)
        return out.float()


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """Parameters that take gradients (frozen ones stay out of the optimiser and weight decay)."""
    return [p for p in module.parameters() if p.requires_grad]


@dataclass
class StageTask:
    """What one stage contributes to :func:`training.loop.run_stage`.

    ``step(step, rnd)`` runs one optimisation step (forward, backward, ``optimizer.step()``)
    and returns its loss parts (at least ``loss``). ``extra`` modules (projection heads, the
    TCSM teacher) are checkpointed with the stage. ``candidates()`` names the models validated
    each epoch; the best one's weights go to ``best.pt``. Without it the stage is not
    validated and ``best.pt`` holds its final weights.
    """

    name: str
    model: SegmentationNet
    optimizer: torch.optim.Optimizer
    step: Callable[[int, StepRandom], dict[str, float]]
    epochs: int
    steps_per_epoch: int
    extra: dict[str, nn.Module] = field(default_factory=dict)
    candidates: Callable[[], list[tuple[str, nn.Module]]] | None = None

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch
