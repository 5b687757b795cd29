"""The one exception of the client: a sentence for the user, the gRPC status for the code.

It lives apart from the client so the retry policy (:mod:`service.client.retry`) can decide on
it without importing the client, and callers (the CLI, the PACS worker) can catch it without
knowing which call raised it.
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """A call failed; ``str(error)`` is one sentence for the user, ``code`` the gRPC status.

    ``code`` is None when no status came with the failure: a local problem (a study file that
    cannot be read) or an answer that broke a rule of the API (a corrupt SEG, no summary).
    ``answered`` is True when the server had begun answering (progress, SEG chunks) before the
    call failed: the study was accepted and perhaps partly processed, and the caller may have
    shown its progress, so the client does not send that call again on its own.
    """

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, *, answered: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.answered = answered
