"""The full check of a job's training config at submit time, so a mistake is reported before
anything is queued and names the user's file (or recipe), key and line.

It runs training's own typed config (``training.config.TrainConfig``: pydantic only, no torch)
on the layers a job's config is made of — the user's YAML, the ``stages`` argument, and what
the server sets — so the did-you-mean hints, type errors and stage names are exactly those
``pulmoseg train`` would give, only earlier.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import yaml

from service.core.errors import InvalidArgumentError
from service.core.settings_base import Layer

#: The entry-point group under which the training package names its config model.
CONFIG_MODEL_GROUP = "pulmoseg.training_config"
#: Stages that validate every epoch and so write a ``best.pt`` a job stopped early can export.
VALIDATING_STAGES = ("supervised", "tcsm", "unimatch")
#: The config section that holds each stage's ``epochs`` and ``steps_per_epoch``.
STAGE_SECTION = {
    "pretrain_global": "pretrain_global",
    "pretrain_local": "pretrain_local",
    "supervised": "optim",
    "tcsm": "tcsm",
    "unimatch": "unimatch",
}


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """The mapping in ``text``; one-line INVALID_ARGUMENT naming ``source`` and the line."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InvalidArgumentError(
            f"{_capital(source)} is not valid YAML: {problem}{where}."
        ) from None
    if value is None:
        raise InvalidArgumentError(f"{_capital(source)} is empty.")
    if not isinstance(value, dict):
        raise InvalidArgumentError(
            f"{_capital(source)} must be a YAML mapping of training settings, got "
            f"{type(value).__name__}."
        )
    return value


def check_config(
    user: dict[str, Any], source: str, stages: list[str], server: dict[str, Any], max_steps: int
) -> None:
    """Validate the job's config as ``pulmoseg train`` will; INVALID_ARGUMENT on any problem."""
    TrainConfig = _training_config_model()
    if TrainConfig is None:  # training not installed: submit refuses before this
        return
    layers = [Layer(source, user)]
    if stages:
        layers.append(Layer("argument 'stages'", {"stages": list(stages)}))
    layers.append(Layer("the server", server))
    try:
        config = TrainConfig.from_layers(*layers)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(str(exc)) from None
    if max_steps:
        needed, stage = steps_to_first_checkpoint(config)
        if max_steps < needed:
            raise InvalidArgumentError(
                f"Argument 'max_steps' ({max_steps}) stops training before its first "
                f"checkpoint: stage '{stage}' validates after {needed} steps (one epoch of "
                f"'{STAGE_SECTION[stage]}.steps_per_epoch' in {source}, after the stages "
                f"before it); pass at least {needed}, or 0 for the whole run."
            )


def _training_config_model() -> Any:
    """Training's config model, found through the entry point the training package registers
    (as it registers its CLI commands): the service never imports training by name."""
    for entry in entry_points(group=CONFIG_MODEL_GROUP):
        try:
            return entry.load()
        except ImportError:  # registered, but the training extra is not installed
            return None
    return None


def steps_to_first_checkpoint(config: Any) -> tuple[int, str]:
    """Steps until the first validating stage ends its first epoch, and that stage's name."""
    steps = 0
    stage = ""
    for name in (str(s) for s in config.stages):
        section = getattr(config, STAGE_SECTION[name])
        stage = name
        if name in VALIDATING_STAGES:
            return steps + int(section.steps_per_epoch), name
        steps += int(section.epochs) * int(section.steps_per_epoch)
    return steps, stage


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
