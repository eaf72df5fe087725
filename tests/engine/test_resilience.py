"""Retry policy and circuit breaker semantics, with a fake clock and a recording sleep (no real waits)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from atom.errors import ConnectorError
from atom.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy, call_with_retry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def failing(errors: list[BaseException | None], result: Any = "ok") -> tuple[Any, list[int]]:
    """An async callable raising the given errors in turn (None: succeed)."""
    calls: list[int] = []

    async def fn() -> Any:
        calls.append(1)
        err = errors[len(calls) - 1] if len(calls) <= len(errors) else None
        if err is not None:
            raise err
        return result

    return fn, calls


async def test_transient_errors_are_retried_with_exponential_backoff_within_bounds() -> None:
    fn, calls = failing([ConnectorError("503", retryable=True, status=503), OSError("reset"),
                         TimeoutError()])
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=4, backoff=0.1, max_backoff=10, jitter=0.2)
    assert await call_with_retry(fn, policy=policy, sleep=sleeps) == "ok"
    assert len(calls) == 4
    assert len(sleeps.delays) == 3
    for n, delay in enumerate(sleeps.delays, start=1):
        base = 0.1 * 2 ** (n - 1)
        assert base * 0.8 <= delay <= base * 1.2


async def test_backoff_never_exceeds_max_backoff() -> None:
    policy = RetryPolicy(backoff=1, max_backoff=3, jitter=0.5)
    assert all(policy.delay(n) <= 3 for n in range(1, 12) for _ in range(20))


async def test_retry_after_wins_and_too_long_retry_after_fails_at_once() -> None:
    err = ConnectorError("429", retryable=True, status=429)
    err.retry_after = 2.5  # type: ignore[attr-defined]
    fn, calls = failing([err])
    sleeps = Sleeps()
    assert await call_with_retry(fn, policy=RetryPolicy(attempts=3), sleep=sleeps) == "ok"
    assert sleeps.delays == [2.5]

    long = ConnectorError("429", retryable=True, status=429)
    long.retry_after = 600  # type: ignore[attr-defined]
    fn, calls = failing([long])
    with pytest.raises(ConnectorError, match="429"):
        await call_with_retry(fn, policy=RetryPolicy(attempts=3, max_retry_after=60), sleep=Sleeps())
    assert len(calls) == 1


async def test_client_errors_are_not_retried_and_last_error_is_reported() -> None:
    fn, calls = failing([ConnectorError("404 not found", status=404)])
    with pytest.raises(ConnectorError, match="404"):
        await call_with_retry(fn, policy=RetryPolicy(attempts=5), sleep=Sleeps())
    assert len(calls) == 1

    fn, calls = failing([ConnectorError("503 busy", retryable=True, status=503)] * 3)
    with pytest.raises(ConnectorError, match=r"503 busy \(after 3 attempts\)") as info:
        await call_with_retry(fn, policy=RetryPolicy(attempts=3), sleep=Sleeps())
    assert info.value.status == 503 and not info.value.retryable
    assert len(calls) == 3


async def test_breaker_opens_at_threshold_then_half_open_trial_closes_it() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker("crm", failure_threshold=2, reset_timeout=30, clock=clock,
                             on_change=lambda old, new: changes.append((old, new)))
    policy = RetryPolicy(attempts=1)
    for _ in range(2):
        fn, _calls = failing([OSError("refused")])
        with pytest.raises(ConnectorError, match="network error"):
            await call_with_retry(fn, policy=policy, breaker=breaker, sleep=Sleeps())
    assert breaker.state == "open"
    fn, calls = failing([])
    with pytest.raises(CircuitOpenError, match="circuit breaker is open"):
        await call_with_retry(fn, policy=policy, breaker=breaker, sleep=Sleeps())
    assert calls == []  # refused without touching the peer

    clock.now += 30
    assert breaker.state == "half_open"
    assert await call_with_retry(fn, policy=policy, breaker=breaker, sleep=Sleeps()) == "ok"
    assert breaker.state == "closed"
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_failed_half_open_trial_opens_again_and_only_one_trial_runs() -> None:
    clock = Clock()
    breaker = CircuitBreaker("crm", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # a second caller during the trial
    breaker.record_failure()
    assert breaker.state == "open"


async def test_cancelled_trial_does_not_leave_the_breaker_stuck() -> None:
    clock = Clock()
    breaker = CircuitBreaker("crm", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(30)
        return "late"

    task = asyncio.ensure_future(call_with_retry(slow, policy=RetryPolicy(), breaker=breaker))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fn, _calls = failing([])
    assert await call_with_retry(fn, policy=RetryPolicy(), breaker=breaker) == "ok"
    assert breaker.state == "closed"


async def test_unclassified_error_counts_against_the_peer_and_is_not_retried() -> None:
    clock = Clock()
    breaker = CircuitBreaker("crm", failure_threshold=1, reset_timeout=5, clock=clock)
    fn, calls = failing([RuntimeError("server disconnected")])
    with pytest.raises(RuntimeError):
        await call_with_retry(fn, policy=RetryPolicy(attempts=3), breaker=breaker, sleep=Sleeps())
    assert len(calls) == 1
    assert breaker.state == "open"


async def test_breaker_opening_during_retries_reports_the_underlying_failure() -> None:
    breaker = CircuitBreaker("crm", failure_threshold=2, reset_timeout=60, clock=Clock())
    fn, calls = failing([ConnectorError("503 busy", retryable=True, status=503)] * 5)
    with pytest.raises(ConnectorError, match=r"503 busy \(after 2 attempts; then the circuit breaker is open"):
        await call_with_retry(fn, policy=RetryPolicy(attempts=5), breaker=breaker, sleep=Sleeps())
    assert len(calls) == 2
