"""The run folder: what a training run writes where, for training and for the jobs worker.

Training writes it (``training.experiment``, ``training.checkpoints``,
``training.progress_report``); the TrainingService's worker reads it as files only, since the
service never imports training. One layout for both runners::

    <output_dir>/config.yaml                   the resolved config
    <output_dir>/final.pt                      what ships: a copy of one stage's best.pt
    <output_dir>/<stage>/last.pt               everything a resume needs
    <output_dir>/<stage>/best.pt               the weights that validated best
    <output_dir>/<stage>/metrics.jsonl         one line per epoch (epoch, step, val_voldice)
    <output_dir>/<stage>/steps.jsonl           one line every runtime.log_every_steps steps
    <output_dir>/tensorboard/<stage>/          TensorBoard events

``final.pt`` appears once every stage finished; a run stopped early (``max_steps``) has only
its stages' checkpoints. A stage's schedule is spelled in the config section
:func:`schedule_section` names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINAL_CHECKPOINT = "final.pt"
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "steps.jsonl"
RESOLVED_CONFIG_FILE = "config.yaml"
TENSORBOARD_DIR = "tensorboard"
#: The stage list of a config that names none (``training.config.TrainConfig.stages``).
DEFAULT_STAGES: tuple[str, ...] = ("supervised",)
#: The config section with the ``epochs`` and ``steps_per_epoch`` of a stage whose own section
#: does not spell them (the supervised stage has no section of its own).
FALLBACK_SCHEDULE_SECTION = "optim"


def schedule_section(config: Mapping[str, Any], stage: str) -> Mapping[str, Any]:
    """The config section named after ``stage`` (empty when absent or not a mapping)."""
    section = config.get(stage)
    return section if isinstance(section, Mapping) else {}


def stage_steps(config: Mapping[str, Any], stage: str) -> int:
    """Steps of ``stage`` as the config spells them: ``epochs × steps_per_epoch`` of its section,
    each falling back to :data:`FALLBACK_SCHEDULE_SECTION`; 0 when left to training's defaults."""
    fallback = schedule_section(config, FALLBACK_SCHEDULE_SECTION)
    section = schedule_section(config, stage)
    epochs = section.get("epochs", fallback.get("epochs"))
    per_epoch = section.get("steps_per_epoch", fallback.get("steps_per_epoch"))
    if isinstance(epochs, int) and isinstance(per_epoch, int):
        return epochs * per_epoch
    return 0


def run_stages(stages: Sequence[str] | None) -> tuple[str, ...]:
    """The stages a run trains: ``stages``, or :data:`DEFAULT_STAGES` when it names none."""
    return tuple(stages) if stages else DEFAULT_STAGES


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run's outputs (see the module docstring)."""

    root: Path

    @property
    def final_checkpoint(self) -> Path:
        return self.root / FINAL_CHECKPOINT

    @property
    def resolved_config(self) -> Path:
        return self.root / RESOLVED_CONFIG_FILE

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def best_checkpoint(self, stage: str) -> Path:
        return self.stage_dir(stage) / BEST_CHECKPOINT

    def last_checkpoint(self, stage: str) -> Path:
        return self.stage_dir(stage) / LAST_CHECKPOINT

    def metrics_file(self, stage: str) -> Path:
        return self.stage_dir(stage) / METRICS_FILE

    def steps_file(self, stage: str) -> Path:
        return self.stage_dir(stage) / STEPS_FILE

    def tensorboard_dir(self, stage: str) -> Path:
        return self.root / TENSORBOARD_DIR / stage

    def started_stages(self, stages: Sequence[str]) -> list[str]:
        """Those of ``stages`` (in run order) that have a folder."""
        return [stage for stage in stages if self.stage_dir(stage).is_dir()]

    def can_resume(self, stages: Sequence[str]) -> bool:
        """True once a stage of ``stages`` wrote its ``last.pt``."""
        return any(self.last_checkpoint(stage).is_file() for stage in stages)

    def checkpoint_to_export(self, stages: Sequence[str]) -> Path:
        """``final.pt``, else (stopped early) the ``best.pt`` of the latest of ``stages`` that
        has one; FileNotFoundError when training wrote neither."""
        if self.final_checkpoint.is_file():
            return self.final_checkpoint
        for stage in reversed(stages):
            if self.best_checkpoint(stage).is_file():
                return self.best_checkpoint(stage)
        raise FileNotFoundError(
            f"Training wrote no checkpoint in '{self.root}' (no {FINAL_CHECKPOINT} and no "
            f"{BEST_CHECKPOINT} of stages {', '.join(stages)})."
        )
