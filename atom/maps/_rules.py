"""Compiled map rules and the run-time walk.

A compiled map is a tree of nodes built once at load time: `Leaf` (one value), `Obj` (a nested
object or element, optionally with its own source context) and `Repeat` (a repeating group). At run
time each node writes into a dict (JSON output) or an lxml element (XML output); CSV and flat output
take the leaves of one record as cells. Values come from precompiled getters and function chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson
from lxml import etree

from ..document import Document, dump_json
from ..errors import DocumentError
from ._formats import CONTENT_TYPES, FormatOptions, read_rows, write_rows
from ._values import MapError, MapValueError, to_text
from ._x12 import X12Input, X12Writer, parse_interchange

Compute = Callable[[Any, "Run"], Any]
Check = Callable[[Any, "Run"], bool]


class MapContext(Protocol):
    """What a map needs from the running execution.

    `properties` are the process properties (strings), read by `get_property` and written by
    `set_property` and `properties: {process: ...}`; `scope(doc)` is the template scope
    (`doc`, `process`, `execution`, `env`).
    """

    properties: dict[str, str]

    def scope(self, doc: Document) -> dict[str, Any]: ...


class Run:
    """The state of one map application (one document)."""

    __slots__ = ("columns", "ctx", "doc", "kids", "name", "props", "records", "scope", "stack")

    def __init__(self, name: str, doc: Document, ctx: MapContext, scope: dict[str, Any] | None,
                 props: dict[str, str]) -> None:
        self.name = name
        self.doc = doc
        self.ctx = ctx
        self.scope: dict[str, Any] = scope if scope is not None else {}
        self.props = props
        self.columns: list[str] = []
        self.stack: list[int] = []
        self.records = False
        #: XML input: element -> {tag: first child}, filled as fields read children
        self.kids: dict[Any, dict[Any, Any]] = {}


# ------------------------------------------------------------------------------------------------ nodes


class Node:
    """Base of the compiled nodes: knows its target path for error messages."""

    __slots__ = ("label", "parts")

    def __init__(self, parts: tuple[tuple[str, bool], ...], label: str = "field") -> None:
        #: target path segments, each flagged when it is a repeating group
        self.parts = parts
        self.label = label

    def error(self, exc: Exception, run: Run) -> MapError:
        if isinstance(exc, MapError):
            return exc
        stack = list(run.stack)
        prefix = ""
        if run.records and stack:
            prefix = f"record {stack.pop(0) + 1}: "
        out = []
        for seg, rep in self.parts:
            if rep and stack:
                out.append(f"{seg}[{stack.pop(0) + 1}]")
            else:
                out.append(seg)
        path = "/".join(out)
        if not path:
            return MapError(f"map '{run.name}': {prefix}{self.label}: {exc}")
        return MapError(f"map '{run.name}': {prefix}{self.label} '{path}': {exc}")


class Leaf(Node):
    """One target value: a JSON key, an XML element, attribute or text, a CSV/flat cell."""

    __slots__ = ("compute", "keep_null", "key", "kind", "when")

    def __init__(self, key: str, kind: str, compute: Compute, when: Check | None, keep_null: bool,
                 parts: tuple[tuple[str, bool], ...], label: str = "field") -> None:
        super().__init__(parts, label)
        self.key = key
        self.kind = kind  # key | element | attribute | text
        self.compute = compute
        self.when = when
        self.keep_null = keep_null

    def value(self, c: Any, run: Run) -> Any:
        """The value, or None (skipped) when `when` is false; errors name the field."""
        try:
            if self.when is not None and not self.when(c, run):
                return None
            return self.compute(c, run)
        except DocumentError as exc:
            raise self.error(exc, run) from None

    def emit_json(self, out: dict[str, Any], c: Any, run: Run) -> None:
        try:
            if self.when is not None and not self.when(c, run):
                return
            v = self.compute(c, run)
        except DocumentError as exc:
            raise self.error(exc, run) from None
        if v is not None or self.keep_null:
            out[self.key] = v

    def json_emitter(self) -> Callable[[dict[str, Any], Any, Run], None]:
        """emit_json, specialised for the common case (no condition, nulls left out)."""
        if self.when is not None or self.keep_null:
            return self.emit_json
        compute, key, error = self.compute, self.key, self.error
        typed = getattr(compute, "typed", None)
        if typed is not None:
            get, conv = typed

            def emit_typed(out: dict[str, Any], c: Any, run: Run) -> None:
                try:
                    v = conv(get(c, run))
                except DocumentError as exc:
                    raise error(exc, run) from None
                if v is not None:
                    out[key] = v
            return emit_typed

        def emit(out: dict[str, Any], c: Any, run: Run) -> None:
            try:
                v = compute(c, run)
            except DocumentError as exc:
                raise error(exc, run) from None
            if v is not None:
                out[key] = v
        return emit

    def emit_xml(self, parent: Any, c: Any, run: Run) -> None:
        try:
            if self.when is not None and not self.when(c, run):
                return
            v = self.compute(c, run)
        except DocumentError as exc:
            raise self.error(exc, run) from None
        if v is None:
            if self.keep_null and self.kind == "element":
                etree.SubElement(parent, self.key)
            elif self.keep_null and self.kind == "attribute":
                parent.set(self.key, "")
            return
        self.write_xml(parent, v, run)

    def write_xml(self, parent: Any, v: Any, run: Run) -> None:
        try:
            if type(v) is not str:
                if isinstance(v, (dict, list)) and self.kind == "element":
                    _json_to_xml(parent, self.key, v)
                    return
                v = to_text(v)
            if self.kind == "element":
                etree.SubElement(parent, self.key).text = v
            elif self.kind == "attribute":
                parent.set(self.key, v)
            else:
                parent.text = v
        except DocumentError as exc:
            raise self.error(exc, run) from None
        except ValueError as exc:
            raise self.error(MapValueError(f"value is not valid in XML: {exc}"), run) from None

    def xml_emitter(self) -> Callable[[Any, Any, Run], None]:
        """emit_xml, specialised for the common case (an element, no condition, nulls left out)."""
        if self.when is not None or self.keep_null or self.kind != "element":
            return self.emit_xml
        compute, key, error, write = self.compute, self.key, self.error, self.write_xml
        sub = etree.SubElement

        def emit(parent: Any, c: Any, run: Run) -> None:
            try:
                v = compute(c, run)
            except DocumentError as exc:
                raise error(exc, run) from None
            if type(v) is str:
                try:
                    sub(parent, key).text = v
                    return
                except ValueError:
                    parent.remove(parent[-1])
            if v is not None:
                write(parent, v, run)
        return emit

    def cell(self, c: Any, run: Run) -> str:
        v = self.value(c, run)
        return "" if v is None else (v if type(v) is str else to_text(v))


def _json_to_xml(parent: Any, tag: str, value: Any) -> None:
    if isinstance(value, list):
        for v in value:
            _json_to_xml(parent, tag, v)
        return
    el = etree.SubElement(parent, tag)
    if isinstance(value, dict):
        for k, v in value.items():
            try:
                _json_to_xml(el, str(k), v)
            except ValueError:
                raise MapValueError(f"'{k}' is not a valid XML element name") from None
    elif value is not None:
        el.text = to_text(value)


class Group(Node):
    """Base of Obj and Repeat: children emitters and template scope handling."""

    def json_emitter(self) -> Callable[[dict[str, Any], Any, Run], None]:
        return self.emit_json  # type: ignore[attr-defined,no-any-return]

    def xml_emitter(self) -> Callable[[Any, Any, Run], None]:
        return self.emit_xml  # type: ignore[attr-defined,no-any-return]

    __slots__ = ("children", "emits_json", "emits_xml", "key", "scoped")

    def __init__(self, key: str, children: list[Node], parts: tuple[tuple[str, bool], ...],
                 scoped: bool) -> None:
        super().__init__(parts, "group")
        self.key = key
        self.children = children
        self.emits_json = [ch.json_emitter() for ch in children]  # type: ignore[attr-defined]
        self.emits_xml = [ch.xml_emitter() for ch in children]  # type: ignore[attr-defined]
        #: templates below read `item`: set it while walking this group
        self.scoped = scoped


class Obj(Group):
    """A nested object / element; with a context getter, its fields read from that context."""

    __slots__ = ("context", "when")

    def __init__(self, key: str, children: list[Node], parts: tuple[tuple[str, bool], ...], scoped: bool,
                 context: Compute | None = None, when: Check | None = None) -> None:
        super().__init__(key, children, parts, scoped)
        self.context = context
        self.when = when

    def _enter(self, c: Any, run: Run) -> tuple[bool, Any]:
        try:
            if self.when is not None and not self.when(c, run):
                return False, None
            if self.context is not None:
                c = self.context(c, run)
                if c is None:
                    return False, None
        except DocumentError as exc:
            raise self.error(exc, run) from None
        return True, c

    def emit_json(self, out: dict[str, Any], c: Any, run: Run) -> None:
        if self.when is not None or self.context is not None:
            ok, c = self._enter(c, run)
            if not ok:
                return
        d: dict[str, Any] = {}
        if self.scoped and self.context is not None:
            scope = run.scope
            saved = scope.get("item")
            scope["item"] = c
            for e in self.emits_json:
                e(d, c, run)
            scope["item"] = saved
        else:
            for e in self.emits_json:
                e(d, c, run)
        if d:
            prev = out.get(self.key)
            if type(prev) is dict:
                prev.update(d)
            else:
                out[self.key] = d

    def emit_xml(self, parent: Any, c: Any, run: Run) -> None:
        if self.when is not None or self.context is not None:
            ok, c = self._enter(c, run)
            if not ok:
                return
        el = etree.SubElement(parent, self.key)
        if self.scoped and self.context is not None:
            scope = run.scope
            saved = scope.get("item")
            scope["item"] = c
            for e in self.emits_xml:
                e(el, c, run)
            scope["item"] = saved
        else:
            for e in self.emits_xml:
                e(el, c, run)
        if el.text is None and not len(el) and not el.keys():
            parent.remove(el)


class Repeat(Group):
    """A repeating group: one object / element (or one scalar, with `scalar`) per source item."""

    __slots__ = ("items", "scalar", "when")

    def __init__(self, key: str, children: list[Node], parts: tuple[tuple[str, bool], ...], scoped: bool,
                 items: Compute, when: Check | None = None, scalar: Leaf | None = None) -> None:
        super().__init__(key, children, parts, scoped)
        self.items = items
        self.when = when
        self.scalar = scalar

    def _items(self, c: Any, run: Run) -> Any:
        try:
            return self.items(c, run)
        except DocumentError as exc:
            raise self.error(exc, run) from None

    def _keep(self, it: Any, run: Run) -> bool:
        try:
            return self.when(it, run)  # type: ignore[misc]
        except DocumentError as exc:
            raise self.error(exc, run) from None

    def collect_json(self, c: Any, run: Run) -> list[Any]:
        items = self._items(c, run)
        out: list[Any] = []
        stack = run.stack
        stack.append(0)
        scoped = self.scoped
        scope = run.scope
        saved = (scope.get("item"), scope.get("index")) if scoped else None
        when, scalar, emits = self.when, self.scalar, self.emits_json
        for i, it in enumerate(items):
            stack[-1] = i
            if scoped:
                scope["item"] = it
                scope["index"] = i
            if when is not None and not self._keep(it, run):
                continue
            if scalar is not None:
                v = scalar.value(it, run)
                if v is not None or scalar.keep_null:
                    out.append(v)
                continue
            d: dict[str, Any] = {}
            for e in emits:
                e(d, it, run)
            out.append(d)
        stack.pop()
        if saved is not None:
            scope["item"], scope["index"] = saved
        return out

    def emit_json(self, out: dict[str, Any], c: Any, run: Run) -> None:
        out[self.key] = self.collect_json(c, run)

    def emit_xml(self, parent: Any, c: Any, run: Run) -> None:
        items = self._items(c, run)
        stack = run.stack
        stack.append(0)
        scoped = self.scoped
        scope = run.scope
        saved = (scope.get("item"), scope.get("index")) if scoped else None
        when, scalar, emits, tag = self.when, self.scalar, self.emits_xml, self.key
        sub = etree.SubElement
        for i, it in enumerate(items):
            stack[-1] = i
            if scoped:
                scope["item"] = it
                scope["index"] = i
            if when is not None and not self._keep(it, run):
                continue
            if scalar is not None:
                scalar.emit_xml(parent, it, run)
                continue
            el = sub(parent, tag)
            for e in emits:
                e(el, it, run)
        stack.pop()
        if saved is not None:
            scope["item"], scope["index"] = saved

    def rows(self, c: Any, run: Run, cells: list[Leaf]) -> list[list[str]]:
        items = self._items(c, run)
        out: list[list[str]] = []
        stack = run.stack
        stack.append(0)
        scoped = self.scoped
        scope = run.scope
        for i, it in enumerate(items):
            stack[-1] = i
            if scoped:
                scope["item"] = it
                scope["index"] = i
            if self.when is not None and not self._keep(it, run):
                continue
            out.append([leaf.cell(it, run) for leaf in cells])
        stack.pop()
        return out


# -------------------------------------------------------------------------------------------- the map


class PropertySetter:
    __slots__ = ("leaf", "name", "process")

    def __init__(self, process: bool, name: str, leaf: Leaf) -> None:
        self.process, self.name, self.leaf = process, name, leaf


class CompiledMap:
    """A map, compiled: `apply(doc, ctx)` transforms one document.

    The result is a new document carrying the input's properties (plus any set by the map); the
    input is not changed. A failure (malformed input, a function failing, a required value
    missing) raises `DocumentError` naming the map and the target field: the map shape fails that
    document only, and it goes to the enclosing try/catch or is recorded as an execution error.
    """

    def __init__(self, name: str, input: FormatOptions, output: FormatOptions, *,
                 children: list[Node], records: Repeat | None, root_tag: str | None,
                 nsmap: dict[str | None, str], uses_scope: bool, sets_doc_props: bool,
                 properties: list[PropertySetter], cells: list[Leaf], columns: list[str],
                 x12: X12Writer | None = None) -> None:
        self.name = name
        self.input = input.format
        self.output = output.format
        self.input_options = input
        self.output_options = output
        self.content_type = CONTENT_TYPES[output.format]
        self._children = children
        self._emits_json = [ch.json_emitter() for ch in children]  # type: ignore[attr-defined]
        from ._codegen import json_filler  # the generator imports the node classes of this module
        self._fill_json = json_filler(children) if output.format in ("json", "x12") else None
        self._emits_xml = [ch.xml_emitter() for ch in children]  # type: ignore[attr-defined]
        self._records = records
        self._root_tag = root_tag
        self._nsmap = nsmap
        self._uses_scope = uses_scope
        self._sets_doc_props = sets_doc_props
        self._properties = properties
        self._cells = cells
        self._columns = columns
        self._x12 = x12
        self._what = f"map '{name}': output"

    def __repr__(self) -> str:
        return f"<CompiledMap {self.name} {self.input}->{self.output}>"

    # ---- input
    def _read(self, doc: Document, run: Run) -> Any:
        fmt = self.input
        try:
            if fmt == "json":
                return doc.json
            if fmt == "xml":
                return doc.xml
            if fmt == "x12":
                opts = self.input_options.x12
                return parse_interchange(doc.text, opts if isinstance(opts, X12Input) else None)[1]
            rows, names = read_rows(doc.text, self.input_options, "document")
        except DocumentError as exc:
            raise MapError(f"map '{self.name}': {exc}") from None
        run.columns = names
        return rows

    # ---- apply
    def apply(self, doc: Document, ctx: MapContext) -> Document:
        """Transform one document into a new one (see the class docstring for errors)."""
        props = dict(doc.props) if self._sets_doc_props else doc.props
        scope = dict(ctx.scope(doc)) if self._uses_scope else None
        run = Run(self.name, doc, ctx, scope, props)
        src = self._read(doc, run)
        if scope is not None:
            scope["item"] = src
            scope["index"] = 0
        for p in self._properties:
            v = p.leaf.value(src, run)
            if v is not None:
                text = v if type(v) is str else to_text(v)
                if p.process:
                    ctx.properties[p.name] = text
                else:
                    props[p.name] = text
        out = self.output
        new_props = props if self._sets_doc_props else None
        if out == "json":
            value: Any
            if self._records is not None:
                run.records = True
                value = self._records.collect_json(src, run)
            else:
                value = {}
                self._fill_json(value, src, run)  # type: ignore[misc]
            if self.output_options.pretty:
                data = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
            else:
                data = dump_json(value)
            return doc.derive(data, json_value=value, props=new_props)
        if out == "x12":
            assert self._x12 is not None
            sets: list[Any]
            if self._records is not None:
                run.records = True
                sets = self._records.collect_json(src, run)
            else:
                tree: dict[str, Any] = {}
                self._fill_json(tree, src, run)  # type: ignore[misc]
                sets = [tree]
            data, x12_props = self._x12.write(sets, run, ctx)
            return doc.derive(data, props={**props, **x12_props})
        if out == "xml":
            assert self._root_tag is not None
            root = etree.Element(self._root_tag, nsmap=self._nsmap)  # type: ignore[arg-type]
            for e in self._emits_xml:
                e(root, src, run)
            opts = self.output_options
            data = etree.tostring(root, encoding="UTF-8", xml_declaration=opts.declaration,
                                  pretty_print=opts.pretty)
            return doc.derive(data, props=new_props)
        # csv / flat
        if self._records is not None:
            run.records = True
            rows = self._records.rows(src, run, self._cells)
        else:
            rows = [[leaf.cell(src, run) for leaf in self._cells]]
        data = write_rows(rows, self._columns, self.output_options, self._what)
        return doc.derive(data, props=new_props)
