"""Prometheus metrics of the Atom, on a registry of its own (served at GET /metrics).

The metrics updated on every request and execution (requests, executions, their duration and the
executions in flight) are `LoopCounter`, `LoopGauge` and `LoopHistogram`: plain Python numbers
updated from the event loop's thread (an increment is an addition, not a lock and four calls as
in prometheus_client) and turned into samples when /metrics is read, under the same names, labels
and types. The others, rarer or updated from other threads, are prometheus_client's own.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)


class _LoopMetric:
    """A labelled metric family kept in plain numbers; children are made once per label values."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        REGISTRY.register(self)  # type: ignore[arg-type]

    def labels(self, *values: str) -> Any:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values, got {len(key)}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child()
        return child

    def _child(self) -> Any:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        raise NotImplementedError


class _CounterValue:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class LoopCounter(_LoopMetric):
    def _child(self) -> _CounterValue:
        return _CounterValue()

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, c in list(self._children.items()):
            fam.add_metric(key, c.value, created=c.created)
        yield fam


class _GaugeValue:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class LoopGauge(_LoopMetric):
    def _child(self) -> _GaugeValue:
        return _GaugeValue()

    def collect(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, g in list(self._children.items()):
            fam.add_metric(key, g.value)
        yield fam


class _HistogramValue:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative; the last bound is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # le: a value on a bound is in its bucket
        self.sum += amount


class LoopHistogram(_LoopMetric):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.bounds = (*sorted(float(b) for b in buckets), float("inf"))
        super().__init__(name, documentation, labelnames)

    def _child(self) -> _HistogramValue:
        return _HistogramValue(self.bounds)

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, h in list(self._children.items()):
            total, buckets = 0, []
            for bound, n in zip(self.bounds, list(h.counts), strict=True):
                total += n
                buckets.append((floatToGoString(bound), total))
            fam.add_metric(key, buckets, h.sum)
            fam.add_sample(self.name + "_created", dict(zip(self.labelnames, key, strict=True)), h.created)
        yield fam


EXECUTIONS = LoopCounter("atom_executions_total", "Executions finished, by process and status",
                         ["process", "status"])
EXECUTION_SECONDS = LoopHistogram("atom_execution_duration_seconds", "Execution wall time", ["process"],
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                           30, 60))
IN_FLIGHT = LoopGauge("atom_executions_in_flight", "Executions running now", ["process"])
DOCUMENTS = Counter("atom_documents_total", "Documents in and out of executions", ["process", "direction"],
                    registry=REGISTRY)
REQUESTS = LoopCounter("atom_http_requests_total", "HTTP requests served, by route kind and status",
                       ["route", "status"])
CONNECTOR_CALLS = Counter("atom_connector_calls_total", "Connector calls, by connection and outcome",
                          ["connection", "outcome"], registry=REGISTRY)
CONNECTOR_RETRIES = Counter("atom_connector_retries_total", "Connector retries", ["connection"],
                            registry=REGISTRY)
CIRCUIT_STATE = Gauge("atom_circuit_breaker_state", "Circuit breaker state per connection "
                      "(0 closed, 1 half-open, 2 open)", ["connection"], registry=REGISTRY)
ASYNC_RESPONSES = Counter("atom_async_responses_total", "Listener and API calls answered 202 (X-Max-Wait)",
                          ["process"], registry=REGISTRY)
SCHEDULE_RUNS = Counter("atom_schedule_runs_total", "Scheduled runs, by process and outcome (started, skipped)",
                        ["process", "outcome"], registry=REGISTRY)
CALLBACKS = Counter("atom_callbacks_total", "X-Callback-Url deliveries, by outcome (delivered, refused, failed)",
                    ["outcome"], registry=REGISTRY)
STORE_BATCHES = Counter("atom_store_batches_total", "Store write transactions", registry=REGISTRY)
STORE_EXECUTIONS = Counter("atom_store_writes_total", "Execution writes committed to the store", registry=REGISTRY)
LISTENER_REQUESTS = LoopCounter("atom_listener_requests_total", "Listener requests answered, by process, user "
                                "(the authenticated identity, or anonymous) and status", ["process", "user", "status"])
LISTENER_THROTTLED = Counter("atom_listener_throttled_total", "Listener requests answered 429 by a rate limit "
                             "(the server-wide or the listener's own), by process", ["process"], registry=REGISTRY)
DEPLOYMENTS = Counter("atom_deployments_total", "Deployments, by outcome (deployed, rejected)", ["outcome"],
                      registry=REGISTRY)


class ProcessMetrics:
    """The execution metrics of one process, bound to its label once (`labels()` per execution costs more
    than the updates themselves)."""

    __slots__ = ("_finished", "in_flight", "name", "seconds")

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight: Any = IN_FLIGHT.labels(name)
        self.seconds: Any = EXECUTION_SECONDS.labels(name)
        self._finished: dict[str, Any] = {}

    def finished(self, status: str) -> Any:
        """The counter of executions of this process that ended with `status`."""
        got = self._finished.get(status)
        if got is None:
            got = self._finished[status] = EXECUTIONS.labels(self.name, status)
        return got


_PROCESSES: dict[str, ProcessMetrics] = {}


def for_process(name: str) -> ProcessMetrics:
    got = _PROCESSES.get(name)
    if got is None:
        got = _PROCESSES[name] = ProcessMetrics(name)
    return got
