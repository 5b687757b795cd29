"""Supervised training (the walking-skeleton stage) on the shared loop of ``training.loop``.

``train_supervised`` writes ``last.pt``/``best.pt`` straight into ``output_dir``; multi-stage
experiments (``training.stages``) reuse :func:`build_supervised_task` for their supervised
stage. Everything here also runs under torchrun (DDP).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig, save_config
from training.data_sources import ExperimentData, Item, data_source
from training.distributed import DistContext, init_distributed, shutdown_distributed
from training.loop import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    AutocastForward,
    StageTask,
    StepRandom,
    read_checkpoint,
    run_stage,
    trainable,
)
from training.losses import build_supervised_loss
from training.networks import SegmentationNet, build_network

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "ExperimentData",
    "TrainResult",
    "build_supervised_task",
    "load_experiment_data",
    "seed_everything",
    "train_supervised",
]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Fix every random source training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_experiment_data(config: TrainConfig, *, with_unlabeled: bool = True) -> ExperimentData:
    """Read and split the run's data for ``config.data.kind`` (see ``training.data_sources``)."""
    return data_source(config).load(with_unlabeled=with_unlabeled)


def build_supervised_task(
    config: TrainConfig, model: SegmentationNet, studies: Sequence[Item], ctx: DistContext
) -> StageTask:
    """Supervised stage: the configured loss (``optim.loss``) on labeled batches (2.5D stacks
    of studies or 2D slices, per ``data.kind``)."""
    sampler = data_source(config).labeled_batches(studies)
    opt = config.optim
    net = ctx.wrap(AutocastForward(model, opt.bf16, ctx.device.type))
    loss_fn = build_supervised_loss(opt.loss)
    optimizer = torch.optim.AdamW(trainable(model), lr=opt.lr, weight_decay=opt.weight_decay)

    def step(_: int, rnd: StepRandom) -> dict[str, float]:
        x, y = sampler.sample(opt.batch_size, rnd.numpy, rnd.torch)
        net.train()
        loss = loss_fn(net(x.to(ctx.device)), y.to(ctx.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    return StageTask(
        "supervised",
        model,
        optimizer,
        step,
        opt.epochs,
        opt.steps_per_epoch,
        candidates=lambda: [("model", model)],
    )


@dataclass
class TrainResult:
    """Where the run left its outputs and how good the best epoch was."""

    output_dir: Path
    best_checkpoint: Path
    best_val_voldice: dict[str, float]
    final_loss: float
    epochs_run: int
    wall_seconds: float


def prepare_run(config: TrainConfig, ctx: DistContext) -> Path:
    """Seeds, thread count and the output folder (holding the resolved config) of a run."""
    seed_everything(config.seed)
    if config.optim.num_threads > 0:
        torch.set_num_threads(config.optim.num_threads)
    out = Path(config.output_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    return out


def train_supervised(
    config: TrainConfig, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train with the configured supervised loss; validate VolDice per class every epoch.

    Checkpoints go straight into ``output_dir`` (``stages`` is ignored; see
    ``training.stages.run_experiment`` for multi-stage runs).
    """
    start_time = time.perf_counter()
    ctx = init_distributed(config.runtime.backend, config.runtime.device)
    try:
        out = prepare_run(config, ctx)
        data = load_experiment_data(config, with_unlabeled=False)
        model = build_network(config.model).to(ctx.device)
        task = build_supervised_task(config, model, data.train_labeled, ctx)
        state = read_checkpoint(ctx, out / LAST_CHECKPOINT) if resume else None
        result = run_stage(
            task,
            config=config,
            directory=out,
            ctx=ctx,
            val_studies=data.val,
            resume_state=state,
            progress=progress,
            tb_dir=out / "tensorboard",
        )
    finally:
        shutdown_distributed(ctx)
    return TrainResult(
        output_dir=out,
        best_checkpoint=out / BEST_CHECKPOINT,
        best_val_voldice=result.best_val_voldice,
        final_loss=result.final_loss,
        epochs_run=result.epochs_run,
        wall_seconds=time.perf_counter() - start_time,
    )
