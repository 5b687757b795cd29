"""The training loop every stage shares: steps, epochs, validation and the choice of the best.

A stage contributes a :class:`~training.stages.task.StageTask` (its optimiser and what one step
does); the loop owns epochs, cosine learning-rate decay, validation and the best-candidate
choice (or, with ``runtime.checkpoint_selection: last_epoch``, a fixed schedule that validates
and logs but always keeps the last epoch's first candidate), and hands checkpoints to
``training.checkpoints`` and reporting (progress bars, ``metrics.jsonl``, TensorBoard) to
``training.progress_report``. Every step draws its randomness from
``(seed, stage, rank, step)`` alone, so a resumed run repeats an uninterrupted one exactly and
each DDP rank samples different batches.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.checkpoints import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    StageCheckpoints,
    StageProgress,
)
from training.config import TrainConfig
from training.data.sources import Item, data_source
from training.distributed import DistContext
from training.progress_report import ProgressReport
from training.stages.task import StageTask, StepRandom

log = logging.getLogger(__name__)


def step_random(seed: int, stage: str, rank: int, step: int) -> StepRandom:
    """Randomness of step ``step`` of ``stage`` on ``rank``; also reseeds torch's global RNG
    (dropout), so nothing depends on how many steps ran before in this process."""
    seq = np.random.SeedSequence([seed, zlib.crc32(stage.encode()), rank, step])
    torch_seed, global_seed = (int(v) for v in seq.generate_state(2, dtype=np.uint32))
    torch.manual_seed(global_seed)
    return StepRandom(np.random.default_rng(seq), torch.Generator().manual_seed(torch_seed))


class _OnDevice(nn.Module):
    """Lets the CPU-side validation helpers drive a model that lives on a GPU."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.module = module
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.device)).float().cpu()


class StepBudget:
    """At most ``max_steps`` optimisation steps in this call (None: no limit), across stages."""

    def __init__(self, max_steps: int | None = None) -> None:
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"Argument 'max_steps' must be >= 0 or None, got {max_steps}.")
        self.left = max_steps

    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0

    def spend(self) -> None:
        if self.left is not None:
            self.left -= 1


@dataclass
class StageResult:
    """How a stage ended; ``finished`` is False when the step budget ran out first."""

    name: str
    directory: Path
    finished: bool
    global_step: int
    total_steps: int
    steps_run: int
    epochs_run: int
    final_loss: float
    best_val_voldice: dict[str, float]
    model_source: str

    @property
    def best_checkpoint(self) -> Path:
        return self.directory / BEST_CHECKPOINT

    @property
    def last_checkpoint(self) -> Path:
        return self.directory / LAST_CHECKPOINT


@dataclass(frozen=True)
class EpochValidation:
    """One validated epoch as :func:`run_stage` hands it to its ``on_validation`` callback
    (rank 0 only): per-class scores of the epoch's best candidate (the first one under
    ``checkpoint_selection: last_epoch``). Hyper-parameter search prunes on these."""

    stage: str
    epoch: int
    step: int
    dice: dict[str, float]


#: Called after each validated epoch (``last.pt`` written); may raise to stop the run.
ValidationCallback = Callable[[EpochValidation], None]


def validation_score(dice: dict[str, float]) -> float:
    """One number per validation: the mean of the finite per-class scores (-inf if none)."""
    values = [v for v in dice.values() if math.isfinite(v)]
    return float(np.mean(values)) if values else -math.inf


class _StageRun:
    """One call of :func:`run_stage`: the schedule, the progress and the epochs of a stage."""

    def __init__(
        self, task: StageTask, config: TrainConfig, directory: Path, ctx: DistContext
    ) -> None:
        self.data = data_source(config)
        self.task = task
        self.config = config
        self.directory = directory
        self.ctx = ctx
        total = task.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            task.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        self.checkpoints = StageCheckpoints(task, self.scheduler, config, directory, ctx)
        self.progress = StageProgress()
        self.steps_run = 0
        self.epochs_run = 0
        #: Scores of the latest epoch's chosen candidate ({} when not validated).
        self.epoch_dice: dict[str, float] = {}

    def resume(self, state: dict[str, Any]) -> bool:
        """Continue from ``state`` (a ``last.pt``); True if the stage had already finished."""
        task = self.task
        self.progress = StageProgress.from_checkpoint(state, task.steps_per_epoch)
        step = self.progress.step
        if state.get("finished", step >= task.total_steps):
            log.info("stage %s already finished (step %d); skipping it", task.name, step)
            return True
        self.checkpoints.restore(state)
        log.info("stage %s resumed at step %d/%d", task.name, step, task.total_steps)
        return False

    def result(self, finished: bool) -> StageResult:
        p = self.progress
        return StageResult(
            self.task.name,
            self.directory,
            finished,
            p.step,
            self.task.total_steps,
            self.steps_run,
            self.epochs_run,
            p.final_loss,
            p.best_dice,
            p.model_source,
        )

    def train_epoch(self, report: ProgressReport, budget: StepBudget) -> int | None:
        """Run the current epoch's remaining steps; its index, or None if ``budget`` ran out
        first (after saving ``last.pt``, so the run can resume from there)."""
        p, task = self.progress, self.task
        epoch = p.step // task.steps_per_epoch
        bar = report.bar(epoch, p.step - epoch * task.steps_per_epoch)
        while p.step < (epoch + 1) * task.steps_per_epoch:
            if budget.exhausted():
                bar.close()
                if self.steps_run:
                    self.checkpoints.save_last(p)
                log.info(
                    "stage %s stopped at step %d/%d (step budget spent)",
                    task.name,
                    p.step,
                    task.total_steps,
                )
                return None
            self._train_step(report, bar)
            budget.spend()
        bar.close()
        return epoch

    def _train_step(self, report: ProgressReport, bar: tqdm) -> None:
        p = self.progress
        parts = self.task.step(
            p.step, step_random(self.config.seed, self.task.name, self.ctx.rank, p.step)
        )
        self.scheduler.step()
        p.step += 1
        self.steps_run += 1
        p.epoch_losses.append(parts["loss"])
        bar.update(1)
        bar.set_postfix(loss=f"{parts['loss']:.3f}")
        report.step(parts, p.step, self.scheduler.get_last_lr()[0])
        every = self.config.runtime.checkpoint_every
        if every and p.step % every == 0 and p.step % self.task.steps_per_epoch:
            self.checkpoints.save_last(p)

    def end_epoch(self, epoch: int, val_studies: Sequence[Item], report: ProgressReport) -> None:
        """Epoch loss, validation and best-candidate choice, checkpoints and the epoch report."""
        p = self.progress
        p.final_loss, p.epoch_losses = float(np.mean(p.epoch_losses)), []
        self.epochs_run += 1
        record: dict[str, Any] = {"epoch": epoch + 1, "step": p.step, "loss": p.final_loss}
        summary = self._validate(val_studies, record, report)
        self.checkpoints.save_last(p)
        report.epoch(
            record,
            f"{self.task.name} epoch {epoch + 1}/{self.task.epochs} loss={p.final_loss:.4f} "
            f"val {self.data.metric} {summary}",
        )

    def _validate(
        self, val_studies: Sequence[Item], record: dict[str, Any], report: ProgressReport
    ) -> str:
        """Score every candidate (rank 0), keep the best one in ``best.pt`` if it beats the best
        so far (the first candidate wins ties), and return the epoch's score summary."""
        p, task = self.progress, self.task
        self.epoch_dice = {}
        if not (self.ctx.is_main and task.candidates is not None):
            if task.candidates is None:  # never validated: best.pt holds the latest weights
                p.model_source = "final"
                self.checkpoints.save_best(p)
            return "n/a"
        scored = []
        for label, module in task.candidates():
            dice = (
                self.data.validate(_OnDevice(module, self.ctx.device), val_studies)
                if val_studies
                else {}
            )
            score = validation_score(dice) if dice else -p.final_loss
            scored.append((score, label, dice, module))
            record[f"val_voldice_{label}" if label != "model" else "val_voldice"] = dice
            report.validation(label, dice, p.step)
        if self.config.runtime.checkpoint_selection == "last_epoch":
            # Fixed schedule: the first candidate of the latest epoch, whatever it scored (the
            # validation side may be a test set that must not choose anything).
            score, label, dice, module = scored[0]
            self.epoch_dice = dice
            p.best_score, p.model_source, p.best_dice = score, label, dice
            self.checkpoints.save_best(p, module.state_dict())
            return " ".join(f"{k}={v:.3f}" for k, v in dice.items()) or "n/a"
        score, label, dice, module = max(scored, key=lambda s: s[0])  # first wins ties
        self.epoch_dice = dice
        if score > p.best_score:
            p.best_score, p.model_source, p.best_dice = score, label, dice
            self.checkpoints.save_best(p, module.state_dict())
        return " ".join(f"{k}={v:.3f}" for k, v in dice.items()) or "n/a"


def run_stage(
    task: StageTask,
    *,
    config: TrainConfig,
    directory: Path,
    ctx: DistContext,
    val_studies: Sequence[Item],
    resume_state: dict[str, Any] | None = None,
    budget: StepBudget | None = None,
    progress: bool = True,
    tb_dir: Path | None = None,
    on_validation: ValidationCallback | None = None,
) -> StageResult:
    """Train ``task`` to its last step (or until ``budget`` runs out), resuming if asked.

    ``val_studies`` are the validation items of ``config.data.kind`` (studies or slices);
    their score (VolDice or slice Dice per class) picks ``best.pt``. ``on_validation`` sees
    every validated epoch on rank 0 (e.g. a tuning trial reporting to its pruner).
    """
    budget = budget or StepBudget()
    run = _StageRun(task, config, directory, ctx)
    if resume_state is not None and run.resume(resume_state):
        return run.result(finished=True)
    if ctx.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    report = ProgressReport(
        task.name,
        task.epochs,
        task.steps_per_epoch,
        config,
        directory,
        ctx,
        tb_dir=tb_dir or directory / "tensorboard",
        append=resume_state is not None,
        progress=progress,
    )
    try:
        while run.progress.step < task.total_steps:
            epoch = run.train_epoch(report, budget)
            if epoch is None:
                return run.result(finished=False)
            run.end_epoch(epoch, val_studies, report)
            if on_validation is not None and run.epoch_dice:
                on_validation(
                    EpochValidation(task.name, epoch + 1, run.progress.step, run.epoch_dice)
                )
    finally:
        report.close()
    return run.result(finished=True)
