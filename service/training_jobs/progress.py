"""A job's progress, read from the run folder ``pulmoseg train`` writes
(``service.core.run_folder``): each stage's metrics file (one line per epoch: epoch, step,
val_voldice) and steps file (with ``runtime.log_every_steps``). Files only, so progress survives
a server restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.core.run_folder import RunFolder, run_stages, stage_steps


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


def read_progress(run: RunFolder, config: dict[str, Any]) -> dict[str, Any]:
    """{stage, step, total_steps, epoch, val_voldice} of the newest stage that has started
    (of the config's stages, or training's default ones when it names none)."""
    started = run.started_stages(run_stages(config.get("stages")))
    if not started:
        return {}
    stage = started[-1]
    progress: dict[str, Any] = {
        "stage": stage,
        "step": 0,
        "epoch": 0,
        "total_steps": stage_steps(config, stage),
        "val_voldice": {},
    }
    epoch = _last_line(run.metrics_file(stage))
    if epoch is not None:
        progress["step"] = int(epoch.get("step", 0))
        progress["epoch"] = int(epoch.get("epoch", 0))
        dice = epoch.get("val_voldice") or {}
        progress["val_voldice"] = {str(k): float(v) for k, v in dice.items()}
    step = _last_line(run.steps_file(stage))
    if step is not None and int(step.get("step", 0)) > progress["step"]:
        progress["step"] = int(step["step"])
    return progress
