"""How a stage reports while it trains (rank 0 only): progress bars, one log line and one
``metrics.jsonl`` line per epoch (with the epoch means of the step's loss parts and
diagnostics under ``parts``), TensorBoard scalars (every step's parts, learning rate,
validation), and with ``runtime.log_every_steps`` one log line and one ``steps.jsonl`` line
every that many steps. The file names are the run-folder contract's
(``service.core.run_folder``), which the TrainingService reads for a job's progress.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from service.core.run_folder import METRICS_FILE, STEPS_FILE
from training.config import TrainConfig
from training.distributed import DistContext

log = logging.getLogger(__name__)


def _open_writer(ctx: DistContext, config: TrainConfig, tb_dir: Path) -> Any:
    if not (ctx.is_main and config.runtime.tensorboard):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TensorBoard logging is off: the 'tensorboard' package is not installed.")
        return None
    return SummaryWriter(log_dir=str(tb_dir))


class ProgressReport:
    """Where a stage reports (rank 0 only): TensorBoard scalars, one ``metrics.jsonl`` line per
    epoch, the log, and progress bars when ``progress`` is set."""

    def __init__(
        self,
        stage: str,
        epochs: int,
        steps_per_epoch: int,
        config: TrainConfig,
        directory: Path,
        ctx: DistContext,
        *,
        tb_dir: Path,
        append: bool,
        progress: bool,
    ) -> None:
        self.stage = stage
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.ctx = ctx
        self.progress = progress
        self.writer = _open_writer(ctx, config, tb_dir)
        mode = "a" if append else "w"  # a fresh start replaces old metrics
        self.metrics = (directory / METRICS_FILE).open(mode) if ctx.is_main else None
        self.log_every = config.runtime.log_every_steps
        self.steps = (
            (directory / STEPS_FILE).open(mode) if ctx.is_main and self.log_every > 0 else None
        )
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def bar(self, epoch: int, done: int) -> tqdm:
        """The progress bar of ``epoch``, ``done`` of its steps already run."""
        return tqdm(
            total=self.steps_per_epoch,
            initial=done,
            leave=False,
            desc=f"{self.stage} epoch {epoch + 1}/{self.epochs}",
            disable=not (self.progress and self.ctx.is_main),
        )

    def step(self, parts: dict[str, float], step: int, lr: float | torch.Tensor) -> None:
        for key, value in parts.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1
        if self.writer is not None:
            for key, value in parts.items():
                self.writer.add_scalar(f"{self.stage}/{key}", value, step)
            self.writer.add_scalar(f"{self.stage}/lr", lr, step)
        if self.steps is not None and step % self.log_every == 0:
            line = {"step": step, "lr": float(lr), **{k: float(v) for k, v in parts.items()}}
            self.steps.write(json.dumps(line) + "\n")
            self.steps.flush()
            log.info(
                "%s step %d: %s",
                self.stage,
                step,
                " ".join(f"{k}={float(v):.4g}" for k, v in parts.items()),
            )

    def validation(self, label: str, dice: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for cls, value in dice.items():
                self.writer.add_scalar(f"{self.stage}/val_{label}/{cls}", value, step)
            if dice:
                mean = sum(dice.values()) / len(dice)
                self.writer.add_scalar(f"{self.stage}/val_{label}/mean", mean, step)

    def epoch(self, record: dict[str, Any], message: str) -> None:
        if self._sums:
            record.setdefault(
                "parts", {k: self._sums[k] / self._counts[k] for k in sorted(self._sums)}
            )
            self._sums, self._counts = {}, {}
        if self.metrics is not None:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
        if self.ctx.is_main:
            log.info(message)
            if self.progress:
                tqdm.write(message)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.steps is not None:
            self.steps.close()
        if self.writer is not None:
            self.writer.close()
