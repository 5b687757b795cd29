"""Domain exceptions -> gRPC status codes, in one table.

Servicer code raises exceptions that say what went wrong (``service.core.errors``);
:func:`status_for` is the only place that picks a status code and the details string.
Unexpected exceptions become INTERNAL with a generic message: the traceback goes to the server
log only, so internals (and any data they might hold) never reach a client.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import grpc

from service.core.errors import (  # re-exported: servicer code imports them from here too
    AuthenticationError,
    InvalidArgumentError,
    InvalidReferenceError,
    InvalidStudyError,
    ModelError,
    PermissionDeniedError,
    ResourceLimitError,
    ServiceNotReadyError,
    StudyNotApplicableError,
    StudyNotFoundError,
    UnsupportedRequestError,
)

logger = logging.getLogger(__name__)


#: Ordered: the first matching class wins, so subclasses come before their bases.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidReferenceError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidStudyError, grpc.StatusCode.INVALID_ARGUMENT),
    (StudyNotFoundError, grpc.StatusCode.NOT_FOUND),
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (ServiceNotReadyError, grpc.StatusCode.UNAVAILABLE),
    (ModelError, grpc.StatusCode.FAILED_PRECONDITION),
    # The input is a valid CT but outside the model's range, and the policy is "refuse".
    (StudyNotApplicableError, grpc.StatusCode.FAILED_PRECONDITION),
    (concurrent.futures.CancelledError, grpc.StatusCode.CANCELLED),
    (ResourceLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (UnsupportedRequestError, grpc.StatusCode.UNIMPLEMENTED),
)

INTERNAL_DETAILS = (
    "Internal server error while processing the request; the server log has the details."
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details string a client should see for ``exc``."""
    for exc_type, code in STATUS_TABLE:
        if isinstance(exc, exc_type):
            details = str(exc) or f"{type(exc).__name__} ({code.name})"
            return code, details
    return grpc.StatusCode.INTERNAL, INTERNAL_DETAILS


def error_reason(exc: BaseException) -> str:
    """A bounded label for the errors metric: the matched table entry's class in snake case."""
    for exc_type, _ in STATUS_TABLE:
        if isinstance(exc, exc_type):
            name = exc_type.__name__.removesuffix("Error")
            return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return "internal"


def log_failure(method: str, exc: BaseException, code: grpc.StatusCode) -> None:
    """Expected failures log one line; unexpected ones log the traceback."""
    if code is grpc.StatusCode.INTERNAL:
        logger.error("%s failed unexpectedly", method, exc_info=exc)
    elif code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAUTHENTICATED):
        logger.info("%s ended with %s: %s", method, code.name, exc)
    else:
        logger.warning("%s rejected with %s: %s", method, code.name, exc)


class _CallMetrics(Protocol):
    def record_error(self, method: str, reason: str) -> None: ...
    def record_request(self, method: str, code: str) -> None: ...


@contextmanager
def handled_call(
    method: str, context: grpc.ServicerContext, metrics: _CallMetrics
) -> Iterator[None]:
    """The body of one RPC: an exception becomes its status (the table above) with the
    message, is logged and counted; every call is counted with its final code."""
    code = grpc.StatusCode.OK
    try:
        yield
    except Exception as exc:
        code, details = status_for(exc)
        log_failure(method, exc, code)
        metrics.record_error(method, error_reason(exc))
        context.abort(code, details)
    finally:
        metrics.record_request(method, code.name)
