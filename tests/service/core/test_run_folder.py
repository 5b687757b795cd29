"""The run-folder contract between training and the TrainingService (service.core.run_folder):
paths, the stage list of a config without one, and a stage's schedule as the config spells it."""

from __future__ import annotations

from pathlib import Path

from service.core.run_folder import DEFAULT_STAGES, RunFolder, run_stages, stage_steps


def test_paths_of_the_one_layout() -> None:
    run = RunFolder(Path("/out"))
    assert run.final_checkpoint == Path("/out/final.pt")
    assert run.resolved_config == Path("/out/config.yaml")
    assert run.best_checkpoint("tcsm") == Path("/out/tcsm/best.pt")
    assert run.last_checkpoint("tcsm") == Path("/out/tcsm/last.pt")
    assert run.metrics_file("tcsm") == Path("/out/tcsm/metrics.jsonl")
    assert run.steps_file("tcsm") == Path("/out/tcsm/steps.jsonl")
    assert run.tensorboard_dir("tcsm") == Path("/out/tensorboard/tcsm")


def test_a_config_without_stages_runs_the_default_ones() -> None:
    assert run_stages(None) == run_stages([]) == DEFAULT_STAGES == ("supervised",)
    assert run_stages(["supervised", "tcsm"]) == ("supervised", "tcsm")


def test_stage_steps_as_spelled_with_the_optim_fallback() -> None:
    config = {"optim": {"epochs": 3, "steps_per_epoch": 10}, "tcsm": {"epochs": 2}}
    assert stage_steps(config, "supervised") == 30  # the supervised stage reads optim
    assert stage_steps(config, "tcsm") == 20  # its own epochs, optim's steps_per_epoch
    assert stage_steps({}, "tcsm") == 0  # left to training's defaults
    assert stage_steps({"tcsm": "oops"}, "tcsm") == 0


def test_stages_started_in_run_order(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    (tmp_path / "tcsm").mkdir()
    (tmp_path / "supervised").mkdir()
    assert run.started_stages(["supervised", "tcsm", "unimatch"]) == ["supervised", "tcsm"]
