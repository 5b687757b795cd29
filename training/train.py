"""Supervised training of the 2.5D network (walking-skeleton stage of the method).

Checkpoints (``last.pt``, ``best.pt``) carry the weights, optimiser state, step counters and
the resolved config, so a run resumes exactly and every exported model is traceable.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.config import TrainConfig, save_config
from training.datasets import SliceBatchSampler, load_study, read_dataset_manifest, split_studies
from training.evaluate_torch import validate_studies
from training.losses import build_supervised_loss
from training.networks import build_network

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


def seed_everything(seed: int) -> None:
    """Fix every random source training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    """Train with the configured supervised loss; validate VolDice per class every epoch."""
    start_time = time.perf_counter()
    seed_everything(config.seed)
    if config.optim.num_threads > 0:
        torch.set_num_threads(config.optim.num_threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")

    records = read_dataset_manifest(config.data.root)
    train_records, val_records = split_studies(records, config.data.val_fraction, config.seed)
    train_studies = [load_study(r) for r in train_records if r.labeled]
    val_studies = [load_study(r) for r in val_records]
    log.info("training on %d labeled studies, validating on %d", len(train_studies),
             len(val_studies))
    sampler = SliceBatchSampler(
        train_studies,
        slice_context=config.model.slice_context,
        input_size=config.model.input_size,
        lesion_oversampling=config.data.lesion_oversampling,
        seed=config.seed,
    )
    model = build_network(config.model)
    loss_fn = build_supervised_loss(config.optim.loss)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    total_steps = config.optim.epochs * config.optim.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    )
    first_epoch, best_score, best_dice = 0, -1.0, {}
    if resume and (out / LAST_CHECKPOINT).is_file():
        state = torch.load(out / LAST_CHECKPOINT, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        first_epoch, best_score, best_dice = state["epoch"] + 1, state["best_score"], state["best_dice"]
        log.info("resumed from %s at epoch %d", out / LAST_CHECKPOINT, first_epoch)

    metrics_log = (out / "metrics.jsonl").open("a")
    loss_value = float("nan")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.optim.bf16)
    model.train()
    for epoch in range(first_epoch, config.optim.epochs):
        bar = tqdm(range(config.optim.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.optim.epochs}",
                   disable=not progress, leave=False)
        running = []
        for _ in bar:
            x, y = sampler.sample(config.optim.batch_size)
            with autocast:
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running.append(loss.item())
            bar.set_postfix(loss=f"{running[-1]:.3f}")
        loss_value = float(np.mean(running))
        val = validate_studies(
            model, val_studies, slice_context=config.model.slice_context,
            input_size=config.model.input_size, class_names=config.model.class_names,
        ) if val_studies else {}
        score = float(np.nanmean(list(val.values()))) if val else -loss_value
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_value, "val_voldice": val}
        metrics_log.write(json.dumps(record) + "\n")
        metrics_log.flush()
        summary = " ".join(f"{k}={v:.3f}" for k, v in val.items())
        log.info("epoch %d/%d loss=%.4f val VolDice: %s", epoch + 1, config.optim.epochs,
                 loss_value, summary or "n/a")
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{config.optim.epochs} loss={loss_value:.4f} "
                       f"val VolDice {summary or 'n/a'}")
        if score > best_score:
            best_score, best_dice = score, val
            _save(out / BEST_CHECKPOINT, model, optimizer, scheduler, sampler, epoch, best_score,
                  best_dice, config)
        _save(out / LAST_CHECKPOINT, model, optimizer, scheduler, sampler, epoch, best_score,
              best_dice, config)
    metrics_log.close()
    return TrainResult(
        output_dir=out,
        best_checkpoint=out / BEST_CHECKPOINT,
        best_val_voldice=best_dice,
        final_loss=loss_value,
        epochs_run=config.optim.epochs - first_epoch,
        wall_seconds=time.perf_counter() - start_time,
    )


def _save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: Any, sampler: SliceBatchSampler, epoch: int, best_score: float,
          best_dice: dict[str, float], config: TrainConfig) -> None:
    """Write atomically so an interrupted run never leaves a truncated checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler_rng": sampler.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "best_score": best_score,
            "best_dice": best_dice,
            "config": config.to_dict(),
        },
        tmp,
    )
    tmp.replace(path)
