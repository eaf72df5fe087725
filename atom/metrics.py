"""Prometheus metrics of the Atom, on a registry of its own (served at GET /metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EXECUTIONS = Counter("atom_executions_total", "Executions finished, by process and status",
                     ["process", "status"], registry=REGISTRY)
EXECUTION_SECONDS = Histogram("atom_execution_duration_seconds", "Execution wall time", ["process"],
                              registry=REGISTRY,
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
IN_FLIGHT = Gauge("atom_executions_in_flight", "Executions running now", ["process"], registry=REGISTRY)
DOCUMENTS = Counter("atom_documents_total", "Documents in and out of executions", ["process", "direction"],
                    registry=REGISTRY)
REQUESTS = Counter("atom_http_requests_total", "HTTP requests served, by route kind and status",
                   ["route", "status"], registry=REGISTRY)
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
LISTENER_REQUESTS = Counter("atom_listener_requests_total", "Listener requests answered, by process, user (the "
                            "authenticated identity, or anonymous) and status", ["process", "user", "status"],
                            registry=REGISTRY)
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
