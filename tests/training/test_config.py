"""Tests for training.config: YAML round trip, defaults, stage lists and helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.config import (
    STAGE_NAMES,
    TrainConfig,
    config_from_dict,
    load_config,
    save_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "training" / "configs"


def _non_default() -> dict:
    return {
        "output_dir": "somewhere/else",
        "seed": 7,
        "stages": ["pretrain_global", "pretrain_local", "supervised", "tcsm"],
        "data": {"root": "data/x", "val_fraction": 0.3, "lesion_oversampling": 2.0},
        "model": {"features": [4, 4, 8, 8, 16, 4], "input_size": [48, 48], "dropout": 0.1},
        "optim": {"loss": "cdice_ce", "lr": 0.01, "epochs": 2, "bf16": False},
        "pretrain_global": {
            "temperature": 0.5,
            "proj_dim": 32,
            "partitions": 3,
            "partition_positives": False,
        },
        "pretrain_local": {
            "num_regions": 5,
            "region_size": 2,
            "decoder_stage": "upcat_3",
            "geometric": True,
        },
        "tcsm": {
            "ema_decay": 0.999,
            "consistency_weight": 0.5,
            "rampup_steps": 10,
            "unlabeled_batch_size": 6,
            "loss": "dice",
        },
        "runtime": {"tensorboard": False, "checkpoint_every": 3, "backend": "gloo"},
        "export": {"name": "m", "version": "9.9.9"},
    }


def test_save_then_load_gives_an_equal_config(tmp_path: Path) -> None:
    config = config_from_dict(_non_default())
    save_config(config, tmp_path / "c.yaml")
    loaded = load_config(tmp_path / "c.yaml")
    assert loaded == config
    assert loaded.stages == ("pretrain_global", "pretrain_local", "supervised", "tcsm")
    assert loaded.model.features == (4, 4, 8, 8, 16, 4)
    assert loaded.pretrain_local.decoder_stage == "upcat_3"
    assert loaded.tcsm.ema_decay == 0.999
    assert loaded.runtime.checkpoint_every == 3


def test_saved_config_is_fully_resolved(tmp_path: Path) -> None:
    save_config(TrainConfig(), tmp_path / "c.yaml")
    raw = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert raw["stages"] == ["supervised"]
    assert raw["pretrain_global"]["temperature"] == 0.1
    assert raw["pretrain_global"]["partitions"] == 4
    assert raw["pretrain_local"]["num_regions"] == 13
    assert raw["pretrain_local"]["region_size"] == 3
    assert raw["tcsm"]["ema_decay"] == 0.99


def test_old_configs_without_stage_sections_still_load() -> None:
    config = config_from_dict({"optim": {"epochs": 3}})
    assert config.stages == ("supervised",)
    assert config.optim.epochs == 3
    assert config == config_from_dict(config.to_dict())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"optimm": {}}, r"Unknown config key 'optimm'\. Did you mean 'optim'\?"),
        (
            {"tcsm": {"ema_decy": 0.9}},
            r"Unknown config key 'tcsm\.ema_decy'\. Did you mean "
            r"'tcsm\.ema_decay'\?",
        ),
        ({"pretrain_local": {"num_region": 3}}, r"Did you mean 'pretrain_local\.num_regions'\?"),
        (
            {"stages": ["pretrain_globl"]},
            r"unknown stage 'pretrain_globl'.*Did you mean "
            r"'pretrain_global'\?",
        ),
        ({"stages": ["supervised", "supervised"]}, r"lists \['supervised'\] more than once"),
        ({"stages": []}, r"'stages' must list at least one"),
        ({"tcsm": {"lr": 0}}, r"'tcsm\.lr' must be > 0, got 0\.0"),
        ({"pretrain_global": {"temperature": -1}}, r"'pretrain_global\.temperature' must be > 0"),
        ({"tcsm": {"unlabeled_batch_size": -1}}, r"'tcsm\.unlabeled_batch_size' must be >= 0"),
        ({"data": {"cv_folds": 1}}, r"'data\.cv_folds' must be 0 \(off\) or >= 2, got 1"),
        ({"data": {"cv_folds": 5, "cv_fold": 5}}, r"'data\.cv_fold' must be in \[0, 4\]"),
        (
            {"runtime": {"final_model": "best_validate"}},
            r"'runtime\.final_model' must be one of .*Did you mean 'best_validated'\?",
        ),
    ],
)
def test_bad_values_fail_with_a_specific_message(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(raw)


def test_wrong_types_name_the_key() -> None:
    with pytest.raises(TypeError, match=r"'stages' must be a list"):
        config_from_dict({"stages": "supervised"})
    with pytest.raises(TypeError, match=r"'runtime\.tensorboard' must be true or false"):
        config_from_dict({"runtime": {"tensorboard": "yes"}})


@pytest.mark.parametrize("name", ["demo", "phantom_supervised", "phantom_tcsm"])
def test_example_configs_load_and_use_known_stages(name: str) -> None:
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    assert set(config.stages) <= set(STAGE_NAMES)


def test_phantom_tcsm_example_runs_the_whole_method() -> None:
    config = load_config(CONFIG_DIR / "phantom_tcsm.yaml")
    assert config.stages == STAGE_NAMES
    assert config.pretrain_global.temperature == 0.1
    assert config.pretrain_global.partitions == 4
    assert config.pretrain_local.num_regions == 13
