"""Envelopes in and out of the SOAP connector: request building, response classification, faults and
the JSON view of a response."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lxml import etree

from atom.soap import SOAP11_ENV, SOAP12_ENV

_ENV_OF_VERSION = {"1.1": SOAP11_ENV, "1.2": SOAP12_ENV}
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


@dataclass(frozen=True)
class Fault:
    """A SOAP Fault answered by the service: code (`soap:Client`, `env:Sender`...), reason, detail."""

    code: str
    message: str
    detail: str | None = None
    #: the code and SOAP 1.2 subcodes as qualified names, `{namespace}local`
    qualified: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"SOAP fault {self.code or '(no code)'}: {self.message or '(no message)'}"

    @property
    def security(self) -> bool:
        """True for a WS-Security fault (`wsse:FailedAuthentication`, `wsse:InvalidSecurityToken`,
        `wsse:MessageExpired`...): the service refused the request's security header."""
        return any(etree.QName(q).namespace == WSSE_NS for q in self.qualified if q.startswith("{"))


def envelope_for(version: str, element: etree._Element) -> etree._Element:
    """A new envelope of `version` whose Body holds a copy of `element` (or `element` itself when it
    is already an envelope of that version)."""
    ns = _ENV_OF_VERSION[version]
    if element.tag == f"{{{ns}}}Envelope":
        return copy.deepcopy(element)
    envelope = etree.Element(f"{{{ns}}}Envelope", nsmap={"soap-env": ns})
    body = etree.SubElement(envelope, f"{{{ns}}}Body")
    body.append(copy.deepcopy(element))
    return envelope


def http_headers(version: str, soap_action: str | None) -> dict[str, str]:
    """Content-Type and action headers of a request (SOAPAction for 1.1, the `action` parameter for 1.2)."""
    action = soap_action or ""
    if version == "1.1":
        return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'}
    ctype = "application/soap+xml; charset=utf-8"
    if action:
        ctype += f'; action="{action}"'
    return {"Content-Type": ctype}


def envelope_parts(root: etree._Element) -> tuple[str | None, etree._Element | None]:
    """(version, Body) of an envelope; (None, None) when `root` is not a SOAP envelope."""
    for version, ns in _ENV_OF_VERSION.items():
        if root.tag == f"{{{ns}}}Envelope":
            return version, root.find(f"{{{ns}}}Body")
    return None, None


def find_fault(root: etree._Element) -> Fault | None:
    """The Fault of a response envelope (either SOAP version), or None."""
    version, body = envelope_parts(root)
    if body is None or version is None:
        return None
    ns = _ENV_OF_VERSION[version]
    fault = body.find(f"{{{ns}}}Fault")
    if fault is None:
        return None
    qualified: list[str] = []
    if version == "1.1":
        code_el = fault.find("faultcode")
        code = (code_el.text or "").strip() if code_el is not None else ""
        if code_el is not None and code:
            qualified.append(_qualified(code, code_el))
        message = (fault.findtext("faultstring") or "").strip()
        detail_el = fault.find("detail")
    else:
        value_el = fault.find(f"{{{ns}}}Code/{{{ns}}}Value")
        code = (value_el.text or "").strip() if value_el is not None else ""
        if value_el is not None and code:
            qualified.append(_qualified(code, value_el))
        sub = fault.find(f"{{{ns}}}Code/{{{ns}}}Subcode")
        while sub is not None:
            value_el = sub.find(f"{{{ns}}}Value")
            value = (value_el.text or "").strip() if value_el is not None else ""
            if value_el is not None and value:
                code += f"/{value}"
                qualified.append(_qualified(value, value_el))
            sub = sub.find(f"{{{ns}}}Subcode")
        message = (fault.findtext(f"{{{ns}}}Reason/{{{ns}}}Text") or "").strip()
        detail_el = fault.find(f"{{{ns}}}Detail")
    return Fault(code, message, _detail_text(detail_el), tuple(qualified))


def _qualified(value: str, el: etree._Element) -> str:
    """A QName value (`wsse:FailedAuthentication`) as `{namespace}local`, resolving its prefix in the
    scope of `el`; the value itself when the prefix is not declared."""
    prefix, _, local = value.rpartition(":")
    namespace = el.nsmap.get(prefix or None)
    return f"{{{namespace}}}{local}" if namespace else value


def header_properties(root: etree._Element) -> dict[str, str]:
    """Document properties from the SOAP Header of a response envelope: `soap_header_<Name>` for each
    header element (by local name, the first one of a name): the text of a simple element, the XML of
    one with child elements, whose simple children also give `soap_header_<Name>_<child>`."""
    version, _ = envelope_parts(root)
    if version is None:
        return {}
    header = root.find(f"{{{_ENV_OF_VERSION[version]}}}Header")
    props: dict[str, str] = {}
    if header is None:
        return props
    for el in header:
        if not isinstance(el.tag, str):
            continue
        key = f"soap_header_{etree.QName(el).localname}"
        if key in props:
            continue
        children = [c for c in el if isinstance(c.tag, str)]
        if not children:
            props[key] = (el.text or "").strip()
            continue
        props[key] = etree.tostring(el, encoding="unicode", with_tail=False)
        for child in children:
            if not any(isinstance(c.tag, str) for c in child):
                props.setdefault(f"{key}_{etree.QName(child).localname}", (child.text or "").strip())
    return props


def add_headers(envelope: etree._Element, elements: list[etree._Element]) -> None:
    """Append `elements` to the SOAP Header of `envelope` (made first in the envelope if it has none)."""
    if not elements:
        return
    version, _ = envelope_parts(envelope)
    ns = _ENV_OF_VERSION[version or "1.1"]
    header = envelope.find(f"{{{ns}}}Header")
    if header is None:
        header = etree.Element(f"{{{ns}}}Header")
        envelope.insert(0, header)
    header.extend(elements)


def _detail_text(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    children = [c for c in el if isinstance(c.tag, str)]
    if not children:
        return (el.text or "").strip() or None
    return "".join(etree.tostring(c, encoding="unicode", with_tail=False) for c in children)


def response_xml(body: etree._Element) -> bytes:
    """The outgoing XML document of a response Body: its only element (with the namespace declarations
    in scope), the Body itself when it holds several, or nothing for an empty Body."""
    children = [c for c in body if isinstance(c.tag, str)]
    if not children:
        return b""
    target = children[0] if len(children) == 1 else body
    return etree.tostring(target, encoding="utf-8", with_tail=False)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def jsonable(value: Any) -> Any:
    """Turn what zeep's `serialize_object` returns into JSON values: decimals become numbers when a
    float holds them exactly (strings otherwise), dates and times ISO 8601 strings, binary base64,
    raw XML elements (xsd:any) their serialized text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value() and abs(value) < 2**63:
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, etree._Element):
        return etree.tostring(value, encoding="unicode", with_tail=False)
    if isinstance(value, etree.QName):
        return value.text
    return str(value)
