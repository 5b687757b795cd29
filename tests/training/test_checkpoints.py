"""Tests for training.checkpoints: what last.pt / best.pt hold, restore, older checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from training.checkpoints import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    StageCheckpoints,
    StageProgress,
    read_checkpoint,
)
from training.config import TrainConfig
from training.distributed import DistContext
from training.stages.task import StageTask


def _stage(seed: int, rank: int, directory: Path) -> tuple[StageCheckpoints, StageTask]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    head = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    task = StageTask("demo", model, optimizer, lambda *_: {}, 2, 3, extra={"head": head})  # type: ignore[arg-type]
    checkpoints = StageCheckpoints(task, scheduler, TrainConfig(), directory, DistContext(rank))
    return checkpoints, task


def _train_one_step(task: StageTask, checkpoints: StageCheckpoints) -> None:
    task.optimizer.zero_grad()
    loss = task.model(torch.ones(1, 3)).sum() + task.extra["head"](torch.ones(1, 2)).sum()
    loss.backward()
    task.optimizer.step()
    checkpoints.scheduler.step()


def test_last_holds_what_a_resume_needs_and_best_only_weights(tmp_path: Path) -> None:
    checkpoints, task = _stage(0, 0, tmp_path)
    _train_one_step(task, checkpoints)
    progress = StageProgress(4, 0.5, {"ggo": 0.5}, "model", 0.25, [0.3, 0.2])
    checkpoints.save_last(progress)
    checkpoints.save_best(progress, {"weight": torch.zeros(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST_CHECKPOINT, LAST_CHECKPOINT]

    last = read_checkpoint(DistContext(), tmp_path / LAST_CHECKPOINT)
    assert last is not None
    assert (last["stage"], last["epoch"], last["global_step"]) == ("demo", 0, 4)
    assert (last["total_steps"], last["finished"], last["epoch_losses"]) == (6, False, [0.3, 0.2])
    assert last["config"] == TrainConfig().to_dict()
    assert set(last["extra"]) == {"head"}
    best = torch.load(tmp_path / BEST_CHECKPOINT, weights_only=False)
    assert {"optimizer", "scheduler", "extra", "epoch_losses"}.isdisjoint(best)
    assert best["model_source"] == "model" and list(best["model"]) == ["weight"]

    # A fresh stage restored from last.pt carries on exactly where the first one stopped.
    resumed, resumed_task = _stage(1, 0, tmp_path)
    resumed.restore(last)
    assert StageProgress.from_checkpoint(last, 3) == progress
    _train_one_step(task, checkpoints)
    _train_one_step(resumed_task, resumed)
    for a, b in zip(task.model.parameters(), resumed_task.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(task.extra["head"].weight, resumed_task.extra["head"].weight)
    assert resumed.scheduler.get_last_lr() == checkpoints.scheduler.get_last_lr()


def test_only_rank_zero_writes(tmp_path: Path) -> None:
    checkpoints, _ = _stage(0, 1, tmp_path)
    checkpoints.save_last(StageProgress())
    checkpoints.save_best(StageProgress())
    assert list(tmp_path.iterdir()) == []
    assert read_checkpoint(DistContext(), tmp_path / LAST_CHECKPOINT) is None


def test_progress_of_an_older_checkpoint_without_step_counters() -> None:
    progress = StageProgress.from_checkpoint({"epoch": 1}, steps_per_epoch=3)
    assert progress.step == 6  # the end of epoch index 1
    assert progress.best_score == -math.inf and progress.best_dice == {}
    assert progress.model_source == "" and progress.epoch_losses == []
    assert math.isnan(progress.final_loss)
    with pytest.raises(KeyError):
        StageProgress.from_checkpoint({}, steps_per_epoch=3)
