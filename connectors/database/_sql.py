"""SQL text: named parameters, identifiers, and the statements of the table modes.

Nothing here talks to a database. Values never enter SQL text: they travel as bound parameters
(`?N` for SQLite, `$N` for PostgreSQL, `%(N)s` for MySQL, whose driver escapes them); only validated,
quoted identifiers are written into it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A table name, optionally schema-qualified.
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: A column name (never qualified: it names a column of the operation's table).
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DIALECTS = ("sqlite", "postgresql", "mysql")
MODES = ("insert", "update", "upsert", "delete")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_POSITIONAL = re.compile(r"\$\d")


class SqlTextError(ValueError):
    """SQL text that cannot be used (unterminated literal, positional parameters)."""


def quote(name: str, dialect: str = "sqlite") -> str:
    """Quote a validated identifier (`schema.table` -> `"schema"."table"`, for MySQL `` `schema`.`table` ``)."""
    mark = "`" if dialect == "mysql" else '"'
    return ".".join(f"{mark}{part}{mark}" for part in name.split("."))


def placeholder(dialect: str, n: int) -> str:
    """The bound-parameter marker number `n` (1-based) of a dialect.

    MySQL's driver takes `%s`-style markers; the numbered form `%(n)s` lets a name used twice bind one
    value, and a literal `%` in MySQL text is written `%%`."""
    if dialect == "mysql":
        return f"%({n})s"
    return f"${n}" if dialect == "postgresql" else f"?{n}"


def _text_part(dialect: str, part: str) -> str:
    return part.replace("%", "%%") if dialect == "mysql" else part


def _ident_char(c: str) -> bool:
    return c.isalnum() or c == "_"


class NamedSQL:
    """SQL with `:name` parameters, parsed and translated for every dialect once, at load time.

    `:name` is a parameter where it stands outside string literals, quoted identifiers, comments and
    dollar-quoted bodies, and is not preceded by a letter, digit, `_` or `:` (so `x::int` casts and
    `arr[1:n]` slices stay as they are). Each distinct name becomes one numbered placeholder.
    """

    __slots__ = ("_parts", "_texts", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts: list[str | int] = []
        self.names: tuple[str, ...] = ()
        self._parse()
        self._texts = {d: "".join(_text_part(d, p) if isinstance(p, str) else placeholder(d, p + 1)
                                  for p in self._parts)
                       for d in DIALECTS}

    def _parse(self) -> None:
        sql, n = self.source, len(self.source)
        parts: list[str | int] = []
        names: list[str] = []
        buf: list[str] = []
        i = 0
        while i < n:
            c = sql[i]
            prev = sql[i - 1] if i else ""
            if c in "'\"`":
                escapes = c == "'" and prev in ("e", "E") and not (i > 1 and _ident_char(sql[i - 2]))
                j = _end_of_quoted(sql, i, c, escapes)
                buf.append(sql[i:j])
                i = j
            elif sql.startswith("--", i):
                j = sql.find("\n", i)
                j = n if j < 0 else j + 1
                buf.append(sql[i:j])
                i = j
            elif sql.startswith("/*", i):
                j = sql.find("*/", i + 2)
                if j < 0:
                    raise SqlTextError("unterminated /* comment")
                buf.append(sql[i:j + 2])
                i = j + 2
            elif c == "$" and not _ident_char(prev) and prev != "$":
                if _POSITIONAL.match(sql, i):
                    raise SqlTextError(f"positional parameter '{sql[i:i + 2]}...' is not supported; "
                                       "use named parameters like :id")
                m = _DOLLAR_TAG.match(sql, i)
                if m:
                    end = sql.find(m.group(0), m.end())
                    if end < 0:
                        raise SqlTextError(f"unterminated dollar-quoted string {m.group(0)}")
                    end += len(m.group(0))
                    buf.append(sql[i:end])
                    i = end
                else:
                    buf.append(c)
                    i += 1
            elif c == ":" and sql.startswith("::", i):
                buf.append("::")
                i += 2
            elif c == ":" and not _ident_char(prev) and prev != ":" and (m := _NAME.match(sql, i + 1)):
                name = m.group(0)
                if buf:
                    parts.append("".join(buf))
                    buf = []
                if name not in names:
                    names.append(name)
                parts.append(names.index(name))
                i = m.end()
            else:
                buf.append(c)
                i += 1
        if buf:
            parts.append("".join(buf))
        self._parts = parts
        self.names = tuple(names)

    def text(self, dialect: str) -> str:
        """The SQL for a dialect (`sqlite`, `postgresql` or `mysql`), with numbered placeholders."""
        return self._texts[dialect]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """Positional arguments in placeholder order."""
        return [values.get(name) for name in self.names]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f":{n}" for n in self.names)

    def __repr__(self) -> str:
        return f"NamedSQL({self.source!r})"


def _end_of_quoted(sql: str, start: int, quote_char: str, backslash_escapes: bool) -> int:
    """Index just past the quoted text that opens at `start` (a doubled quote is an escaped quote)."""
    i, n = start + 1, len(sql)
    while i < n:
        c = sql[i]
        if backslash_escapes and c == "\\":
            i += 2
            continue
        if c == quote_char:
            if i + 1 < n and sql[i + 1] == quote_char:
                i += 2
                continue
            return i + 1
        i += 1
    what = "string literal" if quote_char == "'" else "quoted identifier"
    raise SqlTextError(f"unterminated {what} starting at offset {start}")


# ----------------------------------------------------------------------------------- table statements


@dataclass(frozen=True, slots=True)
class ReadBack:
    """How MySQL, which has no RETURNING, reads the written rows back inside the same transaction.

    The rows are found by the values of the `by` columns (at positions `at` of the statement's
    arguments), or, with no `by`, by the table's AUTO_INCREMENT column and the id the insert generated.
    `before`: read (and lock) the rows before the statement runs, as a delete leaves nothing to read.
    """

    table: str
    columns: tuple[str, ...]
    by: tuple[str, ...]
    at: tuple[int, ...]
    before: bool

    def select(self, by: Sequence[str]) -> str:
        cols = "*" if "*" in self.columns else ", ".join(quote(c, "mysql") for c in self.columns)
        where = " AND ".join(f"{quote(c, 'mysql')} = {placeholder('mysql', i + 1)}" for i, c in enumerate(by))
        return f"SELECT {cols} FROM {quote(self.table, 'mysql')} WHERE {where}{' FOR UPDATE' if self.before else ''}"


#: The AUTO_INCREMENT column of a MySQL table (arguments: schema or None for the current one, table).
AUTO_INCREMENT_SQL = ("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                      "COALESCE(%(1)s, DATABASE()) AND TABLE_NAME = %(2)s AND EXTRA LIKE '%%auto_increment%%'")


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement built for one table mode and one set of columns."""

    sql: str
    #: column names in placeholder order
    order: tuple[str, ...]
    returns_rows: bool
    #: MySQL with `returning`: how to read the written rows back
    read_back: ReadBack | None = None

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        return [values.get(c) for c in self.order]


def build_statement(dialect: str, mode: str, table: str, key: Sequence[str], columns: Sequence[str],
                    returning: Sequence[str]) -> Statement:
    """The INSERT / UPDATE / upsert / DELETE statement for `columns` (already validated names).

    Raises ValueError when the columns cannot make that statement (no key value, nothing to update).
    """
    missing = [k for k in key if k not in columns]
    if mode != "insert" and missing:
        raise ValueError(f"key column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                         "has no value")

    def q(name: str) -> str:
        return quote(name, dialect)

    def mark(n: int) -> str:
        return placeholder(dialect, n)

    mysql = dialect == "mysql"
    t = q(table)
    ret = ""
    if returning and not mysql:
        ret = " RETURNING " + ("*" if "*" in returning else ", ".join(q(c) for c in returning))
    if mode in ("insert", "upsert"):
        if not columns:
            raise ValueError("there is no column to write")
        marks = ", ".join(mark(i + 1) for i in range(len(columns)))
        sql = f"INSERT INTO {t} ({', '.join(q(c) for c in columns)}) VALUES ({marks})"
        if mode == "upsert":
            rest = [c for c in columns if c not in key]
            target = ", ".join(q(k) for k in key)
            if mysql:
                # ON DUPLICATE KEY fires on any unique key; with only key columns, set one to itself
                sets = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in rest) or f"{q(key[0])} = {q(key[0])}"
                sql += f" ON DUPLICATE KEY UPDATE {sets}"
            elif rest:
                sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in rest)
                sql += f" ON CONFLICT ({target}) DO UPDATE SET {sets}"
            else:
                sql += f" ON CONFLICT ({target}) DO NOTHING"
        by = tuple(key) if key and not missing else ()
        return _statement(sql + ret, tuple(columns), returning, mysql, table, by, before=False)
    where = " AND ".join(f"{q(k)} = {{}}" for k in key)
    if mode == "update":
        rest = [c for c in columns if c not in key]
        if not rest:
            raise ValueError("there is no column to update besides the key")
        order = (*rest, *key)
        sets = ", ".join(f"{q(c)} = {mark(i + 1)}" for i, c in enumerate(rest))
        keys = [mark(len(rest) + i + 1) for i in range(len(key))]
        sql = f"UPDATE {t} SET {sets} WHERE {where.format(*keys)}{ret}"
        return _statement(sql, order, returning, mysql, table, tuple(key), before=False)
    if mode == "delete":
        keys = [mark(i + 1) for i in range(len(key))]
        sql = f"DELETE FROM {t} WHERE {where.format(*keys)}{ret}"
        return _statement(sql, tuple(key), returning, mysql, table, tuple(key), before=True)
    raise ValueError(f"unknown mode '{mode}'")


def _statement(sql: str, order: tuple[str, ...], returning: Sequence[str], mysql: bool, table: str,
               by: tuple[str, ...], before: bool) -> Statement:
    if not returning:
        return Statement(sql, order, False)
    if not mysql:
        return Statement(sql, order, True)
    back = ReadBack(table, tuple(returning), by, tuple(order.index(c) for c in by), before)
    return Statement(sql, order, True, back)


def invalid_columns(names: Iterable[str]) -> list[str]:
    return [n for n in names if not COLUMN_RE.fullmatch(n)]
