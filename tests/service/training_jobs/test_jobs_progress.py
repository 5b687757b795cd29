"""A job's progress and checkpoint read from the run folder `pulmoseg train` writes, for recipes
with and without a stage list (the demo recipe has none: training runs its default stage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.core.run_folder import RunFolder, run_stages
from service.training_jobs.progress import read_progress

CONFIG = {"optim": {"epochs": 12, "steps_per_epoch": 100}}


def _epoch(stage_dir: Path, epoch: int, step: int, ggo: float) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    metrics = stage_dir / "metrics.jsonl"
    line = {"epoch": epoch, "step": step, "val_voldice": {"lung": 0.9, "ggo": ggo}}
    with metrics.open("a") as out:
        out.write(json.dumps(line) + "\n")


def test_a_recipe_without_a_stage_list_reports_training_s_default_stage(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert read_progress(run, CONFIG) == {}  # nothing started yet
    _epoch(tmp_path / "pretrain_global", 1, 40, 0.0)  # not a stage of this run
    _epoch(tmp_path / "supervised", 2, 200, 0.61)
    (tmp_path / "supervised" / "metrics.jsonl").open("a").write('{"epoch": 3, "st')  # mid-write
    assert read_progress(run, CONFIG) == {
        "stage": "supervised",
        "step": 200,
        "epoch": 2,
        "total_steps": 1200,
        "val_voldice": {"lung": 0.9, "ggo": 0.61},
    }


def test_a_stage_list_names_the_stage_in_progress(tmp_path: Path) -> None:
    config = {**CONFIG, "stages": ["supervised", "tcsm"], "tcsm": {"epochs": 2}}
    _epoch(tmp_path / "supervised", 12, 1200, 0.7)
    (tmp_path / "tcsm").mkdir()
    progress = read_progress(RunFolder(tmp_path), config)
    assert (progress["stage"], progress["step"], progress["total_steps"]) == ("tcsm", 0, 200)


def test_a_job_stopped_early_exports_the_newest_validated_stage(tmp_path: Path) -> None:
    """Without final.pt (max_steps) the best.pt of the latest stage that has one; a recipe
    without a stage list (the demo) trains training's default stage; none at all is a clear
    error."""
    run, stages = RunFolder(tmp_path), ["supervised", "tcsm", "unimatch"]
    with pytest.raises(FileNotFoundError, match="Training wrote no checkpoint"):
        run.checkpoint_to_export(stages)
    assert not run.can_resume(stages)
    for stage in ("supervised", "tcsm"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "best.pt").write_bytes(b"weights")
    (tmp_path / "tcsm" / "last.pt").write_bytes(b"state")
    assert run.can_resume(stages) and not run.can_resume(run_stages([]))
    assert run.checkpoint_to_export(stages) == tmp_path / "tcsm" / "best.pt"
    assert run.checkpoint_to_export(run_stages([])) == tmp_path / "supervised" / "best.pt"
    (tmp_path / "final.pt").write_bytes(b"weights")
    assert run.checkpoint_to_export(stages) == tmp_path / "final.pt"
