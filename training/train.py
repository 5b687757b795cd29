"""Supervised training (the walking-skeleton stage) on the shared loop of ``training.loop``.

``train_supervised`` writes ``last.pt``/``best.pt`` straight into ``output_dir``; multi-stage
experiments (``training.stages``) reuse :func:`build_supervised_task` for their supervised
stage. Everything here also runs under torchrun (DDP).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig, save_config
from training.datasets import (
    LoadedStudy,
    SliceBatchSampler,
    load_study,
    read_dataset_manifest,
    split_studies,
)
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


@dataclass
class ExperimentData:
    """Studies split by study: labeled training, all training images, labeled validation."""

    train_labeled: list[LoadedStudy]
    train_unlabeled: list[LoadedStudy]
    val: list[LoadedStudy]

    @property
    def train_all(self) -> list[LoadedStudy]:
        return self.train_labeled + self.train_unlabeled


def load_experiment_data(config: TrainConfig, *, with_unlabeled: bool = True) -> ExperimentData:
    records = read_dataset_manifest(config.data.root)
    train_records, val_records = split_studies(records, config.data.val_fraction, config.seed)
    labeled = [load_study(r) for r in train_records if r.labeled]
    unlabeled = [load_study(r) for r in train_records if not r.labeled] if with_unlabeled else []
    val = [load_study(r) for r in val_records]
    log.info(
        "studies: %d labeled + %d unlabeled for training, %d for validation",
        len(labeled),
        len(unlabeled),
        len(val),
    )
    return ExperimentData(labeled, unlabeled, val)


def build_supervised_task(
    config: TrainConfig, model: SegmentationNet, studies: list[LoadedStudy], ctx: DistContext
) -> StageTask:
    """Supervised stage: the configured loss (``optim.loss``) on labeled 2.5D slice batches."""
    sampler = SliceBatchSampler(
        studies,
        slice_context=config.model.slice_context,
        input_size=config.model.input_size,
        lesion_oversampling=config.data.lesion_oversampling,
        seed=config.seed,
    )
    opt = config.optim
    net = ctx.wrap(AutocastForward(model, opt.bf16, ctx.device.type))
    loss_fn = build_supervised_loss(opt.loss)
    optimizer = torch.optim.AdamW(trainable(model), lr=opt.lr, weight_decay=opt.weight_decay)

    def step(_: int, rnd: StepRandom) -> dict[str, float]:
        sampler.rng = rnd.numpy
        x, y = sampler.sample(opt.batch_size)
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
        seed_everything(config.seed)
        if config.optim.num_threads > 0:
            torch.set_num_threads(config.optim.num_threads)
        out = Path(config.output_dir)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(config, out / "config.yaml")
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
