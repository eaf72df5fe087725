"""Values between JSON documents and database columns.

Reading: every column value becomes a JSON value (`to_json`). Writing: JSON values are bound as
parameters; SQLite takes them as they are (`to_sqlite`), PostgreSQL needs the Python type of each
parameter's column type, so strings such as `"2024-05-01"` or `"12.50"` are converted for a `date`
or `numeric` parameter (`to_postgres`). MySQL takes each value as an escaped SQL literal
(`mysql_literal`) and converts strings to the column's type itself; its column values are decoded by
`MYSQL_DECODERS` first.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from pymysql.constants import FIELD_TYPE
from pymysql.converters import convert_date, convert_datetime, decoders, through

_UTC = dt.UTC


def to_json(value: Any) -> Any:
    """A column value as a JSON value.

    Numbers stay numbers (a NUMERIC that a float cannot hold exactly becomes a string), dates and times
    become ISO 8601 strings, intervals seconds, UUIDs strings, binary data base64 text, arrays lists,
    json/jsonb their parsed value; anything else its text.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if hasattr(value, "items") and hasattr(value, "keys"):  # composite types (asyncpg Record)
        return {str(k): to_json(v) for k, v in value.items()}
    return str(value)


def _decimal(value: Decimal) -> Any:
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return int(value)
    f = float(value)
    return f if Decimal(repr(f)) == value else str(value)


def to_sqlite(value: Any) -> Any:
    """A parameter for SQLite: objects and lists as JSON text, dates as ISO text."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (dict, list, tuple)):
        return orjson.dumps(value, default=str).decode()
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


# ------------------------------------------------------------------------------------------- postgres

_INTS = {"int2", "int4", "int8", "oid", "smallint", "integer", "bigint"}
_FLOATS = {"float4", "float8", "real", "double precision"}
_TEXTS = {"text", "varchar", "bpchar", "name", "char", "citext", "xml", "unknown"}
_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}


def json_text(value: Any) -> str:
    """Encoder of json/jsonb parameters: a string is taken as JSON text, anything else is serialised."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def to_postgres(value: Any, type_name: str, kind: str) -> Any:
    """Convert a parameter for a column type (asyncpg's type name and kind); raise ValueError."""
    if value is None:
        return None
    if kind == "array":
        if isinstance(value, str) and value.lstrip().startswith("["):
            value = orjson.loads(value)
        if isinstance(value, (list, tuple)):
            elem = type_name[:-2] if type_name.endswith("[]") else type_name
            return [to_postgres(v, elem, "scalar") for v in value]
        return value
    t = type_name
    if t in _INTS:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise ValueError(f"{value!r} is not a whole number")
        if isinstance(value, (str, Decimal)):
            try:
                return int(str(value).strip())
            except ValueError:
                raise ValueError(f"{value!r} is not an integer") from None
        return value
    if t in _FLOATS:
        if isinstance(value, (int, float, Decimal, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        return value
    if t == "numeric":
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return Decimal(str(value).strip())
            except InvalidOperation:
                raise ValueError(f"{value!r} is not a number") from None
        return value
    if t == "bool":
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"{value!r} is not true or false")
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        return value
    if t in _TEXTS:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json_text(value)
        return str(value)
    if t in ("json", "jsonb"):
        return value
    if t == "date":
        if isinstance(value, str):
            return _parse_datetime(value).date() if len(value.strip()) > 10 else _parse_date(value)
        return value
    if t == "timestamp":
        if isinstance(value, str):
            value = _parse_datetime(value)
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return value
    if t == "timestamptz":
        if isinstance(value, str):
            value = _parse_datetime(value)
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        return value
    if t in ("time", "timetz"):
        if isinstance(value, str):
            try:
                return dt.time.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"{value!r} is not a time (expected HH:MM[:SS])") from None
        return value
    if t == "interval":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return dt.timedelta(seconds=value)
        return value
    if t == "uuid":
        if isinstance(value, str):
            try:
                return uuid.UUID(value.strip())
            except ValueError:
                raise ValueError(f"{value!r} is not a UUID") from None
        return value
    if t == "bytea":
        if isinstance(value, str):
            return value.encode()
        return value
    return value


def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date (expected YYYY-MM-DD)") from None


def _parse_datetime(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date and time (expected ISO 8601, e.g. "
                         "2024-05-01T10:30:00Z)") from None


# ------------------------------------------------------------------------------------------- MySQL


def mysql_literal(value: Any, quote_text: Callable[[str], str]) -> str:
    """The SQL literal of a MySQL parameter; `quote_text` is the driver's quoting of text, which knows
    whether the session treats backslashes as escapes. Objects and lists become JSON text, a datetime
    with a time zone its UTC time (the session's time zone), binary data a hex literal. Raises
    ValueError for a value MySQL cannot store (NaN, infinity)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be stored in MySQL")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be stored in MySQL")
        return format(value, "f")
    if isinstance(value, (dict, list, tuple)):
        return quote_text(json_text(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"_binary X'{bytes(value).hex()}'"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return quote_text(value.isoformat(sep=" "))
    if isinstance(value, (dt.date, dt.time)):
        return quote_text(value.isoformat())
    if isinstance(value, dt.timedelta):
        micros = round(value.total_seconds() * 1_000_000)
        sign, micros = ("-" if micros < 0 else ""), abs(micros)
        secs, frac = divmod(micros, 1_000_000)
        return quote_text(f"{sign}{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}.{frac:06d}")
    return quote_text(str(value))


def _mysql_timestamp(text: str) -> Any:
    """TIMESTAMP values arrive in the session's time zone, which the connector sets to UTC."""
    value = convert_datetime(text)
    return value.replace(tzinfo=_UTC) if isinstance(value, dt.datetime) else value


def _mysql_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _mysql_bit(data: Any) -> Any:
    return int.from_bytes(data, "big") if isinstance(data, (bytes, bytearray)) else data


#: How column values are decoded (by MySQL field type), before `to_json`: DECIMAL as Decimal, DATE and
#: DATETIME as date / datetime (a zero date stays text), TIMESTAMP as UTC datetime, TIME as its text
#: (it may exceed a day), JSON (MySQL's type; MariaDB's JSON is text) parsed, BIT as an integer,
#: binary strings and BLOBs as bytes.
MYSQL_DECODERS: dict[int, Any] = {
    **decoders,
    FIELD_TYPE.TIMESTAMP: _mysql_timestamp,
    FIELD_TYPE.DATETIME: convert_datetime,
    FIELD_TYPE.DATE: convert_date,
    FIELD_TYPE.TIME: through,
    FIELD_TYPE.JSON: _mysql_json,
    FIELD_TYPE.BIT: _mysql_bit,
}
