"""One trial: train the base config with the trial's knob values and score the final model.

The objective is the **mean lesion-class validation VolDice** of the final model: the
per-class validation VolDice that :func:`training.experiment.run_experiment` reports for
``final.pt`` (the checkpoint the loop picked by its validation score), averaged over the
classes that are neither background nor lung (GGO and consolidation by default). Lung is
left out because every reasonable trial segments it well; averaging it in would dampen the
differences the search is looking for. Each validated epoch reports the same number for
that epoch to the trial, which is what the pruner compares across trials.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from training.config import TrainConfig
from training.experiment import run_experiment
from training.loop import EpochValidation
from training.tuning.space import TuneConfig, active_knobs, apply_params, suggest_params

log = logging.getLogger(__name__)

#: Classes the objective leaves out (every other class of ``model.class_names`` counts).
NON_LESION_CLASSES: frozenset[str] = frozenset({"background", "lung"})


def lesion_score(dice: dict[str, float]) -> float:
    """Mean of the finite lesion-class scores in ``dice`` (NaN when there is none)."""
    values = [v for k, v in dice.items() if k not in NON_LESION_CLASSES and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


class _PruningReporter:
    """Hands each validated epoch to the trial and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.epochs = 0
        # The default config (trial 0) runs to the end: it is what the search must beat.
        self.prunable = not trial.user_attrs.get("default", False)

    def __call__(self, epoch: EpochValidation) -> None:
        score = lesion_score(epoch.dice)
        if not math.isfinite(score):
            return
        self.trial.report(score, self.epochs)
        self.epochs += 1
        if self.prunable and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after {epoch.stage} epoch {epoch.epoch} (lesion VolDice {score:.4f})"
            )


def trial_config(
    base: TrainConfig, tune: TuneConfig, trial: optuna.Trial, out: Path, threads: int
) -> TrainConfig:
    """The trial's resolved config: drawn knob values, own folder, ``threads`` torch threads."""
    params = suggest_params(trial, active_knobs(base, tune), tune.ranges)
    config = apply_params(base, params, str(out / "trials" / f"trial_{trial.number:03d}"))
    if threads > 0:
        config.optim.num_threads = threads
    return config


def run_trial(config: TrainConfig, trial: optuna.Trial, *, keep_checkpoints: bool) -> float:
    """Train ``config`` (a :func:`trial_config`), reporting epochs; the objective value.

    Raises ``optuna.TrialPruned`` when pruned and ``RuntimeError`` when the run produced no
    lesion score (e.g. a validation split without lesion classes).
    """
    reporter = _PruningReporter(trial)
    try:
        result = run_experiment(config, progress=False, on_validation=reporter)
        dice = result.best_val_voldice
        trial.set_user_attr("final_voldice", dice)
        trial.set_user_attr("final_stage", result.final_stage)
        trial.set_user_attr("minutes", round(result.wall_seconds / 60.0, 2))
        score = lesion_score(dice)
        if not math.isfinite(score):
            raise RuntimeError(
                f"Trial {trial.number} has no lesion-class validation VolDice (got {dice}); "
                "the validation studies need lesion labels."
            )
        return score
    finally:
        _drop_checkpoints(Path(config.output_dir), keep=keep_checkpoints)


def _drop_checkpoints(directory: Path, *, keep: bool) -> None:
    """Disk stays bounded over many trials: only ``final.pt`` survives unless ``keep``."""
    if keep or not directory.is_dir():
        return
    for path in directory.glob("*/*.pt"):
        path.unlink(missing_ok=True)
    tensorboard = directory / "tensorboard"
    if tensorboard.is_dir():
        shutil.rmtree(tensorboard, ignore_errors=True)


def trial_summary(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What the table and the report show for one trial."""
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "last_intermediate": (
            trial.intermediate_values[max(trial.intermediate_values)]
            if trial.intermediate_values
            else None
        ),
        "epochs": len(trial.intermediate_values),
        "seconds": duration,
        "default": bool(trial.user_attrs.get("default", False)),
        "params": dict(trial.params),
    }
