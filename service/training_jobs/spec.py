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
from service.training_jobs.errors import TrainingUnavailableError

#: The dataset keyword that means the server's capture folder (setting ``capture_dir``).
CAPTURED = "captured"
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


def resolve_dataset(dataset: str, capture_dir: Path | None) -> Path:
    """The dataset folder a job reads; INVALID_ARGUMENT unless it holds a manifest.json."""
    if dataset.strip() == CAPTURED:
        if capture_dir is None:
            raise InvalidArgumentError(
                "Argument 'dataset' is 'captured' but this server does not capture studies "
                "(setting 'capture_dir' is unset)."
            )
        root = Path(capture_dir)
    elif not dataset.strip():
        raise InvalidArgumentError(
            "Argument 'dataset' is required: a dataset folder on the server or 'captured'."
        )
    else:
        root = Path(dataset.strip()).expanduser()
    if not (root / "manifest.json").is_file():
        raise InvalidArgumentError(
            f"Argument 'dataset' must be a dataset folder with a manifest.json on the server, "
            f"got {dataset!r} ('{root}' has none)."
        )
    return root.resolve()


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


def resolved_config(spec: JobSpec, data_root: Path, output_dir: Path) -> dict[str, Any]:
    """The job's config: the recipe or the given YAML with data, output and export set."""
    if spec.recipe:
        config = _load_recipe(spec.recipe)
    else:
        try:
            config = _mapping(yaml.safe_load(spec.config_yaml), "config_yaml")
        except yaml.YAMLError as exc:
            raise InvalidArgumentError(f"Argument 'config_yaml' is not valid YAML: {exc}") from exc
    config = dict(config)
    config["output_dir"] = str(output_dir)
    config["data"] = {**(config.get("data") or {}), "root": str(data_root)}
    if spec.stages:
        config["stages"] = list(spec.stages)
    export = dict(config.get("export") or {})
    if spec.model_name:
        export["name"] = spec.model_name
    export.setdefault("name", spec.recipe or "pulmoseg-job")
    config["export"] = export
    return config


def stage_schedule(config: dict[str, Any], stage: str) -> int:
    """Steps of ``stage`` as the config spells them (0 when left to training's defaults)."""
    section = config.get(stage)
    section = section if isinstance(section, dict) else {}
    optim = config.get("optim")
    optim = optim if isinstance(optim, dict) else {}
    epochs = section.get("epochs", optim.get("epochs"))
    per_epoch = section.get("steps_per_epoch", optim.get("steps_per_epoch"))
    if isinstance(epochs, int) and isinstance(per_epoch, int):
        return epochs * per_epoch
    return 0
