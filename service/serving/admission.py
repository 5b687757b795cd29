"""A bounded FIFO wait queue in front of the study workers.

A PACS sends bursts; refusing every study beyond ``max_concurrent_studies`` made four clients
started together lose half their studies. Studies now wait their turn — up to ``queue_length``
of them, each for at most ``queue_max_wait_s`` — and only a full queue (or a wait that ran out)
answers RESOURCE_EXHAUSTED, which clients retry with back-off. Waiting happens before the
upload is read, so a queued study holds a connection and a thread, not its bytes.

The queue is a plain object (no gRPC): the servicer polls :meth:`Ticket.wait` so it can relay
the queue position as progress events and notice a client that went away.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque

from service.core.errors import ResourceLimitError


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
