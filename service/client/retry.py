"""One retry policy for the calls that carry a study: which answers mean "not now", how long to
wait before the next attempt, how many attempts in all, and within which deadline.

Decisions are made on gRPC status codes only, never on the wording of a message: an
unreachable server, one that is restarting or draining and one still loading its model all
answer UNAVAILABLE, and all of them may answer differently a little later.

There is one layer of retries, with one budget:

* :meth:`RetryPolicy.run` drives :meth:`~service.client.client.SegmentationClient.segment_files`:
  attempts seconds apart, all inside the deadline the caller gave the client (``timeout_s``).
* The PACS worker (:mod:`service.pacs.worker`) applies the same policy across its passes:
  attempts minutes apart, each recorded in the spool so a gateway restart does not reset the
  budget, and each with a fresh deadline. Its policy is built from its settings
  (``max_attempts``, ``retry_initial_delay_s``, ``retry_max_delay_s``) and its client makes a
  single attempt per pass, so the two loops never multiply.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from service.client.errors import ClientError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Codes that mean "not now" rather than "not this": the same request may succeed later.
#: UNAVAILABLE: the server is unreachable, restarting, draining or still loading its model;
#: RESOURCE_EXHAUSTED: its wait queue is full; DEADLINE_EXCEEDED: it was too slow this time
#: (retried only while the caller's deadline leaves room for another attempt, so in practice
#: by the PACS worker, whose attempts each get a deadline of their own).
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

#: Each wait is the exponential step times a random factor in (1 - JITTER, 1]: clients refused
#: together (a server restart) come back spread out, yet never sooner than half the step.
JITTER = 0.5

#: ``rng() -> float`` in [0, 1); tests pass a constant to pin the jitter.
Random = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """Retryable codes, exponential back-off with jitter and an attempt budget.

    ``max_attempts`` counts every attempt, the first included (1: never retry). The step
    before attempt ``n + 1`` is ``initial_backoff_s * multiplier ** (n - 1)``, capped at
    ``max_backoff_s``, then jittered down by up to :data:`JITTER`.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = RETRYABLE_CODES

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(
                f"Argument 'max_attempts' must be an int, got {type(self.max_attempts).__name__}."
            )
        if self.max_attempts < 1:
            raise ValueError(f"Argument 'max_attempts' must be >= 1, got {self.max_attempts}.")
        if not self.initial_backoff_s > 0:
            raise ValueError(
                f"Argument 'initial_backoff_s' must be > 0 seconds, got {self.initial_backoff_s}."
            )
        if not self.max_backoff_s >= self.initial_backoff_s:
            raise ValueError(
                f"Argument 'max_backoff_s' ({self.max_backoff_s}) must be >= "
                f"'initial_backoff_s' ({self.initial_backoff_s})."
            )
        if not self.multiplier >= 1:
            raise ValueError(f"Argument 'multiplier' must be >= 1, got {self.multiplier}.")
        strays = [c for c in self.retryable_codes if not isinstance(c, grpc.StatusCode)]
        if strays or grpc.StatusCode.OK in self.retryable_codes:
            raise ValueError(
                "Argument 'retryable_codes' must hold grpc.StatusCode failures (not OK), "
                f"got {sorted(map(str, self.retryable_codes))}."
            )

    def is_retryable(self, code: grpc.StatusCode | None) -> bool:
        """Whether a failure with ``code`` may succeed later; no status (None) is final."""
        return code is not None and code in self.retryable_codes

    def backoff_s(self, attempt: int, rng: Random = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"Argument 'attempt' must be >= 1, got {attempt}.")
        try:
            step = self.initial_backoff_s * self.multiplier ** (attempt - 1)
        except OverflowError:  # a budget of hundreds of attempts: long past the cap
            step = self.max_backoff_s
        return min(self.max_backoff_s, step) * (1.0 - JITTER * rng())

    def delay_after(
        self, attempt: int, remaining_s: float | None = None, rng: Random = random.random
    ) -> float | None:
        """Seconds before attempt ``attempt + 1``, or None when there is none: the budget is
        spent, or the wait would use up the ``remaining_s`` left before the deadline."""
        if attempt >= self.max_attempts:
            return None
        delay = self.backoff_s(attempt, rng)
        if remaining_s is not None and delay >= remaining_s:
            return None
        return delay

    def next_delay(
        self,
        code: grpc.StatusCode | None,
        attempt: int,
        remaining_s: float | None = None,
        rng: Random = random.random,
    ) -> float | None:
        """After attempt ``attempt`` failed with ``code``: seconds until the next, or None
        (the code is final, the budget is spent or the deadline is too close)."""
        if not self.is_retryable(code):
            return None
        return self.delay_after(attempt, remaining_s, rng)

    def run(
        self,
        attempt: Callable[[float], T],
        *,
        timeout_s: float,
        what: str = "the call",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Random = random.random,
    ) -> T:
        """``attempt(seconds_left)`` until it returns, within ``timeout_s`` in all.

        Each attempt gets the time left before the caller's deadline (its gRPC timeout). A
        :class:`ClientError` is raised as is when the policy says so, and also when the server
        had begun answering (``answered``): that study was accepted, so it is not sent again.
        """
        deadline = clock() + timeout_s
        number = 1
        while True:
            try:
                return attempt(deadline - clock())
            except ClientError as exc:
                if exc.answered:
                    raise
                delay = self.next_delay(exc.code, number, deadline - clock(), rng)
                if delay is None:
                    raise
                logger.info(
                    "%s failed with %s; attempt %d of %d in %.1f s",
                    what,
                    exc.code.name if exc.code is not None else "no status",
                    number + 1,
                    self.max_attempts,
                    delay,
                )
                sleep(delay)
                number += 1
