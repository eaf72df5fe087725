"""The execution engine: runs process graphs over batches of documents.

An `Engine` holds the current `Deployment` (swapped atomically on redeploy; an execution keeps the
process definition it started with), the shared connections (started lazily, stopped in `stop()`),
runtime caches, and an optional `Recorder` that persists executions (the runtime's store).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import metrics
from .connector import Connector, OperationContext
from .document import Document
from .errors import ERROR, DocumentError, ExecutionAbort, StopExecution
from .expressions import ENV_VIEW
from .model import ConnectionDef, Deployment, ProcessDef
from .shapes import END, Shape
from .shapes.calls import DocCache

log = logging.getLogger("atom.engine")

STATUSES = ("INPROCESS", "COMPLETE", "COMPLETE_WARN", "ERROR", "ABORTED", "DISCARDED")
EXECUTION_TYPES = ("exec_listener", "exec_manual", "exec_sched", "sub_process", "test_manual", "retry_manual")


def new_execution_id(when: dt.datetime | float | None = None) -> str:
    """`execution-<uuid>-<yyyy.MM.dd>` (Boomi's format) for an execution started at `when`, a datetime or
    a POSIX timestamp (default now): a version 7 UUID (RFC 9562: the time in milliseconds, then 74
    random bits) and the UTC date. Ids of executions started one after the other sort together, so
    the store's indexes on them grow at one end instead of being written all over."""
    if isinstance(when, dt.datetime):
        ts = when.timestamp() if when.tzinfo is not None else when.replace(tzinfo=dt.UTC).timestamp()
    else:
        ts = time.time() if when is None else when
    day = _utc_day(ts)
    try:
        h = _RANDOM_HEX.popleft()
    except IndexError:
        h = _refill_random_hex()
    t = f"{int(ts * 1000) & 0xFFFFFFFFFFFF:012x}"
    return f"execution-{t[:8]}-{t[8:]}-7{h[:3]}-{_VARIANT[h[3]]}{h[4:7]}-{h[7:19]}-{day}"


#: random values as hex (32 digits each), read from the OS's random source 128 at a time (one system call
#: instead of one per execution); taken with popleft, atomic between threads; emptied in a forked
#: child so that worker processes never share values
_RANDOM_HEX: deque[str] = deque()
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
os.register_at_fork(after_in_child=_RANDOM_HEX.clear)


def _refill_random_hex() -> str:
    h = os.urandom(2048).hex()
    _RANDOM_HEX.extend([h[i:i + 32] for i in range(32, len(h), 32)])
    return h[:32]


_day_cache: tuple[int, str] = (-1, "")


def _utc_day(ts: float) -> str:
    """`yyyy.MM.dd` of a timestamp, formatted once per day."""
    global _day_cache
    n = int(ts // 86400)
    if _day_cache[0] != n:
        _day_cache = (n, f"{dt.datetime.fromtimestamp(n * 86400, dt.UTC):%Y.%m.%d}")
    return _day_cache[1]


@dataclass(slots=True)
class LogEntry:
    time: float
    level: str
    shape: str
    message: str
    #: the kind and HTTP status of a document error (entries that log one)
    kind: str | None = None
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": dt.datetime.fromtimestamp(self.time, dt.UTC).isoformat(),
                               "level": self.level.upper(), "shape": self.shape, "message": self.message}
        if self.kind is not None:
            out["errorKind"] = self.kind
            if self.status is not None:
                out["errorStatus"] = self.status
        return out


#: the fields of an execution record (Boomi's names), in the order of `Execution.record_values()`
RECORD_FIELDS = (
    "executionId", "processName", "processVersion", "executionType", "status", "executionTime",
    "executionDuration", "inboundDocumentCount", "inboundErrorDocumentCount", "outboundDocumentCount",
    "inboundDocumentSize", "outboundDocumentSize", "message", "parentExecutionId", "topLevelExecutionId",
    "atomName", "nodeId", "mode", "errorDocumentCount",
)


class Recorder(Protocol):
    """Receives execution lifecycle events (the runtime's store implements it)."""

    async def execution_started(self, ex: Execution) -> None: ...

    async def execution_finished(self, ex: Execution) -> None: ...


class ShapeStats:
    __slots__ = ("docs_in", "docs_out", "errors", "runs", "seconds")

    def __init__(self) -> None:
        self.runs = self.docs_in = self.docs_out = self.errors = 0
        self.seconds = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "documentsIn": self.docs_in, "documentsOut": self.docs_out,
                "errors": self.errors, "ms": round(self.seconds * 1000, 3)}


class Execution:
    """One run of a process. Fields follow Boomi's execution record (see `record()`)."""

    def __init__(self, engine: Engine, process: ProcessDef, *, execution_type: str = "exec_manual",
                 properties: Mapping[str, str] | None = None, parent: Execution | None = None,
                 execution_id: str | None = None, debug: bool = False,
                 mocks: Mapping[str, Any] | None = None) -> None:
        self._start = time.time()
        self._start_time: dt.datetime | None = None
        self._start_iso: str | None = None
        self.engine = engine
        self.process = process
        self.id = execution_id or new_execution_id(self._start)
        self.execution_type = execution_type
        self.status = "INPROCESS"
        self._t0 = time.perf_counter()
        self.duration_ms = 0
        self.message = ""
        self.parent_id: str | None = parent.id if parent else None
        self.top_level_id: str = parent.top_level_id if parent else self.id
        self.properties: dict[str, str] = {**process.properties, **(properties or {})}
        self.debug = debug
        self.mocks = mocks or {}
        self.inputs: list[Document] = []
        self.returned: list[Document] = []
        self.errors: list[str] = []
        self.error_documents: list[Document] = []
        self.logs: list[LogEntry] = []
        self.shape_stats: dict[str, ShapeStats] = {}
        self.warned = False
        self.inbound_error_count = 0
        #: (scope id, index) -> (message, kind, HTTP status) for documents that failed inside a branch
        #: or try scope
        self.failed: dict[tuple[int, int], tuple[str, str, int | None]] = {}
        self.catching: set[int] = set()
        self._scope_seq = 0
        self._caches: dict[str, DocCache] = {}
        self._info: dict[str, Any] | None = None
        self._done: asyncio.Event | None = None
        #: filled by the runtime: the HTTP response of a listener execution
        self.response: Any = None

    # -------------------------------------------------------------------------------- services
    @property
    def keeps_documents(self) -> bool:
        return self.process.mode == "general" or self.debug

    @property
    def keeps_record(self) -> bool:
        return self.process.mode != "low_latency" or self.debug

    @property
    def start_time(self) -> dt.datetime:
        """When the execution was created (UTC)."""
        if self._start_time is None:
            self._start_time = dt.datetime.fromtimestamp(self._start, dt.UTC)
        return self._start_time

    @property
    def start_iso(self) -> str:
        """The start time in ISO 8601, UTC with a `Z` (the record's `executionTime`)."""
        if self._start_iso is None:
            self._start_iso = self.start_time.isoformat().replace("+00:00", "Z")
        return self._start_iso

    @property
    def done(self) -> asyncio.Event:
        """Set once the execution has finished."""
        if self._done is None:
            self._done = asyncio.Event()
            if self.finished:
                self._done.set()
        return self._done

    def scope(self, doc: Document | None = None) -> dict[str, Any]:
        info = self._info
        if info is None:
            info = self._info = {"id": self.id, "process": self.process.name, "start": self.start_time.isoformat(),
                                 "type": self.execution_type}
        return {"doc": doc, "process": self.properties, "execution": info, "env": ENV_VIEW}

    def log(self, level: str, message: str, shape: str = "", *, kind: str | None = None,
            status: int | None = None) -> None:
        """Add an entry to the execution log; `kind` and `status` describe a document error."""
        self.logs.append(LogEntry(time.time(), level, shape, message, kind, status))
        if level == "error":
            log.debug("%s %s: %s", self.id, shape, message)

    def _first_warning(self) -> str:
        """The message of a COMPLETE_WARN record: the first document error, else the first warning."""
        if self.errors:
            more = f" (and {len(self.errors) - 1} more document error(s))" if len(self.errors) > 1 else ""
            return self.errors[0] + more
        for e in self.logs:
            if e.level in ("warning", "error"):
                return f"{e.shape}: {e.message}" if e.shape else e.message
        return ""

    def new_scope(self) -> int:
        self._scope_seq += 1
        return self._scope_seq

    def cache_for(self, name: str, scope: str) -> DocCache:
        if scope == "runtime":
            return self.engine.runtime_cache(name)
        c = self._caches.get(name)
        if c is None:
            c = self._caches[name] = DocCache()
        return c

    async def call_connector(self, connection: str, action: str, op: Mapping[str, Any],
                             docs: list[Document], shape_id: str) -> list[Document]:
        conn = await self.engine.connection(connection)
        ctx = OperationContext(self, shape_id)
        fn = conn.get if action == "get" else conn.send
        try:
            return await fn(op, docs, ctx)
        except DocumentError as exc:
            # the kind only: a connector puts an HTTP status on the documents it fails itself
            msg = f"connector '{shape_id}' ({connection}): {exc}"
            kind = exc.kind
        except NotImplementedError as exc:
            msg = f"connector '{shape_id}' ({connection}): {exc}"
            kind = ERROR
        except Exception as exc:
            log.exception("connector %s failed", connection)
            msg = f"connector '{shape_id}' ({connection}): {type(exc).__name__}: {exc}"
            kind = ERROR
        return [d.fail(msg, kind) for d in docs] if docs else [Document().fail(msg, kind)]

    # -------------------------------------------------------------------------------- running
    async def run_path(self, shape_id: str | None, docs: list[Document]) -> None:
        """Run the graph from `shape_id` with `docs`, depth-first, to the end of every path."""
        if not shape_id or shape_id == END or not docs:
            return
        shape: Shape = self.process.shapes[shape_id]
        stats = self.shape_stats.get(shape_id)
        if stats is None:
            stats = self.shape_stats[shape_id] = ShapeStats()
        stats.runs += 1
        stats.docs_in += len(docs)
        t0 = time.perf_counter()
        mock = self.mocks.get(shape_id)
        try:
            if mock is not None:
                outputs = [(shape.next, mock(docs))]
            else:
                outputs = await shape.run(docs, self)
        except (ExecutionAbort, StopExecution):
            stats.seconds += time.perf_counter() - t0
            raise
        except DocumentError as exc:
            kind = exc.kind
            outputs = [(None, [d.fail(f"{shape.kind} '{shape_id}': {exc}", kind) for d in docs])]
        except Exception as exc:  # a bug in a shape fails its documents, never the runtime
            log.error("shape %s failed:\n%s", shape_id, traceback.format_exc())
            outputs = [(None, [d.fail(f"{shape.kind} '{shape_id}': internal error: {type(exc).__name__}: "
                                      f"{exc}", ERROR) for d in docs])]
        stats.seconds += time.perf_counter() - t0
        if outputs and not shape.terminal:
            _drop_consumed_views(docs, outputs)
        for target, out in outputs:
            good: list[Document] = []
            for d in out:
                if d.error is not None:
                    stats.errors += 1
                    self._document_failed(d, shape_id)
                else:
                    good.append(d)
            stats.docs_out += len(good)
            if target and target != END and good:
                await self.run_path(target, good)

    async def run_stream(self, shape_id: str, target: str | None, batches: Iterable[list[Document]]) -> None:
        """Run the path from `target` once per batch, in order, with the batches as the output of shape
        `shape_id` (a streamed split): failed documents are that shape's errors, the others go on.

        Only one batch is held at a time: `batches` may be a generator reading a large input. The time
        spent on the rest of the path is not counted as the shape's own."""
        stats = self.shape_stats.get(shape_id)
        if stats is None:
            stats = self.shape_stats[shape_id] = ShapeStats()
        for batch in batches:
            good: list[Document] = []
            for d in batch:
                if d.error is not None:
                    stats.errors += 1
                    self._document_failed(d, shape_id)
                else:
                    good.append(d)
            del batch
            stats.docs_out += len(good)
            if target and target != END and good:
                t0 = time.perf_counter()
                await self.run_path(target, good)
                stats.seconds -= time.perf_counter() - t0
            del good
            await asyncio.sleep(0)  # let other executions of the event loop move between batches

    def _document_failed(self, doc: Document, shape_id: str) -> None:
        msg = doc.error or "failed"
        kind, status = doc.error_kind or ERROR, doc.error_status
        caught = False
        if doc.trace:
            why = (msg, kind, status)
            for sid, i in reversed(doc.trace):
                self.failed.setdefault((sid, i), why)
                if sid in self.catching:
                    caught = True
                    break
        self.log("error", msg, shape_id, kind=kind, status=status)
        if not caught:
            self.errors.append(msg)
            self.error_documents.append(doc)

    async def _start_documents(self) -> list[Document]:
        start = self.process.start
        if start.kind == "connector" and not self.inputs:
            cfg = start.config
            docs = await self.call_connector(cfg["connection"], "get", cfg["operation"], [], "start")
            bad = [d for d in docs if d.error]
            for d in bad:
                self._document_failed(d, "start")
            return [d for d in docs if not d.error]
        return self.inputs

    async def run(self) -> Execution:
        """Run to completion; never raises for process errors (they become status and message)."""
        counters = metrics.for_process(self.process.name)
        counters.in_flight.inc()
        try:
            docs = await self._start_documents()
            await self.run_path(self.process.first, docs)
            if self.errors:
                self.status = "ERROR"
                more = f" (and {len(self.errors) - 1} more document error(s))" if len(self.errors) > 1 else ""
                self.message = self.errors[0] + more
            else:
                self.status = "COMPLETE_WARN" if self.warned else "COMPLETE"
        except StopExecution as exc:
            self.status = "COMPLETE_WARN" if self.errors or self.warned else "COMPLETE"
            self.log("info", str(exc))
        except ExecutionAbort as exc:
            self.status, self.message = "ERROR", str(exc)
            self.log("error", str(exc))
        except asyncio.CancelledError:
            self.status, self.message = "ABORTED", "execution cancelled"
            raise
        except Exception as exc:
            log.error("execution %s failed:\n%s", self.id, traceback.format_exc())
            self.status, self.message = "ERROR", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            if self.status == "COMPLETE_WARN" and not self.message:
                self.message = self._first_warning()
            self.duration_ms = int((time.perf_counter() - self._t0) * 1000)
            counters.in_flight.dec()
            counters.finished(self.status).inc()
            counters.seconds.observe(time.perf_counter() - self._t0)
            if self._done is not None:
                self._done.set()
        return self

    # -------------------------------------------------------------------------------- record
    @property
    def finished(self) -> bool:
        return self.status != "INPROCESS"

    def record(self) -> dict[str, Any]:
        """The execution record, with Boomi's field names."""
        return dict(zip(RECORD_FIELDS, self.record_values(), strict=True))

    def record_values(self) -> tuple[Any, ...]:
        """The values of the execution record, in the order of `RECORD_FIELDS`."""
        inputs, returned = self.inputs, self.returned
        return (
            self.id, self.process.name, self.process.version, self.execution_type, self.status,
            self.start_iso, self.duration_ms, len(inputs), self.inbound_error_count, len(returned),
            sum(d.size for d in inputs), sum(d.size for d in returned), self.message, self.parent_id,
            self.top_level_id, self.engine.atom_name, self.engine.node_id, self.process.mode,
            len(self.error_documents),
        )


def _drop_consumed_views(docs: list[Document], outputs: list[tuple[str | None, list[Document]]]) -> None:
    """Forget the parsed views of the input documents a shape did not pass on (it derived new ones from
    them): a parsed tree is often larger than the document, and nothing reads it again."""
    if len(outputs) == 1 and outputs[0][1] is docs:
        return
    kept = {id(d) for _, out in outputs for d in out}
    for d in docs:
        if id(d) not in kept:
            d.drop_views()


class Engine:
    """Runs processes of the current deployment. Shared by the CLI, the runtime and tests."""

    def __init__(self, deployment: Deployment, *, recorder: Recorder | None = None,
                 atom_name: str = "atom", node_id: str | None = None) -> None:
        self.deployment = deployment
        self.recorder = recorder
        self.atom_name = atom_name
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}"
        self._connections: dict[str, tuple[ConnectionDef, Connector]] = {}
        self._retired: list[Connector] = []
        self._conn_locks: dict[str, asyncio.Lock] = {}
        self._runtime_caches: dict[str, DocCache] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.running: dict[str, Execution] = {}

    # -------------------------------------------------------------------------------- deployment
    def deploy(self, deployment: Deployment) -> None:
        """Swap in a new deployment. Connections whose definition changed are rebuilt on next use;
        the old instances are stopped when the engine stops (in-flight executions may hold them)."""
        for name, (cdef, conn) in list(self._connections.items()):
            new = deployment.connections.get(name)
            if new is None or new.digest != cdef.digest:
                del self._connections[name]
                self._retired.append(conn)
        self.deployment = deployment

    async def connection(self, name: str) -> Connector:
        got = self._connections.get(name)
        if got is not None and got[1].started:
            return got[1]
        lock = self._conn_locks.setdefault(name, asyncio.Lock())
        async with lock:
            got = self._connections.get(name)
            if got is None:
                cdef = self.deployment.connections.get(name)
                if cdef is None:
                    raise DocumentError(f"connection '{name}' is not deployed")
                got = (cdef, cdef.build())
                self._connections[name] = got
            if not got[1].started:
                await got[1].start()
                got[1].started = True
            return got[1]

    def runtime_cache(self, name: str) -> DocCache:
        c = self._runtime_caches.get(name)
        if c is None:
            c = self._runtime_caches[name] = DocCache()
        return c

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Wait for background sub-processes, then stop every connection."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        conns = [c for _, c in self._connections.values()] + self._retired
        self._connections.clear()
        self._retired.clear()
        for c in conns:
            try:
                await c.stop()
            except Exception:
                log.exception("stopping connection %s failed", c.name)

    # -------------------------------------------------------------------------------- executing
    def new_execution(self, process: str | ProcessDef, docs: list[Document] | None = None, *,
                      properties: Mapping[str, str] | None = None, execution_type: str = "exec_manual",
                      parent: Execution | None = None, execution_id: str | None = None,
                      debug: bool = False, mocks: Mapping[str, Any] | None = None) -> Execution:
        """Create an execution without running it (so a caller can persist it first)."""
        pdef = self.deployment.processes.get(process) if isinstance(process, str) else process
        if pdef is None:
            raise KeyError(f"process '{process}' is not deployed")
        ex = Execution(self, pdef, execution_type=execution_type, properties=properties, parent=parent,
                       execution_id=execution_id, debug=debug, mocks=mocks)
        if docs is None:
            docs = [Document()] if pdef.start.kind in ("none", "schedule", "listen") else []
        ex.inputs = docs
        return ex

    async def run(self, ex: Execution) -> Execution:
        """Run a created execution, telling the recorder before and after."""
        self.running[ex.id] = ex
        try:
            if self.recorder is not None:
                await self.recorder.execution_started(ex)
            await ex.run()
        finally:
            self.running.pop(ex.id, None)
            if self.recorder is not None:
                try:
                    await self.recorder.execution_finished(ex)
                except Exception:
                    log.exception("recording execution %s failed", ex.id)
        return ex

    async def execute(self, process: str | ProcessDef, docs: list[Document] | None = None, **kw: Any) -> Execution:
        """Create and run an execution; returns it finished (status COMPLETE/ERROR/...)."""
        return await self.run(self.new_execution(process, docs, **kw))
