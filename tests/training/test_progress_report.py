"""Tests for training.progress_report: metrics.jsonl lines, log lines, rank 0 only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from training.config import config_from_dict
from training.distributed import DistContext
from training.progress_report import ProgressReport

CONFIG = config_from_dict({"runtime": {"tensorboard": False}})


def _report(directory: Path, *, append: bool, rank: int = 0) -> ProgressReport:
    return ProgressReport(
        "supervised",
        2,
        3,
        CONFIG,
        directory,
        DistContext(rank),
        tb_dir=directory / "tb",
        append=append,
        progress=False,
    )


def test_a_fresh_start_replaces_metrics_and_a_resume_appends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 9}\n')  # left over from an older run
    report = _report(tmp_path, append=False)
    with caplog.at_level(logging.INFO, logger="training.progress_report"):
        report.epoch({"epoch": 1, "loss": 0.5}, "supervised epoch 1/2 loss=0.5000")
    report.close()
    assert "supervised epoch 1/2 loss=0.5000" in caplog.messages
    report = _report(tmp_path, append=True)
    report.epoch({"epoch": 2, "loss": 0.25}, "supervised epoch 2/2 loss=0.2500")
    report.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not (tmp_path / "tb").exists()  # runtime.tensorboard: false


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    report = _report(tmp_path, append=False, rank=1)
    assert report.bar(0, 0).disable
    report.epoch({"epoch": 1}, "not written")
    report.close()
    assert list(tmp_path.iterdir()) == []


def test_step_lines_every_n_steps_and_epoch_means_of_the_parts(tmp_path: Path) -> None:
    config = config_from_dict({"runtime": {"tensorboard": False, "log_every_steps": 2}})
    report = ProgressReport(
        "tcsm",
        1,
        4,
        config,
        tmp_path,
        DistContext(0),
        tb_dir=tmp_path / "tb",
        append=False,
        progress=False,
    )
    for step in range(1, 5):
        report.step({"loss": float(step), "agreement": 0.5}, step, 0.1)
    record: dict = {"epoch": 1}
    report.epoch(record, "tcsm epoch 1/1")
    report.close()
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [2, 4] and steps[0]["agreement"] == 0.5
    written = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert written["parts"] == {"agreement": 0.5, "loss": 2.5}
