"""The search space of ``pulmoseg tune``: which knobs of the method vary, over which ranges.

It lives in a ``tune:`` section of the experiment YAML (the rest of the file is an ordinary
:class:`~training.config.TrainConfig`, the base every trial starts from). A knob only makes
sense when its stage runs (the TCSM consistency weight without a ``tcsm`` stage changes
nothing), so the default knob list is "every knob whose stage is in ``stages``", and naming an
inapplicable knob is an error rather than a silently wasted dimension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import optuna
from pydantic import Field, StrictBool, field_validator, model_validator

from service.core.options import Option
from service.core.settings_base import (
    Layer,
    SettingsModel,
    did_you_mean,
    read_yaml_mapping,
)
from training.config import ConfigSection, StageName, TrainConfig, config_from_dict

#: Stages that the ``pretrain`` knob switches on (in this order, before the others) or off.
PRETRAIN_STAGES: tuple[str, ...] = (StageName.PRETRAIN_GLOBAL, StageName.PRETRAIN_LOCAL)
#: The semi-supervised stages whose learning rate ``semi_lr`` sets.
SEMI_STAGES: tuple[str, ...] = (StageName.TCSM, StageName.UNIMATCH)


class Knob(Option):
    """A tunable knob of the method; the value names the key under ``tune.ranges``."""

    #: ``optim.lr``: the supervised stage's learning rate.
    LR = "lr"
    #: ``tcsm.lr`` / ``unimatch.lr``: the semi-supervised stage's learning rate.
    SEMI_LR = "semi_lr"
    #: ``tcsm.consistency_weight`` (w_max of the ramp-up).
    CONSISTENCY_WEIGHT = "consistency_weight"
    #: ``tcsm.rampup_steps``.
    RAMPUP_STEPS = "rampup_steps"
    #: ``unimatch.confidence_threshold``.
    CONFIDENCE_THRESHOLD = "confidence_threshold"
    #: Contrastive pre-training (``pretrain_global`` + ``pretrain_local``) on or off.
    PRETRAIN = "pretrain"


class PrunerKind(Option):
    """How unpromising trials are stopped on their per-epoch validation VolDice."""

    #: Optuna's MedianPruner: below the median of earlier trials at the same epoch.
    MEDIAN = "median"
    #: Optuna's HyperbandPruner (successive halving over the validated epochs).
    HYPERBAND = "hyperband"
    #: Optuna's ThresholdPruner: any epoch below ``prune_below`` (deterministic).
    THRESHOLD = "threshold"
    NONE = "none"


def _stage_needed(knob: Knob, stages: tuple[str, ...]) -> str | None:
    """Why ``knob`` does not apply to ``stages`` (None when it does)."""
    if knob is Knob.LR and StageName.SUPERVISED not in stages:
        return "needs the 'supervised' stage"
    if knob is Knob.SEMI_LR and not set(SEMI_STAGES) & set(stages):
        return "needs a 'tcsm' or 'unimatch' stage"
    if knob in (Knob.CONSISTENCY_WEIGHT, Knob.RAMPUP_STEPS) and StageName.TCSM not in stages:
        return "needs the 'tcsm' stage"
    if knob is Knob.CONFIDENCE_THRESHOLD and StageName.UNIMATCH not in stages:
        return "needs the 'unimatch' stage"
    return None


class KnobRange(SettingsModel):
    """``low``..``high`` (inclusive), sampled on a log scale when ``log``."""

    noun: ClassVar[str] = "Config key"

    low: float
    high: float
    log: StrictBool = False


def _range(low: float, high: float, log: bool = False) -> Any:
    return Field(default_factory=lambda: KnobRange(low=low, high=high, log=log))


class KnobRanges(SettingsModel):
    """One range per numeric knob (``pretrain`` is on/off and has none)."""

    noun: ClassVar[str] = "Config key"
    key_prefix: ClassVar[str] = "tune.ranges."

    lr: KnobRange = _range(3e-4, 1e-2, log=True)
    semi_lr: KnobRange = _range(1e-4, 3e-3, log=True)
    consistency_weight: KnobRange = _range(0.1, 10.0, log=True)
    #: Whole steps.
    rampup_steps: KnobRange = _range(0, 800)
    confidence_threshold: KnobRange = _range(0.7, 0.99)

    @model_validator(mode="after")
    def _ordered(self) -> KnobRanges:
        for name in type(self).model_fields:
            r: KnobRange = getattr(self, name)
            if not r.low <= r.high:
                raise ValueError(
                    f"Config key 'tune.ranges.{name}' must have low <= high, "
                    f"got low={r.low}, high={r.high}"
                )
            if r.log and r.low <= 0:
                raise ValueError(
                    f"Config key 'tune.ranges.{name}' must have low > 0 on a log scale, "
                    f"got low={r.low}"
                )
        return self


class TuneConfig(ConfigSection):
    """The ``tune:`` section: knobs, ranges, pruner and sampler seed."""

    key_prefix: ClassVar[str] = "tune."

    #: Knobs to search (empty: every knob whose stage is in ``stages``).
    knobs: tuple[Knob, ...] = ()
    ranges: KnobRanges = Field(default_factory=KnobRanges)
    pruner: PrunerKind = PrunerKind.MEDIAN
    #: MedianPruner: no pruning until this many trials finished.
    startup_trials: int = 2
    #: Median/Threshold pruners: no pruning during a trial's first this-many validated epochs.
    warmup_epochs: int = 1
    #: ThresholdPruner: prune as soon as an epoch's lesion VolDice is below this.
    prune_below: float = 0.0
    #: TPE sampler seed (worker ``k`` of ``--jobs`` uses ``seed + k``).
    seed: int = 0
    #: Trials drawn at random before TPE starts modelling (Optuna's default of 10 would leave
    #: a 12-trial search almost all random).
    random_trials: int = 4
    #: Keep every trial's stage checkpoints (False: only each finished trial's ``final.pt``).
    keep_checkpoints: StrictBool = False

    @field_validator("knobs", mode="before")
    @classmethod
    def _known_knobs(cls, value: Any) -> Any:
        # A list of names is checked here, with the knob list's own messages; anything else
        # is left to the type check ("must be a list").
        if not isinstance(value, list | tuple) or not all(isinstance(n, str) for n in value):
            return value
        known = [str(k) for k in Knob]
        knobs: list[Knob] = []
        for name in value:
            try:
                knobs.append(Knob.parse(name))
            except ValueError:
                raise ValueError(
                    f"Config key 'tune.knobs' holds unknown knob '{name}'; expected some of "
                    f"{known}.{did_you_mean(name.strip(), known, ignore_case=True)}"
                ) from None
        if len(set(knobs)) != len(knobs):
            raise ValueError(
                f"Config key 'tune.knobs' lists a knob more than once: {[str(k) for k in knobs]}"
            )
        return tuple(knobs)

    @model_validator(mode="after")
    def _counts(self) -> TuneConfig:
        for name in ("startup_trials", "warmup_epochs", "random_trials"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Config key 'tune.{name}' must be >= 0, got {getattr(self, name)}"
                )
        return self


def load_tune_file(path: str | Path) -> tuple[TrainConfig, TuneConfig]:
    """Read an experiment YAML with an optional ``tune:`` section: (base config, search)."""
    raw = dict(read_yaml_mapping(path, "Config file"))
    tune_raw = raw.pop("tune", None) or {}
    source = f"config file '{path}'"
    base = TrainConfig.from_layers(Layer(source, raw))
    tune = TuneConfig.from_layers(Layer(source, tune_raw))
    active_knobs(base, tune)  # inapplicable knobs fail here, before any trial
    return base, tune


def active_knobs(config: TrainConfig, tune: TuneConfig) -> tuple[Knob, ...]:
    """The knobs this search varies: ``tune.knobs``, or every knob that applies."""
    stages = tuple(config.stages)
    if not tune.knobs:
        return tuple(k for k in Knob if _stage_needed(k, _with_pretrain(stages)) is None)
    knobs = tune.knobs
    for knob in knobs:
        why = _stage_needed(knob, stages)
        if why is not None:
            raise ValueError(
                f"Config key 'tune.knobs' holds '{knob}', which {why}; the config's stages are "
                f"{[str(s) for s in stages]}."
            )
    return knobs


def _with_pretrain(stages: tuple[str, ...]) -> tuple[str, ...]:
    return (*PRETRAIN_STAGES, *(s for s in stages if s not in PRETRAIN_STAGES))


def _semi_stage(config: TrainConfig) -> Any:
    name = next(s for s in config.stages if s in SEMI_STAGES)
    return config.tcsm if name == StageName.TCSM else config.unimatch


def default_params(config: TrainConfig, knobs: tuple[Knob, ...]) -> dict[str, Any]:
    """The base config's own values of ``knobs``: the trial every search starts with."""
    values: dict[Knob, Any] = {
        Knob.PRETRAIN: bool(set(PRETRAIN_STAGES) & set(config.stages)),
        Knob.LR: config.optim.lr,
        Knob.CONSISTENCY_WEIGHT: config.tcsm.consistency_weight,
        Knob.RAMPUP_STEPS: config.tcsm.rampup_steps,
        Knob.CONFIDENCE_THRESHOLD: config.unimatch.confidence_threshold,
    }
    if set(SEMI_STAGES) & set(config.stages):
        values[Knob.SEMI_LR] = _semi_stage(config).lr
    return {str(k): values[k] for k in knobs}


def suggest_params(
    trial: optuna.Trial, knobs: tuple[Knob, ...], ranges: KnobRanges
) -> dict[str, Any]:
    """Draw one value per knob from the trial's sampler."""
    params: dict[str, Any] = {}
    for knob in knobs:
        name = str(knob)
        if knob is Knob.PRETRAIN:
            params[name] = trial.suggest_categorical(name, [True, False])
            continue
        r: KnobRange = getattr(ranges, name)
        if knob is Knob.RAMPUP_STEPS:
            params[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
        else:
            params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
    return params


def apply_params(config: TrainConfig, params: dict[str, Any], output_dir: str) -> TrainConfig:
    """A new, fully validated config: ``config`` with ``params`` and its own output folder."""
    raw = config.model_dump(mode="json")
    raw["output_dir"] = output_dir
    for name, value in params.items():
        knob = Knob(name)
        if knob is Knob.PRETRAIN:
            rest = [s for s in raw["stages"] if s not in PRETRAIN_STAGES]
            raw["stages"] = [*PRETRAIN_STAGES, *rest] if value else rest
        elif knob is Knob.LR:
            raw["optim"]["lr"] = value
        elif knob is Knob.SEMI_LR:
            for stage in SEMI_STAGES:
                if stage in raw["stages"]:
                    raw[str(stage)]["lr"] = value
        elif knob is Knob.CONFIDENCE_THRESHOLD:
            raw["unimatch"]["confidence_threshold"] = value
        else:  # consistency_weight, rampup_steps
            raw["tcsm"][name] = value
    return config_from_dict(raw)
