"""Split one document into many, and combine many into one."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from lxml import etree

from ..document import Document, dump_json
from ..errors import DocumentError
from ..expressions import ExpressionSyntaxError, compile_jsonpath, compile_xpath
from ..spec import Bool, Field, MapOf, Object, Spec, Str
from ..yamlio import Where
from . import Outputs, Shape, each, shape

if TYPE_CHECKING:
    from ..engine import Execution
    from ..loader import CompileContext

CSV_SPEC = Spec([
    Field("header", Bool(), default=True, description="first line holds the column names"),
    Field("delimiter", Str(), default=",", description="field separator"),
    Field("output", Str(), default="json", description="json (one object per row) or csv (header + row)"),
])


@shape
class Split(Shape):
    kind = "split"
    summary = ("One document -> many: by JSONPath (each match a JSON document), XPath (each element an XML "
               "document), lines, or CSV rows. Document properties are copied to each part.")
    example = '{id: sp, split: {jsonpath: "$.items[*]"}}'
    value_type = Object(Spec([
        Field("jsonpath", Str(), description="JSONPath selecting the parts"),
        Field("xpath", Str(), description="XPath selecting the elements"),
        Field("namespaces", MapOf(Str()), default=dict, description="prefix -> namespace URI for xpath"),
        Field("lines", Bool(), description="one document per non-empty line"),
        Field("csv", Object(CSV_SPEC), description="one document per CSV row"),
        Field("keep_header", Bool(), default=False, description="lines: repeat the first line in every part"),
    ], one_of=("jsonpath", "xpath", "lines", "csv")))

    def __init__(self, id: str, cfg: Any, where: Where, cc: CompileContext) -> None:
        super().__init__(id, cfg, where, cc)
        self.jp = self.xp = None
        try:
            if "jsonpath" in cfg:
                self.jp = compile_jsonpath(cfg["jsonpath"])
            if "xpath" in cfg:
                self.xp = compile_xpath(cfg["xpath"], cfg.get("namespaces"))
        except ExpressionSyntaxError as exc:
            cc.error(where.value("jsonpath" if "jsonpath" in cfg else "xpath"), str(exc))

    def _split(self, doc: Document) -> list[Document]:
        if self.jp is not None:
            return [Document.from_json(m.value, dict(doc.props)) for m in self.jp.find(doc.json)]
        if self.xp is not None:
            try:
                found = self.xp(doc.xml)
            except etree.XPathEvalError as exc:
                raise DocumentError(f"XPath failed: {exc}") from None
            if not isinstance(found, list):
                raise DocumentError("xpath must select elements")
            return [doc.derive(etree.tostring(e)) for e in found if isinstance(e, etree._Element)]
        if self.cfg.get("lines"):
            lines = [ln for ln in doc.text.splitlines() if ln.strip()]
            if self.cfg.get("keep_header") and lines:
                head = lines.pop(0)
                return [doc.derive(f"{head}\n{ln}\n") for ln in lines]
            return [doc.derive(ln) for ln in lines]
        c = self.cfg["csv"]
        reader = csv.reader(io.StringIO(doc.text), delimiter=c["delimiter"])
        rows = [r for r in reader if r]
        if not c["header"]:
            return [Document.from_json(r, dict(doc.props)) for r in rows]
        if not rows:
            return []
        header, body = rows[0], rows[1:]
        if c["output"] == "csv":
            def line(r: list[str]) -> str:
                buf = io.StringIO()
                csv.writer(buf, delimiter=c["delimiter"], lineterminator="\n").writerows([header, r])
                return buf.getvalue()
            return [doc.derive(line(r)) for r in body]
        return [Document.from_json(dict(zip(header, r, strict=False)), dict(doc.props)) for r in body]

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        return [(self.next, each(docs, self._split, f"split '{self.id}'"))]


@shape
class Combine(Shape):
    kind = "combine"
    summary = ("Many documents -> one: a JSON array, XML elements under a root element, or lines. "
               "Properties of the first document carry over.")
    example = "{id: c, combine: {json_array: true}}"
    value_type = Object(Spec([
        Field("json_array", Bool(), description="a JSON array of the documents' JSON"),
        Field("xml_root", Str(), description="root element wrapping the documents' XML roots"),
        Field("lines", Bool(), description="documents' text joined by newlines"),
        Field("separator", Str(), default="\n", description="lines: the separator"),
    ], one_of=("json_array", "xml_root", "lines")))

    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        if not docs:
            return []
        cfg = self.cfg
        try:
            if cfg.get("json_array"):
                value = [d.json for d in docs]
                new = docs[0].derive(dump_json(value), json_value=value)
            elif cfg.get("xml_root"):
                root = etree.Element(cfg["xml_root"])
                for d in docs:
                    root.append(_copy(d.xml))
                new = docs[0].derive(etree.tostring(root, xml_declaration=False))
            else:
                new = docs[0].derive(cfg.get("separator", "\n").join(d.text for d in docs))
        except DocumentError as exc:
            return [(None, [d.fail(f"combine '{self.id}': {exc}") for d in docs])]
        return [(self.next, [new])]


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))
