"""The one retry policy: which codes retry, back-off bounds with jitter, the budget, the deadline;
then the client against a real loopback server that always answers UNAVAILABLE."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from service.client.client import SegmentationClient
from service.client.errors import ClientError
from service.client.retry import JITTER, RETRYABLE_CODES, RetryPolicy
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings

Code = grpc.StatusCode
FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (Code.UNAVAILABLE, True),
        (Code.RESOURCE_EXHAUSTED, True),
        (Code.DEADLINE_EXCEEDED, True),
        (Code.INVALID_ARGUMENT, False),
        (Code.UNAUTHENTICATED, False),
        (Code.NOT_FOUND, False),
        (Code.FAILED_PRECONDITION, False),
        (Code.UNIMPLEMENTED, False),
        (Code.INTERNAL, False),
        (Code.CANCELLED, False),
        (None, False),  # no status: a local failure or a broken answer
    ],
)
def test_only_not_now_codes_are_retried(code: grpc.StatusCode | None, retryable: bool) -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(code) is retryable
    assert (policy.next_delay(code, 1) is not None) is retryable


@pytest.mark.parametrize(
    ("attempt", "step"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0), (5000, 8.0)]
)
def test_backoff_doubles_to_the_cap_and_jitter_stays_within_half_a_step(
    attempt: int, step: float
) -> None:
    policy = RetryPolicy(max_attempts=10)
    assert policy.backoff_s(attempt, rng=lambda: 0.0) == step
    assert policy.backoff_s(attempt, rng=lambda: 0.999999) == pytest.approx(
        step * (1 - JITTER), rel=1e-5
    )
    draws = [policy.backoff_s(attempt) for _ in range(200)]
    assert all(step * (1 - JITTER) < d <= step for d in draws)
    assert max(draws) - min(draws) > step * 0.1  # really jittered, not a constant


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_the_budget_counts_every_attempt_the_first_included(max_attempts: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    delays = [policy.next_delay(Code.UNAVAILABLE, n) for n in range(1, max_attempts + 1)]
    assert [d is not None for d in delays] == [True] * (max_attempts - 1) + [False]


@pytest.mark.parametrize(("remaining_s", "retried"), [(None, True), (10.0, True), (0.4, False)])
def test_no_retry_whose_wait_would_use_up_the_deadline(
    remaining_s: float | None, retried: bool
) -> None:
    delay = RetryPolicy().next_delay(Code.UNAVAILABLE, 1, remaining_s, rng=lambda: 0.0)  # 0.5 s
    assert (delay is not None) is retried


class FakeTime:
    """A clock that only moves when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _attempts(outcomes: list[ClientError | str]) -> tuple[list[float], Callable[[float], str]]:
    """An attempt function failing or answering in the order of ``outcomes``."""
    timeouts: list[float] = []
    pending = iter(outcomes)

    def attempt(seconds_left: float) -> str:
        timeouts.append(seconds_left)
        outcome = next(pending)
        if isinstance(outcome, ClientError):
            raise outcome
        return outcome

    return timeouts, attempt


@pytest.mark.parametrize(
    ("outcomes", "calls", "result"),
    [
        ([ClientError("down", Code.UNAVAILABLE)] * 4, 4, None),
        ([ClientError("busy", Code.RESOURCE_EXHAUSTED), "seg"], 2, "seg"),
        ([ClientError("bad", Code.INVALID_ARGUMENT), "seg"], 1, None),
        ([ClientError("no status"), "seg"], 1, None),
        ([ClientError("half-way", Code.UNAVAILABLE, answered=True), "seg"], 1, None),
    ],
    ids=["budget-spent", "busy-then-served", "final-code", "no-status", "already-answered"],
)
def test_run_makes_the_policys_attempts(
    outcomes: list[ClientError | str], calls: int, result: str | None
) -> None:
    time_ = FakeTime()
    timeouts, attempt = _attempts(outcomes)
    policy = RetryPolicy(max_attempts=4)
    run = lambda: policy.run(  # noqa: E731
        attempt, timeout_s=600, sleep=time_.sleep, clock=time_.clock, rng=lambda: 0.0
    )
    if result is None:
        with pytest.raises(ClientError) as info:
            run()
        assert info.value is outcomes[calls - 1]  # the last failure, unchanged
    else:
        assert run() == result
    assert len(timeouts) == calls
    assert time_.sleeps == [0.5, 1.0, 2.0][: calls - 1]


def test_run_gives_each_attempt_the_time_left_and_stops_before_the_deadline() -> None:
    time_ = FakeTime()
    timeouts, attempt = _attempts([ClientError("down", Code.UNAVAILABLE)] * 5)
    with pytest.raises(ClientError):
        RetryPolicy().run(
            attempt, timeout_s=1.2, sleep=time_.sleep, clock=time_.clock, rng=lambda: 0.0
        )
    # 0.5 s wait fits in 1.2 s; after it 0.7 s are left, too little for the 1 s wait.
    assert timeouts == pytest.approx([1.2, 0.7]) and time_.sleeps == [0.5]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "'max_attempts' must be >= 1, got 0"),
        ({"max_attempts": 2.0}, TypeError, "'max_attempts' must be an int, got float"),
        ({"max_attempts": True}, TypeError, "'max_attempts' must be an int, got bool"),
        ({"initial_backoff_s": 0}, ValueError, "'initial_backoff_s' must be > 0 seconds, got 0"),
        ({"max_backoff_s": 0.1}, ValueError, r"'max_backoff_s' \(0.1\) must be >= 'initial"),
        ({"multiplier": 0.5}, ValueError, "'multiplier' must be >= 1, got 0.5"),
        ({"retryable_codes": frozenset({Code.OK})}, ValueError, "'retryable_codes' must hold"),
    ],
)
def test_bad_policies_are_refused(arguments: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**arguments)
    with pytest.raises(ValueError, match="'attempt' must be >= 1, got 0"):
        RetryPolicy().backoff_s(0)


def test_default_codes_are_the_not_now_codes() -> None:
    assert (
        RetryPolicy().retryable_codes
        == RETRYABLE_CODES
        == {
            Code.UNAVAILABLE,
            Code.RESOURCE_EXHAUSTED,
            Code.DEADLINE_EXCEEDED,
        }
    )


# -- against a real server ------------------------------------------------------------------------
@pytest.fixture
def unavailable_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A real pulmoseg server that never loads its model: every study gets UNAVAILABLE."""
    settings = load_settings(
        env={}, port=0, metrics_enabled=False, model_path=tmp_path / "model.onnx"
    )
    running = build_server(settings, autoload=False)
    yield running
    running.stop(grace=0)


def unavailable_calls(running: RunningServer) -> int:
    value = running.metrics.registry.get_sample_value(
        "pulmoseg_requests_total", {"method": "SegmentStudy", "code": "UNAVAILABLE"}
    )
    return int(value or 0)


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_the_client_makes_exactly_its_budget_of_calls(
    unavailable_server: RunningServer, max_attempts: int
) -> None:
    with (
        SegmentationClient(
            unavailable_server.address, timeout_s=30, retry=FAST, max_attempts=max_attempts
        ) as client,
        pytest.raises(ClientError, match="still loading") as info,
    ):
        client.segment_files([b"x"])
    assert info.value.code is Code.UNAVAILABLE
    assert unavailable_calls(unavailable_server) == max_attempts


def test_the_client_stops_retrying_at_its_deadline(unavailable_server: RunningServer) -> None:
    slow = RetryPolicy(max_attempts=5, initial_backoff_s=10, max_backoff_s=10)
    started = time.monotonic()
    client = SegmentationClient(unavailable_server.address, timeout_s=3, retry=slow)
    with client, pytest.raises(ClientError, match="still loading"):
        client.segment_files([b"x"])
    assert time.monotonic() - started < 3  # no 5..10 s wait that the deadline cannot hold
    assert unavailable_calls(unavailable_server) == 1
