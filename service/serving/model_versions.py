"""Model versions in a directory, and which one to serve.

``model_path`` may name one ``.onnx`` file (one version) or a directory of versions, laid out as
Triton does (``<dir>/<version>/model.onnx``) or flat (``<dir>/<version>.onnx``). The newest
version — by natural order, so ``10`` comes after ``9`` and ``1.10.0`` after ``1.9.2`` — is the
one to serve; a new version placed there is picked up by a reload (SIGHUP). Nothing here loads
a model: this module only names files, so listing stays cheap for GetModelInfo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.core.errors import ModelError

MODEL_FILE_NAME = "model.onnx"


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path


def _natural_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", version)
        if part
    )


def list_model_versions(model_path: str | Path) -> list[ModelVersion]:
    """Versions oldest to newest; a single file is one version named by its file name."""
    root = Path(model_path)
    if root.is_file():
        return [ModelVersion(root.name, root)]
    if not root.is_dir():
        raise ModelError(f"Model path '{root}' does not exist.")
    found: list[ModelVersion] = []
    for child in root.iterdir():
        if child.name.startswith("."):
            continue  # e.g. a version still being copied in as '.3'
        if child.is_dir() and (child / MODEL_FILE_NAME).is_file():
            found.append(ModelVersion(child.name, child / MODEL_FILE_NAME))
        elif child.is_file() and child.suffix == ".onnx":
            found.append(ModelVersion(child.stem, child))
    return sorted(found, key=lambda v: _natural_key(v.version))


def newest_model_version(model_path: str | Path) -> ModelVersion:
    """The version to serve; ModelError naming the layouts when the directory holds none."""
    versions = list_model_versions(model_path)
    if not versions:
        raise ModelError(
            f"Model directory '{model_path}' holds no model version: expected "
            f"'<version>/{MODEL_FILE_NAME}' folders or '<version>.onnx' files."
        )
    return versions[-1]
