"""A bounded FIFO wait queue in front of the study workers.

A PACS sends bursts; refusing every study beyond ``max_concurrent_studies`` made four clients
started together lose half their studies. Studies now wait their turn — up to ``queue_length``
of them, each for at most ``queue_max_wait_s`` — and only a full queue (or a wait that ran out)
answers RESOURCE_EXHAUSTED, which clients retry with back-off. Waiting happens before the
upload is read, so a queued study holds a connection and a thread, not its bytes.

The queue is a plain object (no gRPC): the servicer polls :meth:`Ticket.wait` so it can relay
the queue position as progress events and notice a client that went away.

:class:`DrainGate` sits in front of the queue: once the server starts draining it refuses new
calls (UNAVAILABLE) itself, while the calls it already let in — running or queued — finish.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator

from service.core.errors import ResourceLimitError, ServiceNotReadyError


class Ticket:
    """One study's place: admitted (holds a worker slot) or waiting in line."""

    def __init__(self) -> None:
        self._admitted = threading.Event()
        self.released = False

    @property
    def admitted(self) -> bool:
        return self._admitted.is_set()

    def wait(self, timeout_s: float) -> bool:
        """True once admitted; False when ``timeout_s`` passed first."""
        return self._admitted.wait(timeout_s)


class AdmissionQueue:
    """``max_active`` studies at a time, ``queue_length`` more waiting in arrival order."""

    def __init__(self, max_active: int, queue_length: int) -> None:
        if max_active < 1:
            raise ValueError(f"Argument 'max_active' must be >= 1, got {max_active}.")
        if queue_length < 0:
            raise ValueError(f"Argument 'queue_length' must be >= 0, got {queue_length}.")
        self.max_active = max_active
        self.queue_length = queue_length
        self._lock = threading.Lock()
        self._active = 0
        self._waiting: deque[Ticket] = deque()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self) -> Ticket:
        """A ticket, admitted at once or waiting; ResourceLimitError when the line is full."""
        ticket = Ticket()
        with self._lock:
            if self._active < self.max_active and not self._waiting:
                self._active += 1
                ticket._admitted.set()
                return ticket
            if len(self._waiting) >= self.queue_length:
                raise ResourceLimitError(
                    f"The server is busy: {self._active} studies are in progress "
                    f"(max_concurrent_studies={self.max_active}) and {len(self._waiting)} are "
                    f"waiting (queue_length={self.queue_length}); retry later."
                )
            self._waiting.append(ticket)
            return ticket

    def position(self, ticket: Ticket) -> int:
        """1 for the next study to run, 2 behind it …; 0 once admitted (or gone)."""
        with self._lock:
            try:
                return self._waiting.index(ticket) + 1
            except ValueError:
                return 0

    def release(self, ticket: Ticket) -> None:
        """Give the slot back (or leave the line); idempotent, safe from any thread."""
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            if ticket.admitted:
                self._active -= 1
            else:
                with contextlib.suppress(ValueError):  # admitted meanwhile or never queued
                    self._waiting.remove(ticket)
            while self._active < self.max_active and self._waiting:
                self._active += 1
                self._waiting.popleft()._admitted.set()


class ServerDrainingError(ServiceNotReadyError):
    """A call that arrived after draining started; UNAVAILABLE, so clients retry elsewhere."""


#: What a caller refused during a drain is told (UNAVAILABLE: the client retries it elsewhere).
DRAINING_DETAILS = "The server is draining; retry on another replica."


class DrainGate:
    """Admits calls until draining starts, then refuses them; counts the calls it let in.

    The servicers call :meth:`admit` at the start of every call that does work and
    :meth:`leave` when it ends. :meth:`start_draining` makes every later :meth:`admit` raise
    :class:`ServerDrainingError` (the service itself answers UNAVAILABLE, so gRPC's own shutdown
    never races a new call), and :meth:`wait_idle` returns once every admitted call (running or
    queued) has ended. The check and the count share one lock: a call is either counted before
    draining starts, and waited for, or refused.
    """

    def __init__(self) -> None:
        self._idle = threading.Condition()
        self._active = 0
        self._draining = threading.Event()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @property
    def active(self) -> int:
        """Calls admitted and not yet ended."""
        return self._active

    def admit(self) -> None:
        """Count one more call; ServerDrainingError once draining has started."""
        with self._idle:
            if self._draining.is_set():
                raise ServerDrainingError(DRAINING_DETAILS)
            self._active += 1

    def leave(self) -> None:
        """The end of a call that :meth:`admit` let in."""
        with self._idle:
            self._active -= 1
            if self._active <= 0:
                self._idle.notify_all()

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """``admit`` on entry, ``leave`` on exit (however the call ends)."""
        self.admit()
        try:
            yield
        finally:
            self.leave()

    def start_draining(self) -> None:
        """Refuse every call from now on; calls already admitted go on. Idempotent."""
        with self._idle:
            self._draining.set()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """True once no admitted call is left; False when ``timeout_s`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active <= 0, timeout_s)

    def wait_draining(self, timeout_s: float | None = None) -> bool:
        """True once draining has started (lets tests and embedders wait without polling)."""
        return self._draining.wait(timeout_s)
