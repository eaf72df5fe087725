"""The database backends: SQLite through aiosqlite, PostgreSQL through an asyncpg pool, MySQL and
MariaDB through a pool of aiomysql connections.

All offer the same small surface: `session()` lends a connection, `Session.transaction()` wraps work
in BEGIN / COMMIT (ROLLBACK when the block raises), `run` / `run_many` execute one statement, `fetch`
reads at most `limit` rows, `script` runs setup SQL. Every driver exception leaves as a `DbError`
that says whether it is worth retrying (connection lost, lock timeout) or not (constraint violation,
SQL error, bad value).
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiomysql
import aiosqlite
import asyncpg
import orjson
import pymysql
from pymysql.constants import CLIENT

from atom.errors import AUTH, INVALID, REJECTED, TIMEOUT, UNREACHABLE, ConnectorError

from ._spec import DatabaseUrl
from ._values import MYSQL_DECODERS, json_text, mysql_literal, to_json, to_postgres, to_sqlite

T = TypeVar("T")


class DbError(ConnectorError):
    """A database failure. `retryable`: the connection or a lock failed, the same work may succeed on a
    new attempt. Otherwise the database answered with an error (`status` 409 for a constraint
    violation, 400 for anything else), so the circuit breaker counts the database as up. A `broken`
    connection is of kind `unreachable`."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None,
                 broken: bool = False, kind: str | None = None) -> None:
        super().__init__(message, retryable=retryable or broken,
                         status=status if status is not None or retryable or broken else 400,
                         kind=kind if kind is not None or not broken else UNREACHABLE)
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
        return DbError(msg, status=409, kind=REJECTED)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return DbError(msg, retryable=True, kind=TIMEOUT)  # busy_timeout ran out waiting for a lock
    if isinstance(exc, (ValueError, OverflowError, sqlite3.DataError, sqlite3.InterfaceError)):
        return DbError(msg, kind=INVALID)  # a value that cannot be stored
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
        if state == "57014":  # statement_timeout, or cancelled by another session
            return DbError(f"statement cancelled: {text}", kind=TIMEOUT if "timeout" in text else None)
        if state.startswith("23"):
            return DbError(text, status=409, kind=REJECTED)
        if state.startswith("28"):
            return DbError(text, status=401, kind=AUTH)
        if state.startswith("22"):  # data exception: a value out of range, of the wrong form, ...
            return DbError(text, kind=INVALID)
        return DbError(text)
    if isinstance(exc, TimeoutError):
        return DbError(f"statement timed out after {timeout:g}s", kind=TIMEOUT)
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
        # connection reset or closed in the middle of a statement, or the protocol left in a state it
        # cannot recover from (the server ended the session between two statements)
        return DbError(f"connection lost: {exc}", broken=True)
    return DbError(f"{type(exc).__name__}: {exc}")


def _connect_error(exc: BaseException, connect_timeout: float,
                   classify: Callable[[BaseException, float], DbError] = _pg_error) -> DbError:
    if isinstance(exc, TimeoutError):
        return DbError(f"cannot connect: no answer within {connect_timeout:g}s", retryable=True, kind=TIMEOUT)
    if isinstance(exc, ssl.SSLError):  # a certificate or TLS setting that is wrong, not a passing failure
        return DbError(f"cannot connect: TLS: {exc.reason or exc}", kind=UNREACHABLE)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.errno and os.strerror(exc.errno).lower() not in reason.lower():
            reason = f"{os.strerror(exc.errno)} ({reason})"
        return DbError(f"cannot connect: {reason}", retryable=True, kind=UNREACHABLE)
    err = classify(exc, connect_timeout)
    return DbError(f"cannot connect: {err}", retryable=err.retryable, status=err.status, kind=err.kind)


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
                raise DbError(f"parameter {label} ({name}): {exc}", kind=INVALID) from None
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


# ------------------------------------------------------------------------------------------------ MySQL

#: error numbers of a connection that is gone or of a server that cannot take it right now: too many
#: connections, shutdown in progress, aborted connection, network read / write errors, MariaDB's
#: "connection was killed", the client's "cannot connect", "server has gone away", "lost connection",
#: MySQL's "disconnected for inactivity"
_MY_CONNECTION_ERRORS = frozenset({1040, 1053, 1152, 1154, 1155, 1156, 1158, 1159, 1160, 1161, 1927,
                                   2002, 2003, 2006, 2013, 2055, 4031})
#: deadlock (the server rolled the transaction back) and lock wait timeout: worth a new attempt
_MY_RETRY_ERRORS = frozenset({1205, 1213})
#: MariaDB's max_statement_time and MySQL's max_execution_time ran out
_MY_TIMEOUT_ERRORS = frozenset({1969, 3024})
#: NOT NULL, duplicate key, foreign key, missing value without default, CHECK constraint
_MY_CONSTRAINT_ERRORS = frozenset({1048, 1062, 1169, 1216, 1217, 1364, 1451, 1452, 1557, 1586, 3819, 4025})
#: access denied (user, password, database)
_MY_AUTH_ERRORS = frozenset({1044, 1045, 1698})
#: a value out of range, too long, of the wrong form (strict mode), division by zero, invalid JSON text
_MY_VALUE_ERRORS = frozenset({1264, 1265, 1292, 1365, 1366, 1367, 1406, 1411, 1690, 3140, 3141})
#: a bulk INSERT is cut into statements of about this many characters (well below max_allowed_packet)
_MY_CHUNK = 1_000_000
#: a generated INSERT: what comes before the row, the row's placeholders, and the rest (ON DUPLICATE ...)
_MY_INSERT = re.compile(r"(?P<head>INSERT INTO .+? VALUES )(?P<values>\(%\(1\)s(?:, %\(\d+\)s)*\))(?P<tail>.*)",
                        re.DOTALL)


def _my_error(exc: BaseException, timeout: float) -> DbError:
    if isinstance(exc, pymysql.err.InterfaceError):  # the driver lost or closed the connection
        return DbError(f"connection lost: {exc}", broken=True)
    args: tuple[Any, ...] = exc.args
    if isinstance(exc, pymysql.err.MySQLError) and len(args) >= 2 and isinstance(args[0], int):
        code, text = args[0], str(args[1])
        if code in _MY_CONNECTION_ERRORS:
            return DbError(text, broken=True)
        if code in _MY_RETRY_ERRORS:
            return DbError(text, retryable=True, kind=TIMEOUT if code == 1205 else None)  # 1205: lock wait
        if code in _MY_TIMEOUT_ERRORS:
            return DbError(f"statement timed out after {timeout:g}s", kind=TIMEOUT)
        if code == 1317:  # KILL QUERY from another session
            return DbError(f"statement cancelled: {text}")
        if code in _MY_CONSTRAINT_ERRORS:
            return DbError(text, status=409, kind=REJECTED)
        if code in _MY_AUTH_ERRORS:
            return DbError(text, status=401, kind=AUTH)
        if code in _MY_VALUE_ERRORS:
            return DbError(text, kind=INVALID)
        return DbError(text)
    if isinstance(exc, (OSError, asyncio.IncompleteReadError, pymysql.err.InternalError)):
        # reset in the middle of a statement, or the protocol out of step (a packet out of order)
        return DbError(f"connection lost: {exc}", broken=True)
    return DbError(f"{type(exc).__name__}: {exc}")


def _my_connect_error(exc: BaseException, connect_timeout: float) -> DbError:
    cause = exc.__cause__
    if isinstance(exc, pymysql.err.OperationalError) and exc.args and exc.args[0] == 2003 and cause is not None:
        exc = cause  # "Can't connect to MySQL server on ..." wraps the socket's own reason
    return _connect_error(exc, connect_timeout, _my_error)


class _Cursor(aiomysql.Cursor):
    """A buffered cursor that leaves the server's warnings alone: the driver would fetch them with one
    more round trip and raise each as a Python warning (a note such as "table already exists")."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


class _StreamCursor(aiomysql.SSCursor):
    """An unbuffered cursor (rows are read as they are fetched), quiet like `_Cursor`."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


class MysqlSession:
    """One MySQL connection in autocommit mode; transactions are explicit. Parameters are rendered as
    SQL literals by the driver's escaping (MySQL's text protocol has no bound parameters)."""

    __slots__ = ("backend", "conn")

    def __init__(self, conn: Any, backend: MysqlBackend) -> None:
        self.conn = conn
        self.backend = backend

    @asynccontextmanager
    async def transaction(self, write: bool) -> AsyncIterator[MysqlSession]:
        await self._plain("START TRANSACTION")
        try:
            yield self
        except BaseException:
            if not self.conn.closed:
                try:
                    await asyncio.wait_for(self._execute("ROLLBACK"), self.backend.timeout)
                except Exception:
                    self.conn.close()  # its state is unknown: it must not go back to the pool
            raise
        await self._plain("COMMIT")

    async def _guard(self, work: Awaitable[T]) -> T:
        """Run `work` within the statement timeout; driver errors leave as DbError."""
        try:
            return await asyncio.wait_for(work, self.backend.client_wait)
        except TimeoutError:
            await self.backend.abandon(self.conn)
            raise DbError(f"statement timed out after {self.backend.timeout:g}s", kind=TIMEOUT) from None
        except DbError:
            raise
        except Exception as exc:
            raise _my_error(exc, self.backend.timeout) from None

    async def _execute(self, sql: str) -> None:
        cur = await self.conn.cursor(_Cursor)
        try:
            await cur.execute(sql)
            while await cur.nextset():  # a text of several statements: each one's result, or error
                pass
        finally:
            await cur.close()

    async def _plain(self, sql: str) -> None:
        await self._guard(self._execute(sql))

    def _render(self, sql: str, args: Sequence[Any], labels: Sequence[str]) -> str:
        literals: dict[str, str] = {}
        for i, value in enumerate(args):
            try:
                literals[str(i + 1)] = mysql_literal(value, self.conn.escape)
            except ValueError as exc:
                label = labels[i] if i < len(labels) else f"%({i + 1})s"
                raise DbError(f"parameter {label}: {exc}", kind=INVALID) from None
        return sql % literals

    async def run(self, sql: str, args: Sequence[Any], labels: Sequence[str]) -> Result:
        text = self._render(sql, args, labels)

        async def work() -> Result:
            cur = await self.conn.cursor(_Cursor)
            try:
                await cur.execute(text)
                if cur.description is not None:
                    names = [d[0] for d in cur.description]
                    rows = [dict(zip(names, map(to_json, r), strict=True)) for r in await cur.fetchall()]
                    return Result(len(rows), None, rows)
                return Result(max(cur.rowcount, 0), cur.lastrowid or None)
            finally:
                await cur.close()

        return await self._guard(work())

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]], labels: Sequence[str],
                       last_row_id: bool) -> Result:
        """A generated INSERT for many rows: one multi-row INSERT per about _MY_CHUNK characters."""
        m = _MY_INSERT.fullmatch(sql)
        if m is None:
            total = 0
            for args in rows:
                total += (await self.run(sql, args, labels)).rowcount
            return Result(total)
        groups = [self._render(m["values"], args, labels) for args in rows]
        start, end = m["head"] % {}, m["tail"] % {}
        texts: list[str] = []
        chunk: list[str] = []
        size = 0
        for group in groups:
            if chunk and size + len(group) > _MY_CHUNK:
                texts.append(start + ", ".join(chunk) + end)
                chunk, size = [], 0
            chunk.append(group)
            size += len(group) + 2
        texts.append(start + ", ".join(chunk) + end)

        async def work() -> Result:
            total = 0
            cur = await self.conn.cursor(_Cursor)
            try:
                for text in texts:
                    await cur.execute(text)
                    total += max(cur.rowcount, 0)
            finally:
                await cur.close()
            return Result(total)

        return await self._guard(work())

    async def fetch(self, sql: str, args: Sequence[Any], labels: Sequence[str],
                    limit: int) -> list[dict[str, Any]]:
        """Read through an unbuffered cursor, so at most `limit` rows are held (the rest is skipped)."""
        text = self._render(sql, args, labels)

        async def work() -> list[dict[str, Any]]:
            cur = await self.conn.cursor(_StreamCursor)
            try:
                await cur.execute(text)
                if cur.description is None:
                    return []
                names = [d[0] for d in cur.description]
                return [dict(zip(names, map(to_json, r), strict=True)) for r in await cur.fetchmany(limit)]
            finally:
                await cur.close()

        return await self._guard(work())

    async def script(self, sql: str) -> None:
        """Setup SQL as it is (no parameters); several statements separated by `;` run in order."""
        await self._plain(sql)


class MysqlBackend:
    """A pool of aiomysql connections to MySQL or MariaDB.

    Each connection runs in autocommit mode with the client flag FOUND_ROWS (an UPDATE counts the
    rows it matched, as PostgreSQL and SQLite do, not only those it changed), the session time zone
    UTC (TIMESTAMP values read and written in UTC) and the server's own statement time limit set to
    `timeout` (MariaDB: every statement, MySQL: SELECT). `min_size` connections open at start;
    at most `max_size` are open at once.
    """

    dialect = "mysql"

    def __init__(self, url: DatabaseUrl, password: str | None, min_size: int, max_size: int, timeout: float,
                 connect_timeout: float) -> None:
        self.url = url
        self.password = password
        self.max_size = max(1, max_size)
        self.min_size = min(min_size, self.max_size)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        #: the client gives the server's own time limit a moment to answer first
        self.client_wait = timeout + 1.0
        self._tls: ssl.SSLContext | None = None
        self._idle: list[Any] = []
        self._busy: set[Any] = set()
        self._slots = asyncio.Semaphore(self.max_size)
        self._closed = False

    async def open(self) -> None:
        """Open `min_size` connections, so an unreachable server or a wrong password fails the start."""
        self._tls = self._tls_context()
        opened: list[Any] = []
        try:
            for _ in range(self.min_size):
                opened.append(await self._connect())
        except BaseException:
            for conn in opened:
                conn.close()
            raise
        self._idle.extend(opened)

    def _tls_context(self) -> ssl.SSLContext | None:
        mode = self.url.ssl
        if mode == "disabled":
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.url.ssl_ca or None)
        except (OSError, ssl.SSLError) as exc:
            raise DbError(f"cannot read ssl_ca {self.url.ssl_ca}: {getattr(exc, 'strerror', None) or exc}") from None
        if mode in ("required", "verify_ca"):
            ctx.check_hostname = False
        if mode == "required":
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> Any:
        conn = aiomysql.Connection(
            host=self.url.host, port=self.url.port, user=self.url.user or None, password=self.password or "",
            db=self.url.database or None, charset=self.url.charset, conv=MYSQL_DECODERS,
            client_flag=CLIENT.FOUND_ROWS, cursorclass=_Cursor, connect_timeout=self.connect_timeout,
            autocommit=True, ssl=self._tls, program_name="atom",
        )
        try:
            # the handshake as aiomysql.connect() does it, bounded as a whole and closed on any failure
            await asyncio.wait_for(conn._connect(), self.connect_timeout)
            if self._tls is not None and not conn.server_capabilities & CLIENT.SSL:
                # the driver would go on without TLS rather than fail
                raise DbError("cannot connect: the server does not offer TLS, and the URL asks for it (ssl)",
                              kind=UNREACHABLE)
            await asyncio.wait_for(self._setup(conn), self.connect_timeout + self.timeout)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, Exception) and not isinstance(exc, DbError):
                raise _my_connect_error(exc, self.connect_timeout) from None
            raise
        return conn

    async def _setup(self, conn: Any) -> None:
        limit = (f"max_statement_time = {self.timeout:.6f}" if "mariadb" in (conn.get_server_info() or "").lower()
                 else f"max_execution_time = {max(1, round(self.timeout * 1000))}")
        cur = await conn.cursor(_Cursor)
        try:
            await cur.execute(f"SET time_zone = '+00:00', {limit}")
        finally:
            await cur.close()

    @staticmethod
    def _usable(conn: Any) -> bool:
        # an idle connection the server has closed (wait_timeout, restart) has seen the end of its stream,
        # possibly after a last error packet (MySQL 8 says why it closes)
        reader = getattr(conn, "_reader", None)
        return not (conn.closed or reader is None or reader.at_eof() or getattr(reader, "eof_received", False)
                    or reader.exception() is not None)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MysqlSession]:
        if self._closed:
            raise DbError("the connection is stopped")
        wait = self.connect_timeout + self.timeout
        try:
            await asyncio.wait_for(self._slots.acquire(), wait)
        except TimeoutError:
            raise DbError(f"no free connection: all {self.max_size} stayed busy for {wait:g}s",
                          retryable=True, kind=TIMEOUT) from None
        try:
            conn = None
            while self._idle and conn is None:
                candidate = self._idle.pop()
                if self._usable(candidate):
                    conn = candidate
                else:
                    candidate.close()
            if conn is None:
                conn = await self._connect()
            self._busy.add(conn)
            try:
                yield MysqlSession(conn, self)
            except DbError as exc:
                if exc.broken:
                    conn.close()
                raise
            finally:
                self._busy.discard(conn)
                if self._closed or not self._usable(conn) or conn.get_transaction_status():
                    await self._quit(conn)
                else:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    async def _quit(self, conn: Any) -> None:
        if conn.closed:
            return
        try:
            await asyncio.wait_for(conn.ensure_closed(), 1.0)
        except Exception:
            conn.close()

    async def abandon(self, conn: Any) -> None:
        """A statement outlived `timeout` on the client side: close its connection and ask the server,
        from a new connection, to end the session's thread (its statement would run on otherwise)."""
        thread = conn.thread_id()  # known from the handshake, also once the connection is closed
        conn.close()
        if not isinstance(thread, int):
            return
        try:
            killer = await self._connect()
        except DbError:
            return
        try:
            cur = await killer.cursor(_Cursor)
            await asyncio.wait_for(cur.execute(f"KILL {thread}"), self.connect_timeout)
            await cur.close()
        except Exception:
            pass
        finally:
            killer.close()

    async def close(self) -> None:
        """Close idle connections, wait up to `timeout` for borrowed ones, then close those too."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._quit(conn)
        deadline = time.monotonic() + self.timeout
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self._busy):
            conn.close()
