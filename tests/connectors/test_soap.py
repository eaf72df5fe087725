"""The `soap` connector against a real SOAP service on 127.0.0.1 (an aiohttp app answering envelopes
for the calculator WSDL in tests/fixtures)."""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lxml import etree

from atom.connector import OperationContext
from atom.document import Document
from atom.errors import ConnectorError
from atom.soap import SoapError, build_fault, build_response, content_type, parse_request
from atom.spec import CheckContext
from atom.yamlio import Where
from connectors.soap import SoapConnector
from tests.services import free_port

WSDL_FILE = Path(__file__).parent.parent / "fixtures" / "calculator.wsdl"
NS = "http://example.com/calculator"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
FAST_RETRY = {"attempts": 3, "backoff": "10ms", "max_backoff": "50ms"}


class Calculator:
    """A SOAP 1.1 / 1.2 calculator: Add, Divide (a fault on division by zero), GetQuote."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.unavailable = 0  # answer 503 (no fault) to this many calls first
        self.basic: str | None = None  # expected Authorization header
        self.wsse: tuple[str, str] | None = None  # expected UsernameToken
        self.delay = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/calculator", self.wsdl)
        app.router.add_post("/calculator", self.endpoint)
        app.router.add_post("/not-found", self.not_found)
        return app

    async def not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such endpoint")

    def authorized(self, request: web.Request) -> bool:
        return self.basic is None or request.headers.get("Authorization") == self.basic

    async def wsdl(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return web.Response(status=401, text="authentication required")
        address = str(request.url.origin()) + "/calculator"
        text = WSDL_FILE.read_text().replace("http://127.0.0.1:9/calculator", address)
        return web.Response(text=text, content_type="text/xml")

    async def endpoint(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.Response(status=503, text="<html>busy</html>", content_type="text/html",
                                headers={"Retry-After": "0"})
        if not self.authorized(request):
            return web.Response(status=401, text="authentication required")
        version = "1.1"
        try:
            req = parse_request(body, request.headers.get("Content-Type", ""))
            version = req.version
            self.check_wsse(req.header)
            answer = self.compute(req.operation, etree.fromstring(req.payload))
        except SoapError as err:
            return web.Response(status=500, body=build_fault(err.version or version, err.code, err.message,
                                                             detail=getattr(err, "detail", None)),
                                headers={"Content-Type": content_type(err.version or version)})
        listen = {"soap": {"operation": req.operation, "namespace": NS}}
        return web.Response(body=build_response(version, listen, [Document(answer)]),
                            headers={"Content-Type": content_type(version)})

    def check_wsse(self, header: bytes | None) -> None:
        if self.wsse is None:
            return
        token = etree.fromstring(header).find(f".//{{{WSSE}}}UsernameToken") if header else None
        if token is None:
            raise SoapError("Client", "WS-Security UsernameToken required")
        given = (token.findtext(f"{{{WSSE}}}Username"), token.findtext(f"{{{WSSE}}}Password"))
        if given != self.wsse:  # a careless service that echoes the credentials it refused
            raise SoapError("Client", f"WS-Security authentication failed for {given[0]}/{given[1]}")

    def compute(self, operation: str, payload: etree._Element) -> str:
        def arg(name: str) -> str:
            value = payload.findtext(f"{{{NS}}}{name}")
            if value is None:
                raise SoapError("Client", f"{operation}: missing {name}")
            return value

        if operation == "Add":
            return f"<result>{int(arg('a')) + int(arg('b'))}</result>"
        if operation == "Divide":
            divisor = Decimal(arg("divisor"))
            if divisor == 0:
                err = SoapError("Client", "division by zero")
                err.detail = "divisor must not be 0"  # type: ignore[attr-defined]
                raise err
            return f"<quotient>{Decimal(arg('dividend')) / divisor}</quotient>"
        if operation == "GetQuote":
            return (f"<Quote><symbol>{arg('symbol')}</symbol><price>12.50</price>"
                    "<asOf>2024-05-14T09:30:00Z</asOf><exchanges>NYSE</exchanges>"
                    "<exchanges>XETRA</exchanges></Quote>")
        raise SoapError("Client", f"unknown operation {operation}")


@pytest.fixture
async def calculator(aiohttp_server: Any) -> tuple[Calculator, str]:
    calc = Calculator()
    server = await aiohttp_server(calc.app())
    return calc, str(server.make_url("/calculator"))


def connector(**config: Any) -> SoapConnector:
    ctx = CheckContext()
    checked = SoapConnector.connection_spec.check(config, Where("<test>"), ctx)
    assert not ctx.problems, ctx.problems
    return SoapConnector("calc", checked)


def operation(**op: Any) -> dict[str, Any]:
    ctx = CheckContext()
    checked = SoapConnector.operations["send"].check(op, Where("<test>"), ctx)
    assert not ctx.problems, ctx.problems
    return checked


async def send(conn: SoapConnector, op: dict[str, Any], *docs: Document) -> list[Document]:
    return await conn.send(op, list(docs), OperationContext(None))


def add_xml(a: int, b: int) -> Document:
    return Document(f'<c:Add xmlns:c="{NS}"><c:a>{a}</c:a><c:b>{b}</c:b></c:Add>', {"order": "7"})


# ------------------------------------------------------------------------------------------- calls


async def test_xml_in_xml_out(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add"), add_xml(2, 3))
    finally:
        await conn.stop()
    assert out.error is None
    assert out.xml.tag == f"{{{NS}}}AddResponse"
    assert out.xml.findtext(f"{{{NS}}}result") == "5"
    assert out.props == {"order": "7", "status_code": "200"}
    headers, body = calc.calls[0]
    assert headers["SOAPAction"] == '"http://example.com/calculator/Add"'
    assert headers["Content-Type"].startswith("text/xml")
    assert etree.fromstring(body).tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"


async def test_json_in_json_out(calculator: tuple[Calculator, str]) -> None:
    _, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    await conn.start()
    try:
        out = await send(conn, operation(operation="Add", input="json", output="json"),
                         Document.from_json({"a": 40, "b": 2}), Document.from_json({"a": -1, "b": 1}))
        [quote] = await send(conn, operation(operation="GetQuote", input="json", output="json"),
                             Document.from_json({"symbol": "ACME"}))
    finally:
        await conn.stop()
    assert [d.json for d in out] == [{"result": 42}, {"result": 0}]
    assert quote.json == {"Quote": {"symbol": "ACME", "price": 12.5, "asOf": "2024-05-14T09:30:00+00:00",
                                    "exchanges": ["NYSE", "XETRA"]}}


async def test_mixed_input_and_output_kinds(calculator: tuple[Calculator, str]) -> None:
    _, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    await conn.start()
    try:
        [as_json] = await send(conn, operation(operation="Add", output="json"), add_xml(1, 1))
        [as_xml] = await send(conn, operation(operation="Divide", input="json"),
                              Document.from_json({"dividend": "7.5", "divisor": 3}))
    finally:
        await conn.stop()
    assert as_json.json == {"result": 2}
    assert as_xml.xml.tag == f"{{{NS}}}DivideResponse"
    assert as_xml.xml.findtext(f"{{{NS}}}quotient") == "2.5"


async def test_soap12_port(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url, service="Calculator", port="CalculatorSoap12")
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add", input="json", output="json"),
                           Document.from_json({"a": 1, "b": 2}))
        info = conn.describe()
    finally:
        await conn.stop()
    assert out.json == {"result": 3}
    headers, _ = calc.calls[0]
    assert headers["Content-Type"].startswith("application/soap+xml")
    assert 'action="http://example.com/calculator/Add"' in headers["Content-Type"]
    assert "SOAPAction" not in headers
    assert info["version"] == "1.2" and info["operations"] == ["Add", "Divide", "GetQuote"]


async def test_a_document_may_be_a_whole_envelope(calculator: tuple[Calculator, str]) -> None:
    _, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    await conn.start()
    envelope = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header/><s:Body>'
                f'<Add xmlns="{NS}"><a>20</a><b>22</b></Add></s:Body></s:Envelope>')
    try:
        [out] = await send(conn, operation(operation="Add", output="json"), Document(envelope))
    finally:
        await conn.stop()
    assert out.json == {"result": 42}


# ------------------------------------------------------------------------------------------ errors


async def test_fault_fails_the_document_without_retry(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url, retry=FAST_RETRY)
    await conn.start()
    try:
        ok, bad = await send(conn, operation(operation="Divide", input="json", output="json"),
                             Document.from_json({"dividend": 1, "divisor": 4}),
                             Document.from_json({"dividend": 1, "divisor": 0}, {"id": "b"}))
    finally:
        await conn.stop()
    assert ok.error is None and ok.json == {"quotient": 0.25}
    assert bad.error == (f"connection 'calc', operation 'Divide', document 2 of 2: {url} answered "
                         "SOAP fault soap:Client: division by zero")
    assert bad.props == {"id": "b", "status_code": "500", "soap_fault_code": "soap:Client",
                         "soap_fault_string": "division by zero",
                         "soap_fault_detail": "divisor must not be 0"}
    assert bad.json == {"dividend": 1, "divisor": 0}  # the failed document keeps its content
    assert (bad.error_kind, bad.error_status) == ("rejected", 500)
    assert len(calc.calls) == 2


async def test_soap12_fault(calculator: tuple[Calculator, str]) -> None:
    _, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url, port="CalculatorSoap12")
    await conn.start()
    try:
        [bad] = await send(conn, operation(operation="Divide", input="json"),
                           Document.from_json({"dividend": 1, "divisor": 0}))
    finally:
        await conn.stop()
    assert bad.error is not None and bad.error.endswith("SOAP fault env:Sender: division by zero")
    assert bad.props["soap_fault_code"] == "env:Sender"


async def test_503_then_success_is_retried(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    calc.unavailable = 2
    conn = connector(wsdl=str(WSDL_FILE), address=url, retry=FAST_RETRY)
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add", output="json"), add_xml(3, 4))
    finally:
        await conn.stop()
    assert out.error is None and out.json == {"result": 7}
    assert len(calc.calls) == 3


async def test_503_until_attempts_run_out(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    calc.unavailable = 10
    conn = connector(wsdl=str(WSDL_FILE), address=url, retry={**FAST_RETRY, "attempts": 2})
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add"), add_xml(3, 4))
    finally:
        await conn.stop()
    assert out.error == (f"connection 'calc', operation 'Add', document 1 of 1: POST {url}: "
                         "HTTP 503: <html>busy</html> (after 2 attempts)")
    assert out.props["status_code"] == "503"
    assert (out.error_kind, out.error_status) == ("status", 503)
    assert len(calc.calls) == 2


async def test_4xx_without_fault_is_not_retried(calculator: tuple[Calculator, str]) -> None:
    _, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url.replace("/calculator", "/not-found"), retry=FAST_RETRY)
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add"), add_xml(3, 4))
    finally:
        await conn.stop()
    assert out.error is not None and out.error.endswith("HTTP 404: no such endpoint")
    assert "after" not in out.error
    assert (out.error_kind, out.error_status) == ("status", 404)


async def test_down_server_fails_the_documents() -> None:
    address = f"http://127.0.0.1:{free_port()}/calculator"
    conn = connector(wsdl=str(WSDL_FILE), address=address, retry={**FAST_RETRY, "attempts": 2})
    await conn.start()
    try:
        docs = await send(conn, operation(operation="Add"), add_xml(1, 2), add_xml(3, 4))
    finally:
        await conn.stop()
    assert [d.error is not None for d in docs] == [True, True]
    first = docs[0].error or ""
    assert first.startswith(f"connection 'calc', operation 'Add', document 1 of 2: POST {address}: network error")
    assert first.endswith("(after 2 attempts)")
    assert [(d.error_kind, d.error_status) for d in docs] == [("unreachable", None)] * 2


async def test_slow_server_times_out(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    calc.delay = 2.0
    conn = connector(wsdl=str(WSDL_FILE), address=url, timeout="200ms", retry={"attempts": 1})
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add"), add_xml(1, 2))
    finally:
        await conn.stop()
    assert out.error == f"connection 'calc', operation 'Add', document 1 of 1: POST {url}: no answer within 0.2s"
    assert out.error_kind == "timeout"


async def test_unknown_operation_lists_the_available_ones(calculator: tuple[Calculator, str]) -> None:
    _, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    await conn.start()
    try:
        with pytest.raises(ConnectorError) as err:
            await send(conn, operation(operation="Substract"), add_xml(1, 2))
    finally:
        await conn.stop()
    assert str(err.value) == ("connection 'calc': operation 'Substract' is not in the WSDL's port "
                              "'CalculatorSoap' (operations: Add, Divide, GetQuote)")


async def test_bad_input_documents_fail_before_any_call(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    await conn.start()
    try:
        wrong_root, not_xml = await send(conn, operation(operation="Add"),
                                         Document(f'<Divide xmlns="{NS}"/>'), Document('{"a": 1}'))
        unknown_arg, not_object = await send(conn, operation(operation="Add", input="json"),
                                             Document.from_json({"a": 1, "c": 2}), Document.from_json([1, 2]))
    finally:
        await conn.stop()
    where = "connection 'calc', operation 'Add'"
    assert wrong_root.error == (f"{where}, document 1 of 2: cannot build the request: the document's root "
                                f"element is {{{NS}}}Divide, the operation expects {{{NS}}}Add")
    assert (not_xml.error or "").startswith(f"{where}, document 2 of 2: cannot build the request: "
                                            "document is not well-formed XML")
    assert "unexpected keyword argument 'c'" in (unknown_arg.error or "")
    assert (not_object.error or "").endswith("input: json expects a JSON object of arguments, got list")
    assert calc.calls == []


# -------------------------------------------------------------------------------- WSDL and security


async def test_wsdl_from_url_with_basic_auth_and_wsse(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    calc.basic = "Basic " + base64.b64encode(b"svc:s3cret-basic").decode()
    calc.wsse = ("soap-user", "s3cret-wsse")
    conn = connector(wsdl=url + "?wsdl", auth={"type": "basic", "username": "svc", "password": "s3cret-basic"},
                     wsse={"username": "soap-user", "password": "s3cret-wsse"})
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add", output="json"), add_xml(5, 5))
        info = conn.describe()
    finally:
        await conn.stop()
    assert out.error is None and out.json == {"result": 10}
    assert info["endpoint"] == url
    assert "s3cret" not in repr(info)
    _, body = calc.calls[0]
    assert etree.fromstring(body).find(f".//{{{WSSE}}}UsernameToken") is not None


async def test_wrong_wsse_password_is_a_fault(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    calc.wsse = ("soap-user", "right")
    conn = connector(wsdl=str(WSDL_FILE), address=url, wsse={"username": "soap-user", "password": "wrong-pw"})
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add"), add_xml(5, 5))
    finally:
        await conn.stop()
    assert (out.error or "").endswith("SOAP fault soap:Client: WS-Security authentication failed "
                                      "for soap-user/***")
    assert out.props["soap_fault_string"] == "WS-Security authentication failed for soap-user/***"


async def test_wsdl_url_refusing_credentials(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    calc.basic = "Basic expected"
    conn = connector(wsdl=url + "?wsdl", auth={"username": "svc", "password": "not-it"})
    with pytest.raises(ConnectorError) as err:
        await conn.start()
    await conn.stop()
    assert str(err.value) == f"connection 'calc': WSDL '{url}?wsdl': cannot be loaded: HTTP 401"
    assert "not-it" not in str(err.value)


async def test_unloadable_wsdl_and_bad_selection(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wsdl"
    cases = [
        ({"wsdl": str(missing)}, f"connection 'calc': WSDL '{missing}': cannot be loaded"),
        ({"wsdl": str(WSDL_FILE), "service": "Calc"},
         f"connection 'calc': WSDL '{WSDL_FILE}': has no service 'Calc' (services: Calculator)"),
        ({"wsdl": str(WSDL_FILE), "port": "Soap13"},
         f"connection 'calc': WSDL '{WSDL_FILE}': service 'Calculator' has no port 'Soap13' "
         "(ports: CalculatorSoap, CalculatorSoap12)"),
    ]
    not_wsdl = tmp_path / "order.xml"
    not_wsdl.write_text("<order/>")
    cases.append(({"wsdl": str(not_wsdl)}, f"connection 'calc': WSDL '{not_wsdl}': has no SOAP binding (is it a WSDL 1.1 document?)"))
    for config, expected in cases:
        conn = connector(**config)
        with pytest.raises(ConnectorError) as err:
            await conn.start()
        await conn.stop()
        assert str(err.value).startswith(expected), str(err.value)


def test_connection_spec_checks_and_collects_secrets() -> None:
    ctx = CheckContext()
    SoapConnector.connection_spec.check(
        {"wsdl": "https://erp.example.com/Orders?wsdl", "adress": "x",
         "auth": {"type": "digest", "username": "u", "password": "basic-pw"},
         "wsse": {"username": "u", "password": "wsse-pw"}},
        Where("<test>"), ctx)
    messages = [p.message for p in ctx.problems]
    assert "unknown field 'adress' (did you mean 'address'?)" in messages
    assert "'digest' is not one of basic" in messages
    assert sorted(ctx.secrets) == ["basic-pw", "wsse-pw"]
    rows = {r["name"]: r for r in SoapConnector.connection_spec.describe()}
    assert rows["wsdl"]["required"] and "timeout" in rows and "retry" in rows
    ctx = CheckContext()
    SoapConnector.operations["send"].check({"operation": "Add", "input": "yaml"}, Where("<test>"), ctx)
    assert [p.message for p in ctx.problems] == ["'yaml' is not one of xml, json"]


def test_constructor_does_no_io() -> None:
    conn = connector(wsdl="http://127.0.0.1:9/never-fetched?wsdl")
    assert conn.describe() == {"name": "calc", "type": "soap", "wsdl": "http://127.0.0.1:9/never-fetched?wsdl"}


async def test_wsse_digest_sends_no_plain_password(calculator: tuple[Calculator, str]) -> None:
    calc, url = calculator
    conn = connector(wsdl=str(WSDL_FILE), address=url,
                     wsse={"username": "soap-user", "password": "digest-secret", "digest": True})
    await conn.start()
    try:
        [out] = await send(conn, operation(operation="Add"), add_xml(1, 1))
    finally:
        await conn.stop()
    assert out.error is None
    _, body = calc.calls[0]
    password = etree.fromstring(body).find(f".//{{{WSSE}}}Password")
    assert password is not None and password.get("Type", "").endswith("#PasswordDigest")
    assert b"digest-secret" not in body
    assert etree.fromstring(body).find(f".//{{{WSSE}}}Nonce") is not None


# ----------------------------------------------------------------------------- in a real process

async def test_process_calls_the_service_through_yaml_components(
        calculator: tuple[Calculator, str], tmp_path: Path) -> None:
    from atom.engine import Engine
    from atom.loader import load_directory

    _, url = calculator
    (tmp_path / "calc.yaml").write_text(
        f"connection: calc\ntype: soap\nwsdl: {WSDL_FILE}\naddress: {url}\n"
        "retry: {attempts: 2, backoff: 10ms}\n")
    (tmp_path / "add.yaml").write_text(
        "process: add\n"
        "start: {passthrough: {}}\n"
        "shapes:\n"
        "  - id: call\n"
        "    connector:\n"
        "      connection: calc\n"
        "      action: send\n"
        "      operation: {operation: Add, input: json, output: json}\n"
        "  - {id: done, return: {}}\n")
    engine = Engine(load_directory(tmp_path))
    try:
        ex = await engine.execute("add", [Document.from_json({"a": 19, "b": 23})])
    finally:
        await engine.stop()
    assert ex.status == "COMPLETE", ex.message
    assert [d.json for d in ex.returned] == [{"result": 42}]
