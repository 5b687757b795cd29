"""Tests for the stage loop (training.loop) driven by the supervised stage: checkpoints, exact
resume, TensorBoard, bf16 autocast, step budgets and per-step randomness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from service.core.run_folder import RunFolder, run_stages
from training.checkpoints import LAST_CHECKPOINT, read_checkpoint
from training.config import TrainConfig, config_from_dict
from training.distributed import DistContext, state_digest
from training.experiment import load_experiment_data, seed_everything, train_supervised
from training.export.onnx_export import load_checkpoint
from training.loop import StepBudget, run_stage, step_random
from training.nn.networks import build_network
from training.phantom import generate_dataset
from training.stages.supervised import build_supervised_task
from training.stages.task import AutocastForward

FEATURES = [4, 4, 8, 8, 16, 4]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_phantoms")
    generate_dataset(root, studies=3, seed=5, size=48, slices=12, progress=False)
    return root


def _config(data: Path, out: Path, **optim: object) -> TrainConfig:
    return config_from_dict(
        {
            "output_dir": str(out),
            "seed": 3,
            "data": {"root": str(data), "val_fraction": 0.4},
            "model": {"features": FEATURES, "input_size": [32, 32]},
            "optim": {
                "epochs": 2,
                "steps_per_epoch": 3,
                "batch_size": 4,
                "lr": 0.01,
                "num_threads": 1,
                **optim,
            },
            "runtime": {"tensorboard": True},
        }
    )


def _initial_digest(config: TrainConfig) -> str:
    seed_everything(config.seed)
    return state_digest(build_network(config.model))


def test_train_supervised_writes_loadable_checkpoints(tiny_data: Path, tmp_path: Path) -> None:
    """In the one run-folder layout: ``<out>/supervised/…`` and ``<out>/final.pt``."""
    config = _config(tiny_data, tmp_path / "run", bf16=True)
    result = train_supervised(config, progress=False)
    folder = RunFolder(tmp_path / "run")

    assert result.epochs_run == 2
    assert math.isfinite(result.final_loss)
    assert set(result.best_val_voldice) == {"lung", "ggo", "consolidation"}
    assert result.best_checkpoint == folder.best_checkpoint("supervised")
    assert result.final_checkpoint == folder.final_checkpoint
    assert folder.final_checkpoint.read_bytes() == result.best_checkpoint.read_bytes()
    assert folder.checkpoint_to_export(run_stages(config.stages)) == folder.final_checkpoint
    lines = folder.metrics_file("supervised").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]["val_voldice"]) == {"lung", "ggo", "consolidation"}

    model, loaded_config, state = load_checkpoint(result.best_checkpoint)
    assert loaded_config == config
    assert state["stage"] == "supervised" and state["epoch"] in (0, 1)
    assert state_digest(model) != _initial_digest(config)
    last = torch.load(folder.last_checkpoint("supervised"), weights_only=False)
    assert (last["global_step"], last["total_steps"], last["finished"]) == (6, 6, True)

    again = train_supervised(config, resume=True, progress=False)  # finished: nothing to do
    assert again.epochs_run == 0
    assert again.best_val_voldice == result.best_val_voldice


def test_tensorboard_gets_loss_lr_and_per_class_voldice(tiny_data: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_supervised(_config(tiny_data, tmp_path / "run", bf16=False), progress=False)
    events = EventAccumulator(str(RunFolder(tmp_path / "run").tensorboard_dir("supervised")))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"supervised/loss", "supervised/lr", "supervised/val_model/ggo"} <= tags
    assert [e.step for e in events.Scalars("supervised/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("supervised/val_model/lung")] == [3, 6]


def _supervised_run(
    config: TrainConfig, directory: Path, budget: int | None, resume: bool = False
) -> tuple[str, object]:
    ctx = DistContext()
    seed_everything(config.seed)
    data = load_experiment_data(config, with_unlabeled=False)
    model = build_network(config.model)
    task = build_supervised_task(config, model, data.train_labeled, ctx)
    state = read_checkpoint(ctx, directory / LAST_CHECKPOINT) if resume else None
    result = run_stage(
        task,
        config=config,
        directory=directory,
        ctx=ctx,
        val_studies=data.val,
        resume_state=state,
        budget=StepBudget(budget),
        progress=False,
    )
    return state_digest(model), result


def test_resume_mid_epoch_repeats_the_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    config = _config(tiny_data, tmp_path, bf16=False)
    full_digest, full = _supervised_run(config, tmp_path / "full", None)

    _, first = _supervised_run(config, tmp_path / "split", 4)  # stops inside epoch 2
    assert (first.finished, first.global_step, first.steps_run) == (False, 4, 4)
    stopped = torch.load(tmp_path / "split" / LAST_CHECKPOINT, weights_only=False)
    assert stopped["global_step"] == 4 and len(stopped["epoch_losses"]) == 1

    resumed_digest, second = _supervised_run(config, tmp_path / "split", None, resume=True)
    assert (second.finished, second.global_step, second.steps_run) == (True, 6, 2)
    assert resumed_digest == full_digest
    assert second.final_loss == pytest.approx(full.final_loss, abs=1e-6)
    assert second.best_val_voldice == full.best_val_voldice


def test_step_randomness_depends_on_step_and_rank_only() -> None:
    a = step_random(0, "tcsm", 0, 5)
    torch.rand(10)  # consuming the global RNG in between changes nothing
    b = step_random(0, "tcsm", 0, 5)
    assert a.numpy.integers(0, 1 << 30) == b.numpy.integers(0, 1 << 30)
    assert torch.equal(torch.rand(3, generator=a.torch), torch.rand(3, generator=b.torch))
    other_rank = step_random(0, "tcsm", 1, 5)
    other_stage = step_random(0, "supervised", 0, 5)
    first = step_random(0, "tcsm", 0, 5).numpy.integers(0, 1 << 30)
    assert other_rank.numpy.integers(0, 1 << 30) != first
    assert other_stage.numpy.integers(0, 1 << 30) != first


def test_bf16_autocast_runs_on_cpu_and_returns_float32() -> None:
    torch.manual_seed(0)
    net = build_network(config_from_dict({"model": {"features": FEATURES}}).model)
    x = torch.full((2, 3, 32, 32), -600.0)
    out = AutocastForward(net, enabled=True, device_type="cpu")(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, net(x), atol=0.1)


def test_step_budget_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match=r"'max_steps' must be >= 0 or None, got -1"):
        StepBudget(-1)
