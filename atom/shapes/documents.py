"""Split one document into many, and combine many into one."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lxml import etree

from ..document import Document, check_xml, dump_json, iter_text, iter_xml_elements
from ..errors import DocumentError
from ..expressions import ExpressionSyntaxError, compile_jsonpath, compile_xpath
from ..spec import Bool, Field, MapOf, Object, Spec, Str
from ..yamlio import Where
from . import END, Outputs, Shape, each, shape

if TYPE_CHECKING:
    from ..engine import Execution
    from ..loader import CompileContext

CSV_SPEC = Spec([
    Field("header", Bool(), default=True, description="first line holds the column names"),
    Field("delimiter", Str(), default=",", description="field separator"),
    Field("output", Str(), default="json", description="json (one object per row) or csv (header + row)"),
])

#: documents handed to the rest of the path at a time by a streamed split (see `stream_batch`)
STREAM_BATCH = 1000

_NAME = r"[A-Za-z_][\w.-]*"
_STEP = re.compile(rf"(?:({_NAME}):)?({_NAME})")
#: str.splitlines() line boundaries ("\r\n" is one)
_LINE_ENDS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def simple_xpath(path: str, namespaces: dict[str, str] | None = None) -> tuple[str, ...] | None:
    """The element tags (Clark notation) of an absolute child path such as `/Orders/Order` or
    `/o:Orders/o:Order`, of at least two steps with no predicate, axis or wildcard; None otherwise.
    Such a path can be evaluated while the document is read (`iter_xml_elements`)."""
    if not path.startswith("/") or path.startswith("//"):
        return None
    steps = path[1:].split("/")
    if len(steps) < 2:
        return None
    tags = []
    for step in steps:
        m = _STEP.fullmatch(step)
        if m is None:
            return None
        prefix, local = m.groups()
        if prefix is None:
            tags.append(local)
        elif namespaces and prefix in namespaces:
            tags.append(f"{{{namespaces[prefix]}}}{local}")
        else:
            return None
    return tuple(tags)


def _lines(doc: Document) -> Iterator[str]:
    """The non-blank lines of `doc.text.splitlines()`, read in chunks."""
    carry = ""
    for piece in iter_text(doc):
        parts = (carry + piece).splitlines(keepends=True)
        carry = parts.pop() if parts[-1][-1] not in _LINE_ENDS else ""
        for part in parts:
            line = part[:-2] if part.endswith("\r\n") else part[:-1]
            if line.strip():
                yield line
    if carry.strip():
        yield carry


def _newline_lines(doc: Document) -> Iterator[str]:
    """The lines `io.StringIO(doc.text)` yields (split after each "\n"), read in chunks."""
    carry = ""
    for piece in iter_text(doc):
        parts = (carry + piece).split("\n")
        carry = parts.pop()
        for part in parts:
            yield part + "\n"
    if carry:
        yield carry


def _csv_rows(doc: Document, delimiter: str) -> Iterator[list[str]]:
    reader = csv.reader(_newline_lines(doc), delimiter=delimiter)
    try:
        for row in reader:
            if row:
                yield row
    except csv.Error as exc:
        raise DocumentError(f"CSV line {reader.line_num}: {exc}") from None


@shape
class Split(Shape):
    kind = "split"
    summary = ("One document -> many: by JSONPath (each match a JSON document), XPath (each element an XML "
               "document), lines, or CSV rows. Document properties are copied to each part. A simple absolute XPath "
               "(`/Root/Record`), lines and CSV are split while the document is read, so memory is bounded by "
               "the record, not the file.")
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
        #: the tags of a simple XPath, read as a stream
        self.xml_path: tuple[str, ...] | None = None
        try:
            if "jsonpath" in cfg:
                self.jp = compile_jsonpath(cfg["jsonpath"])
            if "xpath" in cfg:
                self.xp = compile_xpath(cfg["xpath"], cfg.get("namespaces"))
                self.xml_path = simple_xpath(cfg["xpath"], cfg.get("namespaces"))
        except ExpressionSyntaxError as exc:
            cc.error(where.value("jsonpath" if "jsonpath" in cfg else "xpath"), str(exc))
        self.streams = self.xml_path is not None or "lines" in cfg or "csv" in cfg
        self._batch: int | None = None

    # ---- parts of one document
    def _split(self, doc: Document) -> list[Document]:
        """The parts of a document that is parsed whole (JSONPath, an XPath that is not simple)."""
        if self.jp is not None:
            return [_part(doc, m.value) for m in self.jp.find(doc.json)]
        if self.xp is None:
            return list(self._parts(doc))
        try:
            found = self.xp(doc.xml)
        except etree.XPathEvalError as exc:
            raise DocumentError(f"XPath failed: {exc}") from None
        if not isinstance(found, list):
            raise DocumentError("xpath must select elements")
        return [doc.derive(etree.tostring(e)) for e in found if isinstance(e, etree._Element)]

    def _parts(self, doc: Document) -> Iterator[Document]:
        """The parts of a streamed split, read as the document is read."""
        if self.xml_path is not None:
            for data in iter_xml_elements(doc, self.xml_path):
                yield doc.derive(data)
            return
        if self.cfg.get("lines"):
            lines = _lines(doc)
            if self.cfg.get("keep_header"):
                head = next(lines, None)
                for ln in lines:
                    yield doc.derive(f"{head}\n{ln}\n")
            else:
                for ln in lines:
                    yield doc.derive(ln)
            return
        c = self.cfg["csv"]
        rows = _csv_rows(doc, c["delimiter"])
        if not c["header"]:
            for r in rows:
                yield _part(doc, r)
            return
        header = next(rows, None)
        if header is None:
            return
        if c["output"] == "csv":
            for r in rows:
                buf = io.StringIO()
                csv.writer(buf, delimiter=c["delimiter"], lineterminator="\n").writerows([header, r])
                yield doc.derive(buf.getvalue())
            return
        for r in rows:
            yield _part(doc, dict(zip(header, r, strict=False)))

    def _check(self, doc: Document) -> None:
        """Raise the DocumentError the split of `doc` would raise, keeping nothing (the first pass of a
        batched split: a malformed document fails before any of its parts goes on)."""
        if self.xml_path is not None:
            check_xml(doc)
        else:
            for _ in self._parts(doc):
                pass

    # ---- running
    async def run(self, docs: list[Document], ex: Execution) -> Outputs:
        where = f"split '{self.id}'"
        if not self.streams:
            return [(self.next, each(docs, self._split, where))]
        size = self.batch_size(ex)
        if not size:
            return [(self.next, each(docs, lambda d: list(self._parts(d)), where))]
        failed = []
        ok = []
        for doc in docs:
            try:
                self._check(doc)
                ok.append(doc)
            except DocumentError as exc:
                failed.append(doc.fail(f"{where}: {exc}", exc.kind))
        await ex.run_stream(self.id, self.next, self._batches(ok, failed, size, where))
        return []

    def _batches(self, docs: list[Document], failed: list[Document], size: int,
                 where: str) -> Iterator[list[Document]]:
        batch = list(failed)
        for doc in docs:
            try:
                for part in self._parts(doc):
                    batch.append(part)
                    if len(batch) >= size:
                        yield batch
                        batch = []
            except DocumentError as exc:  # the input changed since it was checked
                batch.append(doc.fail(f"{where}: {exc}", exc.kind))
            doc.drop_views()
        if batch:
            yield batch

    def batch_size(self, ex: Execution) -> int:
        """How many parts go on at a time: 0 for all at once (the rest of the path needs the whole batch)."""
        if self._batch is None:
            self._batch = stream_batch(ex.process.shapes, self.next)
        return self._batch


def _part(doc: Document, value: Any) -> Document:
    new = Document.from_json(value, dict(doc.props))
    new.trace = doc.trace
    return new


#: shapes whose effect on a document, and whose order of effects, is the same whether the documents
#: before them come in one batch or in several (given the conditions of `_needs_whole_batch`)
_BATCH_NEUTRAL = frozenset({"map", "message", "notify", "set_properties", "decision", "route", "try_catch",
                            "connector", "process_call", "cache", "flow_control", "split", "stop",
                            "exception", "return"})
_FORKS = frozenset({"decision", "route", "try_catch"})


def _needs_whole_batch(sh: Shape, forked: bool) -> bool:
    kind, cfg = sh.kind, sh.cfg if isinstance(sh.cfg, Mapping) else {}
    if kind not in _BATCH_NEUTRAL:
        return True  # combine (all parts in one document), branch (path 1 for all, then path 2), ...
    if kind in ("message", "notify"):
        return bool(cfg.get("batch"))
    if kind == "process_call":
        return bool(cfg.get("passthrough", True))
    if kind == "cache":
        return cfg.get("action", "add") != "add"  # a get must see every add made before it
    if kind == "stop":
        return not cfg.get("continue", True)
    if kind == "exception":
        return cfg.get("scope") == "execution"
    if kind == "return":
        return forked  # returned documents keep their order: then-path documents first, and so on
    return False


def stream_batch(shapes: Mapping[str, Shape], first: str | None) -> int:
    """The batch size of a streamed split whose parts go to `first`: the batch times the parallelism of a
    `flow_control` right after it; 0 (all at once) when a shape on the rest of the path works on the whole
    batch or ends the execution; else `STREAM_BATCH`."""
    if not first or first == END:
        return STREAM_BATCH
    head = shapes.get(first)
    if head is not None and head.kind == "flow_control":
        cfg = head.cfg if isinstance(head.cfg, Mapping) else {}
        return int(cfg.get("batch", 1)) * int(cfg.get("parallel", 1))
    seen: set[tuple[str, bool]] = set()
    todo = [(first, False)]
    while todo:
        sid, forked = todo.pop()
        sh = shapes.get(sid)
        if sh is None or (sid, forked) in seen:
            continue
        seen.add((sid, forked))
        if _needs_whole_batch(sh, forked):
            return 0
        fork = forked or sh.kind in _FORKS
        todo.extend((t, fork) for _, t in sh.targets() if t and t != END)
    return STREAM_BATCH


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
            return [(None, [d.fail(f"combine '{self.id}': {exc}", exc.kind) for d in docs])]
        return [(self.next, [new])]


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))
