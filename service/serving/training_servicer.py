"""The TrainingService servicer: submit, get, list, cancel, watch and promote training jobs.

A thin adapter like the quality servicer: it validates, calls the ``JobManager``
(``service.training_jobs``) and maps errors with ``status_for`` only. Promotion lives here
because only the serving layer knows the model folder and its hot swap: an accepted candidate
is copied in as a new version and :attr:`TrainingServicer.reload` (the server's reload, the
SIGHUP path) serves it before the call returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import yaml
from sqlalchemy import Engine

from service.core.errors import InvalidArgumentError, ResourceLimitError
from service.grpc_api import CONFIG_NAME_METADATA
from service.grpc_api import training_pb2 as tpb2
from service.grpc_api import training_pb2_grpc as tpb2_grpc
from service.grpc_api.quality_messages import timestamp
from service.observability.metrics import ServiceMetrics
from service.serving.access import caller_identity
from service.serving.errors import handled_call, status_for
from service.serving.model_versions import list_model_versions
from service.serving.settings import ServiceSettings
from service.training_jobs import registry
from service.training_jobs.audit import AuditLog
from service.training_jobs.datasets import CAPTURED
from service.training_jobs.errors import (
    JobStateError,
    PromotionRefusedError,
    TrainingUnavailableError,
)
from service.training_jobs.manager import JobManager
from service.training_jobs.promotion import Candidate, promote
from service.training_jobs.spec import JobSpec
from service.training_jobs.store import JobRecord, JobState

if TYPE_CHECKING:
    from service.serving.servicer import ServingState

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
DISABLED = (
    "Training jobs are disabled on this server: set the setting 'training.enabled' "
    "(PULMOSEG_TRAINING_ENABLED=true) to use the TrainingService."
)


def progress_message(record: JobRecord) -> tpb2.TrainingProgress:
    p = record.progress
    return tpb2.TrainingProgress(
        job_id=record.job_id,
        state=tpb2.TrainingJobState.Value(record.state.value),
        stage=str(p.get("stage", "")),
        step=int(p.get("step", 0)),
        total_steps=int(p.get("total_steps", 0)),
        epoch=int(p.get("epoch", 0)),
        val_voldice={k: float(v) for k, v in (p.get("val_voldice") or {}).items()},
        message=record.message,
        updated_at=timestamp(record.updated_at),
    )


def promotion_message(data: dict | None) -> tpb2.PromotionRecord | None:
    if not data:
        return None
    return tpb2.PromotionRecord(
        promoted=bool(data["promoted"]),
        candidate_voldice=float(data["candidate_voldice"]),
        serving_voldice=float(data["serving_voldice"]),
        serving_version=str(data["serving_version"]),
        promoted_version=str(data.get("promoted_version", "")),
        message=str(data.get("message", "")),
        decided_at=timestamp(datetime.fromisoformat(data["decided_at"])),
    )


def job_message(record: JobRecord) -> tpb2.TrainingJob:
    s = record.spec
    message = tpb2.TrainingJob(
        job_id=record.job_id,
        spec=tpb2.TrainingJobSpec(
            dataset=s.dataset,
            recipe=s.recipe,
            config_yaml=s.config_yaml,
            stages=s.stages,
            max_steps=s.max_steps,
            model_name=s.model_name,
            model_version=s.model_version,
        ),
        state=tpb2.TrainingJobState.Value(record.state.value),
        progress=progress_message(record),
        created_at=timestamp(record.created_at),
        model_name=record.model_name or "",
        model_version=record.model_version or "",
        registry_path=record.registry_path or "",
        val_voldice=record.val_voldice or {},
        attempts=record.attempts,
    )
    if record.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(record.finished_at))
    promotion = promotion_message(record.promotion)
    if promotion is not None:
        message.promotion.CopyFrom(promotion)
    return message


def _printable(value: object) -> str:
    """A metadata value safe to put in a message (printable, bounded)."""
    text = "" if value is None else str(value)
    return "".join(c for c in text if c.isprintable())[:256]


def _job_id(value: str) -> str:
    text = value.strip()
    if not text or len(text) > 32 or not text.isalnum():
        raise InvalidArgumentError(
            f"Argument 'job_id' must be a job id from SubmitTrainingJob, got {value!r}."
        )
    return text


class TrainingServicer(tpb2_grpc.TrainingServiceServicer):
    """Every unary method runs through :meth:`_call`, the one place errors become statuses."""

    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        state: ServingState,
        manager: JobManager | None,
        audit: AuditLog | None = None,
    ) -> None:
        self._settings = settings
        self._audit = audit
        self._metrics = metrics
        self._state = state
        self._manager = manager
        self._promote_lock = threading.Lock()
        # Each open watch holds a server thread for as long as the job runs: bound them, so
        # watchers can never take the threads that segmentation calls need.
        self._watch_slots = threading.BoundedSemaphore(max(1, settings.limits.max_workers // 4))
        #: Serves the newest version of the model folder (set by build_server).
        self.reload: Callable[[], bool] | None = None

    def _jobs(self) -> JobManager:
        if self._manager is None:
            raise TrainingUnavailableError(DISABLED)
        return self._manager

    def _call(self, method: str, context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        with handled_call(method, context, self._metrics), self._state.drain.call():
            return work()
        raise AssertionError("grpc.ServicerContext.abort returned")  # pragma: no cover

    def _audited(
        self,
        action: str,
        context: grpc.ServicerContext,
        job_id: Callable[[T | None], str],
        work: Callable[[], T],
    ) -> T:
        """Run ``work`` and record who asked and what came of it (also when it is refused)."""
        identity = caller_identity(context, self._settings)
        try:
            result = work()
        except Exception as exc:
            code, message = status_for(exc)
            self._write_audit(action, identity, job_id(None), code.name, message)
            raise
        self._write_audit(action, identity, job_id(result), "OK")
        return result

    def _write_audit(
        self, action: str, identity: str, job_id: str, outcome: str, detail: str = ""
    ) -> None:
        if self._audit is None:
            return
        try:
            self._audit.record(action, identity, job_id, outcome, detail)
        except Exception:  # the call's answer must not depend on the audit table
            logger.exception("could not record the audit entry of %s by %s", action, identity)

    def SubmitTrainingJob(
        self, request: tpb2.SubmitTrainingJobRequest, context: grpc.ServicerContext
    ) -> tpb2.TrainingJob:
        s = request.spec
        spec = JobSpec(
            dataset=s.dataset,
            recipe=s.recipe,
            config_yaml=s.config_yaml,
            stages=list(s.stages),
            max_steps=s.max_steps,
            model_name=s.model_name,
            model_version=s.model_version,
        )
        metadata = dict(context.invocation_metadata() or ())
        config_name = _printable(metadata.get(CONFIG_NAME_METADATA))

        def work() -> tpb2.TrainingJob:
            return job_message(self._jobs().submit(spec, config_name))

        return self._call(
            "SubmitTrainingJob",
            context,
            lambda: self._audited(
                "submit", context, lambda job: job.job_id if job is not None else "", work
            ),
        )

    def GetTrainingJob(
        self, request: tpb2.GetTrainingJobRequest, context: grpc.ServicerContext
    ) -> tpb2.TrainingJob:
        return self._call(
            "GetTrainingJob",
            context,
            lambda: job_message(self._jobs().store.get(_job_id(request.job_id))),
        )

    def ListTrainingJobs(
        self, request: tpb2.ListTrainingJobsRequest, context: grpc.ServicerContext
    ) -> tpb2.ListTrainingJobsResponse:
        def work() -> tpb2.ListTrainingJobsResponse:
            try:
                jobs, token = self._jobs().store.list(
                    request.page_size or DEFAULT_PAGE_SIZE, request.page_token
                )
            except ValueError as exc:
                raise InvalidArgumentError(str(exc)) from exc
            return tpb2.ListTrainingJobsResponse(
                jobs=[job_message(j) for j in jobs], next_page_token=token
            )

        return self._call("ListTrainingJobs", context, work)

    def CancelTrainingJob(
        self, request: tpb2.CancelTrainingJobRequest, context: grpc.ServicerContext
    ) -> tpb2.TrainingJob:
        return self._call(
            "CancelTrainingJob",
            context,
            lambda: self._audited(
                "cancel",
                context,
                lambda _job: request.job_id[:64],
                lambda: job_message(self._jobs().cancel(_job_id(request.job_id))),
            ),
        )

    def WatchTrainingJob(
        self, request: tpb2.WatchTrainingJobRequest, context: grpc.ServicerContext
    ) -> Iterator[tpb2.TrainingProgress]:
        # Not counted by the drain: a watch may last hours and must not hold up a stop.
        slot = False
        with handled_call("WatchTrainingJob", context, self._metrics):
            try:
                manager = self._jobs()
                job_id = _job_id(request.job_id)
                slot = self._watch_slots.acquire(blocking=False)
                if not slot:
                    raise ResourceLimitError(
                        f"Too many WatchTrainingJob streams are open on this server (at most "
                        f"{max(1, self._settings.limits.max_workers // 4)}, a quarter of "
                        "limits.max_workers); "
                        "poll GetTrainingJob instead."
                    )
                for record in manager.watch(job_id, context.is_active):
                    yield progress_message(record)
            finally:
                if slot:
                    self._watch_slots.release()

    def PromoteModel(
        self, request: tpb2.PromoteModelRequest, context: grpc.ServicerContext
    ) -> tpb2.PromotionResult:
        target = request.job_id or f"{request.model_name} {request.model_version}".strip()
        return self._call(
            "PromoteModel",
            context,
            lambda: self._audited(
                "promote", context, lambda _answer: target[:64], lambda: self._promote(request)
            ),
        )

    # -- promotion -----------------------------------------------------------------------------
    def _candidate(self, request: tpb2.PromoteModelRequest) -> Candidate:
        manager = self._jobs()
        if request.job_id:
            record = manager.store.get(_job_id(request.job_id))
            if record.state is not JobState.SUCCEEDED or not record.model_name:
                raise JobStateError(
                    f"Training job {record.job_id!r} is {record.state.value}; only a job that "
                    "succeeded has a model to promote."
                )
            name, version = record.model_name, record.model_version or ""
        elif request.model_name and request.model_version:
            name, version = request.model_name, request.model_version
        else:
            raise InvalidArgumentError(
                "Pass 'job_id', or 'model_name' and 'model_version' of a registry entry."
            )
        model, meta = registry.entry(manager.training_dir, name, version)
        if "data" not in meta or "config" not in meta:
            raise JobStateError(
                f"Registry entry {name} {version} has no job.json naming its validation data."
            )
        return Candidate(
            job_id=str(meta.get("job_id", request.job_id)),
            model_name=name,
            model_version=version,
            model=model,
            data=Path(meta["data"]),
            config=yaml.safe_load(meta["config"]) or {},
            own_voldice={k: float(v) for k, v in (meta.get("validation_voldice") or {}).items()},
        )

    def _serving_dir(self) -> Path:
        path = self._settings.model_path
        if path is None or not Path(path).is_dir():
            raise JobStateError(
                f"The served model '{path}' is a single file; promotion needs a model folder of "
                "versions (setting 'model_path' naming a folder with <version>/model.onnx)."
            )
        return Path(path)

    def _reference_set(self) -> Path:
        """The site-held data promotion is decided on (setting 'training.reference_set')."""
        chosen = self._settings.training.reference_set
        if not chosen:
            raise JobStateError(
                "Promotion is decided on a site-held reference set and this server has none: "
                "set 'training.reference_set' (PULMOSEG_TRAINING_REFERENCE_SET) to a dataset "
                "folder with a manifest.json, or 'captured'."
            )
        if chosen.strip() == CAPTURED:
            if self._settings.capture.dir is None:
                raise JobStateError(
                    "Setting 'training.reference_set' is 'captured' but 'capture.dir' is unset."
                )
            return Path(self._settings.capture.dir)
        return Path(chosen).expanduser()

    def _promote(self, request: tpb2.PromoteModelRequest) -> tpb2.PromotionResult:
        serving_dir = self._serving_dir()
        reference = self._reference_set()
        candidate = self._candidate(request)
        with self._promote_lock:
            versions = list_model_versions(serving_dir)
            served = next(
                (v for v in versions if v.version == self._state.serving_version),
                versions[-1] if versions else None,
            )
            if served is None:
                raise JobStateError(f"The serving model folder '{serving_dir}' holds no version.")
            numbers = [int(v.version) for v in versions if v.version.isdigit()]
            new_version = str(max(numbers, default=0) + 1)
            decision, installed = promote(
                candidate, served.version, served.path, serving_dir, new_version, reference
            )
            swapped = bool(installed) and self.reload is not None and self.reload()
            record = {
                "promoted": decision.promoted,
                "candidate_voldice": decision.candidate,
                "serving_voldice": decision.serving,
                "serving_version": served.version,
                "promoted_version": installed,
                "message": decision.message
                + (f"; now served as version {installed}" if swapped else ""),
                "decided_at": datetime.now(UTC).isoformat(),
            }
            self._record(candidate.job_id, record)
        logger.info(
            "promotion of %s %s: %s",
            candidate.model_name,
            candidate.model_version,
            record["message"],
        )
        if not decision.promoted:
            raise PromotionRefusedError(f"Promotion refused: {decision.message}.")
        message = promotion_message(record)
        return tpb2.PromotionResult(
            job_id=candidate.job_id,
            model_name=candidate.model_name,
            model_version=candidate.model_version,
            record=message,
        )

    def _record(self, job_id: str, record: dict) -> None:
        manager = self._jobs()
        try:
            manager.store.update(job_id, promotion=record)
        except Exception:  # a registry entry whose job record is gone: the log keeps it
            logger.info("promotion not recorded: no job record %s", job_id)


def open_job_manager(settings: ServiceSettings, engine: Engine) -> JobManager | None:
    """The job manager when ``training.enabled`` is set (None otherwise)."""
    if not settings.training.enabled:
        return None
    from service.training_jobs.store import JobStore

    return JobManager(
        JobStore(engine),
        settings.training.dir,
        capture_dir=settings.capture.dir,
        data_root=settings.training.data_root,
        max_queued=settings.training.max_queued,
        max_running=settings.training.max_running,
    )
