"""Outbound resilience shared by every network connector: retries with exponential back-off and
jitter, `Retry-After`, and a circuit breaker per connection (closed / open / half-open)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import metrics
from .errors import UNAVAILABLE, ConnectorError, network_kind
from .spec import Duration, Field, Float, Int, Object, Spec

T = TypeVar("T")

RETRY_SPEC = Spec([
    Field("attempts", Int(minimum=1), default=3, description="total attempts, the first one included"),
    Field("backoff", Duration(), default=0.2, description="delay before the first retry; doubles each time"),
    Field("max_backoff", Duration(), default=5.0, description="upper bound of one delay"),
    Field("jitter", Float(), default=0.2, description="random spread of each delay, as a fraction (0-1)"),
    Field("max_retry_after", Duration(), default=60.0,
          description="longest Retry-After the connector honours; longer ones fail the attempt"),
], summary="Retry policy for transient failures (network errors, 429, 5xx); other 4xx are never retried.")

BREAKER_SPEC = Spec([
    Field("failure_threshold", Int(minimum=1), default=5,
          description="consecutive failed attempts (retries included) that open the circuit"),
    Field("reset_timeout", Duration(), default=30.0,
          description="how long the circuit stays open before one trial call (half-open)"),
], summary="Circuit breaker: while open, calls fail at once instead of waiting on a broken peer.")

#: Fields every network connection has; connectors add them to their own connection spec.
NETWORK_FIELDS = [
    Field("timeout", Duration(), default=30.0, description="timeout of one attempt (connect + answer)"),
    Field("connect_timeout", Duration(), default=10.0, description="timeout to establish a connection"),
    Field("retry", Object(RETRY_SPEC), default=dict, description="retry policy"),
    Field("circuit_breaker", Object(BREAKER_SPEC), default=dict, description="circuit breaker"),
]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff: float = 0.2
    max_backoff: float = 5.0
    jitter: float = 0.2
    max_retry_after: float = 60.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> RetryPolicy:
        cfg = cfg or {}
        return cls(**{k: cfg[k] for k in ("attempts", "backoff", "max_backoff", "jitter", "max_retry_after")
                      if k in cfg})

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Delay before retry number `retry_number` (1-based). `Retry-After` wins when given."""
        if retry_after is not None:
            return max(0.0, retry_after)
        base = min(self.max_backoff, self.backoff * (2 ** (retry_number - 1)))
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, min(base, self.max_backoff))


class CircuitOpenError(ConnectorError):
    """A call refused by an open (or half-open, trial running) circuit breaker: kind `unavailable`."""

    def __init__(self, name: str, remaining: float) -> None:
        super().__init__(f"connection '{name}': circuit breaker is open (next trial in {remaining:.1f}s)",
                         retryable=False, kind=UNAVAILABLE)


class CircuitBreaker:
    """Counts consecutive failures; opens at the threshold; after `reset_timeout` lets one trial through
    (half-open); a success closes it, a failure opens it again. State is exported to /metrics."""

    CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
    _GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

    def __init__(self, name: str, failure_threshold: int = 5, reset_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.on_change = on_change
        self.failures = 0
        self.opened_at = 0.0
        self._state = self.CLOSED
        self._trial_running = False
        metrics.CIRCUIT_STATE.labels(name).set(0)

    @classmethod
    def from_config(cls, name: str, cfg: dict[str, Any] | None) -> CircuitBreaker:
        cfg = cfg or {}
        return cls(name, cfg.get("failure_threshold", 5), cfg.get("reset_timeout", 30.0))

    @property
    def state(self) -> str:
        if self._state == self.OPEN and self.clock() - self.opened_at >= self.reset_timeout:
            self._set(self.HALF_OPEN)
        return self._state

    def _set(self, state: str) -> None:
        if state != self._state:
            old, self._state = self._state, state
            metrics.CIRCUIT_STATE.labels(self.name).set(self._GAUGE[state])
            if self.on_change:
                self.on_change(old, state)

    def before_call(self) -> None:
        """Raise CircuitOpenError if calls are not allowed now."""
        state = self.state
        if state == self.OPEN:
            raise CircuitOpenError(self.name, self.reset_timeout - (self.clock() - self.opened_at))
        if state == self.HALF_OPEN:
            if self._trial_running:
                raise CircuitOpenError(self.name, 0.0)
            self._trial_running = True

    def record_success(self) -> None:
        self._trial_running = False
        self.failures = 0
        self._set(self.CLOSED)

    def release_trial(self) -> None:
        """The call let through was abandoned (cancelled) without an outcome: allow another trial."""
        self._trial_running = False

    def record_failure(self) -> None:
        self._trial_running = False
        self.failures += 1
        if self._state == self.HALF_OPEN or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self._set(self.OPEN)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    breaker: CircuitBreaker | None = None,
    connection: str = "",
    log: Callable[[str, str], None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """Run `fn` with the retry policy and breaker.

    `fn` raises ConnectorError(retryable=True) for transient failures (set `retry_after` on the
    exception, in seconds, to honour a Retry-After header); asyncio.TimeoutError and OSError count as
    transient too (kinds `timeout` and `unreachable`). Non-retryable ConnectorErrors are raised at
    once and do not trip the breaker (a 4xx means the peer is up). Returns fn's result; raises the
    last error when attempts run out (with its kind and status), or a ConnectorError of kind
    `unavailable` when the breaker is open or opens during the retries.
    """
    attempt = 0
    err: ConnectorError | None = None
    while True:
        attempt += 1
        if breaker is not None:
            try:
                breaker.before_call()
            except CircuitOpenError as open_exc:
                metrics.CONNECTOR_CALLS.labels(connection, "error").inc()
                if err is None:
                    raise
                # The breaker opened during our own retries: report the failure that opened it.
                reason = str(open_exc).split(": ", 1)[-1]
                wrapped = ConnectorError(f"{err} (after {attempt - 1} attempts; then the {reason})",
                                         retryable=False, status=err.status, kind=UNAVAILABLE)
                if hasattr(err, "answer"):  # what the peer answered, for connectors that expose it
                    wrapped.answer = err.answer  # type: ignore[attr-defined]
                raise wrapped from err
        try:
            result = await fn()
        except ConnectorError as exc:
            if not exc.retryable:
                if breaker is not None:
                    breaker.record_success() if exc.status and exc.status < 500 else breaker.record_failure()
                metrics.CONNECTOR_CALLS.labels(connection, "error").inc()
                raise
            err = exc
        except TimeoutError as exc:
            err = ConnectorError(f"timed out{': ' + str(exc) if str(exc) else ''}", retryable=True,
                                 kind=network_kind(exc))
        except OSError as exc:
            err = ConnectorError(f"network error: {exc}", retryable=True, kind=network_kind(exc))
        except Exception:
            # An error the connector did not classify: count it against the peer, never retry it.
            if breaker is not None:
                breaker.record_failure()
            metrics.CONNECTOR_CALLS.labels(connection, "error").inc()
            raise
        except BaseException:
            # Cancelled (the execution was stopped, the Atom is shutting down): no verdict on the peer,
            # but a half-open trial must not stay claimed forever.
            if breaker is not None:
                breaker.release_trial()
            raise
        else:
            if breaker is not None:
                breaker.record_success()
            metrics.CONNECTOR_CALLS.labels(connection, "ok").inc()
            return result
        if breaker is not None:
            breaker.record_failure()
        retry_after = getattr(err, "retry_after", None)
        if attempt >= policy.attempts or (retry_after is not None and retry_after > policy.max_retry_after):
            metrics.CONNECTOR_CALLS.labels(connection, "error").inc()
            if attempt > 1:
                raise ConnectorError(f"{err} (after {attempt} attempts)", retryable=False,
                                     status=err.status, kind=err.kind) from err
            raise err
        delay = policy.delay(attempt, retry_after)
        metrics.CONNECTOR_RETRIES.labels(connection).inc()
        if log:
            log("warning", f"connection '{connection}': attempt {attempt} failed ({err}); retrying in {delay:.3f}s")
        await sleep(delay)
