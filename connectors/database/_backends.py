"""The two database backends: SQLite through aiosqlite, PostgreSQL through an asyncpg pool.

Both offer the same small surface: `session()` lends a connection, `Session.transaction()` wraps work
in BEGIN / COMMIT (ROLLBACK when the block raises), `run` / `run_many` execute one statement, `fetch`
reads at most `limit` rows, `script` runs setup SQL. Every driver exception leaves as a `DbError`
that says whether it is worth retrying (connection lost, lock timeout) or not (constraint violation,
SQL error, bad value).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiosqlite
import asyncpg
import orjson

from atom.errors import ConnectorError

from ._values import json_text, to_json, to_postgres, to_sqlite


class DbError(ConnectorError):
    """A database failure. `retryable`: the connection or a lock failed, the same work may succeed on a
    new attempt. Otherwise the database answered with an error (`status` 409 for a constraint
    violation, 400 for anything else), so the circuit breaker counts the database as up."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None,
                 broken: bool = False) -> None:
        super().__init__(message, retryable=retryable or broken,
                         status=status if status is not None or retryable or broken else 400)
        #: the connection that raised it is unusable and must not go back to the pool
        self.broken = broken


@dataclass(slots=True)
class Result:
    """What one statement did: affected rows, SQLite's last row id (inserts), returned rows."""

    rowcount: int = 0
    last_row_id: int | None = None
    rows: list[dict[str, Any]] | None = None


class Session(Protocol):
    def transaction(self, write: bool) -> Any: ...

    async def run(self, sql: str, args: Sequence[Any], labels: Sequence[str]) -> Result: ...

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]], labels: Sequence[str],
                       last_row_id: bool) -> Result: ...

    async def fetch(self, sql: str, args: Sequence[Any], labels: Sequence[str],
                    limit: int) -> list[dict[str, Any]]: ...

    async def script(self, sql: str) -> None: ...


class Backend(Protocol):
    dialect: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def session(self) -> Any: ...


# ------------------------------------------------------------------------------------------------ SQLite

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def _sqlite_error(exc: BaseException) -> DbError:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.IntegrityError):
        return DbError(msg, status=409)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return DbError(msg, retryable=True)
    return DbError(msg)


class SqliteSession:
    """One aiosqlite connection in autocommit mode; transactions are explicit."""

    __slots__ = ("conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @asynccontextmanager
    async def transaction(self, write: bool) -> AsyncIterator[SqliteSession]:
        # BEGIN IMMEDIATE takes the write lock up front: two writers never deadlock on a lock upgrade.
        await self._plain("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                try:
                    await self.conn.rollback()
                except Exception:
                    pass
            raise
        await self._plain("COMMIT")

    async def _plain(self, sql: str) -> None:
        try:
            await self.conn.execute(sql)
        except (sqlite3.Error, ValueError) as exc:
            raise _sqlite_error(exc) from None

    async def run(self, sql: str, args: Sequence[Any], labels: Sequence[str]) -> Result:
        try:
            cur = await self.conn.execute(sql, [to_sqlite(a) for a in args])
            try:
                if cur.description is not None:
                    names = [d[0] for d in cur.description]
                    rows = [dict(zip(names, map(to_json, r), strict=True)) for r in await cur.fetchall()]
                    return Result(len(rows), cur.lastrowid, rows)
                return Result(max(cur.rowcount, 0), cur.lastrowid)
            finally:
                await cur.close()
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            raise _sqlite_error(exc) from None

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]], labels: Sequence[str],
                       last_row_id: bool) -> Result:
        try:
            cur = await self.conn.executemany(sql, [[to_sqlite(a) for a in r] for r in rows])
            count = max(cur.rowcount, 0)
            await cur.close()
            last = None
            if last_row_id:
                async with self.conn.execute("SELECT last_insert_rowid()") as c2:
                    got = await c2.fetchone()
                    last = int(got[0]) if got else None
            return Result(count, last)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            raise _sqlite_error(exc) from None

    async def fetch(self, sql: str, args: Sequence[Any], labels: Sequence[str],
                    limit: int) -> list[dict[str, Any]]:
        try:
            async with self.conn.execute(sql, [to_sqlite(a) for a in args]) as cur:
                if cur.description is None:
                    return []
                names = [d[0] for d in cur.description]
                return [dict(zip(names, map(to_json, r), strict=True)) for r in await cur.fetchmany(limit)]
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            raise _sqlite_error(exc) from None

    async def script(self, sql: str) -> None:
        try:
            await self.conn.executescript(sql)
        except (sqlite3.Error, ValueError) as exc:
            raise _sqlite_error(exc) from None


class SqliteBackend:
    """A SQLite database file (or `:memory:`) with up to `size` connections.

    Every connection enforces foreign keys (`PRAGMA foreign_keys = ON`) and waits up to `busy_timeout`
    seconds for a lock held by another connection or process. An in-memory database lives in exactly
    one connection, so it always has one.
    """

    dialect = "sqlite"

    def __init__(self, path: str, size: int, busy_timeout: float) -> None:
        self.path = path
        self.memory = path == ":memory:"
        self.size = 1 if self.memory else max(1, size)
        self.busy_timeout = busy_timeout
        self._idle: list[aiosqlite.Connection] = []
        self._all: set[aiosqlite.Connection] = set()
        self._slots = asyncio.Semaphore(self.size)
        self._closed = False

    async def open(self) -> None:
        """Resolve the path (relative to the working directory), create missing parent directories and
        open the first connection, so a bad path fails the start."""
        if not self.memory:
            self.path = os.path.abspath(self.path)
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            except OSError as exc:
                raise DbError(f"cannot create the directory of {self.path}: {exc.strerror or exc}") from None
        self._idle.append(await self._connect())

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise DbError(f"cannot open {self.path}: {exc}") from None
        try:
            await conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            await conn.close()
            raise DbError(f"cannot use {self.path}: {exc}") from None
        self._all.add(conn)
        return conn

    @asynccontextmanager
    async def session(self) -> AsyncIterator[SqliteSession]:
        if self._closed:
            raise DbError("the connection is stopped")
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            keep = True
            try:
                yield SqliteSession(conn)
            finally:
                if conn.in_transaction:  # left by a cancelled or failed block
                    try:
                        await conn.rollback()
                    except Exception:
                        keep = False
                if keep and not self._closed:
                    self._idle.append(conn)
                else:
                    self._all.discard(conn)
                    await conn.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._all.discard(conn)
            await conn.close()


# ------------------------------------------------------------------------------------------- PostgreSQL

#: SQLSTATE classes and codes that mean "the connection or server is not available right now"
_PG_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03", "53300")
#: errors PostgreSQL itself says to retry the whole transaction on
_PG_RETRY_STATES = ("40001", "40P01")


def _pg_error(exc: BaseException, timeout: float) -> DbError:
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.InterfaceError):
        state = getattr(exc, "sqlstate", "") or ""
        message = getattr(exc, "message", None) or str(exc)
        detail = getattr(exc, "detail", None)
        text = f"{message} ({detail})" if detail else message
        if state.startswith(_PG_CONNECTION_STATES):
            return DbError(text, broken=True)
        if state in _PG_RETRY_STATES:
            return DbError(text, retryable=True)
        if state == "57014":
            return DbError(f"statement cancelled: {text}")
        if state.startswith("23"):
            return DbError(text, status=409)
        if state.startswith("28"):
            return DbError(text, status=401)
        return DbError(text)
    if isinstance(exc, TimeoutError):
        return DbError(f"statement timed out after {timeout:g}s")
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
        # connection reset or closed in the middle of a statement, or the protocol left in a state it
        # cannot recover from (the server ended the session between two statements)
        return DbError(f"connection lost: {exc}", broken=True)
    return DbError(f"{type(exc).__name__}: {exc}")


def _connect_error(exc: BaseException, connect_timeout: float) -> DbError:
    if isinstance(exc, TimeoutError):
        return DbError(f"cannot connect: no answer within {connect_timeout:g}s", retryable=True)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.errno and os.strerror(exc.errno).lower() not in reason.lower():
            reason = f"{os.strerror(exc.errno)} ({reason})"
        return DbError(f"cannot connect: {reason}", retryable=True)
    err = _pg_error(exc, connect_timeout)
    return DbError(f"cannot connect: {err}", retryable=err.retryable, status=err.status)


def _count(status: str) -> int:
    last = status.rsplit(" ", 1)[-1] if status else ""
    return int(last) if last.isdigit() else 0


def _json_codec_values() -> dict[str, Any]:
    return {"encoder": json_text, "decoder": orjson.loads, "schema": "pg_catalog", "format": "text"}


async def _setup_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("json", **_json_codec_values())
    await conn.set_type_codec("jsonb", **_json_codec_values())


@dataclass(frozen=True, slots=True)
class _Shape:
    """What PostgreSQL said about a statement: parameter types and whether it returns rows."""

    params: tuple[tuple[str, str], ...]
    returns_rows: bool


class PostgresSession:
    __slots__ = ("backend", "conn")

    def __init__(self, conn: asyncpg.Connection, backend: PostgresBackend) -> None:
        self.conn = conn
        self.backend = backend

    @asynccontextmanager
    async def transaction(self, write: bool) -> AsyncIterator[PostgresSession]:
        tr = self.conn.transaction()
        try:
            await tr.start()
        except Exception as exc:
            raise _pg_error(exc, self.backend.timeout) from None
        try:
            yield self
        except BaseException:
            try:
                await tr.rollback()
            except Exception:
                pass
            raise
        try:
            await tr.commit()
        except Exception as exc:
            raise _pg_error(exc, self.backend.timeout) from None

    async def _shape(self, sql: str) -> _Shape:
        got = self.backend.shapes.get(sql)
        if got is None:
            stmt = await self.conn.prepare(sql)
            got = _Shape(tuple((p.name, p.kind) for p in stmt.get_parameters()), bool(stmt.get_attributes()))
            if len(self.backend.shapes) >= 1024:
                self.backend.shapes.clear()
            self.backend.shapes[sql] = got
        return got

    @staticmethod
    def _convert(args: Sequence[Any], shape: _Shape, labels: Sequence[str]) -> list[Any]:
        out = []
        for i, value in enumerate(args):
            name, kind = shape.params[i] if i < len(shape.params) else ("unknown", "scalar")
            try:
                out.append(to_postgres(value, name, kind))
            except (ValueError, orjson.JSONDecodeError) as exc:
                label = labels[i] if i < len(labels) else f"${i + 1}"
                raise DbError(f"parameter {label} ({name}): {exc}") from None
        return out

    async def run(self, sql: str, args: Sequence[Any], labels: Sequence[str]) -> Result:
        try:
            shape = await self._shape(sql)
            values = self._convert(args, shape, labels)
            if shape.returns_rows:
                records = await self.conn.fetch(sql, *values)
                rows = [{k: to_json(v) for k, v in r.items()} for r in records]
                return Result(len(rows), None, rows)
            return Result(_count(await self.conn.execute(sql, *values)))
        except DbError:
            raise
        except Exception as exc:
            raise _pg_error(exc, self.backend.timeout) from None

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]], labels: Sequence[str],
                       last_row_id: bool) -> Result:
        try:
            shape = await self._shape(sql)
            values = [self._convert(r, shape, labels) for r in rows]
            await self.conn.executemany(sql, values)
            return Result(len(values))
        except DbError:
            raise
        except Exception as exc:
            raise _pg_error(exc, self.backend.timeout) from None

    async def fetch(self, sql: str, args: Sequence[Any], labels: Sequence[str],
                    limit: int) -> list[dict[str, Any]]:
        """Read through a cursor (the caller holds a transaction), so at most `limit` rows arrive."""
        try:
            shape = await self._shape(sql)
            values = self._convert(args, shape, labels)
            if not shape.returns_rows:
                await self.conn.execute(sql, *values)
                return []
            cursor = await self.conn.cursor(sql, *values)
            records = await cursor.fetch(limit)
            return [{k: to_json(v) for k, v in r.items()} for r in records]
        except DbError:
            raise
        except Exception as exc:
            raise _pg_error(exc, self.backend.timeout) from None

    async def script(self, sql: str) -> None:
        try:
            await self.conn.execute(sql)
        except Exception as exc:
            raise _pg_error(exc, self.backend.timeout) from None


class PostgresBackend:
    """An asyncpg pool. json/jsonb columns read as JSON values and take JSON text or any JSON value."""

    dialect = "postgresql"

    def __init__(self, dsn: str, password: str | None, min_size: int, max_size: int, timeout: float,
                 connect_timeout: float) -> None:
        self.dsn = dsn
        self.password = password
        self.min_size = min(min_size, max_size)
        self.max_size = max_size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.pool: asyncpg.Pool | None = None
        #: statement text -> parameter types, learnt once per statement
        self.shapes: dict[str, _Shape] = {}

    async def open(self) -> None:
        """Create the pool and open `min_size` connections (a failure is a retryable DbError when the
        server could not be reached)."""
        pool = asyncpg.create_pool(
            dsn=self.dsn, password=self.password, min_size=self.min_size, max_size=self.max_size,
            timeout=self.connect_timeout, command_timeout=self.timeout, init=_setup_connection,
        )
        try:
            await pool
        except Exception as exc:
            pool.terminate()
            raise _connect_error(exc, self.connect_timeout) from None
        self.pool = pool

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PostgresSession]:
        pool = self.pool
        if pool is None:
            raise DbError("the connection is stopped")
        try:
            conn = await pool.acquire(timeout=self.connect_timeout + self.timeout)
        except Exception as exc:
            raise _connect_error(exc, self.connect_timeout) from None
        try:
            yield PostgresSession(conn, self)
        except DbError as exc:
            if exc.broken:
                try:
                    conn.terminate()
                except asyncpg.InterfaceError:  # the pool already let go of a closed connection
                    pass
            raise
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        """Close the pool, waiting up to `timeout` for borrowed connections, then terminate."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.timeout)
        except Exception:
            pool.terminate()
