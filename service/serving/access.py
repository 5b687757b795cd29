"""Who may call what: bearer tokens per service, the promote credential, the start-up rule that
training is never open to anyone who reaches the port, and the caller identity audits record.

Credentials:

- ``auth_token`` (segmentation clients): every pulmoseg.v1 method when set.
- ``training.promote_token``: PromoteModel needs it, and nothing else opens PromoteModel — a
  segmentation client cannot replace the clinical model (PERMISSION_DENIED). It also opens the
  other TrainingService methods (an operator submits and promotes with one credential).
- mTLS (``tls.client_ca``): the transport authenticates; the certificate subject is the identity.

With training on, a server that authenticates nobody (no ``auth_token``, no mTLS) refuses to
start, unless ``training.allow_unauthenticated`` (development) is set and it binds loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import grpc

from service.core.errors import AuthenticationError, PermissionDeniedError, PulmosegError
from service.grpc_api import QUALITY_SERVICE_NAME, SERVICE_NAME
from service.observability.metrics import ServiceMetrics
from service.serving.errors import log_failure, status_for
from service.serving.settings import ServiceSettings
from service.training_jobs.audit import AuditLog

logger = logging.getLogger(__name__)

TRAINING_SERVICE_NAME = "pulmoseg.v1.TrainingService"
PROMOTE_METHOD = f"/{TRAINING_SERVICE_NAME}/PromoteModel"
#: The identity of a caller holding each token (the setting's name: never the secret).
AUTH_TOKEN_IDENTITY = "token:auth_token"
PROMOTE_TOKEN_IDENTITY = "token:training.promote_token"
_LOOPBACK_NAMES = ("localhost",)
#: The TrainingService methods whose every attempt is audited, and their action names.
AUDITED_METHODS = {
    "SubmitTrainingJob": "submit",
    "CancelTrainingJob": "cancel",
    "PromoteModel": "promote",
}


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authenticates(settings: ServiceSettings) -> str:
    """How the server authenticates callers ("" when it does not)."""
    ways = []
    if settings.auth_token:
        ways.append("bearer token")
    if settings.tls.client_ca is not None:
        ways.append("mTLS client certificates")
    return " and ".join(ways)


def check_training_access(settings: ServiceSettings) -> None:
    """Refuse to start a training server that anyone reaching the port could use."""
    training = settings.training
    if not training.enabled:
        return
    if training.promote_token and training.promote_token == settings.auth_token:
        raise ValueError(
            "Setting 'training.promote_token' must differ from 'auth_token': the promote "
            "credential is what keeps segmentation clients from replacing the served model."
        )
    if authenticates(settings):
        return
    if not training.allow_unauthenticated:
        raise ValueError(
            "Training is on ('training.enabled') but the server authenticates nobody: set "
            "'auth_token' (PULMOSEG_AUTH_TOKEN) or mTLS ('tls.client_ca'), or, for development "
            "on loopback only, 'training.allow_unauthenticated' "
            "(PULMOSEG_TRAINING_ALLOW_UNAUTHENTICATED=true)."
        )
    if not is_loopback(settings.host):
        raise ValueError(
            "Setting 'training.allow_unauthenticated' is for development on loopback only, but "
            f"'host' is {settings.host!r}: set 'auth_token' or mTLS, or bind 127.0.0.1."
        )


def describe_training(settings: ServiceSettings) -> tuple[int, str]:
    """The start-up log line about the TrainingService, and its level (WARNING when open)."""
    training = settings.training
    if not training.enabled:
        return logging.INFO, "training service off (setting 'training.enabled')"
    auth = authenticates(settings)
    data = f"datasets under '{training.data_root}'" if training.data_root else "no data root"
    if settings.capture.dir is not None:
        data += " and 'captured'"
    text = (
        f"training service on: jobs in '{training.dir}', {data}, at most "
        f"{training.max_queued} queued / {training.max_running} running; promotion "
        + (
            f"decided on the reference set '{training.reference_set}'"
            if training.reference_set
            else "off (no 'training.reference_set')"
        )
        + (
            ", needs 'training.promote_token'"
            if training.promote_token
            else ", no 'training.promote_token'"
        )
    )
    if auth:
        return logging.INFO, f"{text}; callers authenticated by {auth}"
    return (
        logging.WARNING,
        f"{text}; no 'auth_token' and no mTLS: anyone on this host can train and "
        "promote ('training.allow_unauthenticated', development only)",
    )


def caller_identity(context: grpc.ServicerContext, settings: ServiceSettings) -> str:
    """Who made this call, for the audit: the token's setting name, the certificate subject, or
    ``anonymous`` with the peer address."""
    given = dict(context.invocation_metadata() or ()).get("authorization")
    if given is not None:
        text = str(given)
        if settings.training.promote_token and _matches(text, settings.training.promote_token):
            return PROMOTE_TOKEN_IDENTITY
        if settings.auth_token and _matches(text, settings.auth_token):
            return AUTH_TOKEN_IDENTITY
    auth = context.auth_context() or {}
    for key in ("x509_subject", "x509_common_name"):
        if auth.get(key):
            return f"cert:{b','.join(auth[key]).decode(errors='replace')}"
    return f"anonymous ({context.peer()})"


def _matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


class AccessInterceptor(grpc.ServerInterceptor):
    """Checks the bearer token of pulmoseg.v1 calls (see the module docstring).

    Health checks and reflection stay open so probes work without the secret.
    """

    def __init__(
        self, settings: ServiceSettings, metrics: ServiceMetrics, audit: AuditLog | None = None
    ) -> None:
        self._audit = audit
        self._auth = settings.auth_token
        training = settings.training
        self._promote = training.promote_token if training.enabled else None
        #: Promotion with no promote token configured: only in development mode.
        self._open_promotion = training.enabled and training.allow_unauthenticated
        self._guards_promotion = training.enabled
        self._metrics = metrics
        self._prefixes = (
            f"/{SERVICE_NAME}/",
            f"/{QUALITY_SERVICE_NAME}/",
            f"/{TRAINING_SERVICE_NAME}/",
        )

    def _record_refusal(self, method: str, given: str | None, code: str, message: str) -> None:
        """Submit, cancel and promote attempts are audited even when refused here."""
        action = AUDITED_METHODS.get(method)
        if self._audit is None or action is None:
            return
        if given is None:
            identity = "anonymous"
        elif self._auth and _matches(given, self._auth):
            identity = AUTH_TOKEN_IDENTITY
        else:
            identity = "token:unknown"
        try:
            self._audit.record(action, identity, "", code, message)
        except Exception:  # the refusal stands whether or not the table takes the row
            logger.exception("could not record the audit entry of a refused %s", method)

    @staticmethod
    def needed(settings: ServiceSettings) -> bool:
        return bool(settings.auth_token) or settings.training.enabled

    def _refusal(self, method: str, given: str | None) -> PulmosegError | None:
        if method == PROMOTE_METHOD and self._guards_promotion:
            if self._promote is None:
                if self._open_promotion and not self._auth:
                    return None
                return PermissionDeniedError(
                    "PromoteModel needs its own credential and this server has none: set "
                    "'training.promote_token' (PULMOSEG_TRAINING_PROMOTE_TOKEN)."
                )
            if given is not None and _matches(given, self._promote):
                return None
            if given is None:
                return AuthenticationError(
                    "PromoteModel requires metadata 'authorization: Bearer <promote token>' "
                    "(setting 'training.promote_token'); none was sent."
                )
            if self._auth and _matches(given, self._auth):
                return PermissionDeniedError(
                    "The segmentation token ('auth_token') may not promote models: PromoteModel "
                    "needs the promote token (setting 'training.promote_token')."
                )
            return AuthenticationError(
                "The promote token in the 'authorization' metadata is not valid."
            )
        if not self._auth:
            return None
        if given is not None and _matches(given, self._auth):
            return None
        training = method.startswith(f"/{TRAINING_SERVICE_NAME}/")
        if training and given is not None and self._promote and _matches(given, self._promote):
            return None
        return AuthenticationError(
            "This server requires metadata 'authorization: Bearer <token>'; none was sent."
            if given is None
            else "The bearer token in the 'authorization' metadata is not valid."
        )

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if not details.method.startswith(self._prefixes):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization")
        error = self._refusal(details.method, None if given is None else str(given))
        if error is None:
            return continuation(details)
        code, message = status_for(error)
        method = details.method.rsplit("/", 1)[-1]
        log_failure(method, error, code)
        self._metrics.record_request(method, code.name)
        self._record_refusal(method, None if given is None else str(given), code.name, message)

        def deny(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(code, message)

        handler = continuation(details)
        if handler is not None and handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler is not None and handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler is not None and handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)
