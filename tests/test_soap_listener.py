"""The SOAP listener toolkit (atom.soap): parsing requests, building responses and faults, and a
generated WSDL that a real zeep client loads and calls through a local aiohttp app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import requests
import zeep
import zeep.exceptions
from aiohttp import web
from lxml import etree

from atom.document import Document
from atom.model import ProcessDef, StartDef
from atom.soap import (
    SOAP11_ENV,
    SOAP12_ENV,
    SoapError,
    SoapRequest,
    build_fault,
    build_response,
    content_type,
    generate_wsdl,
    parse_request,
)

FIXTURES = Path(__file__).parent / "fixtures"
SF_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
XSD = "http://www.w3.org/2001/XMLSchema"


def salesforce_envelope() -> bytes:
    return (FIXTURES / "salesforce_notification.xml").read_bytes()


def process(name: str, soap: dict[str, Any] | None, kind: str = "listen") -> ProcessDef:
    config: dict[str, Any] = {"input": "xml", "output": "xml"}
    if soap is not None:
        config["soap"] = soap
    return ProcessDef(
        name=name, file=f"{name}.yaml", description="", mode="general", allow_simultaneous=True,
        start=StartDef(kind, MappingProxyType(config if kind == "listen" else {})),
        shapes=MappingProxyType({}), first="", properties=MappingProxyType({}),
    )


def body_children(envelope: bytes, version: str = "1.1") -> list[etree._Element]:
    root = etree.fromstring(envelope)
    ns = SOAP11_ENV if version == "1.1" else SOAP12_ENV
    assert root.tag == f"{{{ns}}}Envelope"
    body = root.find(f"{{{ns}}}Body")
    assert body is not None
    return list(body)


def envelope(version: str, body: str, header: str = "") -> bytes:
    ns = SOAP11_ENV if version == "1.1" else SOAP12_ENV
    head = f"<e:Header>{header}</e:Header>" if header else ""
    return f'<?xml version="1.0"?><e:Envelope xmlns:e="{ns}">{head}<e:Body>{body}</e:Body></e:Envelope>'.encode()


# ------------------------------------------------------------------------------------------ parsing


def test_parse_salesforce_outbound_message() -> None:
    req = parse_request(salesforce_envelope(), "text/xml; charset=utf-8")
    assert isinstance(req, SoapRequest)
    assert (req.version, req.operation, req.namespace, req.header) == ("1.1", "notifications", SF_NS, None)
    payload = etree.fromstring(req.payload)
    assert payload.tag == f"{{{SF_NS}}}notifications"
    assert payload.findtext(f"{{{SF_NS}}}OrganizationId") == "00D5g000004SxYzEAK"
    assert payload.findtext(f"{{{SF_NS}}}ActionId") == "04k5g000000PqRsAAK"
    assert payload.findtext(f"{{{SF_NS}}}EnterpriseUrl", "").startswith("https://")
    assert payload.findtext(f"{{{SF_NS}}}PartnerUrl", "").startswith("https://")
    notifications = payload.findall(f"{{{SF_NS}}}Notification")
    assert [n.findtext(f"{{{SF_NS}}}Id") for n in notifications] == [
        "04l5g00000AbCdEAAV", "04l5g00000AbCdFAAV", "04l5g00000AbCdGAAV"]
    sobject = notifications[1].find(f"{{{SF_NS}}}sObject")
    assert sobject is not None
    assert sobject.findtext(f"{{{SOBJECT_NS}}}Name") == "Burlington Textiles Corp of America"
    # the payload stands alone: xsi (declared on the envelope) and sf stay resolvable
    prefix, local = sobject.get(f"{{{XSI}}}type", "").split(":")
    assert (sobject.nsmap[prefix], local) == (SOBJECT_NS, "Account")
    assert b"soapenv:Body" not in req.payload and not req.payload.startswith(b"<?xml")


def test_parse_soap12_with_header() -> None:
    body = envelope("1.2", '<m:GetQuote xmlns:m="urn:quotes"><m:symbol>ACME</m:symbol></m:GetQuote>',
                    header='<t:Trace xmlns:t="urn:trace">abc</t:Trace>')
    req = parse_request(body, 'application/soap+xml; charset=utf-8; action="urn:quotes/GetQuote"')
    assert (req.version, req.operation, req.namespace) == ("1.2", "GetQuote", "urn:quotes")
    assert etree.fromstring(req.payload).findtext("{urn:quotes}symbol") == "ACME"
    assert req.header is not None
    header = etree.fromstring(req.header)
    assert header.tag == f"{{{SOAP12_ENV}}}Header"
    assert header.findtext("{urn:trace}Trace") == "abc"


def test_parse_unqualified_operation_and_lenient_content_type() -> None:
    body = envelope("1.1", "<!-- first --> <ping><n>1</n></ping>")
    req = parse_request(body, "application/xml")
    assert (req.version, req.operation, req.namespace) == ("1.1", "ping", None)
    payload = etree.fromstring(req.payload)
    assert (payload.tag, payload.findtext("n")) == ("ping", "1")


@pytest.mark.parametrize(("version", "ctype", "expected"), [
    ("1.1", "application/soap+xml", "SOAP 1.1 envelope sent with Content-Type 'application/soap+xml'"),
    ("1.2", "text/xml; charset=utf-8", "SOAP 1.2 envelope sent with Content-Type 'text/xml'"),
])
def test_content_type_of_the_other_version_is_refused(version: str, ctype: str, expected: str) -> None:
    with pytest.raises(SoapError) as err:
        parse_request(envelope(version, "<op/>"), ctype)
    assert err.value.code == "Client"
    assert expected in err.value.message
    assert err.value.version == version


@pytest.mark.parametrize(("body", "expected"), [
    (b"", "the request body is empty: expected a SOAP envelope"),
    (b"   \n", "the request body is empty"),
    (b"<soap:Envelope", "SOAP request is not well-formed XML"),
    (b"not xml at all", "SOAP request is not well-formed XML"),
    (b"<order><id>1</id></order>", "not a SOAP envelope: the root element is order"),
    (b'<e:Envelope xmlns:e="urn:other"><e:Body><op/></e:Body></e:Envelope>',
     "not a SOAP envelope: unknown SOAP envelope namespace 'urn:other'"),
    (f'<e:Envelope xmlns:e="{SOAP11_ENV}"><e:Header/></e:Envelope>'.encode(),
     "SOAP 1.1 envelope has no Body element"),
    (envelope("1.1", ""), "SOAP Body is empty: expected the operation element"),
    (envelope("1.2", "  <!-- nothing -->  "), "SOAP Body is empty"),
    (b'<!DOCTYPE e:Envelope><e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/">'
     b"<e:Body><op/></e:Body></e:Envelope>", "a SOAP message must not contain a DOCTYPE"),
])
def test_malformed_requests_are_client_errors(body: bytes, expected: str) -> None:
    with pytest.raises(SoapError) as err:
        parse_request(body, "application/xml")
    assert err.value.code == "Client"
    assert expected in err.value.message, err.value.message


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
 <soap:Body><notifications>&lol9;</notifications></soap:Body>
</soap:Envelope>"""


def test_billion_laughs_is_refused_without_expansion() -> None:
    started = time.perf_counter()
    with pytest.raises(SoapError) as err:
        parse_request(BILLION_LAUGHS, "text/xml")
    assert time.perf_counter() - started < 1.0
    assert err.value.code == "Client"
    assert "entity declarations are not allowed" in err.value.message
    assert "lollol" not in err.value.message


def test_billion_laughs_in_utf16_is_refused_too() -> None:
    body = BILLION_LAUGHS.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>')
    with pytest.raises(SoapError) as err:
        parse_request(body.decode().encode("utf-16"), "text/xml")
    assert err.value.code == "Client"
    assert "lollol" not in err.value.message


def test_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    body = (f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
            f'<soap:Envelope xmlns:soap="{SOAP11_ENV}"><soap:Body><op>&xxe;</op></soap:Body>'
            f"</soap:Envelope>").encode()
    with pytest.raises(SoapError) as err:
        parse_request(body, "text/xml")
    assert err.value.code == "Client"
    assert "TOP-SECRET-CONTENT" not in str(err.value)


# ---------------------------------------------------------------------------------------- responses

SF_LISTEN = {"input": "xml", "output": "xml", "soap": {"operation": "notifications", "namespace": SF_NS}}


def test_salesforce_ack_is_wrapped_in_notifications_response() -> None:
    out = build_response("1.1", SF_LISTEN, [Document(b"<Ack>true</Ack>")])
    assert out.startswith(b"<?xml")
    [resp] = body_children(out)
    assert resp.tag == f"{{{SF_NS}}}notificationsResponse"
    # exactly the shape Salesforce expects: Ack in the outbound namespace, declared by default
    assert resp.findtext(f"{{{SF_NS}}}Ack") == "true"
    assert b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>' in out


def test_a_document_that_is_the_response_element_is_embedded_as_is() -> None:
    doc = Document(f'<r:notificationsResponse xmlns:r="{SF_NS}"><r:Ack>false</r:Ack>'
                   f"</r:notificationsResponse>")
    [resp] = body_children(build_response("1.1", SF_LISTEN, [doc]))
    assert resp.tag == f"{{{SF_NS}}}notificationsResponse"
    assert [c.tag for c in resp] == [f"{{{SF_NS}}}Ack"]
    assert resp.findtext(f"{{{SF_NS}}}Ack") == "false"


def test_several_documents_are_wrapped_in_order_and_namespaced_ones_kept() -> None:
    listen = {"soap": {"operation": "lookup", "namespace": "urn:crm", "response": "lookupResult"}}
    docs = [Document("<Customer><Id>1</Id></Customer>"),
            Document('<x:Customer xmlns:x="urn:other"><Id>2</Id></x:Customer>')]
    out = build_response("1.2", listen, docs)
    [resp] = body_children(out, "1.2")
    assert resp.tag == "{urn:crm}lookupResult"
    first, second = list(resp)
    assert first.tag == "{urn:crm}Customer" and first.findtext("{urn:crm}Id") == "1"
    # a namespaced document keeps its unqualified children unqualified
    assert second.tag == "{urn:other}Customer" and second.findtext("Id") == "2"


def test_no_documents_give_an_empty_response_element() -> None:
    [resp] = body_children(build_response("1.1", SF_LISTEN, []))
    assert resp.tag == f"{{{SF_NS}}}notificationsResponse"
    assert len(resp) == 0 and not (resp.text or "").strip()
    [resp] = body_children(build_response("1.1", {"soap": {"operation": "ping"}}, [Document(b"")]))
    assert resp.tag == "pingResponse" and len(resp) == 0


def test_without_namespace_the_wrapper_and_documents_stay_unqualified() -> None:
    [resp] = body_children(build_response("1.1", {"soap": {"operation": "ping"}}, [Document("<pong/>")]))
    assert resp.tag == "pingResponse"
    assert [c.tag for c in resp] == ["pong"]


def test_a_document_that_is_not_xml_is_a_server_error() -> None:
    with pytest.raises(SoapError) as err:
        build_response("1.1", SF_LISTEN, [Document(b"<Ack>true</Ack>"), Document(b'{"ack": true}')])
    assert err.value.code == "Server"
    assert "response document 2 of 2 for SOAP operation 'notifications' is not XML" in err.value.message


def test_an_invalid_response_name_is_a_server_error() -> None:
    with pytest.raises(SoapError) as err:
        build_response("1.1", {"soap": {"operation": "op", "response": "not valid"}}, [])
    assert (err.value.code, err.value.message) == (
        "Server", "SOAP operation 'op': 'not valid' is not a valid response element name")


# ------------------------------------------------------------------------------------------- faults


def test_soap11_fault() -> None:
    out = build_fault("1.1", "Client", "unknown operation 'foo'", detail="executionId=execution-1")
    [fault] = body_children(out)
    assert fault.tag == f"{{{SOAP11_ENV}}}Fault"
    code = fault.findtext("faultcode")
    assert code == "soap:Client"
    prefix = code.split(":")[0]
    assert fault.nsmap[prefix] == SOAP11_ENV
    assert fault.findtext("faultstring") == "unknown operation 'foo'"
    assert fault.findtext("detail") == "executionId=execution-1"
    [fault] = body_children(build_fault("1.1", "Server", "process failed"))
    assert fault.findtext("faultcode") == "soap:Server"
    assert fault.find("detail") is None


def test_soap12_fault() -> None:
    out = build_fault("1.2", "Server", "process error: boom \x00\x07", detail="more")
    [fault] = body_children(out, "1.2")
    e = f"{{{SOAP12_ENV}}}"
    assert fault.tag == f"{e}Fault"
    assert fault.findtext(f"{e}Code/{e}Value") == "env:Receiver"
    text = fault.find(f"{e}Reason/{e}Text")
    assert text is not None and text.text == "process error: boom "
    assert text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert fault.findtext(f"{e}Detail") == "more"
    [fault] = body_children(build_fault("1.2", "Client", "bad request"), "1.2")
    assert fault.findtext(f"{e}Code/{e}Value") == "env:Sender"
    [fault] = body_children(build_fault("1.1", "Sender", "bad request"))
    assert fault.findtext("faultcode") == "soap:Client"


def test_fault_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown SOAP fault code 'Oops'"):
        build_fault("1.1", "Oops", "x")
    with pytest.raises(ValueError, match=r"unknown SOAP version '2\.0'"):
        build_fault("2.0", "Client", "x")


def test_content_types() -> None:
    assert content_type("1.1") == "text/xml; charset=utf-8"
    assert content_type("1.2") == "application/soap+xml; charset=utf-8"


# --------------------------------------------------------------------------------------------- WSDL

PROCESSES = [
    process("sf-accounts", {"operation": "notifications", "namespace": SF_NS}),
    process("echo", {"operation": "echo", "namespace": "urn:echo", "response": "echoResult"}),
    process("ping", {"operation": "ping"}),
    process("failing", {"operation": "explode", "namespace": "urn:echo"}),
    process("rest-orders", None),
    process("nightly", None, kind="schedule"),
]


def xp(root: etree._Element, path: str, **ns: str) -> list[Any]:
    result: Any = root.xpath(path, namespaces={"w": WSDL, "x": XSD, **ns})
    return list(result)


def test_wsdl_structure() -> None:
    root = etree.fromstring(generate_wsdl(PROCESSES, "http://127.0.0.1:9090/"))
    soap11 = "http://schemas.xmlsoap.org/wsdl/soap/"
    assert root.tag == f"{{{WSDL}}}definitions"
    assert xp(root, "//w:portType/w:operation/@name") == ["echo", "explode", "notifications", "ping"]
    schemas = {s.get("targetNamespace"): xp(s, "x:element/@name") for s in xp(root, "//x:schema")}
    assert schemas == {None: ["ping", "pingResponse"],
                       SF_NS: ["notifications", "notificationsResponse"],
                       "urn:echo": ["echo", "echoResult", "explode", "explodeResponse"]}
    assert xp(root, "//s:binding/@style", s=soap11) == ["document"]
    assert set(xp(root, "//s:body/@use", s=soap11)) == {"literal"}
    assert xp(root, "//w:service/w:port/s:address/@location", s=soap11) == ["http://127.0.0.1:9090/ws/soap"]
    root12 = etree.fromstring(generate_wsdl(PROCESSES, "http://127.0.0.1:9090", "1.2"))
    assert xp(root12, "//w:service/w:port/s:address/@location", s="http://schemas.xmlsoap.org/wsdl/soap12/") == [
        "http://127.0.0.1:9090/ws/soap12"]


def test_wsdl_of_a_single_namespace_uses_it_as_target_namespace() -> None:
    root = etree.fromstring(generate_wsdl(PROCESSES[:1], "http://127.0.0.1:9090"))
    assert root.get("targetNamespace") == SF_NS


def test_wsdl_without_soap_listeners_is_still_loadable(tmp_path: Path) -> None:
    path = tmp_path / "empty.wsdl"
    path.write_bytes(generate_wsdl(PROCESSES[-2:], "http://127.0.0.1:9090"))
    client = zeep.Client(str(path))
    assert list(client.wsdl.services) == ["AtomSoapService"]
    assert dict(client.service._binding.all()) == {}


Handler = Callable[[SoapRequest], list[Document]]


def listener_app(processes: list[ProcessDef], handlers: dict[str, Handler]) -> web.Application:
    """The smallest SOAP server built on atom.soap: WSDL on ?wsdl, one handler per operation."""
    by_operation = {p.start.config["soap"]["operation"]: p for p in processes
                    if p.start.kind == "listen" and p.start.config.get("soap")}

    async def endpoint(request: web.Request) -> web.Response:
        version = "1.2" if request.path.endswith("soap12") else "1.1"
        if request.method == "GET" and "wsdl" in request.query:
            base = str(request.url.origin())
            return web.Response(body=generate_wsdl(processes, base, version), content_type="text/xml")
        try:
            req = parse_request(await request.read(), request.headers.get("Content-Type", ""))
            pdef = by_operation.get(req.operation)
            if pdef is None:
                raise SoapError("Client", f"no SOAP listener for operation '{req.operation}'", req.version)
            try:
                docs = handlers[req.operation](req)
            except Exception as exc:
                raise SoapError("Server", f"process '{pdef.name}' failed: {exc}", req.version) from exc
            body = build_response(req.version, pdef.start.config, docs)
            return web.Response(body=body, headers={"Content-Type": content_type(req.version)})
        except SoapError as err:
            fault_version = err.version or version
            return web.Response(status=500, body=build_fault(fault_version, err.code, err.message),
                                headers={"Content-Type": content_type(fault_version)})

    app = web.Application()
    app.router.add_route("*", "/ws/soap", endpoint)
    app.router.add_route("*", "/ws/soap12", endpoint)
    return app


def call_with_zeep(wsdl_url: str, operation: str, **kwargs: Any) -> Any:
    """Load the WSDL and call one operation with a plain (blocking) zeep client."""
    session = requests.Session()
    try:
        client = zeep.Client(wsdl_url, transport=zeep.Transport(session=session, timeout=10,
                                                                operation_timeout=10))
        return getattr(client.service, operation)(**kwargs)
    finally:
        session.close()


def notifications_handler(seen: list[SoapRequest]) -> Handler:
    def handle(req: SoapRequest) -> list[Document]:
        seen.append(req)
        return [Document(b"<Ack>true</Ack>")]
    return handle


def echo_handler(req: SoapRequest) -> list[Document]:
    payload = etree.fromstring(req.payload)
    return [Document(etree.tostring(child)) for child in payload]


def explode_handler(req: SoapRequest) -> list[Document]:
    raise RuntimeError("the ERP refused the order")


async def test_generated_wsdl_drives_a_real_zeep_client(aiohttp_server: Any) -> None:
    seen: list[SoapRequest] = []
    handlers: dict[str, Handler] = {"notifications": notifications_handler(seen), "echo": echo_handler,
                                    "ping": lambda req: [], "explode": explode_handler}
    server = await aiohttp_server(listener_app(PROCESSES, handlers))
    wsdl_url = str(server.make_url("/ws/soap?wsdl"))

    # a Salesforce-like sender: the notifications content goes into the operation element
    sf_payload = etree.fromstring(parse_request(salesforce_envelope(), "text/xml").payload)
    result = await asyncio.to_thread(call_with_zeep, wsdl_url, "notifications", _value_1=list(sf_payload))
    [ack] = result._value_1
    assert (ack.tag, ack.text) == (f"{{{SF_NS}}}Ack", "true")
    [req] = seen
    received = etree.fromstring(req.payload)
    assert (req.operation, req.namespace) == ("notifications", SF_NS)
    assert len(received.findall(f"{{{SF_NS}}}Notification")) == 3

    item = etree.Element("{urn:orders}Order", nsmap={"o": "urn:orders"})
    etree.SubElement(item, "{urn:orders}Id").text = "42"
    result = await asyncio.to_thread(call_with_zeep, wsdl_url, "echo", _value_1=[item])
    [order] = result._value_1
    assert order.tag == "{urn:orders}Order" and order.findtext("{urn:orders}Id") == "42"

    result = await asyncio.to_thread(call_with_zeep, wsdl_url, "ping")
    assert not result._value_1

    with pytest.raises(zeep.exceptions.Fault) as fault:
        await asyncio.to_thread(call_with_zeep, wsdl_url, "explode")
    assert fault.value.code == "soap:Server"
    assert fault.value.message == "process 'failing' failed: the ERP refused the order"


async def test_generated_soap12_wsdl_drives_a_real_zeep_client(aiohttp_server: Any) -> None:
    server = await aiohttp_server(listener_app(PROCESSES, {"echo": echo_handler}))
    wsdl_url = str(server.make_url("/ws/soap12?wsdl"))
    item = etree.Element("{urn:echo}line")
    item.text = "hello"
    result = await asyncio.to_thread(call_with_zeep, wsdl_url, "echo", _value_1=[item])
    [line] = result._value_1
    assert (line.tag, line.text) == ("{urn:echo}line", "hello")
