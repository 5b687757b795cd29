"""The states of a training job, as the store keeps them and ``result.json`` reports them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
#: The states a worker process can end a job in (``result.json``); cancelling is the server's.
WORKER_OUTCOMES = frozenset({JobState.SUCCEEDED, JobState.FAILED})
