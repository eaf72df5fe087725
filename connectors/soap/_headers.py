"""SOAP headers of the requests: the `headers` operation field and the WS-Security header.

The `headers` field is checked when components load (header names, templates); it is matched against
the operation's WSDL declaration when the shape first runs (`HeaderPlan.for_operation`), and its
values are evaluated per document (`HeaderPlan.build`). Headers the WSDL declares are rendered by
zeep from their schema type; a qualified name `{namespace}Name` the WSDL does not declare is written
as it is (a nested mapping gives child elements in the same namespace).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.wsdl.bindings.soap import SoapOperation
from zeep.wsse import utils as wsse_utils
from zeep.wsse.compose import Compose
from zeep.wsse.username import UsernameToken

from atom.errors import DocumentError, Location
from atom.expressions import ExpressionSyntaxError, compile_value
from atom.spec import MISSING, CheckContext, Type, value_kind
from atom.yamlio import Where, interpolate

#: an element name, optionally qualified: `SessionHeader` or `{urn:example:session}SessionHeader`
_NAME = re.compile(r"(?:\{([^{}\s]+)\})?([^\W\d][\w.\-]*)")


def split_name(name: str) -> tuple[str | None, str]:
    """(namespace or None, local name) of a header or child name that `_NAME` accepts."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"'{name}' is not an element name")
    return m.group(1), m.group(2)


# ------------------------------------------------------------------------------- the field type


class HeaderValues(Type):
    """The `headers` operation field: header name -> a literal, a template, or a nested mapping (or
    list) of them. Names are checked and templates compiled at load time."""

    label = "mapping of header name to value, template or mapping"

    def check(self, value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            ctx.error(loc, f"expected a mapping of header names to values, got {value_kind(value)}")
            return MISSING
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if not _NAME.fullmatch(name):
                ctx.error(where.key(key), f"header name '{name}' is not an element name "
                                          "or a qualified name {namespace}Name")
                continue
            got = _compile(item, where.child(key), where.value(key), ctx)
            if got is not MISSING:
                out[name] = got
        return out

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": {
            "anyOf": [{"type": ["string", "number", "boolean", "null"]}, {"type": "object"}, {"type": "array"}]}}


def _compile(value: Any, where: Where, loc: Location, ctx: CheckContext) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if not _NAME.fullmatch(name):
                ctx.error(where.key(key), f"'{name}' is not an element name or a qualified name {{namespace}}Name")
                continue
            got = _compile(item, where.child(key), where.value(key), ctx)
            if got is not MISSING:
                out[name] = got
        return out
    if isinstance(value, list):
        items = [_compile(item, where.child(i), where.value(i), ctx) for i, item in enumerate(value)]
        return [item for item in items if item is not MISSING]
    if isinstance(value, str) and "${" in value:
        value, missing = interpolate(value, ctx.env)
        for name in missing:
            ctx.error(loc, f"environment variable '{name}' is not set and has no default")
    try:
        return compile_value(value)
    except ExpressionSyntaxError as exc:
        ctx.error(loc, str(exc))
        return MISSING


def _evaluate(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _evaluate(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_evaluate(v, scope) for v in value]
    return value.evaluate(scope)


def _leaves(value: Any) -> list[str]:
    """The text of every scalar in an evaluated header value."""
    if isinstance(value, Mapping):
        return [text for v in value.values() for text in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [text for v in value for text in _leaves(v)]
    return [] if value is None else [_text(value)]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Entry:
    key: str  # as written in the operation
    value: Any  # compiled value
    part: str | None  # the header part of the WSDL, or None
    qname: str | None  # Clark name of a header the WSDL does not declare


class UnknownHeader(ValueError):
    """A header name the operation's WSDL declaration does not have."""


@dataclass(frozen=True)
class HeaderPlan:
    """The `headers` of one operation, matched against its WSDL declaration."""

    operation: SoapOperation
    entries: tuple[_Entry, ...]

    @classmethod
    def for_operation(cls, operation: SoapOperation, headers: Mapping[str, Any]) -> HeaderPlan:
        """Match each header name with a header the operation's input declares: by part name, by the
        local name of its element, or by its qualified name. A qualified name the WSDL does not declare
        is sent as written; an unqualified one raises UnknownHeader."""
        declared = declared_headers(operation)
        by_qname = {qname: part for part, qname in declared.items()}
        by_local: dict[str, list[str]] = {}
        for part, qname in declared.items():
            by_local.setdefault(etree.QName(qname).localname, []).append(part)
        entries = []
        for key, value in headers.items():
            namespace, local = split_name(key)
            if namespace is not None:
                entries.append(_Entry(key, value, by_qname.get(key), None if key in by_qname else key))
                continue
            if key in declared:
                entries.append(_Entry(key, value, key, None))
                continue
            parts = by_local.get(local, [])
            if len(parts) == 1:
                entries.append(_Entry(key, value, parts[0], None))
                continue
            if not declared:
                raise UnknownHeader(f"header '{key}': the operation declares no SOAP headers; name a header "
                                    "the WSDL does not declare by its qualified name {namespace}" + key)
            names = sorted({etree.QName(q).localname for q in declared.values()})
            raise UnknownHeader(f"header '{key}' is not a header of the operation (its headers: {', '.join(names)}; "
                                "name another header by its qualified name {namespace}Name)")
        return cls(operation, tuple(entries))

    def build(self, scope: Mapping[str, Any], secrets: list[str]) -> list[etree._Element]:
        """The header elements for one document (a header whose value is null is left out). Raises
        DocumentError (kind invalid) naming the header; values never appear in its message."""
        out: list[etree._Element] = []
        for entry in self.entries:
            try:
                value = _evaluate(entry.value, scope)
            except DocumentError as exc:
                raise DocumentError(f"header '{entry.key}': {exc}") from None
            if value is None:
                continue
            try:
                if entry.part is not None:
                    out.extend(self._declared(entry.part, value))
                else:
                    assert entry.qname is not None
                    out.extend(_free_elements(entry.qname, value))
            except (ZeepError, TypeError, ValueError, AttributeError) as exc:
                message = str(exc)
                for text in sorted({t for t in [*_leaves(value), *secrets] if len(t) >= 3}, key=len, reverse=True):
                    message = message.replace(text, "***")
                raise DocumentError(f"header '{entry.key}': {message}") from None
        return out

    def _declared(self, part: str, value: Any) -> list[etree._Element]:
        message = self.operation.input
        assert message is not None  # a declared header is a header of the input
        header = message.header
        values = header(**{part: value})
        container = etree.Element("container")
        for name, element in header.type.elements:
            if name == part and values[name] is not None:
                element.render(container, values[name], ["header", name])
        return list(container)


def declared_headers(operation: SoapOperation) -> dict[str, str]:
    """Part name -> Clark name of the element, for each SOAP header the operation's input declares."""
    message = operation.input
    header = getattr(message, "header", None) if message is not None else None
    if header is None:
        return {}
    return {name: etree.QName(element.qname).text for name, element in header.type.elements}


def _free_elements(qname: str, value: Any) -> list[etree._Element]:
    """The elements of a header the WSDL does not declare: one, or one per item of a list."""
    namespace, local = split_name(qname)
    out = []
    for one in value if isinstance(value, (list, tuple)) else [value]:
        if one is None:
            continue
        el = etree.Element(f"{{{namespace}}}{local}" if namespace else local)
        _fill(el, one, namespace)
        out.append(el)
    return out


def _fill(el: etree._Element, value: Any, namespace: str | None) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            child_ns, local = split_name(str(key))
            child_ns = child_ns or namespace
            tag = f"{{{child_ns}}}{local}" if child_ns else local
            for one in item if isinstance(item, (list, tuple)) else [item]:
                if one is None:
                    continue
                _fill(etree.SubElement(el, tag), one, child_ns)
    elif isinstance(value, (list, tuple)):
        raise ValueError("a list inside a list: a list repeats the element it is the value of")
    else:
        el.text = _text(value)


# -------------------------------------------------------------------------------- WS-Security


class Timestamp:
    """A wsu:Timestamp (Created, Expires) put first in the wsse:Security header. It has zeep's wsse
    interface (`apply`, `verify`), so zeep's Compose chains it with a UsernameToken."""

    def __init__(self, created: dt.datetime, ttl: float) -> None:
        self.created = created
        self.ttl = ttl

    def apply(self, envelope: etree._Element, headers: dict[str, str]) -> tuple[etree._Element, dict[str, str]]:
        security = wsse_utils.get_security_header(envelope)
        expires = self.created + dt.timedelta(seconds=self.ttl)
        stamp = wsse_utils.WSU.Timestamp(wsse_utils.WSU.Created(_utc(self.created)),
                                         wsse_utils.WSU.Expires(_utc(expires)))
        wsse_utils.ensure_id(stamp)
        security.insert(0, stamp)
        return envelope, headers

    def verify(self, envelope: etree._Element) -> None:
        return None


def _utc(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"


def security(config: Mapping[str, Any], now: dt.datetime | None = None) -> Compose:
    """The WS-Security header of one attempt: a UsernameToken (the password as text, or its digest with a
    fresh nonce and creation time) and, when configured, a Timestamp created at the same instant."""
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    token = UsernameToken(config["username"], config["password"], use_digest=bool(config.get("digest")),
                          created=created, zulu_timestamp=True)
    parts: list[Any] = []
    if config.get("timestamp"):
        parts.append(Timestamp(created, float(config.get("ttl", 300.0))))
    parts.append(token)
    return Compose(parts)
