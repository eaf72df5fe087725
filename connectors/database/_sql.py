"""SQL text: named parameters, identifiers, and the statements of the table modes.

Nothing here talks to a database. Values never enter SQL text: they travel as bound parameters
(`?N` for SQLite, `$N` for PostgreSQL); only validated, quoted identifiers are written into it.
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

DIALECTS = ("sqlite", "postgresql")
MODES = ("insert", "update", "upsert", "delete")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_POSITIONAL = re.compile(r"\$\d")


class SqlTextError(ValueError):
    """SQL text that cannot be used (unterminated literal, positional parameters)."""


def quote(name: str) -> str:
    """Quote a validated identifier (`schema.table` -> `"schema"."table"`)."""
    return ".".join(f'"{part}"' for part in name.split("."))


def placeholder(dialect: str, n: int) -> str:
    """The bound-parameter marker number `n` (1-based) of a dialect."""
    return f"${n}" if dialect == "postgresql" else f"?{n}"


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
        self._texts = {d: "".join(p if isinstance(p, str) else placeholder(d, p + 1) for p in self._parts)
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
        """The SQL for a dialect (`sqlite` or `postgresql`), with numbered placeholders."""
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
class Statement:
    """A statement built for one table mode and one set of columns."""

    sql: str
    #: column names in placeholder order
    order: tuple[str, ...]
    returns_rows: bool

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
    t = quote(table)
    ret = ""
    if returning:
        ret = " RETURNING " + ("*" if "*" in returning else ", ".join(quote(c) for c in returning))
    if mode in ("insert", "upsert"):
        if not columns:
            raise ValueError("there is no column to write")
        marks = ", ".join(placeholder(dialect, i + 1) for i in range(len(columns)))
        sql = f"INSERT INTO {t} ({', '.join(quote(c) for c in columns)}) VALUES ({marks})"
        if mode == "upsert":
            rest = [c for c in columns if c not in key]
            target = ", ".join(quote(k) for k in key)
            if rest:
                sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in rest)
                sql += f" ON CONFLICT ({target}) DO UPDATE SET {sets}"
            else:
                sql += f" ON CONFLICT ({target}) DO NOTHING"
        return Statement(sql + ret, tuple(columns), bool(returning))
    where = " AND ".join(f"{quote(k)} = {{}}" for k in key)
    if mode == "update":
        rest = [c for c in columns if c not in key]
        if not rest:
            raise ValueError("there is no column to update besides the key")
        order = (*rest, *key)
        sets = ", ".join(f"{quote(c)} = {placeholder(dialect, i + 1)}" for i, c in enumerate(rest))
        keys = [placeholder(dialect, len(rest) + i + 1) for i in range(len(key))]
        return Statement(f"UPDATE {t} SET {sets} WHERE {where.format(*keys)}{ret}", order, bool(returning))
    if mode == "delete":
        keys = [placeholder(dialect, i + 1) for i in range(len(key))]
        return Statement(f"DELETE FROM {t} WHERE {where.format(*keys)}{ret}", tuple(key), bool(returning))
    raise ValueError(f"unknown mode '{mode}'")


def invalid_columns(names: Iterable[str]) -> list[str]:
    return [n for n in names if not COLUMN_RE.fullmatch(n)]
