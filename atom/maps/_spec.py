"""The spec of a map body: `input`, `output`, `root`, namespaces, lookups, `foreach`, `properties`, `fields`.

Keys whose meaning depends on the input format (`fields`, `foreach`, `properties`) are kept raw with
their YAML position here and compiled by `compile_map`, which reports every problem at its place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import Location
from ..spec import MISSING, CheckContext, Custom, Field, MapOf, Spec, Str
from ..yamlio import Where, interpolate
from ._formats import INPUT_TYPE, OUTPUT_TYPE, default_options
from ._values import unwrap, yaml_kind

#: keys of a field rule (a mapping value under `fields`)
RULE_KEYS = ("source", "value", "default", "function", "functions", "type", "required", "keep_null", "when",
             "foreach", "fields")
TYPES = ("string", "int", "float", "number", "bool")


class Raw:
    """A YAML value kept with its position, compiled later."""

    __slots__ = ("loc", "node", "where")

    def __init__(self, node: Any, where: Where, loc: Location) -> None:
        self.node, self.where, self.loc = node, where, loc


def _raw(kind: str, want_mapping: bool) -> Any:
    def check(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if want_mapping and not isinstance(value, Mapping):
            ctx.error(loc, f"expected a mapping for {kind}, got {yaml_kind(value)}")
            return MISSING
        return Raw(value, where, loc)
    return check


def _lookups(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if not isinstance(value, Mapping):
        ctx.error(loc, f"expected a mapping of table name -> {{key: value}}, got {yaml_kind(value)}")
        return MISSING
    out: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        tloc = where.value(name)
        if not isinstance(table, Mapping):
            ctx.error(tloc, f"lookup table '{name}' must be a mapping of key -> value, got {yaml_kind(table)}")
            continue
        entries: dict[str, Any] = {}
        tw = where.child(name)
        for k, v in table.items():
            if isinstance(v, list):
                ctx.error(tw.value(k), f"lookup table '{name}': the value of '{k}' must be a scalar or a "
                                       "mapping of columns")
                continue
            v = _plain(v)
            if isinstance(v, str) and "${" in v:
                v, missing = interpolate(v, ctx.env)
                for n in missing:
                    ctx.error(tw.value(k), f"environment variable '{n}' is not set and has no default")
            entries[_key(k)] = v
        out[str(name)] = entries
    return out


def _key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    return str(k)


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return unwrap(v)


def _rule_schema(depth: int) -> dict[str, Any]:
    scalar: dict[str, Any] = {"type": ["string", "number", "boolean"]}
    fn: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "object", "minProperties": 1, "maxProperties": 1}]}
    props: dict[str, Any] = {
        "source": {"type": ["string", "integer", "object"],
                   "description": "where the value comes from; {foreach: ..., ...}: a value per item, as a list"},
        "value": {"description": "a constant or a template"},
        "default": {"description": "used when the source is null, missing or blank"},
        "function": fn,
        "functions": {"type": "array", "items": fn},
        "type": {"enum": list(TYPES)},
        "required": {"type": "boolean"},
        "keep_null": {"type": "boolean"},
        "when": {"type": ["string", "boolean"]},
        "foreach": {"type": "string", "description": "repeating group: one output item per source item"},
        "fields": {"type": "object"} if depth <= 0 else _fields_schema(depth - 1),
    }
    return {"anyOf": [scalar, {"type": "object", "properties": props, "additionalProperties": False}]}


def _fields_schema(depth: int = 3) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": _rule_schema(depth),
            "description": "target path -> source path, template, constant or rule"}


_FIELDS = Custom(_raw("fields", True), _fields_schema(), "mapping of target -> rule")
_PROPS = Custom(_raw("properties", True), {
    "type": "object", "additionalProperties": False,
    "properties": {"process": {"type": "object", "additionalProperties": _rule_schema(0)},
                   "document": {"type": "object", "additionalProperties": _rule_schema(0)}},
}, "process/document property rules")

MAP_SPEC = Spec([
    Field("description", Str(), default="", description="what this map does"),
    Field("input", INPUT_TYPE, default=lambda: default_options("json", "input"),
          description="input format: json | xml | csv | flat | x12, or {format: ..., options} (default json)"),
    Field("output", OUTPUT_TYPE, default=lambda: default_options("json", "output"),
          description="output format: json | xml | csv | flat | x12, or {format: ..., options} (default json)"),
    Field("root", Str(), description="xml output: the root element (`Order`, or `o:Order` with a prefix)"),
    Field("namespace", Str(), description="xml output: the default namespace URI of unprefixed elements"),
    Field("namespaces", MapOf(Str()), default=dict,
          description="prefix -> namespace URI, for input XPaths and prefixed output names"),
    Field("lookups", Custom(_lookups, {"type": "object", "additionalProperties": {"type": "object"}},
                            "mapping of table name -> {key: value}"), default=dict,
          description="lookup (cross-reference) tables for the `lookup` function"),
    Field("foreach", Custom(_raw("foreach", False), {"type": "string"}, "source path"),
          description="one output record per source item: a JSON array, or one CSV/flat row per item"),
    Field("properties", _PROPS, description="set process / document properties: {process: {name: rule}, "
                                            "document: {name: rule}}"),
    Field("fields", _FIELDS, required=True, description="target path -> source path, template, constant or rule"),
], summary="A map: turns one document into another")
