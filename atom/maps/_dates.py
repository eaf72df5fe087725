"""Date patterns for map functions, compiled once.

Two notations are accepted: Boomi/Java style letters (`yyyy-MM-dd'T'HH:mm:ss.SSSZ`) and Python
`strftime` directives (`%Y-%m-%d`). The word `iso` means ISO 8601. Both compile to a strftime format
with a few markers for what strftime cannot write (milliseconds, `+01:00` offsets).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_MS = "\ue000ms\ue000"  # markers (private-use characters) for what strftime cannot write
_OFFSET = "\ue000tz\ue000"

#: Java pattern letter -> {run length: strftime}; the entry for the largest length <= run is used
_LETTERS: dict[str, dict[int, str]] = {
    "y": {1: "%Y", 2: "%y", 3: "%Y"},
    "M": {1: "%m", 3: "%b", 4: "%B"},
    "d": {1: "%d"},
    "H": {1: "%H"},
    "h": {1: "%I"},
    "m": {1: "%M"},
    "s": {1: "%S"},
    "S": {1: _MS, 4: "%f"},
    "a": {1: "%p"},
    "E": {1: "%a", 4: "%A"},
    "D": {1: "%j"},
    "Z": {1: "%z"},
    "X": {1: _OFFSET},
}

_STRFTIME_OK = set("aAwdbBmyYHIpMSfzZjUWcxXGuV%")
_RUN = re.compile(r"([A-Za-z])\1*|'(?:[^']|'')*'|[^A-Za-z']+")


class DatePatternError(ValueError):
    pass


class DatePattern:
    """A compiled date pattern: `parse(text) -> datetime`, `format(datetime) -> str`."""

    __slots__ = ("_fmt", "_parse_fmt", "iso", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.iso = source.strip().lower() == "iso"
        self._fmt = self._parse_fmt = ""
        if self.iso:
            return
        if "%" in source:
            fmt = _check_strftime(source)
        else:
            fmt = _translate(source)
        if not fmt:
            raise DatePatternError(f"empty date pattern '{source}'")
        self._fmt = fmt
        self._parse_fmt = fmt.replace(_MS, "%f").replace(_OFFSET, "%z")

    def parse(self, text: str) -> dt.datetime:
        text = text.strip()
        if self.iso:
            try:
                return dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            except ValueError:
                raise ValueError(f"'{text}' is not an ISO 8601 date") from None
        try:
            return dt.datetime.strptime(text, self._parse_fmt)
        except ValueError:
            raise ValueError(f"'{text}' does not match the date pattern '{self.source}'") from None

    def format(self, value: dt.datetime | dt.date) -> str:
        if self.iso:
            return value.isoformat()
        out = value.strftime(self._fmt)
        if _MS in out:
            micro = value.microsecond if isinstance(value, dt.datetime) else 0
            out = out.replace(_MS, f"{micro // 1000:03d}")
        if _OFFSET in out:
            off = value.utcoffset() if isinstance(value, dt.datetime) else None
            out = out.replace(_OFFSET, _iso_offset(off))
        return out

    def __repr__(self) -> str:
        return f"DatePattern({self.source!r})"


def _iso_offset(off: dt.timedelta | None) -> str:
    if off is None:
        return ""
    if not off:
        return "Z"
    secs = int(off.total_seconds())
    sign = "+" if secs >= 0 else "-"
    secs = abs(secs)
    return f"{sign}{secs // 3600:02d}:{secs % 3600 // 60:02d}"


def _check_strftime(source: str) -> str:
    i = 0
    while i < len(source):
        if source[i] == "%":
            d = source[i + 1:i + 2]
            if d not in _STRFTIME_OK:
                raise DatePatternError(f"unknown directive '%{d}' in date pattern '{source}'")
            i += 2
        else:
            i += 1
    return source


def _translate(source: str) -> str:
    out: list[str] = []
    for m in _RUN.finditer(source):
        run = m.group(0)
        c = run[0]
        if run == "''":
            out.append("'")
        elif c == "'":
            out.append(run[1:-1].replace("''", "'").replace("%", "%%"))
        elif c.isalpha():
            table = _LETTERS.get(c)
            if table is None:
                raise DatePatternError(f"unknown letter '{c}' in date pattern '{source}'"
                                       " (quote literal text: 'T')")
            best = max(k for k in table if k <= len(run))
            out.append(table[best])
        else:
            out.append(run.replace("%", "%%"))
    return "".join(out)


def to_datetime(value: Any, pattern: DatePattern | None) -> dt.datetime:
    """A datetime from a datetime, a date, or text (ISO 8601 unless a pattern is given)."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, str):
        raise ValueError(f"expected a date, got {type(value).__name__}")
    return (pattern or ISO).parse(value)


ISO = DatePattern("iso")
