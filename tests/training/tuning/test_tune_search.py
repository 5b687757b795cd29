"""`pulmoseg tune` end to end on a tiny phantom: a real Optuna study in a real SQLite file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from training.config import config_from_dict, load_config
from training.phantom import generate_dataset
from training.tuning import SearchRequest, TuneConfig, default_storage_url, run_search
from training.tuning.space import active_knobs, default_params, suggest_params


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 48x48x12 phantoms, two labeled (one trains, one validates)."""
    root = tmp_path_factory.mktemp("tune_phantoms")
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


def _base(data: Path, out: Path) -> dict:
    """supervised + tcsm: 1 + 2 validated epochs of 3 steps; pre-training 2 steps a stage."""
    return {
        "output_dir": str(out / "base"),
        "seed": 1,
        "stages": ["supervised", "tcsm"],
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
        "pretrain_global": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 6, "proj_dim": 16},
        "pretrain_local": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "proj_channels": 8},
        "tcsm": {
            "epochs": 2,
            "steps_per_epoch": 3,
            "batch_size": 2,
            "unlabeled_batch_size": 2,
            "rampup_steps": 2,
            "lr": 0.002,  # inside the default semi_lr range
        },
        "runtime": {"tensorboard": False},
    }


def _request(data: Path, out: Path, trials: int, **tune: object) -> SearchRequest:
    config = config_from_dict(_base(data, out))
    return SearchRequest(
        config=config,
        tune=TuneConfig(**tune),
        trials=trials,
        storage=default_storage_url(out),
        study_name="tiny",
        out=out,
    )


def test_search_keeps_default_first_prunes_resumes_and_writes_best_yaml(
    phantoms: Path, tmp_path: Path
) -> None:
    # No lesion VolDice reaches 1.01: every trial but the (never pruned) default is pruned at
    # its first validated epoch, deterministically.
    tune = {"pruner": "threshold", "prune_below": 1.01, "warmup_epochs": 0, "random_trials": 1}
    request = _request(phantoms, tmp_path, 3, **tune)
    result = run_search(request)

    study = optuna.load_study(study_name="tiny", storage=default_storage_url(tmp_path))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    knobs = active_knobs(request.config, request.tune)
    assert {str(k) for k in knobs} == {
        "lr",
        "semi_lr",
        "consistency_weight",
        "rampup_steps",
        "pretrain",
    }
    assert trials[0].user_attrs["default"] is True
    assert trials[0].params == default_params(request.config, knobs)
    assert len(trials[0].intermediate_values) == 3  # supervised 1 + tcsm 2 validated epochs
    assert all(len(t.intermediate_values) == 1 for t in trials[1:])
    assert 0.0 <= trials[0].value <= 1.0
    assert result.default is not None and result.default["number"] == 0
    assert result.best is not None and result.best["number"] == 0

    best = load_config(tmp_path / "best.yaml")
    assert best.optim.lr == trials[0].params["lr"] and best.tcsm.lr == trials[0].params["semi_lr"]
    assert best.stages == ("supervised", "tcsm")
    assert not list((tmp_path / "trials").glob("*/*/*.pt"))  # stage checkpoints dropped

    # An interrupted command leaves a RUNNING trial behind: the next run marks it failed,
    # runs its parameters again and continues to the requested total.
    lost_params = {
        "lr": 0.005,
        "semi_lr": 0.002,
        "consistency_weight": 2.0,
        "rampup_steps": 10,
        "pretrain": False,
    }
    study.enqueue_trial(lost_params)
    interrupted = study.ask()
    assert suggest_params(interrupted, knobs, request.tune.ranges) == lost_params
    run_search(_request(phantoms, tmp_path, 4, **tune))

    trials = study.get_trials()
    assert trials[3].state is TrialState.FAIL
    retry = trials[4]
    assert retry.user_attrs["retry_of"] == 3 and retry.params == lost_params
    assert retry.state is TrialState.PRUNED
    assert len(trials) == 5 and sum(t.user_attrs.get("default", False) for t in trials) == 1


def test_parallel_worker_processes_share_the_study_and_stop_at_the_total(
    phantoms: Path, tmp_path: Path
) -> None:
    tune = {"pruner": "threshold", "prune_below": 1.01, "warmup_epochs": 0, "knobs": ["lr"]}
    request = replace(_request(phantoms, tmp_path, 3, **tune), jobs=2)
    result = run_search(request)
    assert [t["state"] for t in result.trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert result.trials[0]["default"] and result.counts["PRUNED"] == 2
    assert len({t["params"]["lr"] for t in result.trials}) == 3  # workers sample differently


def test_same_study_with_another_space_is_refused(phantoms: Path, tmp_path: Path) -> None:
    request = _request(phantoms, tmp_path, 1, knobs=["lr"], pruner="none")
    run_search(request)
    with pytest.raises(ValueError, match="Study 'tiny' .* another config or search space"):
        run_search(_request(phantoms, tmp_path, 2, knobs=["semi_lr"], pruner="none"))


def test_request_checks_trials_jobs_and_timeout(tmp_path: Path) -> None:
    config = config_from_dict({"output_dir": str(tmp_path)})
    common = {"config": config, "tune": TuneConfig(), "storage": "sqlite://", "out": tmp_path}
    with pytest.raises(ValueError, match=r"Argument '--trials' must be an integer >= 1, got 0"):
        SearchRequest(trials=0, study_name="s", **common)
    with pytest.raises(ValueError, match=r"Argument '--jobs' must be an integer >= 1, got -2"):
        SearchRequest(trials=1, jobs=-2, study_name="s", **common)
    with pytest.raises(ValueError, match=r"Argument '--timeout-min' must be > 0, got 0"):
        SearchRequest(trials=1, timeout_min=0, study_name="s", **common)
