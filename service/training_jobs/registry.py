"""The model registry: ``<training_dir>/registry/<model_name>/<version>/`` with ``model.onnx``
and ``job.json`` (:class:`RegistryEntry`). A version appears by one rename of a finished folder,
so a reader never sees half an entry; unfinished entries are hidden folders (``.job-<id>``) that
a cancel deletes."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from service.core.errors import InvalidArgumentError
from service.training_jobs.errors import JobNotFoundError

#: What made an entry (:class:`RegistryEntry`); not the job folder's ``job.json``
#: (``service.training_jobs.job_files.WORKER_JOB_FILE``), though it has the same name on disk.
REGISTRY_ENTRY_FILE = "job.json"
#: As in the serving model folder (service.serving.model_versions), so an entry copies as is.
MODEL_FILE_NAME = "model.onnx"


class RegistryEntry(BaseModel):
    """The job that made a registry entry: what promotion needs to score it again."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    model_name: str
    model_version: str
    #: The dataset folder the job trained and validated on.
    data: str
    #: The job's resolved config (YAML text).
    config: str
    #: The checkpoint that was exported.
    checkpoint: str
    validation_voldice: dict[str, float]
    created_at: datetime

    def write(self, folder: Path) -> None:
        (folder / REGISTRY_ENTRY_FILE).write_text(self.model_dump_json(indent=2) + "\n")


def registry_root(training_dir: Path) -> Path:
    return Path(training_dir) / "registry"


def partial_dir(training_dir: Path, model_name: str, job_id: str) -> Path:
    return registry_root(training_dir) / model_name / f".job-{job_id}"


def next_version(model_dir: Path) -> str:
    """One more than the largest integer version (``1`` for a new model)."""
    numbers = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return str(max(numbers, default=0) + 1)


def publish(partial: Path, model_dir: Path, version: str) -> Path:
    """Rename the finished ``partial`` folder to its version; refuse an existing version."""
    target = model_dir / version
    if target.exists():
        raise InvalidArgumentError(
            f"Argument 'model_version' {version!r} already exists in the registry at '{target}'."
        )
    partial.rename(target)
    return target


def entry(training_dir: Path, model_name: str, version: str) -> tuple[Path, dict[str, Any]]:
    """The model file and ``job.json`` (as a dict; {} when absent) of a registry entry;
    NOT_FOUND when absent."""
    folder = registry_root(training_dir) / model_name / version
    model = folder / MODEL_FILE_NAME
    if not model.is_file():
        raise JobNotFoundError(
            f"No registry entry {model_name!r} version {version!r} under "
            f"'{registry_root(training_dir)}'."
        )
    job = folder / REGISTRY_ENTRY_FILE
    return model, json.loads(job.read_text()) if job.is_file() else {}


def remove_partials(training_dir: Path, job_id: str) -> None:
    """Delete everything ``job_id`` put in the registry: its unfinished folder, and a version
    it published just before it was cancelled (found by the job id in ``job.json``)."""
    root = registry_root(training_dir)
    for partial in root.glob(f"*/.job-{job_id}"):
        shutil.rmtree(partial, ignore_errors=True)
    for job_file in root.glob(f"*/*/{REGISTRY_ENTRY_FILE}"):
        try:
            owner = json.loads(job_file.read_text()).get("job_id")
        except (OSError, ValueError):
            continue
        if owner == job_id:
            shutil.rmtree(job_file.parent, ignore_errors=True)
