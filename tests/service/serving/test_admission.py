"""AdmissionQueue: FIFO waiting in front of the study slots, refusal only when the line is full."""

from __future__ import annotations

import threading

import grpc
import pytest

from service.client.retry import RETRYABLE_CODES
from service.core.errors import ResourceLimitError
from service.serving.admission import (
    DRAINING_DETAILS,
    AdmissionQueue,
    DrainGate,
    ServerDrainingError,
)
from service.serving.errors import status_for


def test_admits_up_to_the_slots_then_queues_in_order_then_refuses() -> None:
    queue = AdmissionQueue(max_active=2, queue_length=2)
    a, b = queue.enter(), queue.enter()
    c, d = queue.enter(), queue.enter()
    assert (a.admitted, b.admitted, c.admitted, d.admitted) == (True, True, False, False)
    assert (queue.position(c), queue.position(d), queue.position(a)) == (1, 2, 0)
    with pytest.raises(ResourceLimitError, match=r"2 studies are in progress .*2 are waiting "):
        queue.enter()
    queue.release(a)
    assert c.admitted and not d.admitted and queue.position(d) == 1
    queue.release(b)
    assert d.admitted and (queue.active, queue.waiting) == (2, 0)


def test_leaving_the_line_and_double_release_keep_the_counts_right() -> None:
    queue = AdmissionQueue(max_active=1, queue_length=3)
    running, first, second = queue.enter(), queue.enter(), queue.enter()
    queue.release(first)  # a client that hung up while waiting
    queue.release(first)
    assert queue.position(second) == 1 and queue.waiting == 1
    queue.release(running)
    queue.release(running)
    assert second.admitted and (queue.active, queue.waiting) == (1, 0)


def test_no_queue_means_the_old_immediate_refusal() -> None:
    queue = AdmissionQueue(max_active=1, queue_length=0)
    queue.enter()
    with pytest.raises(ResourceLimitError, match=r"max_concurrent_studies=1.*queue_length=0"):
        queue.enter()


def test_waiters_wake_in_arrival_order_across_threads() -> None:
    queue = AdmissionQueue(max_active=1, queue_length=8)
    holder = queue.enter()
    tickets = [queue.enter() for _ in range(5)]
    order: list[int] = []
    lock = threading.Lock()

    def wait_and_run(index: int) -> None:
        assert tickets[index].wait(10)
        with lock:
            order.append(index)
        queue.release(tickets[index])

    threads = [threading.Thread(target=wait_and_run, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    queue.release(holder)
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]
    assert (queue.active, queue.waiting) == (0, 0)


@pytest.mark.parametrize(("active", "length"), [(0, 1), (1, -1)])
def test_arguments_are_checked(active: int, length: int) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        AdmissionQueue(active, length)


def test_drain_gate_refuses_after_draining_starts_and_waits_for_admitted_calls() -> None:
    gate = DrainGate()
    gate.admit()  # a running study
    with gate.call():  # a queued one, ending first
        gate.start_draining()
        assert gate.draining and gate.active == 2
        with pytest.raises(ServerDrainingError, match="draining; retry on another replica"):
            gate.admit()
        with pytest.raises(ServerDrainingError), gate.call():
            pass  # never runs
    assert gate.active == 1 and not gate.wait_idle(0)
    done = threading.Thread(target=gate.leave)
    done.start()
    assert gate.wait_idle(30) and gate.active == 0
    done.join(10)


def test_drain_refusal_is_unavailable_so_clients_retry_elsewhere() -> None:
    code, details = status_for(ServerDrainingError(DRAINING_DETAILS))
    assert code is grpc.StatusCode.UNAVAILABLE and details == DRAINING_DETAILS
    assert grpc.StatusCode.UNAVAILABLE in RETRYABLE_CODES
