"""Tests for training.config: YAML round trip, defaults, stage lists and helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.config import (
    CheckpointSelection,
    ConsistencyTarget,
    DataConfig,
    DataKind,
    DecoderStage,
    DistributedBackend,
    FinalModel,
    PaddingMode,
    StageName,
    SupervisedLoss,
    TrainConfig,
    TrainingDevice,
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
        ({"tcsm": {"ema_decay": 1.0}}, r"'tcsm\.ema_decay' must be in \[0, 1\), got 1\.0"),
        ({"tcsm": {"max_scale_delta": -0.1}}, r"'tcsm\.max_scale_delta' must be in \[0, 1\)"),
        ({"tcsm": {"rampup_steps": -1}}, r"'tcsm\.rampup_steps' must be >= 0, got -1"),
        ({"tcsm": {"noise_std_hu": -1}}, r"'tcsm\.noise_std_hu' must be >= 0"),
        ({"tcsm": {"consistency_weight": -1}}, r"'tcsm\.consistency_weight' must be >= 0"),
        ({"tcsm": {"image_padding": "boarder"}}, r"'tcsm\.image_padding' .*Did you mean 'border'"),
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
    with pytest.raises(
        TypeError, match=r"'runtime\.tensorboard' must be a boolean \(true or false\), got 'yes'"
    ):
        config_from_dict({"runtime": {"tensorboard": "yes"}})
    with pytest.raises(TypeError, match=r"'optim\.epochs' must be an integer, got 2\.5"):
        config_from_dict({"optim": {"epochs": 2.5}})
    with pytest.raises(TypeError, match=r"'optim\.epochs' must be an integer, got True"):
        config_from_dict({"optim": {"epochs": True}})
    with pytest.raises(TypeError, match=r"'model\.input_size\[1\]' must be an integer, got 'x'"):
        config_from_dict({"model": {"input_size": [64, "x"]}})
    with pytest.raises(TypeError, match=r"Config key 'data' must be a mapping, got 'here'"):
        config_from_dict({"data": "here"})


@pytest.mark.parametrize(("given", "count"), [([4, 4, 8], 3), ([4, 4, 8, 8, 16, 4, 4], 7)])
def test_fixed_length_lists_say_how_many_items(given: list[int], count: int) -> None:
    with pytest.raises(ValueError, match=rf"'model\.features' must have 6 items, got {count}\.$"):
        config_from_dict({"model": {"features": given}})


def test_yaml_scalars_convert_like_the_old_loader() -> None:
    # PyYAML reads 1e-3 (no dot) as a string and 1.0 as a float; both mean what was written.
    config = config_from_dict({"optim": {"lr": "1e-3"}, "export": {"version": 1.0}})
    assert config.optim.lr == 0.001
    assert config.export.version == "1.0"


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  epohcs: 3\n")
    with pytest.raises(
        ValueError,
        match=r"Unknown config key 'optim\.epohcs' in config file '.*exp\.yaml'\. "
        r"Did you mean 'optim\.epochs'\?",
    ):
        load_config(path)
    path.write_text("tcsm:\n  lr: fast\n")
    with pytest.raises(TypeError, match=r"'tcsm\.lr' must be a number, got 'fast' \(from config"):
        load_config(path)
    path.write_text("- supervised\n")
    with pytest.raises(ValueError, match=r"Config file '.*exp\.yaml' must hold a mapping"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_assignment_is_checked_and_a_rejected_value_is_not_kept() -> None:
    config = config_from_dict({})
    config.data.root = "data/elsewhere"
    config.model.input_size = (64, 64)
    config.stages = ("supervised", "tcsm")
    assert (config.data.root, config.model.input_size) == ("data/elsewhere", (64, 64))
    with pytest.raises(ValueError, match=r"'data\.cv_folds' must be 0 \(off\) or >= 2, got 1"):
        config.data.cv_folds = 1
    assert config.data.cv_folds == 0
    with pytest.raises(TypeError, match=r"'model\.input_size' must be a list"):
        config.model.input_size = 64  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"unknown stage 'tcms'.*Did you mean 'tcsm'\?"):
        config.stages = ("tcms",)
    assert config.stages == ("supervised", "tcsm")


def test_assigning_a_misspelt_key_fails_instead_of_being_ignored() -> None:
    config = config_from_dict({})
    with pytest.raises(
        AttributeError, match=r"'optim\.epoch' does not exist\. Did you mean 'optim\.epochs'"
    ):
        config.optim.epoch = 3  # type: ignore[attr-defined]


def test_sections_built_directly_are_checked() -> None:
    with pytest.raises(ValueError, match=r"'data\.kind' must be one of .*Did you mean 'slices2d'"):
        DataConfig(kind="slice2d")
    with pytest.raises(TypeError, match=r"'data\.val_fraction' must be a number, got 'most'"):
        DataConfig(val_fraction="most")  # type: ignore[arg-type]


def test_checkpoint_dict_round_trip_keeps_tuples() -> None:
    config = config_from_dict(_non_default())
    saved = config.to_dict()  # what training.loop stores in every checkpoint
    assert saved["model"]["features"] == (4, 4, 8, 8, 16, 4)
    assert config_from_dict(saved) == config


@pytest.mark.parametrize("name", ["demo", "phantom_supervised", "phantom_tcsm"])
def test_example_configs_load_and_use_known_stages(name: str) -> None:
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    assert set(config.stages) <= set(StageName)


def test_phantom_tcsm_example_runs_the_whole_method() -> None:
    config = load_config(CONFIG_DIR / "phantom_tcsm.yaml")
    # The paper's method: every stage but the alternative semi-supervised one (UniMatch).
    assert config.stages == tuple(s for s in StageName if s != StageName.UNIMATCH)
    assert config.pretrain_global.temperature == 0.1
    assert config.pretrain_global.partitions == 4
    assert config.pretrain_local.num_regions == 13


def test_unimatch_section_defaults_and_checks() -> None:
    config = config_from_dict({"stages": ["supervised", "unimatch"]})
    assert config.unimatch.confidence_threshold == 0.95
    assert config.unimatch.cutmix_prob == 0.5 and config.unimatch.feature_dropout == 0.5
    assert config.runtime.checkpoint_selection == "best_validation"
    assert config.data.labeled_count == 0 and config.tcsm.consistency_target == "probabilities"
    for raw, message in (
        ({"unimatch": {"confidence_threshold": 1.5}}, r"'unimatch\.confidence_threshold' must"),
        ({"unimatch": {"cutmix_area": [0.5, 0.1]}}, r"'unimatch\.cutmix_area' must be"),
        ({"unimatch": {"feature_dropout": 1.0}}, r"'unimatch\.feature_dropout' must"),
        ({"data": {"labeled_count": -1}}, r"'data\.labeled_count' must be >= 0"),
        ({"tcsm": {"consistency_target": "logit"}}, r"Did you mean 'logits'"),
        ({"runtime": {"checkpoint_selection": "last"}}, r"'runtime\.checkpoint_selection'"),
        ({"stages": ["unimath"]}, r"Did you mean 'unimatch'"),
    ):
        with pytest.raises(ValueError, match=message):
            config_from_dict(raw)


def test_covid_grid_config_loads_with_a_fixed_schedule() -> None:
    config = load_config(CONFIG_DIR / "covid_semiseg_grid.yaml")
    assert config.runtime.checkpoint_selection == "last_epoch"
    assert config.runtime.final_model == "last_stage"
    assert "unimatch" in config.stages


def test_options_are_held_as_their_enums_from_yaml_strings(tmp_path: Path) -> None:
    """Converted once, where the file is read: the code gets members, YAML keeps strings."""
    raw = {
        "stages": ["Supervised", "tcsm"],
        "data": {"kind": "slices2d"},
        "optim": {"loss": "CDICE_CE"},
        "pretrain_local": {"decoder_stage": "upcat_1"},
        "tcsm": {"loss": "dice", "consistency_target": "logits", "image_padding": "zeros"},
        "unimatch": {"loss": SupervisedLoss.CDICE},
        "runtime": {
            "final_model": "last_stage",
            "checkpoint_selection": "last_epoch",
            "backend": "gloo",
            "device": "CPU",
        },
    }
    config = config_from_dict(raw)
    assert config.stages == (StageName.SUPERVISED, StageName.TCSM)
    assert all(type(s) is StageName for s in config.stages)
    assert config.data.kind is DataKind.SLICES2D
    assert config.optim.loss is SupervisedLoss.CDICE_CE
    assert config.pretrain_local.decoder_stage is DecoderStage.UPCAT_1
    assert config.tcsm.loss is SupervisedLoss.DICE
    assert config.tcsm.consistency_target is ConsistencyTarget.LOGITS
    assert config.tcsm.image_padding is PaddingMode.ZEROS
    assert config.unimatch.loss is SupervisedLoss.CDICE
    assert config.runtime.final_model is FinalModel.LAST_STAGE
    assert config.runtime.checkpoint_selection is CheckpointSelection.LAST_EPOCH
    assert config.runtime.backend is DistributedBackend.GLOO
    assert config.runtime.device is TrainingDevice.CPU

    save_config(config, tmp_path / "c.yaml")
    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert saved["stages"] == ["supervised", "tcsm"]
    assert saved["optim"]["loss"] == "cdice_ce" and saved["runtime"]["device"] == "cpu"
    assert load_config(tmp_path / "c.yaml") == config

    config.optim.loss = "dice"  # assignment converts too
    assert config.optim.loss is SupervisedLoss.DICE


def test_a_misspelt_option_names_the_key_the_value_and_the_choices() -> None:
    with pytest.raises(ValueError) as error:
        config_from_dict({"optim": {"loss": "dice_cee"}})
    assert str(error.value) == (
        "Config key 'optim.loss' must be one of 'dice', 'dice_ce', 'cdice', 'cdice_ce', "
        "got 'dice_cee'. Did you mean 'dice_ce'?"
    )
    with pytest.raises(ValueError, match=r"'runtime\.device' must be one of .*got 'gpu'"):
        config_from_dict({"runtime": {"device": "gpu"}})
    with pytest.raises(ValueError, match=r"'pretrain_local\.decoder_stage' .*got 'upcat_5'"):
        config_from_dict({"pretrain_local": {"decoder_stage": "upcat_5"}})
    config = config_from_dict({})
    with pytest.raises(ValueError, match=r"'tcsm\.loss' .*\(from assignment\)"):
        config.tcsm.loss = "focal"
    assert config.tcsm.loss is SupervisedLoss.DICE_CE


def test_padding_mode_is_read_case_insensitively_and_saved_normalised() -> None:
    config = config_from_dict({"tcsm": {"image_padding": " Border "}})
    assert config.tcsm.image_padding is PaddingMode.BORDER
