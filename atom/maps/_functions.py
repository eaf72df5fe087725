"""Map functions: string, numeric, date, lookup and property functions, compiled once.

A function takes the current value and gives a new one. In YAML a function is its name (`trim`) or
a mapping of its name to its arguments: one argument (`{truncate: 10}`), a list
(`{pad_left: [10, "0"]}`) or named arguments (`{pad_left: {width: 10, fill: "0"}}`). Text and number
arguments may be templates, evaluated per document; the others are checked and compiled at load time.

Contract of an implementation: `impl(value, run, *args)`; a missing input (None) gives None unless
the function ignores its input; a failure raises MapValueError (the field adds its name).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, DivisionByZero, InvalidOperation
from typing import TYPE_CHECKING, Any

from ..errors import DocumentError, Location
from ..expressions import ExpressionSyntaxError, compile_template
from ..spec import CheckContext, did_you_mean
from ..yamlio import interpolate
from ._dates import DatePattern, DatePatternError, to_datetime
from ._fused import step_for
from ._values import MapValueError, describe, evaluate, plain, to_decimal, to_text, unwrap

if TYPE_CHECKING:
    from ._rules import Run

Fn = Callable[[Any, "Run"], Any]


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # str | int | num | regex | date | tz | table | numfmt | bool | values | template | any
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class FnDef:
    name: str
    family: str
    params: tuple[Param, ...]
    impl: Callable[..., Any]
    summary: str


FUNCTIONS: dict[str, FnDef] = {}

#: argument kinds that may be a template (evaluated per document, then checked)
_DYNAMIC_KINDS = frozenset(("str", "int", "num", "any"))


def _fn(name: str, family: str, summary: str, *params: Param) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        FUNCTIONS[name] = FnDef(name, family, params, impl, summary)
        return impl
    return register


def _s(value: Any) -> str:
    return value if type(value) is str else to_text(value)


# ----------------------------------------------------------------------------------------------- string


@_fn("trim", "string", "remove leading and trailing whitespace")
def _trim(v: Any, run: Run) -> Any:
    return None if v is None else _s(v).strip()


@_fn("ltrim", "string", "remove leading whitespace")
def _ltrim(v: Any, run: Run) -> Any:
    return None if v is None else _s(v).lstrip()


@_fn("rtrim", "string", "remove trailing whitespace")
def _rtrim(v: Any, run: Run) -> Any:
    return None if v is None else _s(v).rstrip()


@_fn("upper", "string", "upper case")
def _upper(v: Any, run: Run) -> Any:
    return None if v is None else _s(v).upper()


@_fn("lower", "string", "lower case")
def _lower(v: Any, run: Run) -> Any:
    return None if v is None else _s(v).lower()


@_fn("title", "string", "first letter of each word in upper case")
def _title(v: Any, run: Run) -> Any:
    return None if v is None else _s(v).title()


@_fn("substring", "string", "`length` characters from position `start` (0-based; negative counts from the end)",
     Param("start", "int"), Param("length", "int", required=False))
def _substring(v: Any, run: Run, start: int, length: int | None) -> Any:
    if v is None:
        return None
    s = _s(v)
    if start < 0:
        start = max(len(s) + start, 0)
    return s[start:] if length is None else s[start:start + max(length, 0)]


@_fn("truncate", "string", "keep at most `length` characters", Param("length", "int"))
def _truncate(v: Any, run: Run, length: int) -> Any:
    return None if v is None else _s(v)[:max(length, 0)]


@_fn("replace", "string", "replace every `old` with `new`", Param("old", "str"), Param("new", "str", False, ""))
def _replace(v: Any, run: Run, old: str, new: str) -> Any:
    return None if v is None else _s(v).replace(old, new)


@_fn("regex_replace", "string", "replace matches of a regular expression (`\\1` refers to a group)",
     Param("pattern", "regex"), Param("replacement", "str", False, ""))
def _regex_replace(v: Any, run: Run, pattern: re.Pattern[str], repl: str) -> Any:
    if v is None:
        return None
    try:
        return pattern.sub(repl, _s(v))
    except (re.error, IndexError) as exc:
        raise MapValueError(f"regex_replace: bad replacement '{repl}': {exc}") from None


@_fn("regex_extract", "string", "the first match of a regular expression, or one of its groups (None if no match)",
     Param("pattern", "regex"), Param("group", "int", False, 0))
def _regex_extract(v: Any, run: Run, pattern: re.Pattern[str], group: int) -> Any:
    if v is None:
        return None
    m = pattern.search(_s(v))
    if m is None:
        return None
    try:
        return m.group(group)
    except IndexError:
        raise MapValueError(f"regex_extract: the pattern has no group {group}") from None


@_fn("pad_left", "string", "pad on the left to `width` characters with `fill`",
     Param("width", "int"), Param("fill", "str", False, " "))
def _pad_left(v: Any, run: Run, width: int, fill: str) -> Any:
    return None if v is None else _s(v).rjust(width, _fill(fill))


@_fn("pad_right", "string", "pad on the right to `width` characters with `fill`",
     Param("width", "int"), Param("fill", "str", False, " "))
def _pad_right(v: Any, run: Run, width: int, fill: str) -> Any:
    return None if v is None else _s(v).ljust(width, _fill(fill))


def _fill(fill: str) -> str:
    if len(fill) != 1:
        raise MapValueError(f"the fill must be one character, got '{fill}'")
    return fill


@_fn("prepend", "string", "put `text` before the value", Param("text", "str"))
def _prepend(v: Any, run: Run, text: str) -> Any:
    return None if v is None else text + _s(v)


@_fn("append", "string", "put `text` after the value", Param("text", "str"))
def _append(v: Any, run: Run, text: str) -> Any:
    return None if v is None else _s(v) + text


@_fn("split", "string", "split on `separator`: the list, or the part at `index` (0-based; None if absent)",
     Param("separator", "str"), Param("index", "int", required=False))
def _split(v: Any, run: Run, sep: str, index: int | None) -> Any:
    if v is None:
        return None
    if not sep:
        raise MapValueError("split: the separator is empty")
    parts = _s(v).split(sep)
    if index is None:
        return parts
    try:
        return parts[index]
    except IndexError:
        return None


@_fn("join", "string", "join a list into text with `separator` (missing items are skipped)",
     Param("separator", "str", False, ","))
def _join(v: Any, run: Run, sep: str) -> Any:
    if v is None:
        return None
    if not isinstance(v, list):
        return _s(v)
    return sep.join(_s(x) for x in v if x is not None)


@_fn("length", "string", "the number of characters (or of items, for a list)")
def _length(v: Any, run: Run) -> Any:
    if v is None:
        return None
    return len(v) if isinstance(v, list) else len(_s(v))


# ---------------------------------------------------------------------------------------------- numeric


def _num(v: Any) -> Decimal:
    return to_decimal(v)


def _arith(name: str, op: Callable[[Decimal, Decimal], Decimal], what: str) -> None:
    def impl(v: Any, run: Run, n: Decimal) -> Any:
        if v is None:
            return None
        try:
            return op(_num(v), n)
        except (DivisionByZero, InvalidOperation, ZeroDivisionError):
            raise MapValueError(f"{name}: cannot compute {describe(v)} {what} {n}") from None
    FUNCTIONS[name] = FnDef(name, "numeric", (Param("number", "num"),), impl, f"{what} `number`")


_arith("add", lambda a, b: a + b, "plus")
_arith("subtract", lambda a, b: a - b, "minus")
_arith("multiply", lambda a, b: a * b, "times")
_arith("divide", lambda a, b: a / b, "divided by")


@_fn("round", "numeric", "round half up to `digits` decimal places", Param("digits", "int", False, 0))
def _round(v: Any, run: Run, digits: int) -> Any:
    if v is None:
        return None
    q = _QUANTA.get(digits)
    if q is None:
        q = _QUANTA[digits] = Decimal(1).scaleb(-digits)
    return _num(v).quantize(q, rounding=ROUND_HALF_UP)


_QUANTA: dict[int, Decimal] = {}


@_fn("floor", "numeric", "round down to a whole number")
def _floor(v: Any, run: Run) -> Any:
    return None if v is None else _num(v).to_integral_value(rounding=ROUND_FLOOR)


@_fn("ceil", "numeric", "round up to a whole number")
def _ceil(v: Any, run: Run) -> Any:
    return None if v is None else _num(v).to_integral_value(rounding=ROUND_CEILING)


@_fn("abs", "numeric", "absolute value")
def _abs(v: Any, run: Run) -> Any:
    return None if v is None else abs(_num(v))


@_fn("negate", "numeric", "change the sign")
def _negate(v: Any, run: Run) -> Any:
    return None if v is None else -_num(v)


@_fn("format_number", "numeric", "format with a Python format spec: `.2f`, `,.2f`, `08.3f`, `d`",
     Param("format", "numfmt"))
def _format_number(v: Any, run: Run, spec: str) -> Any:
    if v is None:
        return None
    d = _num(v)
    try:
        return format(int(d) if spec.endswith(("d", "n", "x", "X", "o", "b")) else d, spec)
    except (ValueError, TypeError) as exc:
        raise MapValueError(f"format_number: cannot format {describe(v)} with '{spec}': {exc}") from None


def _numbers(v: Any) -> list[Decimal]:
    items = v if isinstance(v, list) else [v]
    out: list[Decimal] = []
    for x in items:
        if type(x) is Decimal:  # values per item computed by functions: already decimals
            out.append(x)
        elif x is not None and not (isinstance(x, str) and not x.strip()):
            out.append(_num(x))
    return out


@_fn("sum", "numeric", "the sum of a list of numbers (0 for an empty list)")
def _sum(v: Any, run: Run) -> Any:
    return sum(_numbers(v), Decimal(0)) if v is not None else Decimal(0)


@_fn("count", "numeric", "the number of items of a list (0 for nothing, 1 for a single value)")
def _count(v: Any, run: Run) -> Any:
    if v is None:
        return 0
    return len(v) if isinstance(v, list) else 1


@_fn("min", "numeric", "the smallest number of a list (None for an empty list)")
def _min(v: Any, run: Run) -> Any:
    nums = _numbers(v) if v is not None else []
    return min(nums) if nums else None


@_fn("max", "numeric", "the largest number of a list (None for an empty list)")
def _max(v: Any, run: Run) -> Any:
    nums = _numbers(v) if v is not None else []
    return max(nums) if nums else None


@_fn("average", "numeric", "the mean of a list of numbers (None for an empty list)")
def _average(v: Any, run: Run) -> Any:
    nums = _numbers(v) if v is not None else []
    return sum(nums, Decimal(0)) / len(nums) if nums else None


# ------------------------------------------------------------------------------------------------- date


def _dt(v: Any, pattern: DatePattern | None = None) -> dt.datetime:
    try:
        return to_datetime(v, pattern)
    except ValueError as exc:
        raise MapValueError(str(exc)) from None


@_fn("date_parse", "date", "text -> date, by `format` (`iso`, `yyyyMMdd`, `%d/%m/%Y`); "
     "`timezone` is assumed for values without an offset",
     Param("format", "date"), Param("timezone", "tz", required=False))
def _date_parse(v: Any, run: Run, pattern: DatePattern, tz: dt.tzinfo | None) -> Any:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    d = _dt(v, pattern)
    if tz is not None and d.tzinfo is None:
        d = d.replace(tzinfo=tz)
    return d


@_fn("date_format", "date", "date -> text in format `to`; text input is read with `from` (default ISO 8601); "
     "`timezone` converts first (values without an offset are taken as UTC)",
     Param("to", "date"), Param("from", "date", required=False), Param("timezone", "tz", required=False))
def _date_format(v: Any, run: Run, to: DatePattern, frm: DatePattern | None, tz: dt.tzinfo | None) -> Any:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    d = _dt(v, frm)
    if tz is not None:
        d = (d if d.tzinfo is not None else d.replace(tzinfo=dt.UTC)).astimezone(tz)
    return to.format(d)


@_fn("date_add", "date", "add (or, negative, subtract) weeks, days, hours, minutes, seconds",
     Param("days", "num", False, 0), Param("hours", "num", False, 0), Param("minutes", "num", False, 0),
     Param("seconds", "num", False, 0), Param("weeks", "num", False, 0))
def _date_add(v: Any, run: Run, days: Decimal, hours: Decimal, minutes: Decimal, seconds: Decimal,
              weeks: Decimal) -> Any:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    delta = dt.timedelta(days=float(days), hours=float(hours), minutes=float(minutes), seconds=float(seconds),
                         weeks=float(weeks))
    try:
        return _dt(v) + delta
    except OverflowError:
        raise MapValueError(f"date_add: {describe(v)} plus {delta} is out of range") from None


@_fn("now", "date", "the current time in UTC (the input is ignored)")
def _now(v: Any, run: Run) -> Any:
    return dt.datetime.now(dt.UTC)


# ----------------------------------------------------------------------------------------------- lookup


class _Table:
    __slots__ = ("column", "entries", "name")

    def __init__(self, name: str, entries: Mapping[str, Any], column: str | None) -> None:
        self.name, self.entries, self.column = name, entries, column


@_fn("lookup", "lookup", "the value of a lookup table for the input (a cross-reference table)",
     Param("table", "table", required=False), Param("values", "values", required=False),
     Param("column", "str", required=False), Param("default", "any", required=False),
     Param("strict", "bool", False, False))
def _lookup(v: Any, run: Run, table: _Table | None, values: _Table | None, column: str | None,
            default: Any, strict: bool) -> Any:
    t: _Table = table or values  # type: ignore[assignment]
    if v is None:
        return default
    key = _s(v)
    try:
        got = t.entries[key]
    except KeyError:
        if strict:
            raise MapValueError(f"no entry '{key}' in lookup table '{t.name}'") from None
        return default
    if column is not None:
        if not isinstance(got, Mapping) or column not in got:
            raise MapValueError(f"lookup table '{t.name}' has no column '{column}' for '{key}'")
        got = got[column]
    return got


# --------------------------------------------------------------------------------------------- property


@_fn("get_property", "property", "the process property `name` (the input is ignored)",
     Param("name", "str"), Param("default", "any", required=False))
def _get_property(v: Any, run: Run, name: str, default: Any) -> Any:
    return run.ctx.properties.get(name, default)


@_fn("set_property", "property", "store the value as process property `name`; the value passes on",
     Param("name", "str"))
def _set_property(v: Any, run: Run, name: str) -> Any:
    if v is not None:
        run.ctx.properties[name] = to_text(v)
    return v


@_fn("get_document_property", "property", "the document property `name`: carried from the input, or set earlier "
     "in this map (the input is ignored)",
     Param("name", "str"), Param("default", "any", required=False))
def _get_document_property(v: Any, run: Run, name: str, default: Any) -> Any:
    return run.props.get(name, default)


@_fn("set_document_property", "property", "set property `name` of the output document; the value passes on",
     Param("name", "str"))
def _set_document_property(v: Any, run: Run, name: str) -> Any:
    if v is not None:
        run.props[name] = to_text(v)
    return v


# ---------------------------------------------------------------------------------------------- template


@_fn("template", "template", "a Jinja2 expression with the current value in scope as `value`",
     Param("expression", "template"))
def _template(v: Any, run: Run, tmpl: Any) -> Any:
    scope = run.scope
    scope["value"] = plain(v)
    return evaluate(tmpl, scope)


# ---------------------------------------------------------------------------------------------- compile


class FnCompiler:
    """What compiling a function needs from the map being compiled."""

    def __init__(self, ctx: CheckContext, lookups: Mapping[str, Mapping[str, Any]]) -> None:
        self.ctx = ctx
        self.lookups = lookups
        self.uses_scope = False
        self.sets_doc_props = False


def compile_function(spec: Any, loc: Location, fc: FnCompiler) -> Fn | None:
    """Compile one function item (`name` or `{name: args}`); report problems at `loc`; None if it cannot."""
    if isinstance(spec, str):
        name, raw, given = spec, None, False
    elif isinstance(spec, Mapping) and len(spec) == 1:
        name, raw = next(iter(spec.items()))
        name, given = str(name), raw is not None
    else:
        fc.ctx.error(loc, "a function is a name (trim) or a mapping of one name to its arguments "
                          "({pad_left: [10, '0']})")
        return None
    fdef = FUNCTIONS.get(name)
    if fdef is None:
        fc.ctx.error(loc, f"unknown function '{name}'{did_you_mean(name, FUNCTIONS)}")
        return None
    if name == "set_document_property":
        fc.sets_doc_props = True
    params = fdef.params
    sig = ", ".join(p.name if p.required else f"{p.name}?" for p in params)
    # positional / named / single
    bound: dict[str, Any] = {}
    ok = True
    if not given:
        pass
    elif isinstance(raw, Mapping):
        for k, val in raw.items():
            p = next((p for p in params if p.name == str(k)), None)
            if p is None:
                fc.ctx.error(loc, f"function '{name}' has no argument '{k}'"
                                  f"{did_you_mean(str(k), [p.name for p in params])} (arguments: {sig or 'none'})")
                ok = False
                continue
            bound[p.name] = val
    else:
        items = list(raw) if isinstance(raw, list) else [raw]
        if len(items) > len(params):
            fc.ctx.error(loc, f"function '{name}' takes {_arity(params)}, got {len(items)} ({sig or 'none'})")
            return None
        for p, val in zip(params, items, strict=False):
            bound[p.name] = val
    for p in params:
        if p.required and p.name not in bound:
            fc.ctx.error(loc, f"function '{name}' needs argument '{p.name}' ({sig})")
            ok = False
    if name == "lookup" and ok:
        if ("table" in bound) == ("values" in bound):
            fc.ctx.error(loc, "function 'lookup' needs either 'table' (a name under lookups) or 'values' "
                              "(an inline table)")
            ok = False
    if not ok:
        return None
    getters: list[Any] = []
    dynamic = False
    for p in params:
        if p.name not in bound:
            getters.append(_Const(p.default))
            continue
        got = _compile_arg(name, p, bound[p.name], loc, fc)
        if got is _BAD:
            ok = False
            continue
        if isinstance(got, _Dyn):
            dynamic = True
        getters.append(got)
    if not ok:
        return None
    if name == "lookup":
        col = getters[2]
        table = getters[0].value or getters[1].value
        if isinstance(col, _Const) and col.value is not None:
            bad = [k for k, e in table.entries.items() if not isinstance(e, Mapping) or col.value not in e]
            if bad:
                fc.ctx.error(loc, f"lookup table '{table.name}' has no column '{col.value}' for "
                                  f"{', '.join(repr(b) for b in bad[:3])}")
                return None
    return _bind(fdef, getters, dynamic)


def _arity(params: tuple[Param, ...]) -> str:
    req = sum(1 for p in params if p.required)
    if not params:
        return "no arguments"
    if req == len(params):
        return f"{req} argument{'s' if req != 1 else ''}"
    return f"{req} to {len(params)} arguments"


class _Const:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Dyn:
    """An argument given as a template: evaluated per value (a name path such as `{{ item.qty }}` is
    a direct lookup, see atom.expressions), then checked."""

    __slots__ = ("check", "evaluate", "tmpl")

    def __init__(self, tmpl: Any, check: Callable[[Any], Any]) -> None:
        self.tmpl, self.check = tmpl, check
        self.evaluate = tmpl.evaluate

    def get(self, run: Run) -> Any:
        return self.check(self.evaluate(run.scope))


_BAD: Any = object()


def _bind(fdef: FnDef, getters: list[Any], dynamic: bool) -> Fn:
    impl, name = fdef.impl, fdef.name

    def fail(v: Any, exc: Exception) -> MapValueError:
        return MapValueError(f"function '{name}' failed on {describe(v)}: {type(exc).__name__}: {exc}")

    if not dynamic:
        args = tuple(g.value for g in getters)
        if not args:
            def call0(v: Any, run: Run) -> Any:
                try:
                    return impl(v, run)
                except DocumentError:
                    raise
                except (TypeError, ValueError, ArithmeticError, KeyError) as exc:
                    raise fail(v, exc) from None
            return call0

        def call(v: Any, run: Run) -> Any:
            try:
                return impl(v, run, *args)
            except DocumentError:
                raise
            except (TypeError, ValueError, ArithmeticError, KeyError) as exc:
                raise fail(v, exc) from None
        call.step = step_for(name, args, None)  # type: ignore[attr-defined]
        return call

    if len(getters) == 1:  # `{multiply: "{{ item.qty }}"}`
        get = getters[0].get

        def call_dyn1(v: Any, run: Run) -> Any:
            try:
                return impl(v, run, get(run))
            except DocumentError:
                raise
            except (TypeError, ValueError, ArithmeticError, KeyError) as exc:
                raise fail(v, exc) from None
        call_dyn1.step = step_for(name, (), getters[0].tmpl)  # type: ignore[attr-defined]
        return call_dyn1

    def call_dyn(v: Any, run: Run) -> Any:
        values = [g.get(run) if isinstance(g, _Dyn) else g.value for g in getters]
        try:
            return impl(v, run, *values)
        except DocumentError:
            raise
        except (TypeError, ValueError, ArithmeticError, KeyError) as exc:
            raise fail(v, exc) from None
    return call_dyn


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _compile_arg(fname: str, p: Param, raw: Any, loc: Location, fc: FnCompiler) -> Any:
    what = f"function '{fname}': argument '{p.name}'"
    if isinstance(raw, str) and "${" in raw:
        raw, missing = interpolate(raw, fc.ctx.env)
        for n in missing:
            fc.ctx.error(loc, f"environment variable '{n}' is not set and has no default")
    if p.kind == "template":
        if not isinstance(raw, str):
            fc.ctx.error(loc, f"{what} must be a template string like '{{{{ value | upper }}}}'")
            return _BAD
        try:
            fc.uses_scope = True
            return _Const(compile_template(raw))
        except ExpressionSyntaxError as exc:
            fc.ctx.error(loc, f"{what}: {exc}")
            return _BAD
    if _is_template(raw) and p.kind in _DYNAMIC_KINDS:
        try:
            tmpl = compile_template(raw)
        except ExpressionSyntaxError as exc:
            fc.ctx.error(loc, f"{what}: {exc}")
            return _BAD
        fc.uses_scope = True
        check = _RUNTIME_CHECKS[p.kind]

        def checked(value: Any, check: Callable[[Any], Any] = check) -> Any:
            try:
                return check(value)
            except ValueError as exc:
                raise MapValueError(f"{what}: {exc}") from None
        return _Dyn(tmpl, checked)
    try:
        return _Const(_static(p, raw, fc))
    except ValueError as exc:
        fc.ctx.error(loc, f"{what}: {exc}")
        return _BAD


def _check_str(v: Any) -> str:
    if v is None or isinstance(v, (dict, list)):
        raise ValueError(f"expected text, got {describe(v)}")
    return to_text(v)


def _check_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {describe(v)}")


def _check_num(v: Any) -> Decimal:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        return to_decimal(v)
    except MapValueError:
        raise ValueError(f"expected a number, got {describe(v)}") from None


def _check_any(v: Any) -> Any:
    return v


_RUNTIME_CHECKS: dict[str, Callable[[Any], Any]] = {
    "str": _check_str, "int": _check_int, "num": _check_num, "any": _check_any,
}


def _static(p: Param, raw: Any, fc: FnCompiler) -> Any:
    kind = p.kind
    raw = unwrap(raw)
    if kind in _RUNTIME_CHECKS:
        return _RUNTIME_CHECKS[kind](raw)
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ValueError(f"expected true or false, got {describe(raw)}")
        return raw
    if kind == "regex":
        if not isinstance(raw, str):
            raise ValueError(f"expected a regular expression, got {describe(raw)}")
        try:
            return re.compile(raw)
        except re.error as exc:
            raise ValueError(f"invalid regular expression '{raw}': {exc}") from None
    if kind == "date":
        if not isinstance(raw, str):
            raise ValueError(f"expected a date pattern, got {describe(raw)}")
        try:
            return DatePattern(raw)
        except DatePatternError as exc:
            raise ValueError(str(exc)) from None
    if kind == "tz":
        if not isinstance(raw, str):
            raise ValueError(f"expected a time zone name, got {describe(raw)}")
        if raw.upper() == "UTC":
            return dt.UTC
        try:
            return zoneinfo.ZoneInfo(raw)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{raw}'") from None
    if kind == "numfmt":
        if not isinstance(raw, str):
            raise ValueError(f"expected a format spec like '.2f', got {describe(raw)}")
        try:
            format(Decimal("1.5"), raw) if not raw.endswith(("d", "n", "x", "X", "o", "b")) else format(1, raw)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid number format '{raw}': {exc}") from None
        return raw
    if kind == "table":
        name = str(raw)
        if name not in fc.lookups:
            hint = did_you_mean(name, fc.lookups)
            if not fc.lookups:
                hint = " (the map declares no lookups)"
            elif not hint:
                hint = f" (tables: {', '.join(sorted(fc.lookups))})"
            raise ValueError(f"unknown lookup table '{name}'{hint}")
        return _Table(name, fc.lookups[name], None)
    if kind == "values":
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError("expected a mapping of key -> value")
        return _Table("<values>", {str(k): v for k, v in raw.items()}, None)
    raise ValueError(f"unsupported argument kind {kind}")  # pragma: no cover


def functions_by_family() -> dict[str, list[FnDef]]:
    """Functions grouped by family, for the docs."""
    out: dict[str, list[FnDef]] = {}
    for f in FUNCTIONS.values():
        out.setdefault(f.family, []).append(f)
    return out

