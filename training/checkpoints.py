"""Stage checkpoints: what ``last.pt`` and ``best.pt`` hold, and how they are written and read.

``last.pt`` holds everything a resume needs (weights, optimiser, learning-rate schedule, extra
modules such as heads or the TCSM teacher, the step counter and the losses of the unfinished
epoch), so a resumed run repeats an uninterrupted one exactly. ``best.pt`` holds only the
weights that validated best and their scores. Both carry the resolved config and are written
atomically by rank 0 (an interrupted run never leaves a truncated file). Their names are the
run-folder contract's (``service.core.run_folder``), which the TrainingService reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from service.core.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT
from training.config import TrainConfig
from training.distributed import DistContext
from training.stages.task import StageTask


def read_checkpoint(ctx: DistContext, path: Path) -> dict[str, Any] | None:
    """Rank 0 reads ``path`` (None when absent) and every rank gets the same dict."""
    state = None
    if ctx.is_main and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
    return ctx.broadcast_object(state)


@dataclass
class StageProgress:
    """Where a stage stands. All of it goes into ``last.pt``, so a resume continues exactly."""

    step: int = 0
    best_score: float = -math.inf
    best_dice: dict[str, float] = field(default_factory=dict)
    model_source: str = ""
    final_loss: float = math.nan
    #: Losses of the steps of the current epoch (the epoch loss is their mean).
    epoch_losses: list[float] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], steps_per_epoch: int) -> StageProgress:
        """The progress saved in ``state`` (older checkpoints lack some keys)."""
        return cls(
            step=int(state.get("global_step", (state["epoch"] + 1) * steps_per_epoch)),
            best_score=float(state.get("best_score", -math.inf)),
            best_dice=state.get("best_dice", {}),
            model_source=state.get("model_source", ""),
            final_loss=float(state.get("final_loss", math.nan)),
            epoch_losses=list(state.get("epoch_losses", [])),
        )


class StageCheckpoints:
    """Writes a stage's ``last.pt`` (everything a resume needs) and ``best.pt`` (weights and
    scores only), and restores the training state from a ``last.pt``."""

    def __init__(
        self,
        task: StageTask,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        config: TrainConfig,
        directory: Path,
        ctx: DistContext,
    ) -> None:
        self.task = task
        self.scheduler = scheduler
        self.config = config
        self.directory = directory
        self.ctx = ctx

    def save_last(self, progress: StageProgress) -> None:
        self._save(self.directory / LAST_CHECKPOINT, progress)

    def save_best(self, progress: StageProgress, model_state: dict[str, Any] | None = None) -> None:
        """``model_state`` defaults to the stage's model (a stage validated by no candidate)."""
        self._save(self.directory / BEST_CHECKPOINT, progress, model_state, full=False)

    def _save(
        self,
        path: Path,
        progress: StageProgress,
        model_state: dict[str, Any] | None = None,
        full: bool = True,
    ) -> None:
        if not self.ctx.is_main:
            return
        task, step = self.task, progress.step
        state: dict[str, Any] = {
            "model": model_state if model_state is not None else task.model.state_dict(),
            "config": self.config.to_dict(),
            "stage": task.name,
            "epoch": step // task.steps_per_epoch - 1,
            "global_step": step,
            "total_steps": task.total_steps,
            "finished": step >= task.total_steps,
            "best_score": progress.best_score,
            "best_dice": progress.best_dice,
            "model_source": progress.model_source,
            "final_loss": progress.final_loss,
        }
        if full:
            state.update(
                optimizer=task.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                extra={k: m.state_dict() for k, m in task.extra.items()},
                epoch_losses=list(progress.epoch_losses),
            )
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # atomic: an interrupted run never leaves a truncated checkpoint

    def restore(self, state: dict[str, Any]) -> None:
        """Weights, optimiser, schedule and extra modules as ``state`` saved them."""
        self.task.model.load_state_dict(state["model"])
        self.task.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key, module in self.task.extra.items():
            module.load_state_dict(state["extra"][key])
