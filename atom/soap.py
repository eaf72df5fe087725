"""SOAP listener toolkit: the pure functions behind the shared web server's `/ws/soap` (SOAP 1.1) and
`/ws/soap12` (SOAP 1.2) listeners.

- `parse_request` turns a request body into a `SoapRequest` (the operation element is the process's
  input document) or raises `SoapError("Client", ...)`;
- `build_response` wraps the documents that reached `return` into a response envelope;
- `build_fault` answers errors as SOAP Faults; `content_type` names the media type of a version;
- `generate_wsdl` describes every deployed SOAP listener (served at `/ws/soap?wsdl`).

Nothing here does I/O; every XML input goes through `atom.document.parse_xml` (no entity expansion,
no DTD, no network).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from .document import Document, parse_xml
from .errors import DocumentError

if TYPE_CHECKING:
    from .model import ProcessDef

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
SOAP_HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"
#: target namespace of generated WSDLs whose operations use several (or no) namespaces
DEFAULT_WSDL_NAMESPACE = "urn:atom:soap"

_ENVELOPE_NS = {"1.1": SOAP11_ENV, "1.2": SOAP12_ENV}
_ENV_PREFIX = {"1.1": "soap", "1.2": "env"}
_VERSION_OF_NS = {SOAP11_ENV: "1.1", SOAP12_ENV: "1.2"}
_MEDIA_TYPE = {"1.1": "text/xml", "1.2": "application/soap+xml"}
_VERSION_OF_MEDIA = {"text/xml": "1.1", "application/soap+xml": "1.2"}
_PATH = {"1.1": "/ws/soap", "1.2": "/ws/soap12"}
# SOAP 1.1 fault code -> SOAP 1.2 fault code, and back
_CODE_12 = {"Client": "Sender", "Server": "Receiver", "VersionMismatch": "VersionMismatch",
            "MustUnderstand": "MustUnderstand"}
_CODE_11 = {"Sender": "Client", "Receiver": "Server", "VersionMismatch": "VersionMismatch",
            "MustUnderstand": "MustUnderstand"}
# characters XML 1.0 cannot carry, even escaped
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class SoapError(Exception):
    """A SOAP request that cannot be served. `code` is "Client" (the request is at fault) or "Server".

    `version` is the SOAP version the request seemed to use ("1.1", "1.2") or None when unknown; the
    server answers the fault in that version, or in the version of the listener path otherwise.
    """

    def __init__(self, code: str, message: str, version: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.version = version

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class SoapRequest:
    """One parsed SOAP request.

    `payload` is the first child element of Body serialized on its own (UTF-8, no XML declaration),
    carrying every namespace declaration in scope, so QName values such as `xsi:type="sf:Account"`
    stay resolvable; it becomes the process's input document. `header` is the serialized Header
    element, or None when the envelope has none.
    """

    version: str
    operation: str
    namespace: str | None
    payload: bytes
    header: bytes | None = None


def content_type(version: str) -> str:
    """The Content-Type of SOAP messages of a version: text/xml (1.1) or application/soap+xml (1.2)."""
    return f"{_MEDIA_TYPE[_check_version(version)]}; charset=utf-8"


def parse_request(body: bytes, content_type: str) -> SoapRequest:
    """Parse a SOAP request body.

    The version comes from the envelope namespace. A Content-Type naming the other SOAP version
    (`text/xml` is SOAP 1.1, `application/soap+xml` is SOAP 1.2) is refused; other types (such as
    `application/xml`) are accepted and the envelope decides. Raises `SoapError("Client", ...)` for
    an empty or malformed body, entity or DOCTYPE declarations (refused before anything is expanded),
    a root that is not a SOAP envelope, a missing Body, or a Body without an element.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    hinted = _VERSION_OF_MEDIA.get(media)
    if not body or not body.strip():
        raise SoapError("Client", "the request body is empty: expected a SOAP envelope", hinted)
    try:
        root = parse_xml(body, "SOAP request")
    except DocumentError as exc:
        raise SoapError("Client", str(exc), hinted) from None
    docinfo: Any = root.getroottree().docinfo  # (the lxml stubs lack `doctype`)
    if docinfo.doctype:
        raise SoapError("Client", "SOAP request is not accepted: a SOAP message must not contain a DOCTYPE",
                        hinted)
    if not isinstance(root.tag, str):
        raise SoapError("Client", "SOAP request has no root element", hinted)
    qname = etree.QName(root)
    version = _VERSION_OF_NS.get(qname.namespace or "")
    if qname.localname != "Envelope" or version is None:
        if qname.localname == "Envelope":
            why = f"unknown SOAP envelope namespace '{qname.namespace or ''}'"
        else:
            why = f"the root element is {_clark(qname)}"
        raise SoapError(
            "Client",
            f"not a SOAP envelope: {why}; expected {{{SOAP11_ENV}}}Envelope (SOAP 1.1) "
            f"or {{{SOAP12_ENV}}}Envelope (SOAP 1.2)", hinted)
    if hinted is not None and hinted != version:
        raise SoapError(
            "Client",
            f"SOAP {version} envelope sent with Content-Type '{media}', which is SOAP {hinted}; "
            f"SOAP {version} uses '{_MEDIA_TYPE[version]}'", version)
    env_ns = _ENVELOPE_NS[version]
    header = body_el = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag == f"{{{env_ns}}}Header" and header is None and body_el is None:
            header = child
        elif child.tag == f"{{{env_ns}}}Body" and body_el is None:
            body_el = child
    if body_el is None:
        raise SoapError("Client", f"SOAP {version} envelope has no Body element", version)
    first = next((c for c in body_el if isinstance(c.tag, str)), None)
    if first is None:
        raise SoapError("Client", "SOAP Body is empty: expected the operation element as its first child",
                        version)
    fq = etree.QName(first)
    return SoapRequest(
        version=version,
        operation=fq.localname,
        namespace=fq.namespace or None,
        payload=etree.tostring(first, encoding="utf-8", with_tail=False),
        header=etree.tostring(header, encoding="utf-8", with_tail=False) if header is not None else None,
    )


def build_response(version: str, listen_cfg: Mapping[str, Any], docs: list[Document]) -> bytes:
    """The response envelope of a SOAP listener for the documents that reached `return`.

    `listen_cfg["soap"]` gives `operation`, `namespace` and `response` (default `<operation>Response`).
    When every document's root element has the response element's local name, each is embedded in
    Body as it is (the process built the whole response). Otherwise all documents go, in order, into
    one `{namespace}response` element; a document written without any namespace then takes the
    operation's namespace (as `elementFormDefault="qualified"` schemas expect: Salesforce's `<Ack>`).
    No documents, or only empty ones, give an empty response element.
    Raises `SoapError("Server", ...)` when a document is not XML.
    """
    version = _check_version(version)
    soap_cfg = listen_cfg.get("soap") or {}
    operation = str(soap_cfg.get("operation") or "")
    namespace = soap_cfg.get("namespace") or None
    response = soap_cfg.get("response") or f"{operation}Response"
    roots: list[etree._Element] = []
    for i, doc in enumerate(docs, 1):
        if not doc.data.strip():
            continue
        try:
            roots.append(doc.xml)
        except DocumentError as exc:
            raise SoapError("Server", f"response document {i} of {len(docs)} for SOAP operation "
                                      f"'{operation}' is not XML: {exc}", version) from None
    try:
        etree.QName(namespace, response)
    except ValueError:
        raise SoapError("Server", f"SOAP operation '{operation}': '{response}' is not a valid response "
                                  "element name", version) from None
    envelope, body = _envelope(version)
    if roots and all(etree.QName(r).localname == response for r in roots):
        for r in roots:
            body.append(copy.deepcopy(r))
    else:
        items = [copy.deepcopy(r) for r in roots]
        if namespace:
            for item in items:
                if not etree.QName(item).namespace:
                    _qualify(item, namespace)
            # a default namespace on the wrapper would capture unqualified descendants: use a prefix then
            unqualified = any(isinstance(e.tag, str) and not etree.QName(e).namespace
                              for item in items for e in item.iter())
            wrapper = etree.SubElement(body, f"{{{namespace}}}{response}",
                                       nsmap=_nsmap({"tns" if unqualified else None: namespace}))
        else:
            wrapper = etree.SubElement(body, response)
        for item in items:
            wrapper.append(item)
    return _serialize(envelope)


def build_fault(version: str, code: str, message: str, detail: str | None = None) -> bytes:
    """A SOAP Fault envelope. `code` is "Client" or "Server" (SOAP 1.2's "Sender" / "Receiver",
    "VersionMismatch" and "MustUnderstand" are accepted too and mapped for the version).

    SOAP 1.1: `faultcode` `soap:Client` / `soap:Server`, `faultstring`, optional `detail` (text).
    SOAP 1.2: `Code/Value` `env:Sender` / `env:Receiver`, `Reason/Text` (xml:lang="en"), optional `Detail`.
    Characters XML cannot carry are dropped from the message and the detail.
    """
    version = _check_version(version)
    if code not in _CODE_12 and code not in _CODE_11:
        raise ValueError(f"unknown SOAP fault code '{code}': expected Client or Server")
    envelope, body = _envelope(version)
    ns, prefix = _ENVELOPE_NS[version], _ENV_PREFIX[version]
    fault = etree.SubElement(body, f"{{{ns}}}Fault")
    if version == "1.1":
        etree.SubElement(fault, "faultcode").text = f"{prefix}:{_CODE_11.get(code, code)}"
        etree.SubElement(fault, "faultstring").text = _xml_text(message)
        if detail is not None:
            etree.SubElement(fault, "detail").text = _xml_text(detail)
    else:
        value = etree.SubElement(etree.SubElement(fault, f"{{{ns}}}Code"), f"{{{ns}}}Value")
        value.text = f"{prefix}:{_CODE_12.get(code, code)}"
        text = etree.SubElement(etree.SubElement(fault, f"{{{ns}}}Reason"), f"{{{ns}}}Text")
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        text.text = _xml_text(message)
        if detail is not None:
            etree.SubElement(fault, f"{{{ns}}}Detail").text = _xml_text(detail)
    return _serialize(envelope)


@dataclass(frozen=True)
class SoapOperation:
    """One SOAP listener operation: its request element `{namespace}name`, its response element
    `{namespace}response`, and the process that serves it."""

    name: str
    namespace: str | None
    response: str
    process: str


def soap_operations(processes: Iterable[ProcessDef]) -> list[SoapOperation]:
    """The SOAP listener operations of `processes`, sorted by operation name. When two processes
    declare the same operation (the loader refuses that), the first by process name wins."""
    found: dict[str, SoapOperation] = {}
    for pdef in sorted(processes, key=lambda p: p.name):
        if pdef.start.kind != "listen":
            continue
        cfg = pdef.start.config.get("soap")
        if not cfg or not cfg.get("operation"):
            continue
        name = str(cfg["operation"])
        if name not in found:
            found[name] = SoapOperation(name, cfg.get("namespace") or None,
                                         cfg.get("response") or f"{name}Response", pdef.name)
    return [found[k] for k in sorted(found)]


def generate_wsdl(processes: list[ProcessDef], base_url: str, version: str = "1.1") -> bytes:
    """A WSDL 1.1 document describing every SOAP listener among `processes`.

    Each operation `op` (namespace `ns`, response `resp`) has the input element `{ns}op` and the
    output element `{ns}resp`, both declared loosely (any attributes, any child elements, text) so
    every payload validates; one schema per namespace (operations without a namespace share a schema
    without target namespace). Binding: document/literal over HTTP, SOAP 1.1 (or 1.2 when asked),
    `soapAction` = the operation name (the listener dispatches on the Body element, not on the
    action). Service `AtomSoapService`, port `AtomSoapPort` at `base_url + "/ws/soap"` (or
    `/ws/soap12`). Processes without a SOAP listener are ignored; none at all give a valid WSDL with
    no operation.
    """
    version = _check_version(version)
    ops = soap_operations(processes)
    namespaces = sorted({op.namespace for op in ops if op.namespace})
    tns = namespaces[0] if len(namespaces) == 1 and all(op.namespace for op in ops) else DEFAULT_WSDL_NAMESPACE
    soap_ns = WSDL_SOAP11 if version == "1.1" else WSDL_SOAP12
    soap_prefix = "soap" if version == "1.1" else "soap12"
    prefixes = {ns: f"ns{i}" for i, ns in enumerate(namespaces)}
    nsmap: dict[str | None, str] = {"wsdl": WSDL_NS, soap_prefix: soap_ns, "xsd": XSD_NS, "tns": tns}
    nsmap.update({p: ns for ns, p in prefixes.items()})

    def w(tag: str) -> str:
        return f"{{{WSDL_NS}}}{tag}"

    def x(tag: str) -> str:
        return f"{{{XSD_NS}}}{tag}"

    def s(tag: str) -> str:
        return f"{{{soap_ns}}}{tag}"

    def ref(ns: str | None, name: str) -> str:
        return f"{prefixes[ns]}:{name}" if ns else name

    defs = etree.Element(w("definitions"), nsmap=_nsmap(nsmap), name="AtomSoapListeners", targetNamespace=tns)
    etree.SubElement(defs, w("documentation")).text = (
        "SOAP listeners of this Atom: document/literal operations that accept any content.")
    types = etree.SubElement(defs, w("types"))
    by_ns: dict[str | None, list[SoapOperation]] = {}
    for op in ops:
        by_ns.setdefault(op.namespace, []).append(op)
    for ns in sorted(by_ns, key=lambda n: n or ""):
        schema = etree.SubElement(types, x("schema"), elementFormDefault="qualified")
        if ns:
            schema.set("targetNamespace", ns)
        declared: set[str] = set()
        for op in by_ns[ns]:
            for name in (op.name, op.response):
                if name in declared:
                    continue
                declared.add(name)
                el = etree.SubElement(schema, x("element"), name=name)
                ctype = etree.SubElement(el, x("complexType"), mixed="true")
                seq = etree.SubElement(ctype, x("sequence"))
                etree.SubElement(seq, x("any"), namespace="##any", processContents="lax",
                                 minOccurs="0", maxOccurs="unbounded")
                etree.SubElement(ctype, x("anyAttribute"), namespace="##any", processContents="lax")
    for op in ops:
        for suffix, element in (("Request", op.name), ("Response", op.response)):
            msg = etree.SubElement(defs, w("message"), name=f"{op.name}{suffix}")
            etree.SubElement(msg, w("part"), name="parameters", element=ref(op.namespace, element))
    port_type = etree.SubElement(defs, w("portType"), name="AtomSoapPortType")
    for op in ops:
        o = etree.SubElement(port_type, w("operation"), name=op.name)
        etree.SubElement(o, w("documentation")).text = f"process '{op.process}'"
        etree.SubElement(o, w("input"), message=f"tns:{op.name}Request")
        etree.SubElement(o, w("output"), message=f"tns:{op.name}Response")
    binding = etree.SubElement(defs, w("binding"), name="AtomSoapBinding", type="tns:AtomSoapPortType")
    etree.SubElement(binding, s("binding"), style="document", transport=SOAP_HTTP_TRANSPORT)
    for op in ops:
        o = etree.SubElement(binding, w("operation"), name=op.name)
        etree.SubElement(o, s("operation"), soapAction=op.name, style="document")
        for direction in ("input", "output"):
            etree.SubElement(etree.SubElement(o, w(direction)), s("body"), use="literal")
    service = etree.SubElement(defs, w("service"), name="AtomSoapService")
    port = etree.SubElement(service, w("port"), name="AtomSoapPort", binding="tns:AtomSoapBinding")
    etree.SubElement(port, s("address"), location=base_url.rstrip("/") + _PATH[version])
    return etree.tostring(defs, xml_declaration=True, encoding="utf-8", pretty_print=True)


# ---------------------------------------------------------------------------------------- internals


def _check_version(version: str) -> str:
    if version not in _ENVELOPE_NS:
        raise ValueError(f"unknown SOAP version '{version}': expected 1.1 or 1.2")
    return version


def _envelope(version: str) -> tuple[etree._Element, etree._Element]:
    ns = _ENVELOPE_NS[version]
    envelope = etree.Element(f"{{{ns}}}Envelope", nsmap={_ENV_PREFIX[version]: ns})
    return envelope, etree.SubElement(envelope, f"{{{ns}}}Body")


def _nsmap(mapping: dict[str | None, str]) -> Any:
    """A namespace map that may bind the default namespace (key None), which the lxml stubs reject."""
    return mapping


def _serialize(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _qualify(root: etree._Element, namespace: str) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and not etree.QName(el).namespace:
            el.tag = f"{{{namespace}}}{el.tag}"


def _clark(qname: etree.QName) -> str:
    return f"{{{qname.namespace}}}{qname.localname}" if qname.namespace else qname.localname


def _xml_text(value: str) -> str:
    return _XML_ILLEGAL.sub("", value)


__all__ = [
    "SoapError", "SoapOperation", "SoapRequest", "build_fault", "build_response", "content_type", "generate_wsdl",
    "parse_request", "soap_operations",
]
