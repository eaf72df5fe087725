"""Documents: bytes plus string properties, with lazily parsed views (Boomi semantics)."""

from __future__ import annotations

from typing import Any

import orjson
from lxml import etree

from .errors import DocumentError

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
    A document whose `error` is set has failed; the engine routes it to the catch path.
    """

    __slots__ = ("_json", "_text", "_xml", "data", "error", "props", "trace")

    def __init__(self, data: bytes | str = b"", props: dict[str, str] | None = None) -> None:
        self.data: bytes = data.encode() if isinstance(data, str) else bytes(data)
        self.props: dict[str, str] = props if props is not None else {}
        self._text: str | None = None
        self._json: Any = _UNSET
        self._xml: Any = None
        self.error: str | None = None
        self.trace: tuple[tuple[int, int], ...] = ()

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
        return len(self.data)

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
        new = Document(self.data, dict(self.props))
        new._text, new._json, new._xml, new.trace = self._text, self._json, self._xml, self.trace
        return new

    def fail(self, message: str) -> Document:
        """Mark this document failed (it keeps its content and properties)."""
        self.error = message
        return self

    def __repr__(self) -> str:
        preview = self.data[:60]
        return f"<Document {len(self.data)}B {preview!r} props={self.props}>"


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
