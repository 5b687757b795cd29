"""The search space: knobs per stage, ranges, applying values, and the errors users see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from training.config import config_from_dict
from training.tuning import TuneConfig, load_tune_file
from training.tuning.space import Knob, active_knobs, apply_params, default_params, suggest_params


def _write(tmp_path: Path, tune: dict, stages: list[str] | None = None) -> Path:
    path = tmp_path / "my.yaml"
    raw = {"stages": stages or ["supervised", "tcsm"], "tune": tune}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("tune", "stages", "error", "message"),
    [
        (
            {"knobs": ["consistency_weigth"]},
            None,
            ValueError,
            r"Config key 'tune.knobs' .*unknown knob 'consistency_weigth'.*"
            r"Did you mean 'consistency_weight'",
        ),
        (
            {"ranges": {"learning_rate": {"low": 0.1, "high": 1}}},
            None,
            ValueError,
            r"Unknown config key 'tune.ranges.learning_rate'",
        ),
        (
            {"ranges": {"lr": {"low": 0.1, "high": 0.01}}},
            None,
            ValueError,
            r"Config key 'tune.ranges.lr' must have low <= high, got low=0.1, high=0.01",
        ),
        (
            {"knobs": ["confidence_threshold"]},
            None,
            ValueError,
            r"'confidence_threshold', which needs the 'unimatch' stage; the config's stages "
            r"are \['supervised', 'tcsm'\]",
        ),
        ({"pruner": "medain"}, None, ValueError, r"'tune.pruner'.*medain.*median"),
        ({"seed": "x"}, None, TypeError, r"Config key 'tune.seed' must be an integer"),
    ],
)
def test_bad_search_space_fails_with_a_clear_message(
    tmp_path: Path, tune: dict, stages: list[str] | None, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        load_tune_file(_write(tmp_path, tune, stages))


def test_default_knobs_follow_the_stages(tmp_path: Path) -> None:
    base, tune = load_tune_file(_write(tmp_path, {}, ["supervised", "unimatch"]))
    assert active_knobs(base, tune) == (
        Knob.LR,
        Knob.SEMI_LR,
        Knob.CONFIDENCE_THRESHOLD,
        Knob.PRETRAIN,
    )
    base, tune = load_tune_file(_write(tmp_path, {}, ["pretrain_global", "supervised"]))
    assert active_knobs(base, tune) == (Knob.LR, Knob.PRETRAIN)
    assert default_params(base, active_knobs(base, tune)) == {"lr": 3e-3, "pretrain": True}


def test_params_land_in_the_config_and_pretrain_switches_stages() -> None:
    base = config_from_dict({"stages": ["pretrain_local", "supervised", "tcsm"]})
    on = apply_params(
        base,
        {
            "lr": 0.01,
            "semi_lr": 0.002,
            "consistency_weight": 3.0,
            "rampup_steps": 7,
            "pretrain": True,
        },
        "runs/x",
    )
    assert on.stages == ("pretrain_global", "pretrain_local", "supervised", "tcsm")
    assert (on.optim.lr, on.tcsm.lr, on.tcsm.consistency_weight, on.tcsm.rampup_steps) == (
        0.01,
        0.002,
        3.0,
        7,
    )
    assert on.output_dir == "runs/x" and base.output_dir != "runs/x"  # base untouched
    off = apply_params(base, {"pretrain": False}, "runs/y")
    assert off.stages == ("supervised", "tcsm")
    uni = apply_params(
        config_from_dict({"stages": ["supervised", "unimatch"]}),
        {"semi_lr": 0.004, "confidence_threshold": 0.8},
        "runs/z",
    )
    assert (uni.unimatch.lr, uni.unimatch.confidence_threshold, uni.tcsm.lr) == (0.004, 0.8, 1e-3)


def test_suggestions_stay_in_range_on_the_configured_scale() -> None:
    tune = TuneConfig(
        ranges={
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "rampup_steps": {"low": 5, "high": 9},
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    knobs = (Knob.LR, Knob.RAMPUP_STEPS, Knob.PRETRAIN)
    seen = [suggest_params(study.ask(), knobs, tune.ranges) for _ in range(30)]
    assert all(1e-4 <= p["lr"] <= 1e-2 for p in seen)
    assert all(isinstance(p["rampup_steps"], int) and 5 <= p["rampup_steps"] <= 9 for p in seen)
    assert {p["pretrain"] for p in seen} == {True, False}
    # log scale: about half the draws below the geometric midpoint 1e-3
    assert 8 <= sum(p["lr"] < 1e-3 for p in seen) <= 22


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "Argument '--trials' must be >= 1, got 0."),
        (
            ["--trials", "2", "--storage", "sqlite:////nonexistent-dir/x/t.sqlite"],
            "cannot be opened: unable to open database file",
        ),
    ],
)
def test_cli_errors_are_one_sentence_and_exit_1(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = _write(tmp_path, {"knobs": ["lr"]})
    cli = Path(sys.executable).with_name("pulmoseg")
    done = subprocess.run(
        [str(cli), "tune", "--config", str(config), "--out", str(tmp_path / "o"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
