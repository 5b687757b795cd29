"""Multi-process (DDP, gloo on CPU) training: two ranks must end with identical, trained weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from service.core.loopback import free_port
from training.config import config_from_dict, save_config
from training.distributed import state_digest
from training.experiment import run_experiment, seed_everything
from training.export.onnx_export import load_checkpoint
from training.nn.networks import build_network
from training.phantom import generate_dataset

REPO = Path(__file__).resolve().parents[2]
STAGES = ["pretrain_global", "pretrain_local", "supervised", "tcsm"]


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp_phantoms")
    generate_dataset(
        root,
        studies=3,
        seed=9,
        size=48,
        slices=12,
        labeled_fraction=0.67,
        lesion_free_fraction=0.0,
        progress=False,
    )
    return root


def _raw_config(data: Path, out: Path) -> dict:
    steps = {"epochs": 1, "steps_per_epoch": 2, "lr": 0.01}
    return {
        "output_dir": str(out),
        "seed": 4,
        "stages": STAGES,
        "data": {"root": str(data), "val_fraction": 0.5},
        "model": {"features": [4, 4, 8, 8, 16, 4], "input_size": [32, 32]},
        "optim": {**steps, "batch_size": 2, "bf16": False, "num_threads": 1},
        "pretrain_global": {**steps, "batch_size": 4, "proj_dim": 8},
        "pretrain_local": {**steps, "batch_size": 2, "proj_channels": 8},
        "tcsm": {**steps, "batch_size": 2, "unlabeled_batch_size": 2},
        "runtime": {"tensorboard": False, "backend": "gloo", "device": "cpu"},
    }


def _worker(rank: int, world_size: int, port: int, raw: dict, report_dir: str) -> None:
    """One rank: the environment torchrun would set, then the real runner."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    result = run_experiment(config_from_dict(raw), progress=False)
    report = {
        "rank": result.rank,
        "digest": state_digest(result.model),
        "steps": [s.steps_run for s in result.stages],
    }
    Path(report_dir, f"rank{rank}.json").write_text(json.dumps(report))


def test_two_gloo_ranks_end_with_identical_trained_weights(ddp_data: Path, tmp_path: Path) -> None:
    raw = _raw_config(ddp_data, tmp_path / "out")
    mp.spawn(_worker, args=(2, free_port(), raw, str(tmp_path)), nprocs=2, join=True)

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["steps"] == [2, 2, 2, 2] for r in reports)
    assert reports[0]["digest"] == reports[1]["digest"]

    config = config_from_dict(raw)
    seed_everything(config.seed)
    assert reports[0]["digest"] != state_digest(build_network(config.model))
    # Rank 0 wrote the checkpoints, and they hold the weights both ranks ended with.
    last = torch.load(tmp_path / "out" / "tcsm" / "last.pt", weights_only=False)
    net = build_network(config.model)
    net.load_state_dict(last["model"])
    assert state_digest(net) == reports[0]["digest"]
    for stage in STAGES:  # one writer: one metrics line per epoch, not one per rank
        assert len((tmp_path / "out" / stage / "metrics.jsonl").read_text().splitlines()) == 1


def test_torchrun_cli_trains_with_two_processes(ddp_data: Path, tmp_path: Path) -> None:
    raw = _raw_config(ddp_data, tmp_path / "out")
    path = tmp_path / "exp.yaml"
    save_config(config_from_dict(raw), path)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "training.experiment",
        "--config",
        str(path),
        "--stages",
        "supervised,tcsm",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    model, config, state = load_checkpoint(tmp_path / "out" / "final.pt")
    assert config.stages == ("supervised", "tcsm")
    assert state["stage"] == "tcsm" and state["global_step"] == 2
    assert set(state["best_dice"]) == {"lung", "ggo", "consolidation"}


def test_unimatch_under_two_gloo_ranks_on_volumes(ddp_data: Path, tmp_path: Path) -> None:
    """UniMatch's single forward (labeled, weak, two strong views and the feature-perturbed
    decode) under DDP, on 2.5D HU stacks: the ranks stay identical."""
    raw = _raw_config(ddp_data, tmp_path / "out")
    raw["stages"] = ["supervised", "unimatch"]
    raw["unimatch"] = {
        "epochs": 1,
        "steps_per_epoch": 2,
        "lr": 0.01,
        "batch_size": 2,
        "unlabeled_batch_size": 2,
        "confidence_threshold": 0.5,
        "noise_std_hu": 20.0,
    }
    mp.spawn(_worker, args=(2, free_port(), raw, str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["steps"] == [2, 2] for r in reports)
    assert reports[0]["digest"] == reports[1]["digest"]
    last = torch.load(tmp_path / "out" / "unimatch" / "last.pt", weights_only=False)
    net = build_network(config_from_dict(raw).model)
    net.load_state_dict(last["model"])
    assert state_digest(net) == reports[0]["digest"]
