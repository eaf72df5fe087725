"""The execution store: records (Boomi field names), execution logs, documents and stored responses.

`Store` is the interface the runtime works against (a PostgreSQL store for clusters can implement it
later); `SqliteStore` is the embedded default (`<data dir>/atom.db`, WAL).

What is kept follows the process mode (DESIGN 4.2): `general` keeps the record, the log, the inbound
and outbound documents (and the HTTP response); `bridge` the record and the log; `low_latency`
nothing unless the execution runs in debug (`X-Atom-Debug: true`) or was answered with 202 (then the
record and response are kept, because the client was promised a status link).

Writes are batched off the request path: recorder calls only queue the latest state of an execution,
and one writer task commits everything queued in a single transaction in a dedicated thread. Reads
see queued writes at once (they consult the queue first). `persist()` is the one write a caller waits
for: it makes the INPROCESS record durable before a 202 goes out.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import datetime as dt
import logging
import queue
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from . import metrics
from .document import Document
from .engine import RECORD_FIELDS
from .web_http import HttpResult

if TYPE_CHECKING:
    from .engine import Execution

log = logging.getLogger("atom.store")

#: (column, record field) of the executions table, in record order (`Execution.record_values()`)
COLUMNS: tuple[tuple[str, str], ...] = tuple(zip(
    ("id", "process", "version", "type", "status", "start_iso", "duration", "in_count", "in_error", "out_count",
     "in_size", "out_size", "message", "parent", "top", "atom", "node", "mode", "error_count"),
    RECORD_FIELDS, strict=True))
_RECORD_COLS = ", ".join(c for c, _ in COLUMNS)
_ALL_COLS = _RECORD_COLS + ", start_ts, properties, has_inputs"
_UPSERT = (
    f"INSERT INTO executions ({_ALL_COLS}) VALUES {{rows}} "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c, _ in COLUMNS[1:])
    + ", start_ts=excluded.start_ts, properties=COALESCE(excluded.properties, properties), "
      "has_inputs=MAX(has_inputs, excluded.has_inputs)"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    process TEXT NOT NULL,
    version INTEGER,
    type TEXT,
    status TEXT NOT NULL,
    start_iso TEXT,
    duration INTEGER,
    in_count INTEGER,
    in_error INTEGER,
    out_count INTEGER,
    in_size INTEGER,
    out_size INTEGER,
    message TEXT,
    parent TEXT,
    top TEXT,
    atom TEXT,
    node TEXT,
    mode TEXT,
    error_count INTEGER,
    start_ts REAL NOT NULL,
    properties TEXT,
    has_inputs INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS executions_time ON executions (start_ts, id);
CREATE INDEX IF NOT EXISTS executions_process ON executions (process, start_ts, id);
CREATE INDEX IF NOT EXISTS executions_status ON executions (status, start_ts, id);
CREATE TABLE IF NOT EXISTS execution_data (
    id TEXT PRIMARY KEY,
    inbound BLOB,
    outbound BLOB,
    logs BLOB,
    response BLOB
);
"""


_DATA_UPSERT = (
    "INSERT INTO execution_data (id, inbound, outbound, logs, response) VALUES {rows} "
    "ON CONFLICT(id) DO UPDATE SET inbound=COALESCE(excluded.inbound, inbound), "
    "outbound=COALESCE(excluded.outbound, outbound), logs=COALESCE(excluded.logs, logs), "
    "response=COALESCE(excluded.response, response)"
)
_U32 = struct.Struct("<I")
#: rows per INSERT statement: one statement per chunk keeps the writer thread from taking the GIL back
#: after every row (executemany releases and retakes it around each one)
_ROWS_PER_STATEMENT = 200


class _Upsert:
    """An INSERT of several rows at once; the statement text of each row count is made once."""

    __slots__ = ("marks", "sql", "texts")

    def __init__(self, sql: str, width: int) -> None:
        self.sql = sql
        self.marks = "(" + ", ".join("?" * width) + ")"
        self.texts: dict[int, str] = {}

    def text(self, n: int) -> str:
        got = self.texts.get(n)
        if got is None:
            got = self.texts[n] = self.sql.format(rows=", ".join([self.marks] * n))
        return got

    def run(self, c: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) == 1:
            c.execute(self.text(1), rows[0])
            return
        for k in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[k:k + _ROWS_PER_STATEMENT]
            c.execute(self.text(len(chunk)), [v for r in chunk for v in r])


_RECORDS = _Upsert(_UPSERT, len(COLUMNS) + 3)
_DATA = _Upsert(_DATA_UPSERT, 5)
_U32X2 = struct.Struct("<II")


def frame_documents(docs: list[tuple[bytes, dict[str, str]]]) -> bytes:
    """Documents as one blob: per document `<u32 props length><u32 data length><props JSON><data>`."""
    parts: list[bytes] = []
    for data, props in docs:
        pj = orjson.dumps(props)
        parts += (_U32X2.pack(len(pj), len(data)), pj, data)
    return b"".join(parts)


def unframe_documents(blob: bytes) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    view, pos = memoryview(blob), 0
    while pos < len(blob):
        plen, dlen = _U32X2.unpack_from(view, pos)
        pos += 8
        props = orjson.loads(view[pos:pos + plen])
        pos += plen
        out.append((bytes(view[pos:pos + dlen]), props))
        pos += dlen
    return out


_SAME_BODY = 0x80000000


def frame_response(r: HttpResult, single_out: bytes | None = None) -> bytes:
    """A response as one blob: `<u32 status><u32 headers length><headers JSON><body>`. When the body is
    the one outbound document stored beside it (`single_out`, the usual case), it is not stored twice:
    the status gets a flag bit."""
    hj = orjson.dumps(r.headers)
    if single_out is not None and r.body and single_out is r.body:
        return _U32X2.pack(r.status | _SAME_BODY, len(hj)) + hj
    return _U32X2.pack(r.status, len(hj)) + hj + r.body


def unframe_response(blob: bytes, outbound: bytes | None) -> HttpResult:
    status, hlen = _U32X2.unpack_from(blob, 0)
    headers = dict(orjson.loads(blob[8:8 + hlen]))
    if status & _SAME_BODY:
        docs = unframe_documents(outbound or b"")
        return HttpResult(status & ~_SAME_BODY, headers, docs[0][0] if docs else b"")
    return HttpResult(status, headers, bytes(blob[8 + hlen:]))


@dataclass(frozen=True, slots=True)
class StoredDocument:
    direction: str  # inbound | outbound
    index: int
    props: dict[str, str]
    data: bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON form: `data` as UTF-8 text when it decodes, else base64 (`encoding`)."""
        try:
            text, enc = self.data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, enc = base64.b64encode(self.data).decode("ascii"), "base64"
        return {"direction": self.direction, "index": self.index, "size": len(self.data),
                "properties": self.props, "data": text, "encoding": enc}


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A page of execution records, newest first. Times are epoch seconds; `cursor` comes from the
    previous page's `next_cursor`."""

    process: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    #: None when this is the last page
    next_cursor: str | None


class CursorError(ValueError):
    """A malformed pagination cursor."""


def encode_cursor(start_ts: float, execution_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([start_ts, execution_id])).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, eid = orjson.loads(raw)
        return float(ts), str(eid)
    except Exception:
        raise CursorError(f"invalid cursor '{cursor}'") from None


class Store(abc.ABC):
    """Where executions are recorded; implements the engine's `Recorder` protocol.

    Recorder calls never block on I/O (they queue); reads see queued writes. Getters return None for
    an unknown execution id (or one whose data the mode did not keep).
    """

    @abc.abstractmethod
    async def open(self, *, recover: bool = True) -> int:
        """Open (creating the schema); with `recover`, mark executions left INPROCESS by a crash ABORTED.
        Returns how many were marked. `recover=False` is for an Atom whose other processes share the
        store and may be running executions."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything queued, then close."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything queued so far is committed."""

    @abc.abstractmethod
    async def execution_started(self, ex: Execution) -> None: ...

    @abc.abstractmethod
    async def execution_finished(self, ex: Execution) -> None: ...

    @abc.abstractmethod
    async def persist(self, ex: Execution) -> None:
        """Make the execution's record (and, in general mode, its inbound documents) durable now, whatever
        its mode; from then on it is recorded like a general/bridge one."""

    @abc.abstractmethod
    def save_response(self, execution_id: str, response: HttpResult) -> None:
        """Queue the HTTP response of an execution."""

    @abc.abstractmethod
    async def get_record(self, execution_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def list_records(self, query: ListQuery) -> Page:
        """Records newest first (by start time, then id), keyset-paginated. Raises CursorError."""

    @abc.abstractmethod
    async def get_logs(self, execution_id: str) -> list[dict[str, Any]] | None: ...

    @abc.abstractmethod
    async def get_documents(self, execution_id: str) -> list[StoredDocument]:
        """Stored documents, inbound first; empty when none were kept."""

    @abc.abstractmethod
    async def get_response(self, execution_id: str) -> HttpResult | None: ...

    @abc.abstractmethod
    async def get_inputs(self, execution_id: str) -> tuple[dict[str, str], list[Document]] | None:
        """The process properties and inbound documents an execution started with, for a retry; None
        when they were not kept (mode bridge or low_latency) or the id is unknown."""

    @abc.abstractmethod
    async def purge(self, before: float) -> int:
        """Delete executions that started before `before` (epoch seconds). Returns how many."""


# ---------------------------------------------------------------------------------------------- sqlite


class _Pending:
    """Queued writes of one execution, already serialized (bytes are invisible to the garbage collector,
    so queued executions cost it nothing). A running execution (`ex`) is turned into its row when the
    batch is taken, a finished one at once: one that starts and finishes between two flushes is
    written once, in its final state."""

    __slots__ = ("docs", "ex", "finished", "inputs", "logs", "outputs", "props", "record", "response",
                 "single_out")

    def __init__(self) -> None:
        self.ex: Execution | None = None
        self.docs = False
        self.finished = False
        self.record: tuple[Any, ...] | None = None
        self.props: bytes | None = None
        self.inputs: bytes | None = None
        self.outputs: bytes | None = None
        #: the data of the only outbound document (a response with this very body is not stored twice)
        self.single_out: bytes | None = None
        self.logs: bytes | None = None
        self.response: bytes | None = None

    def materialize(self) -> None:
        ex = self.ex
        if ex is None:
            return
        self.record = (*ex.record_values(), ex.start_time.timestamp(), self.props, 1 if self.docs else 0)
        if self.finished:
            if ex.logs:
                self.logs = orjson.dumps([e.to_dict() for e in ex.logs])
            if self.docs:
                out = ex.returned
                self.outputs = frame_documents([(d.data, d.props) for d in out])
                self.single_out = out[0].data if len(out) == 1 else None
        self.ex = None

    def current_record(self) -> dict[str, Any] | None:
        if self.ex is not None:
            return self.ex.record()
        return _record_from_row(self.record) if self.record is not None else None


def _record_from_row(row: Sequence[Any]) -> dict[str, Any]:
    return {f: row[i] for i, (_, f) in enumerate(COLUMNS)}


ABORTED_MESSAGE = "the Atom stopped while the execution was in process"


def mark_aborted(c: sqlite3.Connection, node: str | None = None) -> int:
    """Mark the executions left INPROCESS ABORTED: all of them, or those of one node (`nodeId`, the
    process that ran them). Returns how many."""
    sql = "UPDATE executions SET status='ABORTED', message=? WHERE status='INPROCESS'"
    args: list[Any] = [ABORTED_MESSAGE]
    if node is not None:
        sql += " AND node=?"
        args.append(node)
    cur = c.execute(sql, args)
    return int(cur.rowcount or 0)


def abort_in_process(path: str | Path, node: str) -> int:
    """Mark ABORTED the executions one node (a process that ended without finishing them) left
    INPROCESS in the SQLite store at `path`. Returns how many."""
    c = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        c.execute("PRAGMA busy_timeout=30000")
        return mark_aborted(c, node)
    finally:
        c.close()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """Give a future its result (in its loop's thread), unless its awaiter was cancelled."""
    if fut.cancelled():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


class _WriterThread:
    """One thread running functions in the order they were submitted, each settling an asyncio future
    of the caller's loop. A write costs a queue put and one wake-up of the loop: no executor future is
    made and chained to an asyncio one."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop,
                                             asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._thread is None:
            # a daemon: a store left open does not hold the interpreter at exit (`stop()` ends the thread)
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args, loop, fut))
        return fut

    def stop(self) -> None:
        """Let the thread end once what was submitted before is done."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fn, args, loop, fut = item
            result: Any = None
            exc: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as e:
                exc = e
            del fn, args, item
            try:
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:  # the loop is closed: nobody waits for the result any more
                pass
            del loop, fut, result, exc


class SqliteStore(Store):
    """The embedded store: one SQLite file in WAL mode, a writer thread and a reader thread.

    Tables: `executions` (one row per record, indexed by time, process and status for keyset
    pagination) and `execution_data` (one row per execution: inbound and outbound documents framed in
    one blob each, the log as JSON, the stored HTTP response).
    """

    #: the shortest time between two write transactions (seconds): batches grow under load
    batch_interval = 0.005

    def __init__(self, path: str | Path, *, atom_name: str = "atom", node_id: str = "") -> None:
        self.path = Path(path)
        self.atom_name = atom_name
        self.node_id = node_id
        self._dirty: dict[str, _Pending] = {}
        self._flushing: dict[str, _Pending] = {}
        self._forced: set[str] = set()
        self._seq = 0
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._wthread = _WriterThread("atom-store-write")
        self._rexec = ThreadPoolExecutor(1, thread_name_prefix="atom-store-read")
        self._local = threading.local()

    # ------------------------------------------------------------------------------ connections
    def _conn(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            c.execute("PRAGMA busy_timeout=30000")
            c.execute("PRAGMA journal_mode=WAL")
            # WAL survives a killed process with NORMAL (no fsync per commit); a larger WAL between
            # checkpoints copies hot pages back to the database less often
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA wal_autocheckpoint=8000")
            c.execute("PRAGMA journal_size_limit=67108864")
            self._local.conn = c
        return c

    def _close_conn(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    async def _read(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._rexec, fn, *args)

    async def _write_now(self, fn: Any, *args: Any) -> Any:
        return await self._wthread.submit(fn, *args)

    # ------------------------------------------------------------------------------ lifecycle
    async def open(self, *, recover: bool = True) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        marked: int = await self._write_now(self._open_sync, recover)
        self._wake = asyncio.Event()
        self._writer = asyncio.ensure_future(self._write_loop())
        if marked:
            log.warning("%d execution(s) left INPROCESS by an earlier stop were marked ABORTED", marked)
        return marked

    def _open_sync(self, recover: bool) -> int:
        c = self._conn()
        c.executescript(SCHEMA)
        return mark_aborted(c) if recover else 0

    async def close(self) -> None:
        if self._writer is None:
            return
        self._closing = True
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), 60)
        except (TimeoutError, asyncio.CancelledError):
            log.error("the store writer did not finish in time; some execution data may be lost")
        self._writer = None
        loop = asyncio.get_running_loop()
        await self._wthread.submit(self._close_conn)
        await loop.run_in_executor(self._rexec, self._close_conn)
        self._wthread.stop()
        self._rexec.shutdown(wait=False)

    # ------------------------------------------------------------------------------ queueing
    def _kick(self) -> None:
        self._seq += 1
        if self._wake is not None:
            self._wake.set()

    def _pending(self, execution_id: str) -> _Pending:
        p = self._dirty.get(execution_id)
        if p is None:
            p = self._dirty[execution_id] = _Pending()
        return p

    def _kept(self, ex: Execution) -> tuple[bool, bool]:
        forced = ex.id in self._forced
        return ex.keeps_record or forced, ex.keeps_documents

    async def execution_started(self, ex: Execution) -> None:
        keep, docs = self._kept(ex)
        if not keep:
            return
        p = self._pending(ex.id)
        p.ex, p.docs = ex, docs
        if p.props is None:
            p.props = orjson.dumps(ex.properties)
        if docs and p.inputs is None:
            p.inputs = frame_documents([(d.data, d.props) for d in ex.inputs])
        self._kick()

    async def execution_finished(self, ex: Execution) -> None:
        keep, docs = self._kept(ex)
        self._forced.discard(ex.id)
        if not keep:
            return
        p = self._pending(ex.id)
        p.ex, p.docs, p.finished = ex, docs, True
        p.materialize()  # now: holding on to the execution until the flush would keep far more alive
        self._kick()

    async def persist(self, ex: Execution) -> None:
        if not ex.finished:
            self._forced.add(ex.id)
        p = self._pending(ex.id)
        if p.ex is None and p.record is None:  # kept modes queued the record when they started
            p.ex, p.docs = ex, ex.keeps_documents
            p.finished = ex.finished
        self._kick()
        await self.flush()

    def save_response(self, execution_id: str, response: HttpResult) -> None:
        p = self._pending(execution_id)
        p.response = frame_response(response, p.single_out)
        self._kick()

    async def flush(self) -> None:
        if self._writer is None or self._written >= self._seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._seq, fut))
        self._kick()
        await fut

    async def _write_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            await self._wake.wait()
            # under load, let a batch gather for a few milliseconds (unless someone waits for it)
            pause = self.batch_interval - (loop.time() - last)
            if pause > 0 and not self._waiters and not self._closing:
                await asyncio.sleep(pause)
            last = loop.time()
            self._wake.clear()
            if self._dirty:
                batch, self._dirty = self._dirty, {}
                for p in batch.values():
                    p.materialize()
                self._flushing = batch
                target = self._seq
                try:
                    await self._wthread.submit(self._write_batch, batch)
                    metrics.STORE_BATCHES.inc()
                    metrics.STORE_EXECUTIONS.inc(len(batch))
                except Exception:
                    log.exception("writing %d execution(s) to the store failed", len(batch))
                finally:
                    self._flushing = {}
                self._written = max(self._written, target)
            else:
                self._written = self._seq
            still = []
            for target, fut in self._waiters:
                if self._written >= target:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((target, fut))
            self._waiters = still
            if still:
                self._wake.set()
            if self._closing and not self._dirty:
                for _, fut in self._waiters:
                    if not fut.done():
                        fut.set_result(None)
                return

    def _write_batch(self, batch: dict[str, _Pending]) -> None:
        c = self._conn()
        records: list[tuple[Any, ...]] = []
        data: list[tuple[Any, ...]] = []
        for eid, p in batch.items():
            if p.record is not None:
                records.append(p.record)
            if p.inputs is not None or p.outputs is not None or p.logs is not None or p.response is not None:
                data.append((eid, p.inputs, p.outputs, p.logs, p.response))
        c.execute("BEGIN IMMEDIATE")
        try:
            if records:
                _RECORDS.run(c, records)
            if data:
                _DATA.run(c, data)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _queued(self, execution_id: str) -> list[_Pending]:
        """Queued writes of an execution, newest first."""
        return [p for p in (self._dirty.get(execution_id), self._flushing.get(execution_id)) if p is not None]

    # ------------------------------------------------------------------------------ reads
    async def get_record(self, execution_id: str) -> dict[str, Any] | None:
        for p in self._queued(execution_id):
            rec = p.current_record()
            if rec is not None:
                return rec
        row = await self._read(self._get_record_sync, execution_id)
        return _record_from_row(row) if row else None

    def _get_record_sync(self, execution_id: str) -> Any:
        return self._conn().execute(f"SELECT {_RECORD_COLS} FROM executions WHERE id=?", (execution_id,)).fetchone()

    async def list_records(self, query: ListQuery) -> Page:
        after = decode_cursor(query.cursor) if query.cursor else None
        await self.flush()
        rows = await self._read(self._list_sync, query, after)
        items = [_record_from_row(r) for r in rows[:query.limit]]
        nxt = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            nxt = encode_cursor(last[len(COLUMNS)], last[0])
        return Page(items, nxt)

    def _list_sync(self, q: ListQuery, after: tuple[float, str] | None) -> list[Any]:
        sql, args = self.list_sql(q, after)
        return self._conn().execute(sql, args).fetchall()

    @staticmethod
    def list_sql(q: ListQuery, after: tuple[float, str] | None) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if q.process:
            where.append("process = ?")
            args.append(q.process)
        if q.status:
            where.append("status = ?")
            args.append(q.status)
        if q.since is not None:
            where.append("start_ts >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("start_ts < ?")
            args.append(q.until)
        if after is not None:
            where.append("(start_ts, id) < (?, ?)")
            args.extend(after)
        sql = f"SELECT {_RECORD_COLS}, start_ts FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_ts DESC, id DESC LIMIT ?"
        args.append(q.limit + 1)
        return sql, args

    async def get_logs(self, execution_id: str) -> list[dict[str, Any]] | None:
        for p in self._queued(execution_id):
            if p.ex is not None and p.finished:
                return [e.to_dict() for e in p.ex.logs]
            if p.logs is not None:
                return list(orjson.loads(p.logs))
        row = await self._read(self._data, execution_id, "logs")
        return list(orjson.loads(row)) if row is not None else None

    def _data(self, execution_id: str, column: str) -> Any:
        row = self._conn().execute(f"SELECT {column} FROM execution_data WHERE id=?", (execution_id,)).fetchone()
        return row[0] if row else None

    async def get_documents(self, execution_id: str) -> list[StoredDocument]:
        await self.flush()
        row = await self._read(lambda: self._conn().execute(
            "SELECT inbound, outbound FROM execution_data WHERE id=?", (execution_id,)).fetchone())
        out: list[StoredDocument] = []
        for direction, blob in zip(("inbound", "outbound"), row or (), strict=False):
            if blob:
                out += [StoredDocument(direction, i, props, data)
                        for i, (data, props) in enumerate(unframe_documents(blob))]
        return out

    async def get_response(self, execution_id: str) -> HttpResult | None:
        for p in self._queued(execution_id):
            if p.response is not None:
                return unframe_response(p.response, p.outputs)
        row = await self._read(lambda: self._conn().execute(
            "SELECT response, outbound FROM execution_data WHERE id=?", (execution_id,)).fetchone())
        return unframe_response(row[0], row[1]) if row and row[0] is not None else None

    async def get_inputs(self, execution_id: str) -> tuple[dict[str, str], list[Document]] | None:
        await self.flush()

        def read() -> Any:
            c = self._conn()
            rec = c.execute("SELECT properties, has_inputs FROM executions WHERE id=?", (execution_id,)).fetchone()
            if not rec or not rec[1]:
                return None
            return rec[0], self._data(execution_id, "inbound")

        got = await self._read(read)
        if got is None:
            return None
        props_raw, blob = got
        props = dict(orjson.loads(props_raw)) if props_raw else {}
        return props, [Document(data, dict(p)) for data, p in unframe_documents(blob or b"")]

    async def purge(self, before: float) -> int:
        await self.flush()
        return int(await self._write_now(self._purge_sync, before))

    def _purge_sync(self, before: float) -> int:
        c = self._conn()
        total = 0
        while True:
            ids = [r[0] for r in c.execute("SELECT id FROM executions WHERE start_ts < ? LIMIT 2000",
                                           (before,)).fetchall()]
            if not ids:
                return total
            marks = ",".join("?" * len(ids))
            c.execute("BEGIN IMMEDIATE")
            try:
                for table in ("execution_data", "executions"):
                    c.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            total += len(ids)


def parse_time(value: str) -> float:
    """ISO 8601 (`2024-05-01T10:00:00Z`, a date alone is midnight UTC) or epoch milliseconds -> epoch
    seconds. Raises ValueError."""
    v = value.strip()
    if v.isdigit():
        return int(v) / 1000.0
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time or epoch milliseconds, got '{value}'") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def days_ago(days: float) -> float:
    return time.time() - days * 86400.0
