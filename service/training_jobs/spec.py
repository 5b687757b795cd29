"""What a job trains: validating a submitted spec and writing its resolved config.

A recipe is a YAML file of the training package's ``configs`` folder, found through the
package's location on disk (``importlib.util.find_spec``) — a data lookup that neither imports
the training code nor needs torch in the server process.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.core.errors import InvalidArgumentError
from service.training_jobs.config_check import check_config, parse_yaml
from service.training_jobs.errors import TrainingUnavailableError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STAGE = re.compile(r"^[a-z_]+$")


@dataclass(frozen=True)
class JobSpec:
    """A submitted job as stored: exactly one of ``recipe`` and ``config_yaml``."""

    dataset: str
    recipe: str = ""
    config_yaml: str = ""
    stages: list[str] = field(default_factory=list)
    max_steps: int = 0
    model_name: str = ""
    model_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**data)


def training_available() -> bool:
    """True when this installation can train (training package and torch present)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("training", "torch"))
    except (ImportError, ValueError):  # a broken or blocked installation counts as absent
        return False


def recipes_folder() -> Path:
    spec = importlib.util.find_spec("training")
    if spec is None or not spec.submodule_search_locations:
        raise TrainingUnavailableError(
            "Training is not installed in this image: install pulmoseg[train] on the server."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "configs"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_folder().glob("*.yaml"))


def _load_recipe(name: str) -> dict[str, Any]:
    if not _NAME.match(name) or not (recipes_folder() / f"{name}.yaml").is_file():
        raise InvalidArgumentError(
            f"Argument 'recipe' names no training recipe, got {name!r}; known recipes: "
            f"{', '.join(recipe_names())}."
        )
    return _mapping(yaml.safe_load((recipes_folder() / f"{name}.yaml").read_text()), "recipe")


def _mapping(value: object, argument: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgumentError(
            f"Argument '{argument}' must be a YAML mapping of training settings, got "
            f"{type(value).__name__}."
        )
    return value


def validate(spec: JobSpec) -> None:
    """Every check that needs no file system: INVALID_ARGUMENT naming the argument."""
    if bool(spec.recipe) == bool(spec.config_yaml):
        raise InvalidArgumentError(
            "Pass exactly one of 'recipe' (a training recipe name) and 'config_yaml' (a "
            f"config's text), got recipe={spec.recipe!r} and "
            f"{'a' if spec.config_yaml else 'no'} config."
        )
    if spec.max_steps < 0:
        raise InvalidArgumentError(f"Argument 'max_steps' must be >= 0, got {spec.max_steps}.")
    for stage in spec.stages:
        if not _STAGE.match(stage):
            raise InvalidArgumentError(f"Argument 'stages' holds an invalid name {stage!r}.")
    for argument in ("model_name", "model_version"):
        value = getattr(spec, argument)
        if value and not _NAME.match(value):
            raise InvalidArgumentError(
                f"Argument '{argument}' must be letters, digits, '.', '_' or '-' (at most 64), "
                f"got {value!r}."
            )


def config_source(spec: JobSpec, config_name: str = "") -> str:
    """How messages name the job's config: the user's file, the recipe, or the argument."""
    if spec.recipe:
        return f"recipe '{spec.recipe}'"
    return f"config file '{config_name}'" if config_name else "argument 'config_yaml'"


def resolved_config(
    spec: JobSpec, data_root: Path, output_dir: Path, config_name: str = ""
) -> dict[str, Any]:
    """The job's config: the recipe or the given YAML with data, output and export set, fully
    checked (``config_check``) so a mistake is refused before the job is queued."""
    source = config_source(spec, config_name)
    user = _load_recipe(spec.recipe) if spec.recipe else parse_yaml(spec.config_yaml, source)
    export = dict(user.get("export") or {}) if isinstance(user.get("export"), dict) else {}
    name = spec.model_name or export.get("name") or spec.recipe or "pulmoseg-job"
    server = {
        "output_dir": str(output_dir),
        "data": {"root": str(data_root)},
        "export": {"name": name},
    }
    check_config(user, source, list(spec.stages), server, spec.max_steps)
    config = dict(user)
    config["output_dir"] = str(output_dir)
    config["data"] = {**(config.get("data") or {}), "root": str(data_root)}
    if spec.stages:
        config["stages"] = list(spec.stages)
    config["export"] = {**export, "name": name}
    return config
