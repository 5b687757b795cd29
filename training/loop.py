"""The training loop every stage shares: steps, epochs, validation, logging, checkpoints.

A stage contributes a :class:`StageTask` (its optimiser and what one step does); the loop owns
epochs, cosine learning-rate decay, validation, TensorBoard, progress bars and checkpoints.
Checkpoints (``last.pt``, ``best.pt``) carry the weights, optimiser and scheduler state, the
step counter and the resolved config. Every step draws its randomness from
``(seed, stage, rank, step)`` alone, so a resumed run repeats an uninterrupted one exactly and
each DDP rank samples different batches.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.config import TrainConfig
from training.data_sources import Item, data_source
from training.distributed import DistContext
from training.networks import SegmentationNet

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass
class StepRandom:
    """The random sources of one optimisation step (numpy for sampling, torch for augmenting)."""

    numpy: np.random.Generator
    torch: torch.Generator


def step_random(seed: int, stage: str, rank: int, step: int) -> StepRandom:
    """Randomness of step ``step`` of ``stage`` on ``rank``; also reseeds torch's global RNG
    (dropout), so nothing depends on how many steps ran before in this process."""
    seq = np.random.SeedSequence([seed, zlib.crc32(stage.encode()), rank, step])
    torch_seed, global_seed = (int(v) for v in seq.generate_state(2, dtype=np.uint32))
    torch.manual_seed(global_seed)
    return StepRandom(np.random.default_rng(seq), torch.Generator().manual_seed(torch_seed))


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


class _OnDevice(nn.Module):
    """Lets the CPU-side validation helpers drive a model that lives on a GPU."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.module = module
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.device)).float().cpu()


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """Parameters that take gradients (frozen ones stay out of the optimiser and weight decay)."""
    return [p for p in module.parameters() if p.requires_grad]


@dataclass
class StageTask:
    """What one stage contributes to :func:`run_stage`.

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


def read_checkpoint(ctx: DistContext, path: Path) -> dict[str, Any] | None:
    """Rank 0 reads ``path`` (None when absent) and every rank gets the same dict."""
    state = None
    if ctx.is_main and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
    return ctx.broadcast_object(state)


def _open_writer(ctx: DistContext, config: TrainConfig, tb_dir: Path) -> Any:
    if not (ctx.is_main and config.runtime.tensorboard):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TensorBoard logging is off: the 'tensorboard' package is not installed.")
        return None
    return SummaryWriter(log_dir=str(tb_dir))


def validation_score(dice: dict[str, float]) -> float:
    """One number per validation: the mean of the finite per-class scores (-inf if none)."""
    values = [v for v in dice.values() if math.isfinite(v)]
    return float(np.mean(values)) if values else -math.inf


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
) -> StageResult:
    """Train ``task`` to its last step (or until ``budget`` runs out), resuming if asked.

    ``val_studies`` are the validation items of ``config.data.kind`` (studies or slices);
    their score (VolDice or slice Dice per class) picks ``best.pt``.
    """
    budget = budget or StepBudget()
    data = data_source(config)
    spe, total, name = task.steps_per_epoch, task.total_steps, task.name
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        task.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    step, best_score, best_dice, source, losses = 0, -math.inf, {}, "", []
    final_loss = math.nan
    if resume_state is not None:
        final_loss = float(resume_state.get("final_loss", math.nan))
        step = int(resume_state.get("global_step", (resume_state["epoch"] + 1) * spe))
        best_score = float(resume_state.get("best_score", -math.inf))
        best_dice, source = resume_state.get("best_dice", {}), resume_state.get("model_source", "")
        if resume_state.get("finished", step >= total):
            log.info("stage %s already finished (step %d); skipping it", name, step)
            return StageResult(
                name, directory, True, step, total, 0, 0, final_loss, best_dice, source
            )
        task.model.load_state_dict(resume_state["model"])
        task.optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        for key, module in task.extra.items():
            module.load_state_dict(resume_state["extra"][key])
        losses = list(resume_state.get("epoch_losses", []))
        log.info("stage %s resumed at step %d/%d", name, step, total)

    def save(path: Path, model_state: dict[str, Any] | None = None, full: bool = True) -> None:
        if not ctx.is_main:
            return
        state: dict[str, Any] = {
            "model": model_state if model_state is not None else task.model.state_dict(),
            "config": config.to_dict(),
            "stage": name,
            "epoch": step // spe - 1,
            "global_step": step,
            "total_steps": total,
            "finished": step >= total,
            "best_score": best_score,
            "best_dice": best_dice,
            "model_source": source,
            "final_loss": final_loss,
        }
        if full:
            state.update(
                optimizer=task.optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                extra={k: m.state_dict() for k, m in task.extra.items()},
                epoch_losses=list(losses),
            )
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # atomic: an interrupted run never leaves a truncated checkpoint

    if ctx.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    writer = _open_writer(ctx, config, tb_dir or directory / "tensorboard")
    mode = "a" if resume_state is not None else "w"  # a fresh start replaces old metrics
    metrics = (directory / "metrics.jsonl").open(mode) if ctx.is_main else None
    steps_run, epochs_run = 0, 0
    every = config.runtime.checkpoint_every
    try:
        while step < total:
            epoch = step // spe
            bar = tqdm(
                total=spe,
                initial=step - epoch * spe,
                leave=False,
                desc=f"{name} epoch {epoch + 1}/{task.epochs}",
                disable=not (progress and ctx.is_main),
            )
            while step < (epoch + 1) * spe:
                if budget.exhausted():
                    bar.close()
                    if steps_run:
                        save(directory / LAST_CHECKPOINT)
                    log.info(
                        "stage %s stopped at step %d/%d (step budget spent)", name, step, total
                    )
                    return StageResult(
                        name,
                        directory,
                        False,
                        step,
                        total,
                        steps_run,
                        epochs_run,
                        final_loss,
                        best_dice,
                        source,
                    )
                parts = task.step(step, step_random(config.seed, name, ctx.rank, step))
                scheduler.step()
                step, steps_run = step + 1, steps_run + 1
                budget.spend()
                losses.append(parts["loss"])
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.3f}")
                if writer is not None:
                    for key, value in parts.items():
                        writer.add_scalar(f"{name}/{key}", value, step)
                    writer.add_scalar(f"{name}/lr", scheduler.get_last_lr()[0], step)
                if every and step % every == 0 and step % spe:
                    save(directory / LAST_CHECKPOINT)
            bar.close()
            final_loss, losses = float(np.mean(losses)), []
            epochs_run += 1
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "loss": final_loss}
            if ctx.is_main and task.candidates is not None:
                scored = []
                for label, module in task.candidates():
                    dice = (
                        data.validate(_OnDevice(module, ctx.device), val_studies)
                        if val_studies
                        else {}
                    )
                    score = validation_score(dice) if dice else -final_loss
                    scored.append((score, label, dice, module))
                    record[f"val_voldice_{label}" if label != "model" else "val_voldice"] = dice
                    if writer is not None:
                        for cls, value in dice.items():
                            writer.add_scalar(f"{name}/val_{label}/{cls}", value, step)
                top = max(scored, key=lambda s: s[0])  # first wins ties
                if top[0] > best_score:
                    best_score, _, best_dice, best_module = top
                    source = top[1]
                    save(directory / BEST_CHECKPOINT, best_module.state_dict(), full=False)
                summary = " ".join(f"{k}={v:.3f}" for k, v in top[2].items()) or "n/a"
            else:
                summary = "n/a"
                if task.candidates is None:
                    source = "final"
                    save(directory / BEST_CHECKPOINT, full=False)
            save(directory / LAST_CHECKPOINT)
            if metrics is not None:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if ctx.is_main:
                message = (
                    f"{name} epoch {epoch + 1}/{task.epochs} loss={final_loss:.4f} "
                    f"val {data.metric} {summary}"
                )
                log.info(message)
                if progress:
                    tqdm.write(message)
    finally:
        if metrics is not None:
            metrics.close()
        if writer is not None:
            writer.close()
    return StageResult(
        name, directory, True, step, total, steps_run, epochs_run, final_loss, best_dice, source
    )
