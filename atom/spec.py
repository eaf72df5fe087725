"""Typed field specs: one declaration drives validation, `atom schema`, `atom connectors` and the docs.

A `Spec` is a list of `Field`s. `Spec.check(node, where, ctx)` validates a YAML mapping and returns a
plain dict of coerced values (templates compiled, durations in seconds, `${ENV}` resolved); every
problem is appended to `ctx.problems` with its location, so all errors come out together.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Location, Problem
from .yamlio import Where, interpolate

MISSING: Any = object()


class CheckContext:
    """Collects problems while checking; gives field types access to the expression compiler."""

    def __init__(self, env: Mapping[str, str] | None = None, secrets: list[str] | None = None) -> None:
        self.problems: list[Problem] = []
        self.env = env
        self.secrets: list[str] = secrets if secrets is not None else []

    def error(self, loc: Location, message: str) -> None:
        self.problems.append(Problem(loc, message))


# ----------------------------------------------------------------------------------------------- types


class Type:
    """A field type. `check` returns the coerced value or MISSING after reporting a problem."""

    label = "value"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        return value

    def schema(self) -> dict[str, Any]:
        return {}

    def _env(self, value: Any, loc: Location, ctx: CheckContext) -> Any:
        if isinstance(value, str) and "${" in value:
            value, missing = interpolate(value, ctx.env)
            for name in missing:
                ctx.error(loc, f"environment variable '{name}' is not set and has no default")
        return value


class Str(Type):
    label = "string"

    def __init__(self, pattern: str | None = None) -> None:
        self.pattern = re.compile(pattern) if pattern else None

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        value = self._env(value, loc, ctx)
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            ctx.error(loc, f"expected a string, got {value_kind(value)}")
            return MISSING
        value = str(value)
        if self.pattern and not self.pattern.fullmatch(value):
            ctx.error(loc, f"'{value}' does not match {self.pattern.pattern}")
            return MISSING
        return value

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.pattern:
            out["pattern"] = self.pattern.pattern
        return out


class Int(Type):
    label = "integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        value = self._env(value, loc, ctx)
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.error(loc, f"expected an integer, got {value_kind(value)}")
            return MISSING
        if self.minimum is not None and value < self.minimum:
            ctx.error(loc, f"must be >= {self.minimum}, got {value}")
            return MISSING
        if self.maximum is not None and value > self.maximum:
            ctx.error(loc, f"must be <= {self.maximum}, got {value}")
            return MISSING
        return value

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


class Float(Type):
    label = "number"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        value = self._env(value, loc, ctx)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            ctx.error(loc, f"expected a number, got {value_kind(value)}")
            return MISSING
        return float(value)

    def schema(self) -> dict[str, Any]:
        return {"type": "number"}


class Bool(Type):
    label = "boolean"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        value = self._env(value, loc, ctx)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            ctx.error(loc, f"expected true or false, got {value_kind(value)}")
            return MISSING
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


class Enum(Type):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.label = " | ".join(choices)

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        value = self._env(value, loc, ctx)
        if isinstance(value, bool) or str(value) not in self.choices:
            hint = _did_you_mean(str(value), self.choices)
            ctx.error(loc, f"'{value}' is not one of {', '.join(self.choices)}{hint}")
            return MISSING
        return str(value)

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float | None:
    """`30s`, `200ms`, `5m`, `1h`, `2d` or a number of seconds -> seconds; None if malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2)]


class Duration(Type):
    """A duration: `200ms`, `30s`, `5m`, `1h`, or a number of seconds. Coerced to float seconds."""

    label = "duration"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        value = self._env(value, loc, ctx)
        secs = parse_duration(value)
        if secs is None:
            ctx.error(loc, f"expected a duration like 200ms, 30s, 5m, got '{value}'")
            return MISSING
        return secs

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$"}]}


_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.I)
_SIZE = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


class Size(Type):
    """A byte size: an integer, or `10MiB`, `512kb`. Coerced to int bytes."""

    label = "size"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        value = self._env(value, loc, ctx)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        m = _SIZE_RE.match(str(value))
        if not m:
            ctx.error(loc, f"expected a size like 1048576 or 10MiB, got '{value}'")
            return MISSING
        return int(m.group(1)) * _SIZE[(m.group(2) or "b").lower()]

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "integer"}, {"type": "string"}]}


class Any_(Type):
    label = "any"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        return _plain_env(value, loc, ctx)


class Template(Type):
    """A Jinja2 template (string with `{{ }}`), compiled at load time to `atom.expressions.Template`.

    Non-string scalars are accepted and become constant templates.
    """

    label = "template"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        from .expressions import ExpressionSyntaxError, compile_template

        value = self._env(value, loc, ctx)
        if isinstance(value, (dict, list)) or value is None:
            ctx.error(loc, f"expected a string or template, got {value_kind(value)}")
            return MISSING
        if isinstance(value, bool):
            value = "true" if value else "false"
        try:
            return compile_template(str(value))
        except ExpressionSyntaxError as exc:
            ctx.error(loc, str(exc))
            return MISSING

    def schema(self) -> dict[str, Any]:
        return {"type": ["string", "number", "boolean"]}


class Value(Type):
    """A value that may be a template; evaluates to a native Python value (`{{ expr }}` alone keeps
    its type, mixed text renders to a string, plain scalars stay as they are)."""

    label = "value"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        from .expressions import ExpressionSyntaxError, compile_value

        value = self._env(value, loc, ctx)
        if isinstance(value, (dict, list)):
            ctx.error(loc, f"expected a scalar or template, got {value_kind(value)}")
            return MISSING
        try:
            return compile_value(value)
        except ExpressionSyntaxError as exc:
            ctx.error(loc, str(exc))
            return MISSING

    def schema(self) -> dict[str, Any]:
        return {"type": ["string", "number", "boolean", "null"]}


class ListOf(Type):
    def __init__(self, item: Type, min_items: int = 0) -> None:
        self.item = item
        self.min_items = min_items
        self.label = f"list of {item.label}"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if not isinstance(value, list):
            ctx.error(loc, f"expected a list, got {value_kind(value)}")
            return MISSING
        if len(value) < self.min_items:
            ctx.error(loc, f"expected at least {self.min_items} item(s)")
        out = []
        for i, item in enumerate(value):
            got = self.item.check(item, where.child(i), where.value(i), ctx)
            if got is not MISSING:
                out.append(got)
        return out

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema()}


class MapOf(Type):
    """A mapping of free keys (strings) to values of one type."""

    def __init__(self, item: Type) -> None:
        self.item = item
        self.label = f"mapping of {item.label}"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if not isinstance(value, Mapping):
            ctx.error(loc, f"expected a mapping, got {value_kind(value)}")
            return MISSING
        out = {}
        for k, v in value.items():
            got = self.item.check(v, where.child(k), where.value(k), ctx)
            if got is not MISSING:
                out[str(k)] = got
        return out

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.item.schema()}


class Object(Type):
    """A nested mapping with its own spec."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.label = "mapping"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            ctx.error(loc, f"expected a mapping, got {value_kind(value)}")
            return MISSING
        return self.spec.check(value, where, ctx)

    def schema(self) -> dict[str, Any]:
        return self.spec.schema()


class OneOf(Type):
    """The first alternative whose shape fits (string vs mapping vs list) is used."""

    def __init__(self, *alternatives: Type) -> None:
        self.alternatives = alternatives
        self.label = " or ".join(a.label for a in alternatives)

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        for alt in self.alternatives:
            if _fits(alt, value):
                return alt.check(value, where, loc, ctx)
        ctx.error(loc, f"expected {self.label}, got {value_kind(value)}")
        return MISSING

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [a.schema() for a in self.alternatives]}


class Custom(Type):
    """Delegates to a function: `fn(value, where, loc, ctx) -> value | MISSING`."""

    def __init__(self, fn: Callable[[Any, Where, Location, CheckContext], Any], schema: dict[str, Any],
                 label: str = "value") -> None:
        self.fn = fn
        self._schema = schema
        self.label = label

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        return self.fn(value, where, loc, ctx)

    def schema(self) -> dict[str, Any]:
        return self._schema


def _fits(t: Type, value: Any) -> bool:
    if isinstance(t, (Object, MapOf)):
        return isinstance(value, Mapping) or (value is None and isinstance(t, Object))
    if isinstance(t, ListOf):
        return isinstance(value, list)
    if isinstance(t, Custom):
        return True
    return not isinstance(value, (Mapping, list))


# ----------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class Field:
    name: str
    type: Type
    required: bool = False
    default: Any = MISSING
    description: str = ""
    secret: bool = False
    example: Any = None


@dataclass
class Spec:
    fields: list[Field]
    summary: str = ""
    description: str = ""
    #: free keys allowed beside the declared fields (their values are kept as plain data)
    open: bool = False
    #: exactly one of these field names must be present
    one_of: tuple[str, ...] = ()
    by_name: dict[str, Field] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {f.name: f for f in self.fields}

    def extend(self, *more: Field, summary: str | None = None) -> Spec:
        return Spec([*self.fields, *more], summary=self.summary if summary is None else summary,
                    description=self.description, open=self.open, one_of=self.one_of)

    def check(self, node: Mapping[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            f = self.by_name.get(str(key))
            if f is None:
                if self.open:
                    out[str(key)] = _plain_env(value, where.value(key), ctx)
                    continue
                hint = _did_you_mean(str(key), list(self.by_name))
                ctx.error(where.key(key), f"unknown field '{key}'{hint}")
                continue
            got = f.type.check(value, where.child(key), where.value(key), ctx)
            if got is not MISSING:
                out[f.name] = got
                if f.secret and isinstance(got, str) and got:
                    ctx.secrets.append(got)
        for f in self.fields:
            if f.name in out or f.name in node:
                continue
            if f.required:
                ctx.error(where.location, f"missing required field '{f.name}'")
            elif f.default is not MISSING:
                out[f.name] = f.default() if callable(f.default) else f.default
        if self.one_of:
            present = [n for n in self.one_of if n in node]
            if len(present) != 1:
                what = "one of" if not present else "only one of"
                ctx.error(where.location, f"expected {what}: {', '.join(self.one_of)}")
        return out

    def schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for f in self.fields:
            s = dict(f.type.schema())
            if f.description:
                s["description"] = f.description
            if f.default is not MISSING and not callable(f.default):
                s["default"] = f.default
            props[f.name] = s
        out: dict[str, Any] = {"type": "object", "properties": props}
        req = [f.name for f in self.fields if f.required]
        if req:
            out["required"] = req
        if not self.open:
            out["additionalProperties"] = False
        if self.one_of:
            out["oneOf"] = [{"required": [n]} for n in self.one_of]
        if self.summary:
            out["description"] = self.summary
        return out

    def describe(self) -> list[dict[str, Any]]:
        """Rows for docs and `atom connectors`."""
        rows = []
        for f in self.fields:
            rows.append({
                "name": f.name,
                "type": f.type.label,
                "required": f.required,
                "default": None if f.default is MISSING or callable(f.default) else f.default,
                "secret": f.secret,
                "description": f.description,
            })
        return rows


def _plain_env(value: Any, loc: Location, ctx: CheckContext) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_env(v, loc, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_env(v, loc, ctx) for v in value]
    if isinstance(value, str) and "${" in value:
        value, missing = interpolate(value, ctx.env)
        for name in missing:
            ctx.error(loc, f"environment variable '{name}' is not set and has no default")
    return value


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def did_you_mean(word: str, choices: Any) -> str:
    """` (did you mean 'x'?)` or an empty string."""
    return _did_you_mean(word, choices)


def value_kind(value: Any) -> str:
    """How a message names a value of the wrong type: nothing, a boolean, a mapping, a list, a number or the text."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"'{value}'"
