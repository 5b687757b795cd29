"""Training-job errors, as subclasses of the core errors so the one status table maps them."""

from __future__ import annotations

from service.core.errors import ModelError, ResourceLimitError, StudyNotFoundError


class JobNotFoundError(StudyNotFoundError):
    """NOT_FOUND: no job (or registry entry) with that id."""


class TrainingUnavailableError(ModelError):
    """FAILED_PRECONDITION: training is disabled by the settings or not installed."""


class JobStateError(ModelError):
    """FAILED_PRECONDITION: the job is not in a state that allows the request."""


class PromotionRefusedError(ModelError):
    """FAILED_PRECONDITION: the candidate is worse than the served model (figures in the text)."""


class QueueFullError(ResourceLimitError):
    """RESOURCE_EXHAUSTED: the bounded job queue is full."""
