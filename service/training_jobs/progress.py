"""A job's progress, read from what ``pulmoseg train`` writes: ``<out>/<stage>/metrics.jsonl``
(one line per epoch: epoch, step, val_voldice) and ``steps.jsonl`` (with
``runtime.log_every_steps``). Files only, so progress survives a server restart."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from service.training_jobs.spec import stage_schedule


def _last_line(path: Path) -> dict[str, Any] | None:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        try:
            value = json.loads(line)
        except ValueError:  # a line being written right now
            continue
        if isinstance(value, dict):
            return value
    return None


def _by_mtime(paths: Iterable[Path]) -> list[Path]:
    """``paths`` oldest first; one that vanishes meanwhile is left out (progress is read while
    training writes)."""
    stamped = []
    for path in paths:
        try:
            stamped.append((path.stat().st_mtime, path))
        except OSError:
            continue
    return [path for _, path in sorted(stamped)]


def read_progress(train_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """{stage, step, total_steps, epoch, val_voldice} of the newest stage that has started."""
    stages = config.get("stages") or []
    started = [s for s in stages if (train_dir / s).is_dir()]
    if not started:  # a recipe without a stage list: its stage folders, newest last
        started = [path.parent.name for path in _by_mtime(train_dir.glob("*/metrics.jsonl"))]
    if not started:
        return {}
    stage = started[-1]
    progress: dict[str, Any] = {
        "stage": stage,
        "step": 0,
        "epoch": 0,
        "total_steps": stage_schedule(config, stage),
        "val_voldice": {},
    }
    epoch = _last_line(train_dir / stage / "metrics.jsonl")
    if epoch is not None:
        progress["step"] = int(epoch.get("step", 0))
        progress["epoch"] = int(epoch.get("epoch", 0))
        dice = epoch.get("val_voldice") or {}
        progress["val_voldice"] = {str(k): float(v) for k, v in dice.items()}
    step = _last_line(train_dir / stage / "steps.jsonl")
    if step is not None and int(step.get("step", 0)) > progress["step"]:
        progress["step"] = int(step["step"])
    return progress
