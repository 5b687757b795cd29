"""The files of a job folder, ``<training_dir>/jobs/<job id>/``, and their typed contents.

The server writes the job's config and :class:`WorkerJob` (``job.json``) and starts the worker;
the worker trains into the run folder ``train/`` (``service.core.run_folder``) and reports a
:class:`JobResult` (``result.json``), the one thing the server reads to learn the outcome. Files
only, so a server restarted meanwhile reads the same thing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from service.core.run_folder import RunFolder
from service.training_jobs.state import WORKER_OUTCOMES, JobState

#: The job's resolved training config (the recipe or YAML with data, output and export set).
CONFIG_FILE = "config.yaml"
#: What the worker runs (:class:`WorkerJob`).
WORKER_JOB_FILE = "job.json"
#: How the worker ended (:class:`JobResult`).
RESULT_FILE = "result.json"
#: The run folder ``pulmoseg train`` writes.
RUN_DIR = "train"
#: Output of ``pulmoseg train`` and ``pulmoseg export``.
TRAIN_LOG = "train.log"
#: Output of the worker process itself.
WORKER_LOG = "worker.log"


class WorkerJob(BaseModel):
    """What a worker process runs: the job as the server resolved it on submission."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    #: The server's training folder (the registry lies below it).
    training_dir: Path
    #: The dataset folder the job trains on.
    data: Path
    #: The config's stage list ([]: training's default stages).
    stages: list[str] = []
    #: Stop after this many optimisation steps (0: train to the end).
    max_steps: int = 0
    #: The registry name of the exported model.
    model_name: str
    #: The registry version to publish ("": the next integer).
    model_version: str = ""


class JobResult(BaseModel):
    """How a worker ended a job: SUCCEEDED with the published model, or FAILED with why."""

    model_config = ConfigDict(frozen=True)

    state: JobState
    message: str = ""
    model_name: str = ""
    model_version: str = ""
    registry_path: str = ""
    val_voldice: dict[str, float] = {}

    @model_validator(mode="after")
    def _check(self) -> JobResult:
        if self.state not in WORKER_OUTCOMES:
            raise ValueError(
                f"A job result's 'state' must be SUCCEEDED or FAILED, got {self.state.value}."
            )
        if self.state is JobState.SUCCEEDED and not (
            self.model_name and self.model_version and self.registry_path
        ):
            raise ValueError(
                "A SUCCEEDED job result must name 'model_name', 'model_version' and "
                "'registry_path'."
            )
        return self

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED


@dataclass(frozen=True)
class JobFolder:
    """Paths and typed reads/writes of one job folder (see the module docstring)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def worker_job(self) -> Path:
        return self.root / WORKER_JOB_FILE

    @property
    def result(self) -> Path:
        return self.root / RESULT_FILE

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.root / RUN_DIR)

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def worker_log(self) -> Path:
        return self.root / WORKER_LOG

    def write_job(self, job: WorkerJob) -> None:
        self.worker_job.write_text(job.model_dump_json(indent=2) + "\n")

    def read_job(self) -> WorkerJob:
        return WorkerJob.model_validate_json(self.worker_job.read_text())

    def write_result(self, result: JobResult) -> None:
        """Atomically (the server may poll for it while it is written)."""
        temporary = self.root / f".{RESULT_FILE}"
        temporary.write_text(result.model_dump_json(indent=2) + "\n")
        os.replace(temporary, self.result)

    def read_result(self) -> JobResult | None:
        """The worker's result; None while there is none. A malformed file raises ValueError."""
        try:
            text = self.result.read_text()
        except FileNotFoundError:
            return None
        return JobResult.model_validate_json(text)

    def clear_result(self) -> None:
        self.result.unlink(missing_ok=True)
