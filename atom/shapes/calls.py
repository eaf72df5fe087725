"""Shapes that call out: map, connector, process_call, cache."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..document import Document
from ..errors import ERROR, DocumentError
from ..expressions import Template
from ..spec import Bool, CheckContext, Custom, Enum, Field, Object, Spec, Str, Value
from ..spec import Template as TemplateField
from ..yamlio import Where
from . import Outputs, Shape, each, shape

if TYPE_CHECKING:
    from ..engine import Execution
    from ..loader import CompileContext


def _map_value(value: Any, where: Where, loc: Any, ctx: CheckContext) -> Any:
    # a map component name, or an inline map checked later by the map spec
    if isinstance(value, str) or isinstance(value, dict) or hasattr(value, "items"):
        return value
    ctx.error(loc, "expected a map name or an inline map")
    return None


@shape
class Map(Shape):
    kind = "map"
    summary = "Transforms each document with a map: `map: name` of a map component, or an inline map."
    example = "{id: m, map: order-to-erp}"
    value_type = Custom(_map_value, {"anyOf": [{"type": "string"}, {"$ref": "#/definitions/map"}]},
                        "map name or inline map")

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.compiled = cc.resolve_map(cfg, where, f"{cc.process_name}.{id}")

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        m = self.compiled
        if m is None:
            return [(None, [d.fail(f"map '{self.id}' is not available", ERROR) for d in docs])]
        return [(self.next, each(docs, lambda d: m.apply(d, ex), f"map '{self.id}' ({m.name})"))]


def _operation_value(value: Any, where: Where, loc: Any, ctx: CheckContext) -> Any:
    if value is None:
        return {}
    if not hasattr(value, "items"):
        ctx.error(loc, "expected a mapping of operation fields")
        return {}
    return value


@shape
class ConnectorShape(Shape):
    kind = "connector"
    summary = ("Calls a connection: `send` each document through the connection's operation (the result "
               "documents go on), or `get` documents. Failed documents go to the enclosing try_catch.")
    example = "{id: k, connector: {connection: erp, action: send, operation: {method: POST, path: /orders}}}"
    value_type = Object(Spec([
        Field("connection", Str(), required=True, description="name of a connection component"),
        Field("action", Enum("get", "send"), default="send", description="get or send"),
        Field("operation", Custom(_operation_value, {"type": "object"}, "operation fields"), default=dict,
              description="operation fields, as the connector type declares them"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.connection: str = cfg.get("connection", "")
        self.action: str = cfg.get("action", "send")
        self.operation = cc.check_operation(self.connection, self.action, cfg.get("operation") or {},
                                            where, f"shape '{id}'")

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        out = await ex.call_connector(self.connection, self.action, self.operation, docs, self.id)
        return [(self.next, out)]


@shape
class ProcessCall(Shape):
    kind = "process_call"
    summary = ("Runs another process: `passthrough: true` hands it the whole batch in one execution, "
               "`false` runs it once per document. With `wait: true` the documents it returns go on; "
               "with `wait: false` it runs in the background and the input documents go on.")
    example = "{id: pc, process_call: {process: enrich, passthrough: true, wait: true}}"
    value_type = Object(Spec([
        Field("process", Str(), required=True, description="name of the process to run"),
        Field("passthrough", Bool(), default=True, description="whole batch in one run, else one run per document"),
        Field("wait", Bool(), default=True, description="wait for it and continue with its returned documents"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.process: str = cfg.get("process", "")
        cc.require_process(self.process, where.value("process"))

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        batches = [docs] if self.cfg.get("passthrough", True) else [[d] for d in docs]
        if not self.cfg.get("wait", True):
            for b in batches:
                ex.engine.spawn(ex.engine.execute(self.process, b, properties=dict(ex.properties),
                                                  execution_type="sub_process", parent=ex))
            return [(self.next, docs)]
        out: list[Document] = []
        for b in batches:
            child = await ex.engine.execute(self.process, b, properties=dict(ex.properties),
                                            execution_type="sub_process", parent=ex)
            ex.properties.update(child.properties)
            if child.status == "ERROR":
                msg = f"process_call '{self.id}': process '{self.process}' failed: {child.message}"
                # the kind of the child's first document error, when its message is that error's
                first = child.error_documents[0] if child.error_documents else None
                if first is not None and first.error and child.message.startswith(first.error):
                    kind, status = first.error_kind or ERROR, first.error_status
                else:
                    kind, status = ERROR, None
                out.extend(d.fail(msg, kind, status) for d in b)
            else:
                out.extend(child.returned)
        return [(self.next, out)]


@shape
class Cache(Shape):
    kind = "cache"
    summary = ("Adds documents to a named cache under a key, retrieves them (the cached documents replace "
               "the input), or removes them. `scope: execution` caches live for one execution, `runtime` "
               "caches are shared by all executions of the Atom until `ttl` expires.")
    example = '{id: ca, cache: {name: customers, action: add, key: "{{ doc.json.id }}"}}'
    value_type = Object(Spec([
        Field("name", Str(), required=True, description="cache name"),
        Field("action", Enum("add", "get", "remove"), default="add", description="what to do"),
        Field("key", TemplateField(), required=True, description="template of the key, per document"),
        Field("scope", Enum("execution", "runtime"), default="execution", description="lifetime"),
        Field("ttl", Value(), description="runtime scope: seconds an entry lives (default: forever)"),
        Field("missing", Enum("drop", "keep", "fail"), default="drop",
              description="get: what happens to a document whose key is not cached"),
    ]))

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        cfg = self.cfg
        store = ex.cache_for(cfg["name"], cfg.get("scope", "execution"))
        action = cfg.get("action", "add")
        key_t: Template = cfg["key"]
        ttl = cfg["ttl"].evaluate({}) if "ttl" in cfg else None

        def act(doc: Document) -> Document | list[Document] | None:
            key = key_t.render(ex.scope(doc))
            if action == "add":
                store.add(key, doc.copy(), float(ttl) if ttl is not None else None)
                return doc
            if action == "remove":
                store.remove(key)
                return doc
            found = store.get(key)
            if found:
                return [d.copy() for d in found]
            missing = cfg.get("missing", "drop")
            if missing == "fail":
                raise DocumentError(f"key '{key}' not in cache '{cfg['name']}'")
            return doc if missing == "keep" else None

        return [(self.next, each(docs, act, f"cache '{self.id}'"))]


class DocCache:
    """A named cache: key -> documents, with optional expiry (runtime scope)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[list[Document], float | None]] = {}

    def add(self, key: str, doc: Document, ttl: float | None) -> None:
        loop = asyncio.get_running_loop()
        docs, _ = self._data.get(key, ([], None))
        docs.append(doc)
        self._data[key] = (docs, loop.time() + ttl if ttl else None)

    def get(self, key: str) -> list[Document]:
        got = self._data.get(key)
        if got is None:
            return []
        docs, expires = got
        if expires is not None and asyncio.get_running_loop().time() > expires:
            del self._data[key]
            return []
        return docs

    def remove(self, key: str) -> None:
        self._data.pop(key, None)
