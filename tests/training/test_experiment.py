"""Tests for the experiment runner (training.experiment) and the stages it chains
(stage_pretrain, stage_supervised, stage_tcsm)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from service.core.run_folder import DEFAULT_STAGES, RunFolder
from training.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT
from training.config import StageName, TrainConfig, config_from_dict, save_config
from training.distributed import DistContext, state_digest
from training.experiment import (
    _build_task,
    load_experiment_data,
    main,
    run_experiment,
    seed_everything,
    select_final_stage,
)
from training.export.onnx_export import load_checkpoint
from training.loop import StageResult, step_random
from training.methods.contrastive import DECODER_STAGES, ENCODER_STAGES
from training.nn.networks import build_network
from training.phantom import generate_dataset

ALL_STAGES = ["pretrain_global", "pretrain_local", "supervised", "tcsm"]


@pytest.fixture(scope="module")
def semi_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 48x48x12 phantoms, two of them labeled (one trains, one validates)."""
    root = tmp_path_factory.mktemp("semi_phantoms")
    generate_dataset(
        root,
        studies=4,
        seed=3,
        size=48,
        slices=12,
        labeled_fraction=0.5,
        lesion_free_fraction=0.0,
        progress=False,
    )
    return root


@pytest.fixture
def one_thread() -> Iterator[None]:
    """What ``optim.num_threads: 1`` does inside the runner, for tests that build tasks directly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _raw_config(data: Path, out: Path) -> dict:
    return {
        "output_dir": str(out),
        "seed": 1,
        "stages": ALL_STAGES,
        "data": {"root": str(data), "val_fraction": 0.5},
        "model": {"features": [4, 4, 8, 8, 16, 4], "input_size": [32, 32]},
        "optim": {
            "epochs": 1,
            "steps_per_epoch": 3,
            "batch_size": 4,
            "lr": 0.01,
            "bf16": False,
            "num_threads": 1,
        },
        "pretrain_global": {
            "epochs": 1,
            "steps_per_epoch": 3,
            "batch_size": 6,
            "proj_dim": 16,
            "lr": 0.01,
        },
        "pretrain_local": {
            "epochs": 1,
            "steps_per_epoch": 3,
            "batch_size": 2,
            "proj_channels": 8,
            "lr": 0.01,
        },
        "tcsm": {
            "epochs": 2,
            "steps_per_epoch": 3,
            "batch_size": 2,
            "unlabeled_batch_size": 2,
            "rampup_steps": 2,
            "lr": 0.01,
        },
        "runtime": {"tensorboard": False},
    }


def _config(data: Path, out: Path, **overrides: dict) -> TrainConfig:
    raw = _raw_config(data, out)
    for section, values in overrides.items():
        raw[section] = {**raw[section], **values} if isinstance(values, dict) else values
    return config_from_dict(raw)


def _stage_params(model: torch.nn.Module, stages: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {
        f"{s}.{n}": p.detach().clone()
        for s in stages
        for n, p in getattr(model.unet, s).named_parameters()
    }


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    """The U-Net stages whose weights differ from ``before``."""
    after = _stage_params(model, ALL_PARTS)
    return {k.split(".", 1)[0] for k, v in before.items() if not torch.equal(v, after[k])}


ALL_PARTS = (*ENCODER_STAGES, *DECODER_STAGES, "final_conv")


@pytest.mark.parametrize(
    ("stage", "local_overrides", "trained"),
    [
        ("pretrain_global", {}, set(ENCODER_STAGES)),
        ("pretrain_local", {}, {"upcat_4", "upcat_3", "upcat_2"}),
        ("pretrain_local", {"geometric": True, "decoder_stage": "upcat_1"}, set(DECODER_STAGES)),
        ("supervised", {}, set(ALL_PARTS)),
        ("tcsm", {}, set(ALL_PARTS)),
    ],
)
def test_each_stage_lowers_its_loss_and_trains_only_its_part(
    semi_data: Path,
    tmp_path: Path,
    one_thread: None,
    stage: str,
    local_overrides: dict,
    trained: set[str],
) -> None:
    config = _config(semi_data, tmp_path, pretrain_local=local_overrides)
    seed_everything(config.seed)
    data = load_experiment_data(config)
    model = build_network(config.model)
    task = _build_task(stage, config, model, data, DistContext())
    before = _stage_params(model, ALL_PARTS)
    # The same batch and augmentations every step: the loss must go down.
    losses = [task.step(0, step_random(config.seed, stage, 0, 0))["loss"] for _ in range(8)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert _changed(before, model) == trained


def test_every_registered_stage_builds_a_task_named_after_it(
    semi_data: Path, tmp_path: Path, one_thread: None
) -> None:
    config = _config(semi_data, tmp_path)
    data = load_experiment_data(config)
    for name in StageName:
        task = _build_task(name, config, build_network(config.model), data, DistContext())
        assert task.name == name and task.total_steps > 0
    with pytest.raises(ValueError, match=r"got 'unimach'\. Did you mean 'unimatch'\?"):
        _build_task("unimach", config, build_network(config.model), data, DistContext())


def test_local_stage_refuses_more_regions_than_the_map_holds(
    semi_data: Path, tmp_path: Path
) -> None:
    config = _config(semi_data, tmp_path, pretrain_local={"decoder_stage": "upcat_4"})
    data = load_experiment_data(config)
    with pytest.raises(
        ValueError,
        match=r"'pretrain_local\.num_regions' is 13, but the 4x4 "
        r"'upcat_4' map .* holds only 1 regions",
    ):
        _build_task("pretrain_local", config, build_network(config.model), data, DistContext())


def test_staged_run_chains_stages_and_resumes_exactly(semi_data: Path, tmp_path: Path) -> None:
    whole = run_experiment(_config(semi_data, tmp_path / "whole"), progress=False)
    assert whole.finished and whole.final_checkpoint == tmp_path / "whole" / "final.pt"
    assert [(s.name, s.steps_run) for s in whole.stages] == [
        ("pretrain_global", 3),
        ("pretrain_local", 3),
        ("supervised", 3),
        ("tcsm", 6),
    ]

    split = _config(semi_data, tmp_path / "split")
    first = run_experiment(split, progress=False, max_steps=5)  # stops inside pretrain_local
    assert not first.finished and first.final_checkpoint is None
    assert [(s.name, s.finished, s.global_step) for s in first.stages] == [
        ("pretrain_global", True, 3),
        ("pretrain_local", False, 2),
    ]
    second = run_experiment(split, resume=True, progress=False, max_steps=6)  # into tcsm
    assert [(s.name, s.steps_run) for s in second.stages] == [
        ("pretrain_global", 0),
        ("pretrain_local", 1),
        ("supervised", 3),
        ("tcsm", 2),
    ]
    third = run_experiment(split, resume=True, progress=False)
    assert [s.steps_run for s in third.stages] == [0, 0, 0, 4]
    assert third.finished
    assert state_digest(third.model) == state_digest(whole.model)

    # final.pt is the best-validated stage's best.pt (pre-training stages are not validated).
    assert whole.final_stage == third.final_stage
    assert whole.final_stage in ("supervised", "tcsm")
    chosen = next(s for s in whole.stages if s.name == whole.final_stage)
    assert whole.best_val_voldice == chosen.best_val_voldice
    assert (tmp_path / "whole" / "final.pt").read_bytes() == chosen.best_checkpoint.read_bytes()

    model, config, state = load_checkpoint(third.final_checkpoint)
    reference, _, ref_state = load_checkpoint(whole.final_checkpoint)
    assert config == split
    assert state_digest(model) == state_digest(reference)
    assert state["best_dice"] == ref_state["best_dice"]
    assert set(state["best_dice"]) == {"lung", "ggo", "consolidation"}
    assert state["model_source"] in ("model", "teacher", "student")
    last = torch.load(tmp_path / "split" / "tcsm" / "last.pt", weights_only=False)
    assert set(last["extra"]) == {"teacher"}

    # Chaining: the local stage started from the global stage's weights and kept its encoder.
    enc = [f"unet.{s}." for s in ENCODER_STAGES]
    g = torch.load(tmp_path / "split" / "pretrain_global" / "best.pt", weights_only=False)
    loc = torch.load(tmp_path / "split" / "pretrain_local" / "best.pt", weights_only=False)
    encoder_keys = [k for k in g["model"] if any(k.startswith(p) for p in enc)]
    assert encoder_keys and all(torch.equal(g["model"][k], loc["model"][k]) for k in encoder_keys)
    seed_everything(1)
    initial = build_network(config.model).state_dict()
    assert any(not torch.equal(initial[k], g["model"][k]) for k in encoder_keys)


def test_cli_runs_resumes_and_reports_bad_input(
    semi_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw_config(semi_data, tmp_path / "out")
    path = tmp_path / "exp.yaml"
    save_config(config_from_dict(raw), path)
    assert (
        main(["--config", str(path), "--stages", "supervised", "--max-steps", "2", "--no-progress"])
        == 0
    )
    run = RunFolder(tmp_path / "out")
    last = torch.load(run.last_checkpoint("supervised"), weights_only=False)
    assert (last["global_step"], last["finished"]) == (2, False)
    assert run.can_resume(["supervised"]) and not run.final_checkpoint.exists()
    assert main(["--config", str(path), "--stages", "supervised", "--resume", "--no-progress"]) == 0
    assert run.checkpoint_to_export(["supervised"]) == run.final_checkpoint
    assert yaml.safe_load(run.resolved_config.read_text())["stages"] == ["supervised"]

    assert main(["--config", str(path), "--stages", "supervized"]) == 1
    assert "Did you mean 'supervised'?" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def _stage(name: str, dice: dict[str, float]) -> StageResult:
    return StageResult(name, Path(name), True, 1, 1, 1, 1, 0.0, dice, "model")


def test_final_stage_is_the_best_validated_one_unless_told_otherwise() -> None:
    pre = _stage("pretrain_global", {})
    sup = _stage("supervised", {"ggo": 0.8, "consolidation": 0.4})
    worse = _stage("tcsm", {"ggo": 0.7, "consolidation": 0.4})
    tie = _stage("tcsm", {"ggo": 0.4, "consolidation": 0.8})
    assert select_final_stage([pre, sup, worse], "best_validated") is sup
    assert select_final_stage([pre, sup, tie], "best_validated") is tie  # later stage wins ties
    assert select_final_stage([pre, sup, worse], "last_stage") is worse
    assert select_final_stage([pre], "best_validated") is pre  # nothing validated: the last
    with pytest.raises(ValueError, match="No stage ran"):
        select_final_stage([], "best_validated")


def test_training_writes_the_run_folder_contract_of_the_service() -> None:
    """The TrainingService reads these names from service.core.run_folder, never from training."""
    assert (LAST_CHECKPOINT, BEST_CHECKPOINT) == ("last.pt", "best.pt")
    assert tuple(TrainConfig().stages) == DEFAULT_STAGES
    assert set(DEFAULT_STAGES) <= {stage.value for stage in StageName}
