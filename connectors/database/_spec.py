"""Field specs of the database connector and the load-time checks behind them.

These specs are the single description of every field: validation, `atom schema`, `atom connectors`
and docs/connectors/database.md follow them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pymysql.charset import charset_by_name

from atom.errors import Location
from atom.expressions import ExpressionSyntaxError, compile_jsonpath, jsonpath
from atom.resilience import NETWORK_FIELDS
from atom.spec import (
    MISSING,
    CheckContext,
    Custom,
    Enum,
    Field,
    Int,
    ListOf,
    MapOf,
    Object,
    OneOf,
    Spec,
    Str,
    Value,
)
from atom.yamlio import Where

from ._sql import COLUMN_RE, TABLE_RE

# ------------------------------------------------------------------------------------------------ URLs

SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
           "mariadb": "mysql"}
_UNSUPPORTED = {"mysql+aiomysql", "mysql+pymysql", "mssql", "oracle"}
_SUPPORTED = "supported: sqlite, postgresql, mysql, mariadb"
#: query parameters of a MySQL URL (a `password` parameter is taken like the password of the URL)
MYSQL_PARAMS = ("charset", "ssl", "ssl_ca")
#: multi-byte character sets in which a backslash-escaped quote can be read as part of a character
_UNSAFE_CHARSETS = {"big5", "cp932", "gb2312", "gbk", "gb18030", "sjis"}
#: `ssl=` values of a MySQL URL: no TLS, TLS without checking the certificate, TLS with the certificate
#: checked against the CAs (system ones or `ssl_ca`), and also the host name
MYSQL_SSL = {"false": "disabled", "disabled": "disabled", "required": "required",
             "verify_ca": "verify_ca", "true": "verify_identity", "verify_identity": "verify_identity"}


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed connection URL. `display` never holds a password."""

    dialect: str
    #: SQLite: the file path as written (relative paths start at the working directory), or ":memory:"
    path: str = ""
    #: PostgreSQL: the URL without its password, handed to asyncpg as the DSN
    dsn: str = ""
    password: str | None = None
    display: str = ""
    #: MySQL / MariaDB: where and as whom to connect (an empty database: none selected)
    host: str = ""
    port: int = 0
    user: str = ""
    database: str = ""
    #: MySQL / MariaDB: the client character set and the TLS mode (a value of MYSQL_SSL) and CA file
    charset: str = "utf8mb4"
    ssl: str = "disabled"
    ssl_ca: str = ""

    @property
    def memory(self) -> bool:
        return self.dialect == "sqlite" and self.path == ":memory:"


def parse_url(url: str) -> DatabaseUrl:
    """Parse `sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite:///:memory:`,
    `postgresql://user:pass@host:port/db?sslmode=require` or `mysql://user:pass@host:port/db?ssl=true`
    (`mariadb://` alike). Raises ValueError (the message never holds the password)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError("expected a URL like sqlite:///data/app.db, postgresql://user@host:5432/db or "
                         "mysql://user@host:3306/db")
    if scheme in _UNSUPPORTED:
        raise ValueError(f"'{scheme}' databases are not supported ({_SUPPORTED})")
    dialect = SCHEMES.get(scheme)
    if dialect is None:
        raise ValueError(f"unknown database scheme '{scheme}' ({_SUPPORTED})")
    if dialect == "sqlite":
        if not rest.startswith("/"):
            raise ValueError("a SQLite URL has three slashes and no host: sqlite:///relative/path.db, "
                             "sqlite:////absolute/path.db or sqlite:///:memory:")
        path = rest[1:]
        if "?" in path or "#" in path:
            raise ValueError("a SQLite URL takes no query parameters")
        path = unquote(path)
        if not path:
            raise ValueError("the SQLite URL names no file (sqlite:///path/to/file.db or sqlite:///:memory:)")
        return DatabaseUrl("sqlite", path=path, display=f"sqlite:///{path}")
    name = "PostgreSQL" if dialect == "postgresql" else "MySQL"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed {name} URL: {_strip(str(exc), url)}") from None
    password = unquote(parts.password) if parts.password is not None else None
    query = parse_qsl(parts.query, keep_blank_values=True)
    for k, v in query:
        if "password" in k.lower() and v:
            password = password or v
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    user = quote(unquote(parts.username), safe="") if parts.username else ""
    clean = [(k, v) for k, v in query if "password" not in k.lower()]
    display = urlunsplit(SplitResult("postgresql" if dialect == "postgresql" else scheme,
                                     f"{user}@{netloc}" if user else netloc, parts.path, urlencode(clean), ""))
    if dialect == "postgresql":
        return DatabaseUrl("postgresql", dsn=display, password=password, display=display)
    return _mysql_url(parts, clean, password, display)


def _mysql_url(parts: SplitResult, query: list[tuple[str, str]], password: str | None,
               display: str) -> DatabaseUrl:
    database = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if "/" in database:
        raise ValueError(f"a MySQL URL names one database after the host, not '{database}'")
    options = {"charset": "utf8mb4", "ssl": "", "ssl_ca": ""}
    for k, v in query:
        key = k.lower()
        if key not in MYSQL_PARAMS:
            raise ValueError(f"unknown MySQL URL parameter '{k}' (known: {', '.join(MYSQL_PARAMS)})")
        options[key] = v
    charset = options["charset"].lower()
    if not re.fullmatch(r"[a-z0-9_]+", charset) or charset_by_name(charset) is None:
        raise ValueError(f"unknown MySQL character set '{options['charset']}' (e.g. utf8mb4, latin1)")
    if charset in _UNSAFE_CHARSETS:
        raise ValueError(f"the character set '{charset}' is not supported: text values cannot be escaped "
                         "safely in it (use utf8mb4)")
    given = options["ssl"] or ("verify_identity" if options["ssl_ca"] else "disabled")
    ssl = MYSQL_SSL.get(given.lower())
    if ssl is None:
        raise ValueError(f"ssl={given} is not one of: {', '.join(MYSQL_SSL)}")
    if options["ssl_ca"] and ssl in ("disabled", "required"):
        raise ValueError(f"ssl_ca checks the server's certificate, which ssl={given} does not")
    return DatabaseUrl("mysql", password=password, display=display, host=parts.hostname or "localhost",
                       port=parts.port or 3306, user=unquote(parts.username or ""), database=database,
                       charset=charset, ssl=ssl, ssl_ca=options["ssl_ca"])


def safe_display(url: str) -> str:
    """The URL for messages, with any password removed, even when it does not parse."""
    try:
        return parse_url(url).display
    except ValueError:
        scheme = url.partition("://")[0]
        return f"{scheme}://..." if scheme else "<invalid url>"


def _strip(text: str, url: str) -> str:
    return text.replace(url, "<url>")


# ------------------------------------------------------------------------------------------ field types


def _check_table(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    value = Str().check(value, where, loc, ctx)
    if value is MISSING:
        return MISSING
    if not TABLE_RE.fullmatch(value):
        ctx.error(loc, f"'{value}' is not a valid table name (letters, digits and _, not starting with a "
                       "digit; optionally schema.table)")
        return MISSING
    return value


def _check_column(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    value = Str().check(value, where, loc, ctx)
    if value is MISSING:
        return MISSING
    if not COLUMN_RE.fullmatch(value):
        ctx.error(loc, f"'{value}' is not a valid column name (letters, digits and _, not starting with a "
                       "digit)")
        return MISSING
    return value


def _check_returning(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if value == "*":
        return "*"
    return _check_column(value, where, loc, ctx)


TABLE = Custom(_check_table, {"type": "string", "pattern": TABLE_RE.pattern}, label="table name")
COLUMN = Custom(_check_column, {"type": "string", "pattern": COLUMN_RE.pattern}, label="column name")
RETURNING_ITEM = Custom(_check_returning, {"type": "string"}, label="column name or *")


class JsonPathParam:
    """A parameter given as a JSONPath (`"$.customer.id"`), evaluated against the current row."""

    __slots__ = ("path",)
    is_constant = False

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def source(self) -> str:
        return self.path

    def select(self, row: Any) -> Any:
        return jsonpath(row, self.path)

    def __repr__(self) -> str:
        return f"JsonPathParam({self.path!r})"


def is_jsonpath(value: Any) -> bool:
    return isinstance(value, str) and (value == "$" or value.startswith(("$.", "$[")))


def _check_param(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if is_jsonpath(value):
        try:
            compile_jsonpath(value)
        except ExpressionSyntaxError as exc:
            ctx.error(loc, str(exc))
            return MISSING
        return JsonPathParam(value)
    return Value().check(value, where, loc, ctx)


def _labelled(t: OneOf, label: str) -> OneOf:
    t.label = label
    return t


KEY = _labelled(OneOf(ListOf(COLUMN, min_items=1), COLUMN), "column or list of columns")
RETURNING = _labelled(OneOf(ListOf(RETURNING_ITEM, min_items=1), RETURNING_ITEM), "* or list of columns")

PARAM = Custom(_check_param, {"type": ["string", "number", "boolean", "null"]},
               label="value, template or JSONPath")


# ------------------------------------------------------------------------------------------ connection

POOL_SPEC = Spec([
    Field("min_size", Int(minimum=0), default=1,
          description="connections opened at start and kept open (PostgreSQL, MySQL)"),
    Field("max_size", Int(minimum=1), default=10,
          description="most connections open at once; SQLite files use it too, `:memory:` always uses one"),
], summary="Connection pool of the connection (shared by all executions)")

POOL_DEFAULTS = {f.name: f.default for f in POOL_SPEC.fields}

CONNECTION_SPEC = Spec([
    Field("url", Str(), required=True,
          description="sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:, "
                      "postgresql://user[:password]@host[:port]/database[?sslmode=require] or "
                      "mysql://user[:password]@host[:port]/database[?charset=utf8mb4&ssl=true] (mariadb:// "
                      "alike); a password in the URL is a secret like `password`",
          example="postgresql://svc@127.0.0.1:5432/erp"),
    Field("password", Str(), secret=True,
          description="PostgreSQL or MySQL password (wins over one in the URL)"),
    Field("pool", Object(POOL_SPEC), default=lambda: dict(POOL_DEFAULTS), description="connection pool"),
    Field("init", ListOf(Str()), default=list,
          description="SQL run once when the connection starts, in order (e.g. CREATE TABLE IF NOT EXISTS "
                      "...); a failing statement fails the start"),
    *NETWORK_FIELDS,
], summary="A SQLite file, a PostgreSQL database or a MySQL / MariaDB database")


# ------------------------------------------------------------------------------------------ operations

GET_SPEC = Spec([
    Field("query", Str(), required=True,
          description="SQL with named parameters (:name); values are always bound, never pasted into the SQL",
          example="SELECT id, name FROM accounts WHERE updated_at > :since"),
    Field("params", MapOf(PARAM), default=dict,
          description="value of each :name (a literal, a template, or a JSONPath like $.id into the input "
                      "document), evaluated per input document, or once when there is none"),
    Field("output", Enum("rows", "array"), default="rows",
          description="rows: one JSON document per row (no rows, no documents); array: one JSON array "
                      "document per query"),
    Field("max_rows", Int(minimum=1), default=10000,
          description="a query that returns more rows fails instead of filling memory; page with LIMIT"),
], summary="Run a query: one query per input document (or one when there is none)")

SEND_SPEC = Spec([
    Field("mode", Enum("insert", "update", "upsert", "delete"), default="insert",
          description="what to do with each row of the table"),
    Field("table", TABLE, description="table to write (schema.table allowed)"),
    Field("key", KEY,
          description="key column(s) that find the row (update, delete) or detect the conflict (upsert: "
                      "needs a unique constraint or primary key on exactly these columns)"),
    Field("columns", MapOf(PARAM),
          description="column -> value (a literal, a template with `row` and `doc` in scope, or a JSONPath "
                      "like $.id into the row); default: the row's top-level scalar fields"),
    Field("statement", Str(),
          description="a SQL statement with named parameters (:name), run once per row, instead of table"),
    Field("params", MapOf(PARAM), default=dict,
          description="value of each :name of the statement (literal, template or JSONPath into the row)"),
    Field("returning", RETURNING,
          description="columns to read back from the written rows (or *), into the document property "
                      "`returning`"),
    Field("transaction", Enum("batch", "document"), default="batch",
          description="batch: all documents of the call commit or roll back together; document: each "
                      "document in its own transaction, so a bad one fails alone"),
], one_of=("table", "statement"),
   summary="Write each document (each element of a JSON array document) to a table, or run a statement")
