"""A job's progress read from the files `pulmoseg train` writes, for recipes with and without a
stage list (the demo recipe has none: training runs its default stage)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.training_jobs.progress import read_progress
from service.training_jobs.worker import _checkpoint

CONFIG = {"optim": {"epochs": 12, "steps_per_epoch": 100}}


def _epoch(stage_dir: Path, epoch: int, step: int, ggo: float, mtime: float) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    metrics = stage_dir / "metrics.jsonl"
    line = {"epoch": epoch, "step": step, "val_voldice": {"lung": 0.9, "ggo": ggo}}
    with metrics.open("a") as out:
        out.write(json.dumps(line) + "\n")
    os.utime(metrics, (mtime, mtime))


def test_a_recipe_without_a_stage_list_reports_its_newest_stage(tmp_path: Path) -> None:
    assert read_progress(tmp_path, CONFIG) == {}  # nothing started yet
    _epoch(tmp_path / "pretrain_global", 1, 40, 0.0, mtime=1000)
    _epoch(tmp_path / "supervised", 2, 200, 0.61, mtime=2000)
    (tmp_path / "supervised" / "metrics.jsonl").open("a").write('{"epoch": 3, "st')  # mid-write
    assert read_progress(tmp_path, CONFIG) == {
        "stage": "supervised",
        "step": 200,
        "epoch": 2,
        "total_steps": 1200,
        "val_voldice": {"lung": 0.9, "ggo": 0.61},
    }


def test_a_stage_list_names_the_stage_in_progress(tmp_path: Path) -> None:
    config = {**CONFIG, "stages": ["supervised", "tcsm"], "tcsm": {"epochs": 2}}
    _epoch(tmp_path / "supervised", 12, 1200, 0.7, mtime=3000)
    (tmp_path / "tcsm").mkdir()
    progress = read_progress(tmp_path, config)
    assert (progress["stage"], progress["step"], progress["total_steps"]) == ("tcsm", 0, 200)


def test_a_job_stopped_early_exports_the_newest_validated_stage(tmp_path: Path) -> None:
    """Without final.pt (max_steps) the newest stage's best.pt, found by its folder, so a recipe
    without a stage list (the demo) works too; none at all is a clear error."""
    with pytest.raises(RuntimeError, match="Training wrote no checkpoint"):
        _checkpoint(tmp_path)
    for stage, mtime in (("supervised", 1000), ("tcsm", 2000)):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "best.pt").write_bytes(b"weights")
        os.utime(tmp_path / stage / "best.pt", (mtime, mtime))
    assert _checkpoint(tmp_path) == tmp_path / "tcsm" / "best.pt"
    (tmp_path / "final.pt").write_bytes(b"weights")
    assert _checkpoint(tmp_path) == tmp_path / "final.pt"
