"""The `database` connector: SQL queries and table writes on SQLite (aiosqlite), PostgreSQL (asyncpg) or
MySQL / MariaDB (aiomysql).

`get` runs a query with named parameters once per input document (once when there is none) and
returns one document per row, or one JSON array document. `send` writes every row of every document
(a JSON array document holds one row per element) with insert / update / upsert / delete on a table,
or runs a parameterised statement per row; the input documents go on with `rows_affected` (and the
other result properties) set.

MySQL has no RETURNING: `returning` reads the written rows back in the same transaction (by key, or
by the AUTO_INCREMENT id of an insert), and an upsert counts one row per row written, where MySQL
itself counts an updated row twice.

Failures: connection failures (and lock timeouts, serialization failures, deadlocks) are retried by
the connection's retry policy, the whole transaction at a time; constraint violations, SQL errors and
bad values are never retried. A document that still fails is returned with its error set and takes
the catch path. With `transaction: batch` one failure rolls back the whole call and fails every
document of it; with `transaction: document` only the failing document is rolled back and failed.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import jinja2

from atom.connector import Connector, OperationContext
from atom.document import Document, dump_json
from atom.errors import INVALID, ConnectorError, DocumentError
from atom.resilience import CircuitBreaker, call_with_retry
from atom.spec import CheckContext, Spec
from atom.yamlio import Where

from ._backends import Backend, DbError, MysqlBackend, PostgresBackend, Result, Session, SqliteBackend
from ._spec import (
    CONNECTION_SPEC,
    GET_SPEC,
    POOL_DEFAULTS,
    SEND_SPEC,
    DatabaseUrl,
    JsonPathParam,
    parse_url,
    safe_display,
)
from ._sql import AUTO_INCREMENT_SQL, COLUMN_RE, NamedSQL, ReadBack, SqlTextError, Statement, build_statement

log = logging.getLogger("atom.connectors.database")

T = TypeVar("T")

#: The operation context of the running call, so breaker transitions reach the right execution log.
_CURRENT: contextvars.ContextVar[OperationContext | None] = contextvars.ContextVar("atom_database_ctx",
                                                                                   default=None)

_SCALARS = (str, int, float, bool, type(None))
_STATEMENT_ONLY = ("params",)
_TABLE_ONLY = ("mode", "key", "columns", "returning")


# ------------------------------------------------------------------------------------------ plans


def _needs_scope(params: Mapping[str, Any]) -> bool:
    return any(not getattr(p, "is_constant", True) and not isinstance(p, JsonPathParam) for p in params.values())


def _evaluate(params: Mapping[str, Any], scope: Mapping[str, Any] | None, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in params.items():
        if isinstance(p, JsonPathParam):
            if row is None:
                raise DocumentError(f"{name}: JSONPath '{p.path}' needs a JSON document")
            out[name] = p.select(row)
        else:
            value = p.evaluate(scope or {})
            if isinstance(value, jinja2.Undefined):  # a sole `{{ expr }}` that names nothing
                raise DocumentError(f"{name}: in '{p.source}': {_undefined_message(value)}")
            out[name] = value
    return out


def _undefined_message(value: jinja2.Undefined) -> str:
    try:
        str(value)
    except jinja2.UndefinedError as exc:
        return exc.message or "undefined"
    return "undefined"


@dataclass
class QueryPlan:
    """A compiled `get` operation."""

    query: NamedSQL
    params: Mapping[str, Any]
    output: str
    max_rows: int
    needs_scope: bool
    needs_json: bool

    @classmethod
    def from_op(cls, op: Mapping[str, Any]) -> QueryPlan:
        params = op.get("params") or {}
        return cls(NamedSQL(op["query"]), params, op.get("output", "rows"), op.get("max_rows", 10000),
                   _needs_scope(params), any(isinstance(p, JsonPathParam) for p in params.values()))


@dataclass
class SendPlan:
    """A compiled `send` operation; statements for each set of columns are built once and cached."""

    mode: str
    table: str | None
    key: tuple[str, ...]
    columns: Mapping[str, Any] | None
    statement: NamedSQL | None
    params: Mapping[str, Any]
    returning: tuple[str, ...]
    transaction: str
    needs_scope: bool
    needs_json: bool
    _built: dict[tuple[str, tuple[str, ...]], Statement] = field(default_factory=dict)
    #: MySQL `returning` on insert: table -> its AUTO_INCREMENT column (None: it has none)
    auto_columns: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_op(cls, op: Mapping[str, Any]) -> SendPlan:
        key = op.get("key") or ()
        ret = op.get("returning") or ()
        columns = op.get("columns")
        params = op.get("params") or {}
        values = params if op.get("statement") else (columns or {})
        return cls(
            mode=op.get("mode", "insert"),
            table=op.get("table"),
            key=(key,) if isinstance(key, str) else tuple(key),
            columns=columns,
            statement=NamedSQL(op["statement"]) if op.get("statement") else None,
            params=params,
            returning=(ret,) if isinstance(ret, str) else tuple(ret),
            transaction=op.get("transaction", "batch"),
            needs_scope=_needs_scope(values),
            needs_json=(columns is None and not op.get("statement"))
            or any(isinstance(p, JsonPathParam) for p in values.values()),
        )

    @property
    def what(self) -> str:
        """`insert into orders`, `statement`, ... for messages."""
        if self.statement is not None:
            return "statement"
        prep = {"insert": "into ", "upsert": "into ", "delete": "from "}.get(self.mode, "")
        return f"{self.mode} {prep}{self.table}"

    def built(self, dialect: str, columns: tuple[str, ...]) -> Statement:
        got = self._built.get((dialect, columns))
        if got is None:
            assert self.table is not None
            got = build_statement(dialect, self.mode, self.table, self.key, columns, self.returning)
            if len(self._built) >= 256:
                self._built.clear()
            self._built[(dialect, columns)] = got
        return got


@dataclass(slots=True)
class _Step:
    """Consecutive rows of one document that share one statement."""

    sql: str
    labels: tuple[str, ...]
    args: list[list[Any]]
    returns_rows: bool
    read_back: ReadBack | None = None


@dataclass(slots=True)
class _DocOutcome:
    rowcount: int = 0
    last_row_id: int | None = None
    returned: list[dict[str, Any]] | None = None


class _DocFailed(ConnectorError):
    """Document `index` failed inside a batch transaction (never retried)."""

    def __init__(self, index: int, cause: ConnectorError) -> None:
        super().__init__(str(cause), retryable=False, status=cause.status or 400, kind=cause.kind)
        self.index = index


# ------------------------------------------------------------------------------------------ connector


class DatabaseConnector(Connector):
    """A SQLite file or a PostgreSQL, MySQL or MariaDB database: queries (`get`) and table writes or
    statements (`send`)."""

    type = "database"
    summary = ("SQL databases (SQLite, PostgreSQL, MySQL, MariaDB): run queries with named parameters (get); insert, "
               "update, upsert or delete rows, or run statements, in batch or per-document transactions "
               "(send)")
    connection_spec: ClassVar[Spec] = CONNECTION_SPEC
    operations: ClassVar[dict[str, Spec]] = {"get": GET_SPEC, "send": SEND_SPEC}

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.url_text = str(config.get("url", ""))
        self.peer = safe_display(self.url_text)
        self.password: str | None = config.get("password")
        self.pool: dict[str, int] = {**POOL_DEFAULTS, **(config.get("pool") or {})}
        self.init: list[str] = list(config.get("init") or [])
        self.connect_timeout: float = config.get("connect_timeout", 10.0)
        self.backend: Backend | None = None
        self.dialect = ""
        self.breaker.on_change = self._breaker_changed

    # ------------------------------------------------------------------------------------ load checks

    @classmethod
    def check_connection(cls, config: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        """The URL parses and names a supported database; its password is registered as a secret."""
        url = config.get("url")
        if isinstance(url, str):
            try:
                parsed = parse_url(url)
            except ValueError as exc:
                ctx.error(where.value("url"), f"url: {exc}")
            else:
                if parsed.password:
                    ctx.secrets.append(parsed.password)
                if parsed.dialect == "sqlite" and config.get("password"):
                    ctx.error(where.key("password"), "password does not apply to a SQLite database")
        pool = config.get("pool") or {}
        if pool.get("min_size", 0) > pool.get("max_size", POOL_DEFAULTS["max_size"]):
            ctx.error(where.child("pool").value("min_size"),
                      f"pool.min_size ({pool['min_size']}) is larger than pool.max_size ({pool.get('max_size')})")
        return config

    @classmethod
    def check_operation(cls, action: str, op: dict[str, Any], where: Where,
                        ctx: CheckContext) -> dict[str, Any]:
        """SQL parses, named parameters and `params` match, identifiers are valid; the compiled plan is
        kept under `_plan` so nothing is parsed per call."""
        node = where.node if isinstance(where.node, Mapping) else {}
        if action == "get":
            if "query" not in op:
                return op
            try:
                sql = NamedSQL(op["query"])
            except SqlTextError as exc:
                ctx.error(where.value("query"), f"query: {exc}")
                return op
            _check_params(sql, op.get("params") or {}, "query", where, ctx)
            return {**op, "_plan": QueryPlan.from_op(op)}
        if action != "send":
            return op
        ok = True
        if "statement" in op:
            for name in _TABLE_ONLY:
                if name in node:
                    ctx.error(where.key(name), f"'{name}' does not apply to a statement (it is for table)")
                    ok = False
            try:
                sql = NamedSQL(op["statement"])
            except SqlTextError as exc:
                ctx.error(where.value("statement"), f"statement: {exc}")
                return op
            ok = _check_params(sql, op.get("params") or {}, "statement", where, ctx) and ok
        elif "table" in node or "table" in op:
            for name in _STATEMENT_ONLY:
                if name in node:
                    ctx.error(where.key(name), f"'{name}' applies to a statement; a table takes columns")
                    ok = False
            mode = op.get("mode", "insert")
            key = op.get("key")
            keys = [key] if isinstance(key, str) else list(key or [])
            if mode != "insert" and not keys:
                ctx.error(where.location, f"mode {mode} needs 'key' (the column or columns that find the row)")
                ok = False
            columns = op.get("columns")
            if columns is not None:
                cwhere = where.child("columns")
                if not columns:
                    ctx.error(where.value("columns"), "columns is empty")
                    ok = False
                for col in columns:
                    if not COLUMN_RE.fullmatch(col):
                        ctx.error(cwhere.key(col), f"'{col}' is not a valid column name (letters, digits and _, "
                                                   "not starting with a digit)")
                        ok = False
                for k in keys:
                    if k not in columns:
                        ctx.error(where.value("key"), f"key column '{k}' is not among the columns")
                        ok = False
                if mode == "update" and columns and not [c for c in columns if c not in keys]:
                    ctx.error(where.value("columns"), "update needs a column besides the key")
                    ok = False
        else:
            return op
        if not ok or ("table" not in op and "statement" not in op):
            return op
        return {**op, "_plan": SendPlan.from_op(op)}

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the database (SQLite: create missing parent directories; PostgreSQL, MySQL: the pool with
        its `min_size` connections) with the retry policy, then run `init`. Raises ConnectorError."""
        if self.backend is not None:
            return
        try:
            url = parse_url(self.url_text)
        except ValueError as exc:
            raise ConnectorError(f"connection '{self.name}': url: {exc}") from None
        backend = self._make_backend(url)
        try:
            await self._retry(backend.open, None)
        except ConnectorError as exc:
            raise ConnectorError(f"{self._where()}: {self._scrub(str(exc))}", status=exc.status,
                                 kind=exc.kind) from None
        try:
            for i, sql in enumerate(self.init):
                async def step(sql: str = sql) -> None:
                    async with backend.session() as s:
                        await s.script(sql)

                try:
                    await self._retry(step, None)
                except ConnectorError as exc:
                    raise ConnectorError(f"{self._where()}: init statement {i + 1} failed: "
                                         f"{self._scrub(str(exc))}", status=exc.status, kind=exc.kind) from None
        except BaseException:
            await backend.close()
            raise
        self.backend = backend
        self.dialect = backend.dialect
        await super().start()

    def _make_backend(self, url: DatabaseUrl) -> Backend:
        if url.dialect == "sqlite":
            return SqliteBackend(url.path, self.pool["max_size"], self.timeout)
        if url.dialect == "mysql":
            return MysqlBackend(url, self.password or url.password, self.pool["min_size"], self.pool["max_size"],
                                self.timeout, self.connect_timeout)
        return PostgresBackend(url.dsn, self.password or url.password, self.pool["min_size"],
                               self.pool["max_size"], self.timeout, self.connect_timeout)

    async def stop(self) -> None:
        """Close every connection (PostgreSQL and MySQL wait up to `timeout` for borrowed ones)."""
        backend, self.backend = self.backend, None
        if backend is not None:
            await backend.close()
        await super().stop()

    def describe(self) -> dict[str, Any]:
        """Secret-free summary: the URL without its password, pool, resilience, state."""
        return {
            "name": self.name,
            "type": self.type,
            "url": self.peer,
            "dialect": self.dialect or self.peer.partition("://")[0],
            "password": "set" if self.password else "not set",
            "pool": dict(self.pool),
            "init_statements": len(self.init),
            "timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            "retry": {"attempts": self.retry.attempts, "backoff": self.retry.backoff,
                      "max_backoff": self.retry.max_backoff},
            "circuit_breaker": {"state": self.breaker.state,
                                "failure_threshold": self.breaker.failure_threshold,
                                "reset_timeout": self.breaker.reset_timeout},
            "started": self.started,
        }

    # ------------------------------------------------------------------------------------ helpers

    def _where(self) -> str:
        return f"connection '{self.name}' ({self.peer})"

    def _scrub(self, text: str) -> str:
        for secret in (self.password, _url_password(self.url_text)):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def _retry(self, fn: Callable[[], Awaitable[T]], ctx: OperationContext | None) -> T:
        ctx = ctx or _CURRENT.get()
        def note(level: str, message: str) -> None:
            message = self._scrub(message.replace(f"connection '{self.name}'", self._where(), 1))
            if ctx is not None:
                ctx.log(level, message)
            else:
                log.log(logging.getLevelName(level.upper()), message)

        token = _CURRENT.set(ctx)
        try:
            return await call_with_retry(fn, policy=self.retry, breaker=self.breaker, connection=self.name,
                                         log=note)
        finally:
            _CURRENT.reset(token)

    def _breaker_changed(self, old: str, new: str) -> None:
        """Breaker transitions go to the runtime log and the log of the execution that caused them."""
        message = f"{self._where()}: circuit breaker {old} -> {new}"
        if new == CircuitBreaker.OPEN:
            message += (f" after {self.breaker.failures} failed call(s); calls fail at once for "
                        f"{self.breaker.reset_timeout:g}s")
        level = "warning" if new == CircuitBreaker.OPEN else "info"
        log.log(logging.WARNING if level == "warning" else logging.INFO, message)
        ctx = _CURRENT.get()
        if ctx is not None:
            ctx.log(level, message)

    async def _backend(self, ctx: OperationContext) -> Backend:
        """The open backend; starts the connection on first use (its log lines go to `ctx`)."""
        if self.backend is None:
            token = _CURRENT.set(ctx)
            try:
                await self.start()
            finally:
                _CURRENT.reset(token)
        assert self.backend is not None
        return self.backend

    # ------------------------------------------------------------------------------------ get

    async def get(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        """Run the query once per input document, or once when there is none.

        `output: rows` gives one JSON object document per row (a query without rows gives no documents);
        `output: array` one JSON array document per query (`[]` when empty), with property `row_count`.
        Result documents carry the properties of their input document. An input document whose query
        fails is returned failed (with no input document, one empty failed document is returned).
        """
        plan: QueryPlan = op.get("_plan") or QueryPlan.from_op(op)
        try:
            backend = await self._backend(ctx)
        except ConnectorError as exc:
            return ([d.copy().fail(str(exc), exc.kind) for d in docs] if docs
                    else [Document().fail(str(exc), exc.kind)])
        sql = plan.query.text(backend.dialect)
        labels = plan.query.labels
        inputs: list[Document | None] = list(docs) if docs else [None]
        out: list[Document] = []
        for i, doc in enumerate(inputs):
            where = f"{self._where()}: get" + (f", document {i + 1} of {len(inputs)}" if doc is not None else "")
            try:
                row = doc.json if plan.needs_json and doc is not None else None
                scope = ctx.scope(doc) if plan.needs_scope else None
                args = plan.query.args(_evaluate(plan.params, scope, row))

                async def attempt(args: list[Any] = args) -> list[dict[str, Any]]:
                    async with backend.session() as s, s.transaction(write=False):
                        rows = await s.fetch(sql, args, labels, plan.max_rows + 1)
                        if len(rows) > plan.max_rows:
                            raise DbError(f"the query returned more than max_rows ({plan.max_rows}) rows; "
                                          "narrow it (WHERE, LIMIT) or raise max_rows")
                        return rows

                rows = await self._retry(attempt, ctx)
            except DocumentError as exc:
                failed = doc.copy() if doc is not None else Document()
                out.append(failed.fail(f"{where}: {self._scrub(str(exc))}", exc.kind))
                continue
            props = dict(doc.props) if doc is not None else {}
            if plan.output == "array":
                result = Document.from_json(rows, {**props, "row_count": str(len(rows))})
                if doc is not None:
                    result.trace = doc.trace
                out.append(result)
            else:
                for r in rows:
                    result = Document.from_json(r, dict(props))
                    if doc is not None:
                        result.trace = doc.trace
                    out.append(result)
        return out

    # ------------------------------------------------------------------------------------ send

    async def send(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        """Write each document; return copies of the input documents, in order, with properties
        `rows_affected` (rows written, summed over the document's rows), `last_row_id` (SQLite insert),
        and `returning` (JSON array of the rows read back, with `returning_<column>` too when there is
        exactly one). Failed documents keep their content and carry the error (see the module doc).
        """
        if not docs:
            return []
        plan: SendPlan = op.get("_plan") or SendPlan.from_op(op)
        try:
            backend = await self._backend(ctx)
        except ConnectorError as exc:
            return [d.copy().fail(str(exc), exc.kind) for d in docs]
        dialect = backend.dialect
        n = len(docs)
        prefix = f"{self._where()}: {plan.what}"

        def where(i: int) -> str:
            return f"{prefix}, document {i + 1} of {n}"

        works: list[list[_Step] | None] = []
        errors: dict[int, str] = {}
        kinds: dict[int, str] = {}  # the kind of each error: a document that cannot be rendered is invalid
        for i, doc in enumerate(docs):
            try:
                works.append(self._prepare(plan, doc, dialect, ctx))
            except (DocumentError, ValueError) as exc:
                works.append(None)
                errors[i] = self._scrub(str(exc))
                kinds[i] = INVALID

        outcomes: dict[int, _DocOutcome] = {}
        if plan.transaction == "batch":
            if errors:  # nothing is written; every document has the kind of the first failure
                first = min(errors)
                return [d.copy().fail(f"{where(i)}: {errors[i]}" if i in errors else
                                      f"{where(i)}: not written: document {first + 1} failed: {errors[first]}",
                                      kinds[first])
                        for i, d in enumerate(docs)]

            async def batch() -> list[_DocOutcome]:
                async with backend.session() as s, s.transaction(write=True):
                    results = []
                    for i, work in enumerate(works):
                        try:
                            results.append(await _write(s, work or [], plan, dialect))
                        except DbError as exc:
                            if exc.retryable:
                                raise
                            raise _DocFailed(i, exc) from None
                    return results

            try:
                outcomes = dict(enumerate(await self._retry(batch, ctx)))
            except _DocFailed as exc:  # all rolled back: every document has the kind of the one that failed
                msg = self._scrub(str(exc))
                return [d.copy().fail(f"{where(i)}: {msg}" if i == exc.index else
                                      f"{where(i)}: rolled back: document {exc.index + 1} failed: {msg}", exc.kind)
                        for i, d in enumerate(docs)]
            except ConnectorError as exc:
                msg = self._scrub(str(exc))
                return [d.copy().fail(f"{where(i)}: {msg}", exc.kind) for i, d in enumerate(docs)]
        else:
            for i, work in enumerate(works):
                if work is None:
                    continue

                async def one(work: list[_Step] = work) -> _DocOutcome:
                    async with backend.session() as s, s.transaction(write=True):
                        return await _write(s, work, plan, dialect)

                try:
                    outcomes[i] = await self._retry(one, ctx)
                except ConnectorError as exc:
                    errors[i] = self._scrub(str(exc))
                    kinds[i] = exc.kind

        out: list[Document] = []
        for i, doc in enumerate(docs):
            result = doc.copy()
            if i in errors:
                out.append(result.fail(f"{where(i)}: {errors[i]}", kinds[i]))
                continue
            outcome = outcomes[i]
            result.props["rows_affected"] = str(outcome.rowcount)
            if outcome.last_row_id is not None and plan.mode == "insert" and plan.statement is None:
                result.props["last_row_id"] = str(outcome.last_row_id)
            if outcome.returned is not None:
                result.props["returning"] = dump_json(outcome.returned).decode()
                if len(outcome.returned) == 1:
                    for k, v in outcome.returned[0].items():
                        result.props[f"returning_{k}"] = _prop_text(v)
            out.append(result)
        return out

    def _prepare(self, plan: SendPlan, doc: Document, dialect: str, ctx: OperationContext) -> list[_Step]:
        """Render one document into statements and arguments (no I/O). Raises DocumentError/ValueError."""
        rows = _rows_of(doc, plan.needs_json)
        base = ctx.scope(doc) if plan.needs_scope else None
        steps: list[_Step] = []
        for idx, row in enumerate(rows):
            where = f"row {idx + 1}: " if len(rows) > 1 else ""
            scope = {**base, "row": row} if base is not None else None
            try:
                if plan.statement is not None:
                    values = _evaluate(plan.params, scope, row)
                    sql, labels = plan.statement.text(dialect), plan.statement.labels
                    args, returns_rows, read_back = plan.statement.args(values), False, None
                else:
                    if plan.columns is not None:
                        values = _evaluate(plan.columns, scope, row)
                    else:
                        values = _scalar_fields(row)
                    if plan.mode in ("update", "delete"):
                        nulls = [k for k in plan.key if k in values and values[k] is None]
                        if nulls:
                            raise ValueError(f"key column '{nulls[0]}' is null")
                    stmt = plan.built(dialect, tuple(values))
                    sql, labels, args, returns_rows = stmt.sql, stmt.order, stmt.args(values), stmt.returns_rows
                    read_back = stmt.read_back
            except (DocumentError, ValueError) as exc:
                raise ValueError(f"{where}{exc}") from None
            if steps and steps[-1].sql == sql:
                steps[-1].args.append(args)
            else:
                steps.append(_Step(sql, labels, [args], returns_rows, read_back))
        return steps


async def _write(s: Session, work: Sequence[_Step], plan: SendPlan, dialect: str) -> _DocOutcome:
    """Run one document's statements inside the caller's transaction."""
    outcome = _DocOutcome()
    want_id = plan.mode == "insert" and plan.statement is None and dialect == "sqlite"
    returned: list[dict[str, Any]] | None = [] if plan.returning else None
    bulk = plan.statement is None and plan.mode in ("insert", "upsert")
    # MySQL counts an upserted row 2 when it updated it: count rows written, as for the other databases
    per_row = dialect == "mysql" and plan.statement is None and plan.mode == "upsert"
    for step in work:
        if bulk and not step.returns_rows and len(step.args) > 1:
            result = await s.run_many(step.sql, step.args, step.labels, want_id)
            if per_row:
                result.rowcount = len(step.args)
            _merge(outcome, result, None)
            continue
        for args in step.args:
            if step.read_back is not None:
                result = await _read_back(s, step, step.read_back, args, plan)
            else:
                result = await s.run(step.sql, args, step.labels)
            if per_row:
                result.rowcount = 1
            if result.rows is not None and returned is None:
                returned = []
            _merge(outcome, result, returned)
    if not want_id:
        outcome.last_row_id = None
    outcome.returned = returned
    return outcome


async def _read_back(s: Session, step: _Step, back: ReadBack, args: list[Any], plan: SendPlan) -> Result:
    """MySQL `returning`: run the statement and read the written rows in the same transaction, by their
    key values, or by the AUTO_INCREMENT id of an insert; a delete reads (and locks) them first."""
    limit = 1_000_000
    if back.before:
        rows = await s.fetch(back.select(back.by), [args[i] for i in back.at], back.by, limit)
        result = await s.run(step.sql, args, step.labels)
        result.rows = rows if result.rowcount else []
        return result
    result = await s.run(step.sql, args, step.labels)
    if back.by:
        result.rows = await s.fetch(back.select(back.by), [args[i] for i in back.at], back.by, limit)
        return result
    if back.table not in plan.auto_columns:
        schema, _, name = back.table.rpartition(".")
        found = await s.fetch(AUTO_INCREMENT_SQL, [schema or None, name], ("schema", "table"), 2)
        plan.auto_columns[back.table] = str(next(iter(found[0].values()))) if found else None
    auto = plan.auto_columns[back.table]
    if auto is None:
        raise DbError(f"returning: table {back.table} has no AUTO_INCREMENT column to find the inserted row by; "
                      "give key (the column or columns that find it)")
    value = args[step.labels.index(auto)] if auto in step.labels else None
    if value is None:
        value = result.last_row_id
    result.rows = await s.fetch(back.select((auto,)), [value], (auto,), limit) if value is not None else []
    return result


def _merge(outcome: _DocOutcome, result: Result, returned: list[dict[str, Any]] | None) -> None:
    outcome.rowcount += result.rowcount
    if result.last_row_id:
        outcome.last_row_id = result.last_row_id
    if result.rows is not None and returned is not None:
        returned.extend(result.rows)


# ------------------------------------------------------------------------------------------ documents


def _rows_of(doc: Document, need_json: bool) -> list[Any]:
    """The rows a document writes: each element of a JSON array document, else the document's JSON
    (None when the document is not JSON and nothing needs its JSON)."""
    try:
        value = doc.json
    except DocumentError:
        if need_json:
            raise
        return [None]
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValueError(f"the document is a JSON array whose item {i + 1} is not an object")
        return value
    return [value]


def _scalar_fields(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError("the document is not a JSON object (or array of objects); give columns to map it")
    values = {k: v for k, v in row.items() if isinstance(v, _SCALARS)}
    bad = [k for k in values if not COLUMN_RE.fullmatch(k)]
    if bad:
        raise ValueError(f"field {bad[0]!r} is not a valid column name; map it with columns")
    if not values:
        raise ValueError("the document has no scalar fields to write")
    return values


def _prop_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return dump_json(value).decode()
    return str(value)


def _url_password(url: str) -> str | None:
    try:
        return parse_url(url).password
    except ValueError:
        return None


def _check_params(sql: NamedSQL, params: Mapping[str, Any], what: str, where: Where, ctx: CheckContext) -> bool:
    ok = True
    missing = [n for n in sql.names if n not in params]
    if missing:
        ctx.error(where.value(what), f"{what} uses {', '.join(':' + n for n in missing)} but params has no "
                                     f"{'value' if len(missing) == 1 else 'values'} for "
                                     f"{'it' if len(missing) == 1 else 'them'}")
        ok = False
    pwhere = where.child("params")
    for name in params:
        if name not in sql.names:
            ctx.error(pwhere.key(name), f"param '{name}' is not used in the {what} (no :{name})")
            ok = False
    return ok
