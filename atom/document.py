"""Documents: bytes plus string properties, with lazily parsed views (Boomi semantics)."""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Iterator
from typing import IO, Any

import orjson
from lxml import etree

from .errors import ERROR, DocumentError, check_kind, handled_kind

#: The only XML parser the Atom uses: no entity resolution, no DTD loading, no network, no huge trees.
SAFE_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
    huge_tree=False, remove_blank_text=False,
)


def parse_xml(data: bytes | str, what: str = "document") -> etree._Element:
    """Parse XML safely. Internal and external entities are never expanded; a DOCTYPE that declares
    entities is refused outright (billion-laughs and XXE inputs fail fast with a clear message)."""
    if isinstance(data, str):
        data = data.encode()
    head = data[:4096]
    if b"<!ENTITY" in head or (b"<!DOCTYPE" in head and b"<!ENTITY" in data):
        raise DocumentError(f"{what} is not accepted: XML entity declarations are not allowed")
    try:
        root = etree.fromstring(data, SAFE_XML_PARSER)
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"{what} is not well-formed XML: {exc}") from None
    if root is None:
        raise DocumentError(f"{what} is empty, expected XML")
    return root


#: bytes read at a time when a document is read as a stream
CHUNK = 1 << 20
_HEAD = 4096


def _safe_parser_options() -> dict[str, Any]:
    return {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": False}


def _check_entities(doc: Document, what: str) -> None:
    """`parse_xml`'s entity rule on a stream: a declaration in the first 4 KB is refused, and so is one
    anywhere in a document whose first 4 KB hold a DOCTYPE (then the whole document is scanned first)."""
    with doc.open() as f:
        head = f.read(_HEAD)
        if b"<!ENTITY" in head:
            raise DocumentError(f"{what} is not accepted: XML entity declarations are not allowed")
        if b"<!DOCTYPE" not in head:
            return
        carry = head[-7:]
        while chunk := f.read(CHUNK):
            if b"<!ENTITY" in carry + chunk:
                raise DocumentError(f"{what} is not accepted: XML entity declarations are not allowed")
            carry = chunk[-7:]


class _NoTree:
    """A parser target that builds nothing: a well-formedness check at the parser's own speed."""

    def close(self) -> None:
        return None


def check_xml(doc: Document, what: str = "document") -> None:
    """Raise DocumentError exactly where `parse_xml` would, without building a tree (constant memory)."""
    _check_entities(doc, what)
    parser = etree.XMLParser(target=_NoTree(), **_safe_parser_options())  # type: ignore[arg-type]
    try:
        with doc.open() as f:
            parser.feed(f.read(CHUNK))  # at least once: an empty document is "empty", as for parse_xml
            while chunk := f.read(CHUNK):
                parser.feed(chunk)
        parser.close()
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"{what} is not well-formed XML: {exc}") from None


def iter_xml_elements(doc: Document, path: tuple[str, ...], what: str = "document") -> Iterator[bytes]:
    """The serialised elements an absolute child path (`path`: Clark-notation tags from the root down,
    at least two) selects, in document order, as `etree.tostring(element)` gives them (tail included).

    Memory stays bounded by one element: the document is parsed incrementally and each element is
    removed from the tree once serialised, with everything before it. Errors are those of `parse_xml`;
    an error in the middle of the document is raised after the elements before it were yielded (call
    `check_xml` first when nothing may go on unless the whole document is well-formed)."""
    _check_entities(doc, what)
    parser = etree.XMLPullParser(events=("start", "end"), tag=path[-1], **_safe_parser_options())
    pending: etree._Element | None = None

    def take(el: etree._Element) -> bytes:
        data = etree.tostring(el)
        node: Any = el
        while node is not None:  # free what was read: this element and everything before it
            parent = node.getparent()
            if parent is None:
                break
            while (prev := node.getprevious()) is not None:
                parent.remove(prev)
            node = parent
        el.getparent().remove(el)  # type: ignore[union-attr]
        return data

    def selected(el: etree._Element) -> bool:
        node: Any = el
        for tag in reversed(path[:-1]):
            node = node.getparent()
            if node is None or node.tag != tag:
                return False
        return node.getparent() is None

    try:
        with doc.open() as f:
            chunk = f.read(CHUNK)
            parser.feed(chunk)  # at least once: an empty document is "empty", as for parse_xml
            while True:
                if not chunk:
                    parser.close()
                event: str
                el: Any
                for event, el in parser.read_events():
                    if pending is not None:
                        yield take(pending)
                        pending = None
                    if event == "end" and selected(el):
                        pending = el
                if not chunk:
                    break
                chunk = f.read(CHUNK)
                if chunk:
                    parser.feed(chunk)
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"{what} is not well-formed XML: {exc}") from None
    if pending is not None:
        yield take(pending)


def iter_text(doc: Document) -> Iterator[str]:
    """The document's UTF-8 text in pieces, read in chunks; a decoding error says what `Document.text`
    would say (positions count from the start of the document)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the document before the decoder's input
    with doc.open() as f:
        while True:
            chunk = f.read(CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                held = len(exc.object) - len(chunk)  # bytes of an incomplete sequence kept from before
                start, end = offset - held + exc.start, offset - held + exc.end
                if end - start == 1:
                    what = f"can't decode byte 0x{exc.object[exc.start]:02x} in position {start}"
                else:
                    what = f"can't decode bytes in position {start}-{end - 1}"
                raise DocumentError(f"document is not UTF-8 text: 'utf-8' codec {what}: {exc.reason}") from None
            offset += len(chunk)
            if text:
                yield text
            if not chunk:
                return


def parse_json(data: bytes | str, what: str = "document") -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DocumentError(f"{what} is not valid JSON: {exc}") from None


def dump_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        import json

        return json.dumps(value, default=str).encode()


class Document:
    """One document: `data` (bytes) and `props` (document properties, str -> str).

    Views (`text`, `json`, `xml`) parse once and are cached; they must be treated as read-only.
    Shapes that change content make a new document with `derive()`, which copies the properties.
    A document whose `error` is set has failed; the engine routes it to the catch path. A failed
    document also has `error_kind` (one of `atom.errors.KINDS`) and, when the failure came with an
    HTTP answer, `error_status`.

    A document made by `from_file()` reads its file only when `data` or a view is first asked for;
    `open()` and `size` do not read it, so a streaming consumer (a split) never holds it whole.
    """

    __slots__ = ("_data", "_json", "_path", "_size", "_text", "_xml", "error", "error_kind", "error_status",
                 "props", "trace")

    def __init__(self, data: bytes | str = b"", props: dict[str, str] | None = None) -> None:
        self._data: bytes | None = data.encode() if isinstance(data, str) else bytes(data)
        self._path: str | None = None
        self._size = 0
        self.props: dict[str, str] = props if props is not None else {}
        self._text: str | None = None
        self._json: Any = _UNSET
        self._xml: Any = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.error_status: int | None = None
        self.trace: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], props: dict[str, str] | None = None) -> Document:
        """A document whose content is the file at `path`, read when first needed."""
        doc = cls(b"", props)
        doc._data = None
        doc._path = os.fspath(path)
        doc._size = os.path.getsize(doc._path)
        return doc

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            with open(self._path, "rb") as f:  # type: ignore[arg-type]
                data = self._data = f.read()
        return data

    def open(self) -> IO[bytes]:
        """The content as a binary stream (the file itself for a document not read yet)."""
        if self._data is None:
            return open(self._path, "rb")  # type: ignore[arg-type]
        return io.BytesIO(self._data)

    # ---- views
    @property
    def text(self) -> str:
        if self._text is None:
            try:
                self._text = self.data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DocumentError(f"document is not UTF-8 text: {exc}") from None
        return self._text

    @property
    def json(self) -> Any:
        if self._json is _UNSET:
            self._json = parse_json(self.data)
        return self._json

    @property
    def xml(self) -> etree._Element:
        if self._xml is None:
            self._xml = parse_xml(self.data)
        return self._xml

    @property
    def size(self) -> int:
        return len(self._data) if self._data is not None else self._size

    def drop_views(self) -> None:
        """Forget the parsed views (they are parsed again if asked for): frees a tree no longer needed."""
        self._text = None
        self._json = _UNSET
        self._xml = None

    # ---- construction
    def derive(self, data: bytes | str, *, json_value: Any = None,
               props: dict[str, str] | None = None) -> Document:
        """A new document with new content, carrying a copy of this one's properties and trace."""
        new = Document(data, dict(self.props) if props is None else props)
        new.trace = self.trace
        if json_value is not None:
            new._json = json_value
        return new

    @classmethod
    def from_json(cls, value: Any, props: dict[str, str] | None = None) -> Document:
        doc = cls(dump_json(value), props)
        doc._json = value
        return doc

    def copy(self) -> Document:
        """A copy with its own properties, sharing content and parsed views; of the same class (a
        subclass copies its own state in `_copy_to`)."""
        cls = type(self)
        new = cls.__new__(cls)
        Document.__init__(new, b"", dict(self.props))
        new._data, new._path, new._size = self._data, self._path, self._size
        new._text, new._json, new._xml, new.trace = self._text, self._json, self._xml, self.trace
        if cls is not Document:
            self._copy_to(new)
        return new

    def _copy_to(self, new: Document) -> None:
        """Copy what a subclass adds to a document onto `new` (of the same class)."""

    def fail(self, message: str, kind: str | None = None, status: int | None = None) -> Document:
        """Mark this document failed (it keeps its content and properties).

        `kind` is one of `atom.errors.KINDS`; without it, the kind of the DocumentError being handled
        (when called in its `except` block), else `error`. `status` is the HTTP status of the answer
        that made it fail, when there was one."""
        self.error = message
        self.error_kind = check_kind(kind) if kind is not None else (handled_kind() or ERROR)
        self.error_status = status
        return self

    def __repr__(self) -> str:
        preview = self._data[:60] if self._data is not None else f"file {self._path}"
        return f"<Document {self.size}B {preview!r} props={self.props}>"


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
