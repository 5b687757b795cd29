"""The job queue: accepts jobs, runs at most ``max_running`` worker processes, follows their
progress, cancels them, and picks them up again after a server restart.

One scheduler thread does all the following (every ``poll_s`` or when woken): it reads the
progress of running jobs from their files, records the outcome of workers that ended
(``result.json``), and starts queued jobs. State changes happen under one lock, so a cancel
never races the scheduler. Restart survival needs no special path: a RUNNING job whose process
still runs (pid + token on its command line) is followed as before; one whose process ended
without a result is queued again and its worker resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from service.training_jobs import registry
from service.training_jobs.datasets import resolve_dataset
from service.training_jobs.errors import (
    JobStateError,
    QueueFullError,
    TrainingUnavailableError,
)
from service.training_jobs.job_files import RUN_DIR, JobFolder, JobResult, WorkerJob
from service.training_jobs.process import is_job_process, start_worker, terminate_group
from service.training_jobs.progress import read_progress
from service.training_jobs.spec import JobSpec, resolved_config, training_available, validate
from service.training_jobs.state import FINISHED, JobState
from service.training_jobs.store import JobRecord, JobStore
from service.training_jobs.worker import log_tail

logger = logging.getLogger(__name__)

#: A job whose process ends without a result this many times is marked FAILED, not re-queued.
MAX_ATTEMPTS = 3
NOT_INSTALLED = (
    "Training is not installed in this image: the server needs pulmoseg[train] (torch and the "
    "training package) to run training jobs."
)


class JobManager:
    """Submit, cancel, follow and schedule training jobs (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        training_dir: Path,
        *,
        capture_dir: Path | None = None,
        data_root: Path | None = None,
        max_queued: int = 4,
        max_running: int = 1,
        poll_s: float = 0.5,
    ) -> None:
        self.store = store
        self.training_dir = Path(training_dir).resolve()
        self.jobs_root = self.training_dir / "jobs"
        self._capture_dir = capture_dir
        self._data_root = data_root
        self._max_queued = max_queued
        self._max_running = max_running
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile what the store says with what runs, then schedule in the background."""
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="pulmoseg-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; running jobs keep running and are picked up by the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.tick()
            except Exception:  # the scheduler must outlive one bad job
                logger.exception("training job scheduler tick failed")

    # -- requests ------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, config_name: str = "") -> JobRecord:
        """Check everything a job needs (spec, dataset, config, step limit), then queue it;
        ``config_name`` is the user's file name that messages give for an inline config."""
        if not training_available():
            raise TrainingUnavailableError(NOT_INSTALLED)
        validate(spec)
        data = resolve_dataset(
            spec.dataset, data_root=self._data_root, capture_dir=self._capture_dir
        )
        config = resolved_config(spec, data, Path(RUN_DIR), config_name)
        with self._lock:
            queued = self.store.count(JobState.QUEUED)
            if queued >= self._max_queued:
                raise QueueFullError(
                    f"The training queue is full ({queued} jobs queued, setting "
                    f"'training_max_queued' is {self._max_queued}); retry when a job has started."
                )
            record = self.store.create(spec, str(self.jobs_root))
            folder = JobFolder(Path(record.work_dir))
            folder.root.mkdir(parents=True)
            config["output_dir"] = str(folder.run.root)
            folder.config.write_text(yaml.safe_dump(config, sort_keys=False))
            folder.write_job(
                WorkerJob(
                    job_id=record.job_id,
                    training_dir=self.training_dir,
                    data=data,
                    stages=list(config.get("stages") or []),
                    max_steps=spec.max_steps,
                    model_name=config["export"]["name"],
                    model_version=spec.model_version,
                )
            )
        logger.info("training job %s queued (%s)", record.job_id, spec.recipe or "inline config")
        self._wake.set()
        return record

    def cancel(self, job_id: str) -> JobRecord:
        with self._lock:
            record = self.store.get(job_id)
            if record.state is JobState.RUNNING:  # it may have just ended: record that first
                self._follow(record)
                record = self.store.get(job_id)
            if record.state in FINISHED:
                raise JobStateError(
                    f"Training job {job_id!r} has already ended ({record.state.value}); only "
                    "queued or running jobs can be cancelled."
                )
            if record.state is JobState.RUNNING and record.pid and record.token:
                terminate_group(record.pid, record.token)
            child = self._children.pop(job_id, None)
            if child is not None:
                child.wait()
            shutil.rmtree(record.work_dir, ignore_errors=True)
            registry.remove_partials(self.training_dir, job_id)
            self._configs.pop(job_id, None)
            logger.info("training job %s cancelled; its files are deleted", job_id)
            return self.store.update(
                job_id, state=JobState.CANCELLED, pid=None, message="cancelled"
            )

    def watch(
        self, job_id: str, is_active: Callable[[], bool], poll_s: float = 0.25
    ) -> Iterator[JobRecord]:
        """The job now, then each time its state or progress changes, until it ends."""
        last: tuple[Any, ...] | None = None
        while is_active():
            record = self.store.get(job_id)
            key = (record.state, json.dumps(record.progress, sort_keys=True), record.message)
            if key != last:
                last = key
                yield record
            if record.state in FINISHED:
                return
            time.sleep(poll_s)

    # -- scheduling ----------------------------------------------------------------------------
    def tick(self) -> None:
        """One pass: follow running jobs, record ended ones, start queued ones."""
        with self._lock:
            for record in self.store.in_state(JobState.RUNNING):
                self._guarded(record, self._follow)
            running = self.store.count(JobState.RUNNING)
            for record in self.store.in_state(JobState.QUEUED):
                if running >= self._max_running or self._stopping.is_set():
                    break
                if self._guarded(record, self._start):
                    running += 1

    def _guarded(self, record: JobRecord, step: Callable[[JobRecord], None]) -> bool:
        """Run one job's step; a job whose files are broken (e.g. its folder was deleted by
        hand) is FAILED with the reason instead of stopping the scheduler."""
        try:
            step(record)
            return True
        except (OSError, ValueError) as exc:
            logger.warning("training job %s failed: %s", record.job_id, exc)
            if record.pid and record.token:
                terminate_group(record.pid, record.token)
            child = self._children.pop(record.job_id, None)
            if child is not None:
                child.wait()
            self.store.update(
                record.job_id, state=JobState.FAILED, pid=None, message=f"{exc}"[-4000:]
            )
            return False

    def _alive(self, record: JobRecord) -> bool:
        child = self._children.get(record.job_id)
        if child is not None:
            return child.poll() is None
        return is_job_process(record.pid, record.token)

    def _config(self, record: JobRecord) -> dict[str, Any]:
        if record.job_id not in self._configs:
            path = JobFolder(Path(record.work_dir)).config
            self._configs[record.job_id] = yaml.safe_load(path.read_text()) or {}
        return self._configs[record.job_id]

    def _follow(self, record: JobRecord) -> None:
        folder = JobFolder(Path(record.work_dir))
        alive = self._alive(record)
        progress = read_progress(folder.run, self._config(record))
        if progress and progress != record.progress:
            record = self.store.update(record.job_id, progress=progress)
        if alive:
            return
        self._children.pop(record.job_id, None)
        result = folder.read_result()
        if result is not None:
            self._finish(record, result)
        elif record.attempts < MAX_ATTEMPTS:
            logger.warning(
                "training job %s: its process ended without a result; re-queued to "
                "resume from its last checkpoint",
                record.job_id,
            )
            self.store.update(
                record.job_id,
                state=JobState.QUEUED,
                pid=None,
                message="re-queued: its process ended without a result (server restart?); it "
                "resumes from its last checkpoint",
            )
        else:
            tail = log_tail(folder.train_log) or log_tail(folder.worker_log)
            self.store.update(
                record.job_id,
                state=JobState.FAILED,
                pid=None,
                message=f"its process ended without a result {record.attempts} times:\n{tail}",
            )

    def _finish(self, record: JobRecord, result: JobResult) -> None:
        self._configs.pop(record.job_id, None)
        if result.succeeded:
            logger.info(
                "training job %s succeeded: %s %s",
                record.job_id,
                result.model_name,
                result.model_version,
            )
            self.store.update(
                record.job_id,
                state=JobState.SUCCEEDED,
                pid=None,
                message="succeeded",
                model_name=result.model_name,
                model_version=result.model_version,
                registry_path=result.registry_path,
                val_voldice=dict(result.val_voldice),
            )
            return
        registry.remove_partials(self.training_dir, record.job_id)
        logger.warning("training job %s failed", record.job_id)
        self.store.update(
            record.job_id,
            state=JobState.FAILED,
            pid=None,
            message=(result.message or "failed")[-4000:],
        )

    def _start(self, record: JobRecord) -> None:
        folder = JobFolder(Path(record.work_dir))
        folder.clear_result()
        token = uuid.uuid4().hex
        child = start_worker(folder, token)
        self._children[record.job_id] = child
        self.store.update(
            record.job_id,
            state=JobState.RUNNING,
            pid=child.pid,
            token=token,
            attempts=record.attempts + 1,
            message="running" if record.attempts == 0 else "running (resumed)",
        )
        logger.info("training job %s started (pid %d)", record.job_id, child.pid)
