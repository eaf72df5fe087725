"""Shapes that set properties, build documents and write to the execution log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..document import Document
from ..errors import DocumentError
from ..expressions import Template
from ..spec import Bool, Enum, Field, MapOf, Object, Spec, Str, Value
from ..spec import Template as TemplateField
from ..yamlio import Where
from . import Outputs, Shape, each, shape

if TYPE_CHECKING:
    from ..engine import Execution
    from ..loader import CompileContext


def _str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


@shape
class SetProperties(Shape):
    kind = "set_properties"
    summary = ("Sets process properties (execution-scoped) and/or document properties from literals or "
               "templates. Values are strings. Process properties are evaluated once per document, in order.")
    example = '{id: s, set_properties: {process: {run_kind: nightly}, document: {tier: "{{ doc.json.tier }}"}}}'
    value_type = Object(Spec([
        Field("process", MapOf(Value()), default=dict, description="process property name -> value"),
        Field("document", MapOf(Value()), default=dict, description="document property name -> value"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.process = list(cfg.get("process", {}).items())
        self.document = list(cfg.get("document", {}).items())

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        props = ex.properties

        def apply(doc: Document) -> Document:
            scope = ex.scope(doc)
            for k, t in self.process:
                props[k] = _str(t.evaluate(scope))
            for k, t in self.document:
                doc.props[k] = _str(t.evaluate(scope))
            return doc

        if not docs and self.process:  # still set process properties on an empty batch
            scope = ex.scope(None)
            for k, t in self.process:
                try:
                    props[k] = _str(t.evaluate(scope))
                except DocumentError:
                    pass
        return [(self.next, each(docs, apply, f"set_properties '{self.id}'"))]


@shape
class Message(Shape):
    kind = "message"
    summary = ("Builds a new document from a template, per document (properties carry over) or once for "
               "the whole batch (`batch: true`, `docs` in scope).")
    example = """{id: g, message: {template: "<ack id='{{ doc.json.id }}'/>", content_type: application/xml}}"""
    value_type = Object(Spec([
        Field("template", TemplateField(), required=True, description="Jinja2 template of the new content"),
        Field("content_type", Str(), description="sets document property content_type"),
        Field("batch", Bool(), default=False, description="one document for the whole batch"),
    ]))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.template: Template = cfg["template"]
        self.content_type = cfg.get("content_type")
        self.batch = cfg.get("batch", False)

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        if self.batch:
            first = docs[0] if docs else None
            scope = ex.scope(first)
            scope["docs"] = docs
            try:
                text = self.template.render(scope)
            except DocumentError as exc:
                return [(None, [d.fail(f"message '{self.id}': {exc}", exc.kind) for d in docs])]
            new = first.derive(text) if first is not None else Document(text)
            if self.content_type:
                new.props["content_type"] = self.content_type
            return [(self.next, [new])]

        def build(doc: Document) -> Document:
            new = doc.derive(self.template.render(ex.scope(doc)))
            if self.content_type:
                new.props["content_type"] = self.content_type
            return new

        return [(self.next, each(docs, build, f"message '{self.id}'"))]


@shape
class Notify(Shape):
    kind = "notify"
    summary = ("Writes a message to the execution log per document (info, warning or error); documents "
               "pass through. A warning or error makes the execution end COMPLETE_WARN when nothing failed.")
    example = '{id: n, notify: {level: warning, message: "late {{ doc.json.id }}"}}'
    value_type = Object(Spec([
        Field("message", TemplateField(), required=True, description="template of the log line"),
        Field("level", Enum("info", "warning", "error"), default="info", description="log level"),
        Field("batch", Bool(), default=False, description="one line for the batch instead of one per document"),
    ]))

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        tmpl, level = self.cfg["message"], self.cfg.get("level", "info")
        targets: list[Document | None] = [docs[0] if docs else None] if self.cfg.get("batch") else list(docs)
        for doc in targets:
            scope = ex.scope(doc)
            if self.cfg.get("batch"):
                scope["docs"] = docs
            try:
                ex.log(level, tmpl.render(scope), self.id)
            except DocumentError as exc:
                ex.log("warning", f"notify message failed: {exc}", self.id)
        if level != "info":
            ex.warned = True
        return [(self.next, docs)]
