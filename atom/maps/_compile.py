"""From the checked map body to a `CompiledMap`: every path, template, function and name is compiled
here, once, and every problem is reported at its place in the YAML file."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import DocumentError, Location
from ..expressions import ExpressionSyntaxError, compile_template, truthy
from ..spec import CheckContext, did_you_mean
from ..yamlio import Where, interpolate
from ._formats import FormatOptions, default_options
from ._functions import FnCompiler, compile_function
from ._fused import fuse
from ._paths import (
    Getter,
    as_items,
    column_index,
    column_name,
    context_text,
    json_items,
    json_value,
    xml_items,
    xml_value,
)
from ._rules import Check, CompiledMap, Compute, Group, Leaf, Node, Obj, PropertySetter, Repeat, Run
from ._spec import RULE_KEYS, TYPES, Raw
from ._values import CONVERSIONS, MapValueError, evaluate, is_blank, plain, yaml_kind
from ._x12 import SEGMENT as X12_SEGMENT
from ._x12 import X12Output, X12Writer
from ._x12 import target as x12_target

_QNAME = re.compile(r"^(?:([A-Za-z_][\w.\-]*):)?([A-Za-z_][\w.\-]*)$")
Parts = tuple[tuple[str, bool], ...]


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _const(v: Any) -> Any:
    """A YAML constant as a plain Python value (ruamel scalar subclasses unwrapped)."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _const(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_const(x) for x in v]
    return v




class _LeafSpec:
    __slots__ = ("compute", "keep_null", "loc", "when")

    def __init__(self, compute: Compute, when: Check | None, keep_null: bool, loc: Location) -> None:
        self.compute, self.when, self.keep_null, self.loc = compute, when, keep_null, loc


class _Slot:
    """A plain target name in a builder: its own value (leaf) and/or nested fields."""

    __slots__ = ("builder", "leaf", "loc", "name")

    def __init__(self, name: str, loc: Location) -> None:
        self.name = name
        self.loc = loc
        self.leaf: _LeafSpec | None = None
        self.builder: _Builder | None = None


class _Builder:
    __slots__ = ("entries", "groups", "slots")

    def __init__(self) -> None:
        #: in target order: _Slot (plain, mergeable), ("attribute"/"text", name, _LeafSpec, parts), or a Group
        self.entries: list[Any] = []
        self.slots: dict[str, _Slot] = {}
        #: names of groups with their own source or items (never merged)
        self.groups: set[str] = set()


class Compiler:
    def __init__(self, ctx: CheckContext, name: str, inp: FormatOptions, out: FormatOptions,
                 ns: Mapping[str, str], default_ns: str | None, lookups: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.name = name
        self.inp = inp
        self.out = out
        self.ns = dict(ns)
        self.default_ns = default_ns
        self.fc = FnCompiler(ctx, lookups)
        self.used_prefixes: set[str] = set()
        self.groups: list[Group] = []

    def error(self, loc: Location, message: str) -> None:
        self.ctx.error(loc, message)

    def env(self, value: Any, loc: Location) -> Any:
        if isinstance(value, str) and "${" in value:
            value, missing = interpolate(value, self.ctx.env)
            for n in missing:
                self.error(loc, f"environment variable '{n}' is not set and has no default")
        return value

    # --------------------------------------------------------------------------------- sources

    def template(self, source: str, loc: Location) -> Any:
        try:
            t = compile_template(source)
        except ExpressionSyntaxError as exc:
            self.error(loc, str(exc))
            return None
        self.fc.uses_scope = True
        return t

    def source(self, s: str, loc: Location, cctx: str) -> Getter | None:
        """A value getter for a source string (path in the input's language, or a template)."""
        before = len(self.ctx.problems)
        s = self.env(s, loc)
        if len(self.ctx.problems) > before:
            return None
        if _is_template(s):
            t = self.template(s, loc)
            if t is None:
                return None
            return lambda c, r: evaluate(t, r.scope)
        fmt = self.inp.format
        if fmt == "x12":
            if s.startswith("$"):
                self.error(loc, f"'{s}' is a JSONPath but the input is x12: use an XPath such as 'BEG/BEG03', "
                                "'N1Loop[N1/N101=\"ST\"]/N1/N102' or '/Interchange/ISA/ISA06'")
                return None
            fmt = "xml"
        try:
            if s.startswith("$"):
                if fmt == "xml":
                    self.error(loc, f"'{s}' is a JSONPath but the input is xml: use an XPath such as "
                                    "'Customer/Name', '@id' or '/Order/Id'")
                    return None
                return json_value(s)
            if fmt == "json":
                hint = f"'$.{s}'" if re.fullmatch(r"[A-Za-z_][\w.]*", s) else "'$.field'"
                self.error(loc, f"'{s}' is not a JSONPath: JSON sources start with '$' (write {hint}); "
                                "use {value: ...} for a constant")
                return None
            if fmt == "xml":
                return xml_value(s, self.ns)
        except ExpressionSyntaxError as exc:
            self.error(loc, str(exc))
            return None
        # csv / flat: a column name
        return self.column(s, loc, cctx)

    def column(self, col: str | int, loc: Location, cctx: str) -> Getter | None:
        if self.inp.format not in ("csv", "flat"):
            self.error(loc, f"a column number is only for csv and flat input, got {col}")
            return None
        if cctx == "rows":
            self.error(loc, f"column '{col}' is read per row: put it under a group with 'foreach: rows' "
                            "(or use a map-level 'foreach: rows')")
            return None
        names = self.inp.names
        if isinstance(col, int):
            if col < 1:
                self.error(loc, f"column numbers start at 1, got {col}")
                return None
            if names is not None:
                if col > len(names):
                    self.error(loc, f"column {col} does not exist (the input has {len(names)} columns)")
                    return None
                return column_name(names[col - 1])
            return column_index(col)
        if names is not None and col not in names:
            self.error(loc, f"unknown column '{col}'{did_you_mean(col, names)} (columns: {', '.join(names)})")
            return None
        return column_name(col)

    def items(self, raw: Any, loc: Location, cctx: str) -> tuple[Getter, str] | None:
        """The items getter of a repeating group, and the context kind inside it."""
        if not isinstance(raw, str) or not raw.strip():
            self.error(loc, f"expected a source path for foreach, got {yaml_kind(raw)}")
            return None
        s = self.env(raw, loc)
        fmt = self.inp.format
        if _is_template(s):
            t = self.template(s, loc)
            if t is None:
                return None
            return (lambda c, r: as_items(evaluate(t, r.scope))), "item"
        if fmt == "x12":
            if s.startswith("$"):
                self.error(loc, f"'{s}' is a JSONPath but the input is x12: use an XPath such as 'PO1Loop'")
                return None
            fmt = "xml"
        flat_in = fmt in ("csv", "flat")
        if s == "rows":
            if not flat_in:
                self.error(loc, "'rows' is only for csv and flat input")
                return None
            if cctx != "rows":
                self.error(loc, "'rows' is the top level of the input: a group inside a row cannot use it")
                return None
            return (lambda c, r: c), "row"
        try:
            if s.startswith("$"):
                if fmt == "xml":
                    self.error(loc, f"'{s}' is a JSONPath but the input is xml: use an XPath such as 'Lines/Line'")
                    return None
                kind = "row" if flat_in and cctx == "rows" and s in ("$", "$[*]") else "item"
                return json_items(s), kind
            if fmt == "json":
                self.error(loc, f"'{s}' is not a JSONPath: JSON sources start with '$' (write '$.{s}[*]')")
                return None
            if fmt == "xml":
                return xml_items(s, self.ns), "item"
        except ExpressionSyntaxError as exc:
            self.error(loc, str(exc))
            return None
        self.error(loc, f"foreach over {fmt} input takes 'rows' (each record) or a JSONPath, got '{s}'")
        return None

    def when(self, raw: Any, loc: Location) -> tuple[bool, Check | None]:
        """(ok, condition); a condition of None means always."""
        if isinstance(raw, bool):
            return True, (None if raw else (lambda c, r: False))
        if not _is_template(raw):
            self.error(loc, f"expected a condition template like \"{{{{ item.qty > 0 }}}}\" or true/false, "
                            f"got {yaml_kind(raw)}")
            return False, None
        t = self.template(self.env(raw, loc), loc)
        if t is None:
            return False, None
        return True, (lambda c, r: truthy(evaluate(t, r.scope)))

    # ----------------------------------------------------------------------------------- targets

    def target(self, key: str, loc: Location, parts: Parts = (), kind: str = "leaf") -> list[str] | None:
        """The names of a target path, checked for the output format (x12: normalised, `BEG03` ->
        `BEG`, `03`); `kind` is leaf, fields or scalar (a repeating group of values)."""
        segs = key.split("/")
        if any(not s.strip() for s in segs):
            self.error(loc, f"invalid target '{key}': empty path segment")
            return None
        fmt = self.out.format
        if fmt == "x12":
            try:
                return x12_target([p for p, _ in parts], segs, kind)
            except ValueError as exc:
                self.error(loc, f"invalid target '{key}': {exc}")
                return None
        if fmt in ("csv", "flat"):
            if len(segs) != 1 or key.startswith(("@", ".")):
                self.error(loc, f"{fmt} output is flat: target '{key}' must be a column name")
                return None
            return segs
        for i, s in enumerate(segs):
            last = i == len(segs) - 1
            if s == ".":
                if fmt != "xml":
                    self.error(loc, f"invalid target '{key}': '.' (an element's own text) is only for xml output")
                    return None
                if not last:
                    self.error(loc, f"invalid target '{key}': '.' must come last")
                    return None
            elif fmt == "xml":
                name = s[1:] if s.startswith("@") else s
                if s.startswith("@") and not last:
                    self.error(loc, f"invalid target '{key}': an attribute ('{s}') must come last")
                    return None
                if self.qname(name, loc, attribute=s.startswith("@")) is None:
                    return None
        return segs

    def qname(self, name: str, loc: Location, attribute: bool = False) -> str | None:
        """`p:local` / `local` -> Clark notation `{uri}local` (reporting bad names and prefixes)."""
        m = _QNAME.match(name)
        if not m:
            self.error(loc, f"'{name}' is not a valid XML name")
            return None
        prefix, local = m.group(1), m.group(2)
        if prefix is None:
            if attribute or not self.default_ns:
                return local
            return f"{{{self.default_ns}}}{local}"
        uri = self.ns.get(prefix)
        if uri is None:
            self.error(loc, f"unknown namespace prefix '{prefix}' in '{name}' (declare it under namespaces)"
                            f"{did_you_mean(prefix, self.ns)}")
            return None
        self.used_prefixes.add(prefix)
        return f"{{{uri}}}{local}"

    # ------------------------------------------------------------------------------------- rules

    def fields(self, node: Any, where: Where, loc: Location, cctx: str, parts: Parts) -> list[Node]:
        if not isinstance(node, Mapping):
            self.error(loc, f"expected a mapping of target -> rule, got {yaml_kind(node)}")
            return []
        b = _Builder()
        for key in node:
            self.field(b, str(key), node[key], where, key, cctx, parts)
        return self.build(b, parts)

    def field(self, b: _Builder, key: str, value: Any, where: Where, ykey: Any, cctx: str, parts: Parts) -> None:
        kloc = where.key(ykey)
        is_group = isinstance(value, Mapping) and ("foreach" in value or "fields" in value)
        kind = ("fields" if "fields" in value else "scalar") if is_group else "leaf"
        segs = self.target(key, kloc, parts, kind)
        key = "/".join([p for p, _ in parts] + [key])  # the full target path, for messages
        vwhere, vloc = where.child(ykey), where.value(ykey)
        if segs is None:
            return
        json = self.out.format in ("json", "x12")  # both build a tree of objects
        cur = b
        cur_parts = parts
        for seg in segs[:-1]:
            slot = self.slot(cur, seg, kloc, key)
            if slot is None:
                return
            if slot.builder is None:
                slot.builder = _Builder()
            cur = slot.builder
            cur_parts = (*cur_parts, (seg, False))
        last = segs[-1]
        my_parts = (*cur_parts, (last, False))
        if isinstance(value, Mapping) and ("foreach" in value or "fields" in value):
            if (last.startswith("@") and not json) or last == ".":
                self.error(kloc, f"target '{key}' is an attribute or text: it cannot take a group")
                return
            if not self.check_keys(value, vwhere):
                return
            if len(value) == 1 and "fields" in value:
                # plain nested fields: the same as path-style targets under this name
                slot = self.slot(cur, last, kloc, key)
                if slot is None:
                    return
                if slot.builder is None:
                    slot.builder = _Builder()
                sub = value["fields"]
                if not isinstance(sub, Mapping):
                    self.error(vwhere.value("fields"), f"expected a mapping of target -> rule, got {yaml_kind(sub)}")
                    return
                fw = vwhere.child("fields")
                for k in sub:
                    self.field(slot.builder, str(k), sub[k], fw, k, cctx, my_parts)
                return
            if json and (last in cur.slots or last in cur.groups):
                self.error(kloc, f"target '{key}' is mapped twice{self.twice_hint(last)}")
                return
            got = self.group(last, value, vwhere, vloc, cctx, cur_parts)
            if got is not None:
                cur.entries.append(got)
                cur.groups.add(last)
            return
        spec = self.leaf(value, vwhere, vloc, cctx, scalar_item=False)
        if spec is None:
            return
        if last.startswith("@") and not json:
            cur.entries.append(("attribute", last[1:], spec, my_parts))
            return
        if last == ".":
            cur.entries.append(("text", ".", spec, my_parts))
            return
        slot = self.slot(cur, last, kloc, key)
        if slot is None:
            return
        if slot.leaf is not None:
            self.error(kloc, f"target '{key}' is mapped twice")
            return
        slot.leaf = spec
        slot.loc = kloc

    def twice_hint(self, name: str) -> str:
        if self.out.format == "x12" and X12_SEGMENT.match(name):
            return f" (name each instance of a segment that occurs twice: {name.split('#')[0]}#1, " \
                   f"{name.split('#')[0]}#2)"
        return ""

    def slot(self, b: _Builder, name: str, loc: Location, key: str) -> _Slot | None:
        slot = b.slots.get(name)
        if slot is None:
            if self.out.format in ("json", "x12") and name in b.groups:
                self.error(loc, f"target '{key}' is mapped twice{self.twice_hint(name)}")
                return None
            slot = _Slot(name, loc)
            b.slots[name] = slot
            b.entries.append(slot)
        return slot

    def build(self, b: _Builder, parts: Parts) -> list[Node]:
        out: list[Node] = []
        xml = self.out.format == "xml"
        for e in b.entries:
            if isinstance(e, Group):
                out.append(e)
                continue
            if isinstance(e, tuple):
                kind, name, spec, p = e
                key = self.qname(name, spec.loc, attribute=True) if kind == "attribute" else name
                if key is None:
                    continue
                out.append(Leaf(key, kind, spec.compute, spec.when, spec.keep_null, p))
                continue
            slot: _Slot = e
            my_parts = (*parts, (slot.name, False))
            key = slot.name
            if xml:
                clark = self.qname(slot.name, slot.loc)
                if clark is None:
                    continue
                key = clark
            if slot.builder is None:
                assert slot.leaf is not None
                s = slot.leaf
                out.append(Leaf(key, "element" if xml else "key", s.compute, s.when, s.keep_null, my_parts))
                continue
            children = self.build(slot.builder, my_parts)
            if slot.leaf is not None:
                if not xml:
                    what = "an X12 element" if self.out.format == "x12" else "a JSON value"
                    self.error(slot.loc, f"target '{'/'.join(p for p, _ in my_parts)}' has a value and nested "
                                         f"fields: {what} cannot be both")
                    continue
                s = slot.leaf
                children.insert(0, Leaf(".", "text", s.compute, s.when, s.keep_null, my_parts))
            obj = Obj(key, children, my_parts, False)
            self.groups.append(obj)
            out.append(obj)
        return out

    def group(self, name: str, node: Mapping[str, Any], where: Where, loc: Location, cctx: str,
              parts: Parts) -> Group | None:
        has_each, has_fields = "foreach" in node, "fields" in node
        when: Check | None = None
        if "when" in node:
            ok, when = self.when(node["when"], where.value("when"))
            if not ok:
                return None
        if has_each:
            got = self.items(node["foreach"], where.value("foreach"), cctx)
            if has_fields:
                for k in node:
                    if str(k) not in ("foreach", "fields", "when"):
                        self.error(where.key(k), f"'{k}' does not apply to a repeating group with fields "
                                                 "(put it on a field inside)")
                        return None
            if got is None:
                return None
            items, inner = got
            my_parts = (*parts, (name, True))
            key = self.qname(name, where.location) if self.out.format == "xml" else name
            if key is None:
                return None
            if has_fields:
                children = self.fields(node["fields"], where.child("fields"), where.value("fields"), inner, my_parts)
                rep = Repeat(key, children, my_parts, False, items, when)
            else:
                spec = self.leaf(node, where, loc, inner, scalar_item=True, skip=("foreach", "when"))
                if spec is None:
                    return None
                kind = "element" if self.out.format == "xml" else "key"
                scalar = Leaf(key, kind, spec.compute, spec.when, spec.keep_null, my_parts)
                rep = Repeat(key, [], my_parts, False, items, when, scalar)
            self.groups.append(rep)
            return rep
        # fields without foreach: a nested object reading from its own context (source) or conditional (when)
        for k in node:
            if str(k) not in ("fields", "source", "when"):
                self.error(where.key(k), f"'{k}' does not apply to a group of fields (only source, when)")
                return None
        my_parts = (*parts, (name, False))
        context: Compute | None = None
        inner = cctx
        if "source" in node:
            src = node["source"]
            if not isinstance(src, str):
                self.error(where.value("source"), f"expected a source path, got {yaml_kind(src)}")
                return None
            got_ctx = self.context(src, where.value("source"), cctx)
            if got_ctx is None:
                return None
            context, inner = got_ctx
        children = self.fields(node["fields"], where.child("fields"), where.value("fields"), inner, my_parts)
        key = self.qname(name, where.location) if self.out.format == "xml" else name
        if key is None:
            return None
        obj = Obj(key, children, my_parts, False, context, when)
        self.groups.append(obj)
        return obj

    def context(self, src: str, loc: Location, cctx: str) -> tuple[Compute, str] | None:
        """The single context of a group with `source`: a JSON object, an XML element, a row."""
        s = self.env(src, loc)
        fmt = "xml" if self.inp.format == "x12" else self.inp.format
        if _is_template(s):
            t = self.template(s, loc)
            return ((lambda c, r: evaluate(t, r.scope)), "item") if t is not None else None
        try:
            if fmt == "xml" and not s.startswith("$"):
                found = xml_items(s, self.ns)
                return (lambda c, r: next(iter(found(c, r)), None)), "item"
        except ExpressionSyntaxError as exc:
            self.error(loc, str(exc))
            return None
        g = self.source(s, loc, cctx)
        return (g, "item") if g is not None else None

    def check_keys(self, node: Mapping[str, Any], where: Where) -> bool:
        ok = True
        for k in node:
            if str(k) not in RULE_KEYS:
                self.error(where.key(k), f"unknown field '{k}'{did_you_mean(str(k), RULE_KEYS)}")
                ok = False
        return ok

    def per_item(self, node: Mapping[str, Any], where: Where, loc: Location, cctx: str) -> Getter | None:
        """A source that is a value per item (`{foreach: $.items[*], source: $.price, functions: [...]}`):
        the list of the items' values (nulls left out), for the field's functions to reduce (`sum`)."""
        if "foreach" not in node:
            self.error(loc, "a source given as a mapping is a value per item: it needs 'foreach' "
                            "({foreach: '$.items[*]', source: '$.price'})")
            return None
        for k in node:
            if str(k) in ("fields", "keep_null"):
                self.error(where.key(k), f"'{k}' does not apply to a value per item")
                return None
        if not self.check_keys(node, where):
            return None
        each = node["foreach"]
        got = self.items(each, where.value("foreach"), cctx)
        when: Check | None = None
        if "when" in node:
            ok, when = self.when(node["when"], where.value("when"))
            if not ok:
                return None
        if got is None:
            return None
        items, inner = got
        spec = self.leaf(node, where, loc, inner, scalar_item=True, skip=("foreach", "when"), native=True)
        if spec is None:
            return None
        compute = spec.compute

        def values(c: Any, run: Run) -> list[Any]:
            its = items(c, run)
            scope = run.scope
            saved = (scope.get("item"), scope.get("index")) if scope else None
            out: list[Any] = []
            try:
                for i, it in enumerate(its):
                    if saved is not None:
                        scope["item"] = it
                        scope["index"] = i
                    try:
                        if when is not None and not when(it, run):
                            continue
                        v = compute(it, run)
                    except DocumentError as exc:
                        raise MapValueError(f"item {i + 1} of '{each}': {exc}") from None
                    if v is not None:
                        out.append(v)
            finally:
                if saved is not None:
                    scope["item"], scope["index"] = saved
            return out
        return values

    def leaf(self, value: Any, where: Where, loc: Location, cctx: str, *, scalar_item: bool,
             skip: tuple[str, ...] = (), native: bool = False) -> _LeafSpec | None:
        """Compile a value rule (short form or mapping) into a compute function; `native` keeps
        computed values as they are (decimals, dates) instead of making them JSON-ready."""
        if isinstance(value, str):
            g = self.source(value, loc, cctx)
            return _LeafSpec(self.finish(g, None, [], None, False, ""), None, False, loc) if g else None
        if value is None or isinstance(value, list):
            self.error(loc, f"expected a source path, a template, a constant or a mapping, got {yaml_kind(value)}")
            return None
        if not isinstance(value, Mapping):
            const = _const(value)
            return _LeafSpec(lambda c, r: const, None, False, loc)
        if not self.check_keys(value, where):
            return None
        ok = True
        getter: Getter | None
        label = ""
        if "source" in value and "value" in value:
            self.error(where.key("value"), "give either 'source' or 'value', not both")
            return None
        if "source" in value:
            src = value["source"]
            sloc = where.value("source")
            if isinstance(src, str):
                getter = self.source(src, sloc, cctx)
                label = src
            elif isinstance(src, int) and not isinstance(src, bool):
                getter = self.column(int(src), sloc, cctx)
                label = f"column {src}"
            elif isinstance(src, Mapping):
                getter = self.per_item(src, where.child("source"), sloc, cctx)
                label = f"foreach {src.get('foreach')}"
            else:
                self.error(sloc, f"expected a source path, a column number or a value per item "
                                 f"({{foreach: ..., source: ...}}), got {yaml_kind(src)}")
                getter = None
            ok = getter is not None
        elif "value" in value:
            raw = value["value"]
            vloc = where.value("value")
            if _is_template(raw):
                t = self.template(self.env(raw, vloc), vloc)
                ok = t is not None
                getter = (lambda c, r: evaluate(t, r.scope)) if t is not None else None
            else:
                const = _const(self.env(raw, vloc))
                getter = lambda c, r: const  # noqa: E731
        elif scalar_item:
            getter = _item_getter(self.inp.format)
        else:
            getter = _none
        default: Callable[[Run], Any] | None = None
        if "default" in value:
            raw = value["default"]
            dloc = where.value("default")
            if _is_template(raw):
                dt_ = self.template(self.env(raw, dloc), dloc)
                ok = ok and dt_ is not None
                default = (lambda r: evaluate(dt_, r.scope)) if dt_ is not None else None
            elif raw is None:
                self.error(dloc, "a default of nothing has no effect: leave 'default' out")
                ok = False
            else:
                dconst = _const(self.env(raw, dloc))
                default = lambda r: dconst  # noqa: E731
        fns: list[Callable[[Any, Run], Any]] = []
        if "function" in value and "functions" in value:
            self.error(where.key("functions"), "give either 'function' or 'functions', not both")
            ok = False
        elif "function" in value:
            f = compile_function(value["function"], where.value("function"), self.fc)
            ok = ok and f is not None
            if f is not None:
                fns.append(f)
        elif "functions" in value:
            lst = value["functions"]
            fw = where.child("functions")
            if not isinstance(lst, list):
                self.error(where.value("functions"), f"expected a list of functions, got {yaml_kind(lst)}")
                ok = False
            else:
                for i, item in enumerate(lst):
                    f = compile_function(item, fw.value(i), self.fc)
                    ok = ok and f is not None
                    if f is not None:
                        fns.append(f)
        conv = None
        if "type" in value:
            t = value["type"]
            if t not in TYPES:
                self.error(where.value("type"), f"'{t}' is not one of {', '.join(TYPES)}"
                                                f"{did_you_mean(str(t), TYPES)}")
                ok = False
            else:
                conv = CONVERSIONS[t]
        flags = {}
        for flag in ("required", "keep_null"):
            if flag in value:
                fv = value[flag]
                if not isinstance(fv, bool):
                    self.error(where.value(flag), f"expected true or false, got {yaml_kind(fv)}")
                    ok = False
                flags[flag] = fv is True
        when: Check | None = None
        if "when" in value and "when" not in skip:
            wok, when = self.when(value["when"], where.value("when"))
            ok = ok and wok
        if not ok or getter is None:
            return None
        # values per item are kept native for the functions that reduce them; JSON-ready for the output
        computed = bool(fns) or isinstance(value.get("source"), Mapping)
        compute = self.finish(getter, default, fns, conv, flags.get("required", False), label,
                              plain_out=computed and not native)
        return _LeafSpec(compute, when, flags.get("keep_null", False), loc)

    def finish(self, get: Getter | None, default: Callable[[Run], Any] | None, fns: list[Any],
               conv: Callable[[Any], Any] | None, required: bool, label: str, plain_out: bool = False) -> Compute:
        """The compute function of a value; `plain_out`: the value is computed (decimals, dates) and
        JSON output needs it JSON-ready."""
        assert get is not None
        final = plain if (self.out.format == "json" and plain_out and conv is None) else None
        if default is None and not fns and conv is None and not required and final is None:
            return get
        missing = f"required value is missing (source '{label}')" if label else "required value is missing"

        def compute(c: Any, run: Run) -> Any:
            v = get(c, run)
            if default is not None and is_blank(v):
                v = default(run)
            for f in fns:
                v = f(v, run)
            if conv is not None:
                v = conv(v)
            if required and is_blank(v):
                raise MapValueError(missing)
            if final is not None:
                v = final(v)
            return v
        if default is None and not fns and not required and final is None:
            compute.typed = (get, conv)  # type: ignore[attr-defined]  # lets emitters skip a call
        steps = [getattr(f, "step", None) for f in fns]
        if steps and all(s is not None for s in steps):
            return fuse(get, steps, conv, final is not None, compute)  # type: ignore[arg-type]
        return compute


def _none(c: Any, r: Run) -> Any:
    return None


def _item_getter(fmt: str) -> Getter:
    if fmt in ("xml", "x12"):
        return context_text
    return lambda c, r: c


# ------------------------------------------------------------------------------------------- the map


def compile_map(values: dict[str, Any], where: Where, ctx: CheckContext, name: str) -> CompiledMap | None:
    """Build a CompiledMap from the values of `MAP_SPEC.check`; problems go to ctx; None if it cannot."""
    before = len(ctx.problems)
    inp: FormatOptions | None = values.get("input")
    out: FormatOptions | None = values.get("output")
    if "input" not in values and (where.node is None or "input" not in where.node):
        inp = default_options("json", "input")
    if "output" not in values and (where.node is None or "output" not in where.node):
        out = default_options("json", "output")
    fields: Raw | None = values.get("fields")
    if inp is None or out is None or fields is None:
        return None
    ns = values.get("namespaces") or {}
    c = Compiler(ctx, name, inp, out, ns, values.get("namespace"), values.get("lookups") or {})
    root_tag: str | None = None
    if out.format == "xml":
        if "root" not in values:
            if where.node is None or "root" not in where.node:
                ctx.error(where.location, "missing required field 'root' (the output is xml)")
        else:
            root_tag = c.qname(values["root"], where.value("root"))
    else:
        for k in ("root", "namespace"):
            if k in values:
                ctx.error(where.key(k), f"'{k}' is only for xml output (the output is {out.format})")
    for prefix, uri in ns.items():
        if not uri:
            ctx.error(where.child("namespaces").value(prefix), f"namespace '{prefix}' has an empty URI")
    # map-level foreach
    cctx = "rows" if inp.format in ("csv", "flat") else "doc"
    records_items = None
    fe: Raw | None = values.get("foreach")
    if fe is not None:
        if out.format == "xml":
            ctx.error(fe.loc, "a map-level foreach is for json (an array), csv or flat output; for xml put a "
                              "repeating group under the root: {Line: {foreach: ..., fields: ...}}")
        else:
            got = c.items(fe.node, fe.loc, cctx)
            if got is not None:
                records_items, cctx = got
    # properties
    setters: list[PropertySetter] = []
    props: Raw | None = values.get("properties")
    if props is not None:
        pw = props.where
        for kind in props.node:
            if str(kind) not in ("process", "document"):
                ctx.error(pw.key(kind), f"unknown field '{kind}'{did_you_mean(str(kind), ['process', 'document'])}"
                                        " (expected process or document)")
                continue
            block = props.node[kind]
            bw = pw.child(kind)
            if not isinstance(block, Mapping):
                ctx.error(pw.value(kind), f"expected a mapping of property name -> rule, got {yaml_kind(block)}")
                continue
            top = "rows" if inp.format in ("csv", "flat") else "doc"
            for pname in block:
                if isinstance(block[pname], Mapping) and ("foreach" in block[pname] or "fields" in block[pname]):
                    ctx.error(bw.value(pname), "a property takes one value, not a group")
                    continue
                spec = c.leaf(block[pname], bw.child(pname), bw.value(pname), top, scalar_item=False)
                if spec is not None:
                    leaf = Leaf(str(pname), "key", spec.compute, spec.when, spec.keep_null,
                                ((f"{kind} property {pname}", False),), "set")
                    setters.append(PropertySetter(kind == "process", str(pname), leaf))
    # fields
    children = c.fields(fields.node, fields.where, fields.loc, cctx, ())
    cells: list[Leaf] = []
    columns: list[str] = []
    if out.format in ("csv", "flat"):
        leaves = {}
        for ch in children:
            if not isinstance(ch, Leaf):
                key = getattr(ch, "key", "?")
                ctx.error(fields.where.key(key), f"{out.format} output is flat: '{key}' cannot be a group "
                                                 "(use a map-level foreach for one row per item)")
                continue
            leaves[ch.key] = ch
        declared = out.names
        if declared is not None:
            for k in leaves:
                if k not in declared:
                    ctx.error(fields.where.key(k), f"'{k}' is not a declared output column{did_you_mean(k, declared)}"
                                                   f" (columns: {', '.join(declared)})")
            columns = list(declared)
        else:
            columns = list(leaves)
        for col in columns:
            cells.append(leaves.get(col) or Leaf(col, "key", _none, None, False, ((col, False),)))
    records = None
    if records_items is not None:
        records = Repeat("", children, (), False, records_items)
        records.label = "foreach"
        c.groups.append(records)
    x12 = None
    if isinstance(out.x12, X12Output):
        x12 = X12Writer(out.x12, name)
        if out.x12.uses_scope:
            c.fc.uses_scope = True
    if len(ctx.problems) > before:
        return None
    if c.fc.uses_scope:
        for g in c.groups:
            g.scoped = True
    nsmap: dict[str | None, str] = {p: ns[p] for p in sorted(c.used_prefixes)}
    if values.get("namespace"):
        nsmap[None] = values["namespace"]
    return CompiledMap(name, inp, out, children=children, records=records, root_tag=root_tag, nsmap=nsmap,
                       uses_scope=c.fc.uses_scope, sets_doc_props=c.fc.sets_doc_props or any(
                           not p.process for p in setters),
                       properties=setters, cells=cells, columns=columns, x12=x12)
