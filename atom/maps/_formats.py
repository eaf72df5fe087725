"""Input and output formats: their options (`input: {format: csv, delimiter: ";"}`), and the CSV and
flat-file readers and writers. JSON and XML go straight through orjson and lxml in `_rules`; X12
EDI has its own module, `_x12`."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DocumentError, Location
from ..spec import MISSING, Bool, CheckContext, Custom, Enum, Field, Int, ListOf, Spec, Str
from ..yamlio import Where
from ._x12 import X12_INPUT_SPEC, X12_OUTPUT_SPEC, X12Input, X12Output, check_options

FORMATS = ("json", "xml", "csv", "flat", "x12")
CONTENT_TYPES = {"json": "application/json", "xml": "application/xml", "csv": "text/csv", "flat": "text/plain",
                 "x12": "application/edi-x12"}


@dataclass(frozen=True)
class Column:
    name: str
    width: int | None = None
    align: str = "left"
    pad: str = " "
    truncate: bool = False


@dataclass(frozen=True)
class FormatOptions:
    """One side of a map: its format and the options that apply to it."""

    format: str
    delimiter: str | None = None
    quote: str = '"'
    header: bool = False
    columns: tuple[Column, ...] | None = None
    line_ending: str = "\n"
    pretty: bool = False
    declaration: bool = True
    trim: bool = True
    #: x12: the envelope and separators (output), the loops (input)
    x12: X12Output | X12Input | None = None

    @property
    def positional(self) -> bool:
        return self.format == "flat" and self.delimiter is None

    @property
    def names(self) -> list[str] | None:
        return [c.name for c in self.columns] if self.columns is not None else None


def _char(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if not isinstance(value, str) or len(value) != 1:
        ctx.error(loc, f"expected one character, got {value!r}")
        return MISSING
    return value


def _delimiter(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
        ctx.error(loc, f"expected a delimiter (one or more characters, no line break), got {value!r}")
        return MISSING
    return value


_CHAR = Custom(_char, {"type": "string", "minLength": 1, "maxLength": 1}, "character")
_DELIM = Custom(_delimiter, {"type": "string", "minLength": 1}, "delimiter")
_LINE = Enum("lf", "crlf")

_COLUMN = Spec([
    Field("name", Str(), required=True, description="column name"),
    Field("width", Int(minimum=1), description="width in characters (positional files)"),
    Field("align", Enum("left", "right"), default="left", description="output: where the value sits in its width"),
    Field("pad", _CHAR, default=" ", description="output: the fill character"),
    Field("truncate", Bool(), default=False,
          description="output: cut values longer than the width (otherwise that is an error)"),
])


def _column(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return Column(str(value))
    if isinstance(value, Mapping):
        got = _COLUMN.check(value, where, ctx)
        if "name" not in got:
            return MISSING
        return Column(got["name"], got.get("width"), got["align"], got["pad"], got["truncate"])
    ctx.error(loc, "expected a column name or {name:, width:}")
    return MISSING


_COLUMNS = ListOf(Custom(_column, {"anyOf": [{"type": "string"}, _COLUMN.schema()]}, "column"), min_items=1)

_COMMON_CSV = [
    Field("delimiter", _DELIM, default=",", description="field separator"),
    Field("quote", _CHAR, default='"', description="quote character"),
    Field("header", Bool(), default=True, description="input: the first line names the columns; "
                                                      "output: write a header line"),
    Field("columns", _COLUMNS, description="column names, in order (input: names for files without a header; "
                                           "output: the header and column order)"),
]
_COMMON_FLAT = [
    Field("delimiter", _DELIM, description="field separator of a delimited file (leave out for positional)"),
    Field("header", Bool(), default=False, description="input: the first line names the columns; "
                                                       "output: write a header line"),
    Field("columns", _COLUMNS, description="columns in order: names, or {name, width, ...} for positional files"),
]

SIDE_SPECS: dict[tuple[str, str], Spec] = {
    ("json", "input"): Spec([]),
    ("json", "output"): Spec([Field("pretty", Bool(), default=False, description="indent the output")]),
    ("xml", "input"): Spec([]),
    ("xml", "output"): Spec([
        Field("pretty", Bool(), default=False, description="indent the output"),
        Field("declaration", Bool(), default=True, description="write the <?xml ...?> declaration"),
    ]),
    ("csv", "input"): Spec(_COMMON_CSV),
    ("csv", "output"): Spec([*_COMMON_CSV, Field("line_ending", _LINE, default="lf", description="lf or crlf")]),
    ("flat", "input"): Spec([*_COMMON_FLAT, Field("trim", Bool(), default=True,
                                                  description="strip padding spaces from positional values")]),
    ("flat", "output"): Spec([*_COMMON_FLAT, Field("line_ending", _LINE, default="lf", description="lf or crlf")]),
    ("x12", "input"): X12_INPUT_SPEC,
    ("x12", "output"): X12_OUTPUT_SPEC,
}


def side_type(side: str) -> Custom:
    """The field type of `input` / `output`: a format name, or a mapping with `format` and its options."""

    def check(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if isinstance(value, str):
            fmt, opts, owhere = value, {}, where
        elif isinstance(value, Mapping):
            if "format" not in value:
                ctx.error(loc, f"missing required field 'format' ({' | '.join(FORMATS)})")
                return MISSING
            fmt = value["format"]
            opts = {k: v for k, v in value.items() if k != "format"}
            owhere = where
        else:
            ctx.error(loc, f"expected a format ({' | '.join(FORMATS)}) or a mapping with format and options")
            return MISSING
        if fmt not in FORMATS:
            floc = where.value("format") if isinstance(value, Mapping) else loc
            got = Enum(*FORMATS)
            got.check(fmt, where, floc, ctx)
            return MISSING
        spec = SIDE_SPECS[(str(fmt), side)]
        before = len(ctx.problems)
        if fmt == "x12" and side == "output" and not isinstance(value, Mapping):
            ctx.error(loc, "x12 output needs its envelope: {format: x12, transaction: \"850\", "
                           "sender: {qualifier: ZZ, id: ...}, receiver: {qualifier: ZZ, id: ...}}")
            return MISSING
        vals = spec.check(opts, owhere, ctx) if opts or spec.fields else {}
        if len(ctx.problems) > before:
            return MISSING
        return _options(str(fmt), side, vals, where, loc, ctx)

    alts: list[dict[str, Any]] = [{"enum": list(FORMATS)}]
    for (fmt, s), spec in SIDE_SPECS.items():
        if s != side:
            continue
        sch = spec.schema()
        sch["properties"] = {"format": {"const": fmt}, **sch["properties"]}
        sch["required"] = ["format"]
        alts.append(sch)
    return Custom(check, {"anyOf": alts}, "format or {format: ..., options}")


def _options(fmt: str, side: str, vals: dict[str, Any], where: Where, loc: Location,
             ctx: CheckContext) -> Any:
    if fmt == "x12":
        got = check_options(side, vals, where, loc, ctx)
        return MISSING if got is None else FormatOptions("x12", x12=got)
    cols = tuple(vals["columns"]) if vals.get("columns") is not None else None
    eol = "\r\n" if vals.get("line_ending") == "crlf" else "\n"
    if cols is not None:
        seen: set[str] = set()
        for c in cols:
            if c.name in seen:
                ctx.error(where.value("columns"), f"duplicate column '{c.name}'")
                return MISSING
            seen.add(c.name)
    if fmt == "flat":
        delim = vals.get("delimiter")
        widths = [c.width for c in cols or ()]
        if delim is None:
            if cols is None or any(w is None for w in widths):
                ctx.error(loc, "a flat file is delimited (give 'delimiter') or positional "
                               "(give 'columns', each with a 'width')")
                return MISSING
        elif any(w is not None for w in widths):
            ctx.error(where.value("columns"), "column widths are for positional files; this file has a delimiter")
            return MISSING
        return FormatOptions("flat", delimiter=delim, header=vals["header"], columns=cols, line_ending=eol,
                             trim=vals.get("trim", True))
    if fmt == "csv":
        for c in cols or ():
            if c.width is not None:
                ctx.error(where.value("columns"), "column widths are for positional flat files, not csv")
                return MISSING
        return FormatOptions("csv", delimiter=vals["delimiter"], quote=vals["quote"], header=vals["header"],
                             columns=cols, line_ending=eol)
    return FormatOptions(fmt, pretty=vals.get("pretty", False), declaration=vals.get("declaration", True))


def default_options(fmt: str, side: str) -> FormatOptions:
    if fmt == "csv":
        return FormatOptions("csv", delimiter=",", header=True)
    return FormatOptions(fmt)


INPUT_TYPE = side_type("input")
OUTPUT_TYPE = side_type("output")


# --------------------------------------------------------------------------------------------- reading


def read_rows(text: str, opts: FormatOptions, what: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a CSV or flat file as dicts (column name -> text), and the column names.

    Blank lines are skipped. A row shorter than the header leaves the missing columns out; a longer
    row is an error. Without a header or declared columns, columns are named "1", "2", ...
    """
    if opts.format == "csv":
        lines = _csv_lines(text, opts, what)
    elif opts.positional:
        lines = _positional_lines(text, opts)
    else:
        assert opts.delimiter is not None
        lines = [(n, line.split(opts.delimiter)) for n, line in _text_lines(text)]
    names = opts.names
    if opts.header and lines:
        head = lines.pop(0)[1]
        if names is None:
            names = [h.strip() for h in head]
    if names is None:
        width = max((len(cells) for _, cells in lines), default=0)
        names = [str(i + 1) for i in range(width)]
    rows: list[dict[str, Any]] = []
    n_names = len(names)
    for lineno, cells in lines:
        if len(cells) > n_names:
            raise DocumentError(f"{what}: line {lineno} has {len(cells)} fields, expected at most {n_names} "
                                f"({', '.join(names)})")
        rows.append(dict(zip(names, cells, strict=False)))
    return rows, names


def _text_lines(text: str) -> list[tuple[int, str]]:
    return [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]


def _csv_lines(text: str, opts: FormatOptions, what: str) -> list[tuple[int, list[str]]]:
    delim = opts.delimiter or ","
    if len(delim) != 1:
        return [(n, line.split(delim)) for n, line in _text_lines(text)]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, quotechar=opts.quote, strict=True)
    out = []
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            out.append((reader.line_num, cells))
    except csv.Error as exc:
        raise DocumentError(f"{what} is not valid CSV: line {reader.line_num}: {exc}") from None
    return out


def _positional_lines(text: str, opts: FormatOptions) -> list[tuple[int, list[str]]]:
    assert opts.columns is not None
    spans = []
    pos = 0
    for c in opts.columns:
        assert c.width is not None
        spans.append((pos, pos + c.width))
        pos += c.width
    out = []
    for n, line in _text_lines(text):
        cells = [line[a:b] for a, b in spans if a < len(line)]
        if opts.trim:
            cells = [c.strip() for c in cells]
        out.append((n, cells))
    return out


# --------------------------------------------------------------------------------------------- writing


def write_rows(rows: list[list[str]], names: list[str], opts: FormatOptions, what: str) -> bytes:
    """Write rows of text cells (in column order) as CSV or a flat file; ends with a line break."""
    eol = opts.line_ending
    if opts.format == "csv":
        buf = io.StringIO()
        delim = opts.delimiter or ","
        if len(delim) == 1:
            w = csv.writer(buf, delimiter=delim, quotechar=opts.quote, lineterminator=eol)
            if opts.header:
                w.writerow(names)
            w.writerows(rows)
        else:
            for row in ([names] if opts.header else []) + rows:
                buf.write(delim.join(_quote_multi(c, delim, opts.quote) for c in row) + eol)
        return buf.getvalue().encode()
    out: list[str] = []
    if opts.positional:
        assert opts.columns is not None
        cols = opts.columns
        if opts.header:
            out.append("".join(_fit(c.name, c, what, 0) for c in cols))
        for i, row in enumerate(rows, 1):
            out.append("".join(_fit(v, c, what, i) for v, c in zip(row, cols, strict=True)))
    else:
        d = opts.delimiter
        assert d is not None
        if opts.header:
            out.append(d.join(names))
        for i, row in enumerate(rows, 1):
            for v, name in zip(row, names, strict=True):
                if d in v or "\n" in v or "\r" in v:
                    raise DocumentError(f"{what}: record {i}: field '{name}': value {v[:40]!r} contains the "
                                        f"delimiter or a line break (a flat file has no quoting; use csv)")
            out.append(d.join(row))
    return ("".join(line + eol for line in out)).encode()


def _quote_multi(value: str, delim: str, quote: str) -> str:
    if delim in value or quote in value or "\n" in value or "\r" in value:
        return quote + value.replace(quote, quote + quote) + quote
    return value


def _fit(value: str, col: Column, what: str, record: int) -> str:
    assert col.width is not None
    if "\n" in value or "\r" in value:
        raise DocumentError(f"{what}: record {record}: field '{col.name}': value {value[:40]!r} contains a line break")
    if len(value) > col.width:
        if not col.truncate:
            raise DocumentError(f"{what}: record {record}: field '{col.name}': value {value[:40]!r} is longer "
                                f"than the column width {col.width} (set truncate: true to cut it)")
        value = value[:col.width]
    if col.align == "right":
        return value.rjust(col.width, col.pad)
    return value.ljust(col.width, col.pad)
