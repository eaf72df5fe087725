"""SOAP headers and WS-Security of the `soap` connector, against a SOAP service on 127.0.0.1 (an aiohttp
app for the accounts WSDL in tests/fixtures) that checks UsernameTokens (text and digest), Timestamps
and a required session header, and answers response headers."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lxml import etree

from atom.connector import OperationContext
from atom.document import Document
from atom.errors import ConnectorError, LoadError
from atom.soap import SOAP11_ENV, SOAP12_ENV, content_type, parse_request
from atom.spec import CheckContext
from atom.yamlio import Where
from connectors.soap import SoapConnector

WSDL_FILE = Path(__file__).parent.parent / "fixtures" / "accounts.wsdl"
NS = "http://example.com/accounts"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
ROUTING = "urn:example:routing"
FAST_RETRY = {"attempts": 3, "backoff": "10ms", "max_backoff": "50ms"}
PASSWORD = 'pa&ss<w0rd>"x'  # characters XML escapes: an echo of the request shows it escaped
ESCAPED = "pa&amp;ss&lt;w0rd&gt;"


class SecurityFault(Exception):
    """A WS-Security fault: `code` is the local name of a wsse fault code."""

    def __init__(self, code: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


class ClientFault(Exception):
    pass


def _time(text: str | None) -> dt.datetime:
    return dt.datetime.fromisoformat((text or "").replace("Z", "+00:00"))


class Accounts:
    """GetBalance (needs a SessionHeader) and Ping, behind a WS-Security check like a strict server's:
    UsernameToken with PasswordText or PasswordDigest (digest, freshness of Created, nonce replay),
    and a Timestamp when `require_timestamp`. Refusals are wsse fault codes; the detail of a refusal
    echoes the Security header it got (a careless service)."""

    def __init__(self) -> None:
        self.calls: list[etree._Element] = []  # the request envelopes
        self.users: dict[str, str] | None = {"soap-user": PASSWORD}
        self.require_timestamp = False
        self.session = "sess-42"
        self.ahead = 0.0  # seconds the service's clock is ahead of ours
        self.unavailable = 0  # answer 503 (no fault) to this many calls first
        self.nonces: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/accounts", self.endpoint)
        return app

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.ahead)

    async def endpoint(self, request: web.Request) -> web.Response:
        body = await request.read()
        req = parse_request(body, request.headers.get("Content-Type", ""))
        self.calls.append(etree.fromstring(body))
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.Response(status=503, text="busy")
        header = etree.fromstring(req.header) if req.header else None
        try:
            self.check_security(header)
            body_xml, header_xml = self.answer(req.operation, header)
        except SecurityFault as fault:
            return self.fault(req.version, f"wsse:{fault.code}", fault.message, fault.detail)
        except ClientFault as fault:
            return self.fault(req.version, None, str(fault), None)
        return web.Response(body=envelope(req.version, header_xml, body_xml),
                            headers={"Content-Type": content_type(req.version)})

    def check_security(self, header: etree._Element | None) -> None:
        if self.users is None:
            return
        security = header.find(f"{{{WSSE}}}Security") if header is not None else None
        if security is None:
            raise SecurityFault("InvalidSecurity", "a wsse:Security header is required")
        echo = etree.tostring(security, encoding="unicode")
        if self.require_timestamp:
            stamp = security.find(f"{{{WSU}}}Timestamp")
            if stamp is None:
                raise SecurityFault("InvalidSecurity", "a wsu:Timestamp is required")
            created, expires = _time(stamp.findtext(f"{{{WSU}}}Created")), _time(stamp.findtext(f"{{{WSU}}}Expires"))
            if expires <= self.now() or created > self.now() + dt.timedelta(seconds=60):
                raise SecurityFault("MessageExpired", "the message has expired")
        token = security.find(f"{{{WSSE}}}UsernameToken")
        if token is None:
            raise SecurityFault("InvalidSecurityToken", "a UsernameToken is required")
        user = token.findtext(f"{{{WSSE}}}Username") or ""
        password_el = token.find(f"{{{WSSE}}}Password")
        expected = self.users.get(user)
        if expected is None or password_el is None:
            raise SecurityFault("FailedAuthentication", f"unknown user {user}", echo)
        given, kind = password_el.text or "", password_el.get("Type", "")
        if kind == f"{PROFILE}#PasswordDigest":
            nonce_text = token.findtext(f"{{{WSSE}}}Nonce") or ""
            created_text = token.findtext(f"{{{WSU}}}Created") or ""
            if abs((self.now() - _time(created_text)).total_seconds()) > 300:
                raise SecurityFault("MessageExpired", "the UsernameToken was created too long ago")
            if nonce_text in self.nonces:
                raise SecurityFault("FailedAuthentication", "nonce replayed")
            self.nonces.add(nonce_text)
            digest = hashlib.sha1(base64.b64decode(nonce_text) + created_text.encode() + expected.encode()).digest()
            ok = base64.b64encode(digest).decode() == given
        elif kind == f"{PROFILE}#PasswordText":
            ok = given == expected
        else:
            raise SecurityFault("UnsupportedSecurityToken", f"password type {kind!r}")
        if not ok:
            raise SecurityFault("FailedAuthentication",
                                "The security token could not be authenticated or authorized", echo)

    def answer(self, operation: str, header: etree._Element | None) -> tuple[str, str]:
        n = len(self.calls)
        reply_headers = f'<CorrelationId xmlns="{NS}">corr-{n}</CorrelationId>'
        if operation == "Ping":
            return f'<PingResponse xmlns="{NS}"/>', reply_headers
        if operation != "GetBalance":
            raise ClientFault(f"unknown operation {operation}")
        session = header.find(f"{{{NS}}}SessionHeader") if header is not None else None
        if session is None or session.findtext(f"{{{NS}}}sessionId") != self.session:
            raise ClientFault("a valid SessionHeader is required")
        reply_headers += ('<l:LimitInfo xmlns:l="urn:example:limits"><l:current>'
                          f"{n}</l:current><l:limit>100</l:limit></l:LimitInfo>")
        return f'<GetBalanceResponse xmlns="{NS}"><balance>12.50</balance></GetBalanceResponse>', reply_headers

    def fault(self, version: str, wsse_code: str | None, message: str, detail: str | None) -> web.Response:
        if version == "1.1":
            code = wsse_code or "soap:Client"
            text = (f'<soap:Fault xmlns:wsse="{WSSE}"><faultcode>{code}</faultcode>'
                    f"<faultstring>{escape(message)}</faultstring>"
                    + (f"<detail>{detail}</detail>" if detail else "") + "</soap:Fault>")
        else:
            sub = f"<soap:Subcode><soap:Value>{wsse_code}</soap:Value></soap:Subcode>" if wsse_code else ""
            text = (f'<soap:Fault xmlns:wsse="{WSSE}"><soap:Code><soap:Value>soap:Sender</soap:Value>{sub}'
                    f'</soap:Code><soap:Reason><soap:Text xml:lang="en">{escape(message)}</soap:Text></soap:Reason>'
                    + (f"<soap:Detail>{detail}</soap:Detail>" if detail else "") + "</soap:Fault>")
        return web.Response(status=500, body=envelope(version, "", text),
                            headers={"Content-Type": content_type(version)})


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def envelope(version: str, header: str, body: str) -> bytes:
    ns = SOAP11_ENV if version == "1.1" else SOAP12_ENV
    head = f"<soap:Header>{header}</soap:Header>" if header else ""
    return f'<soap:Envelope xmlns:soap="{ns}">{head}<soap:Body>{body}</soap:Body></soap:Envelope>'.encode()


@pytest.fixture
async def accounts(aiohttp_server: Any) -> tuple[Accounts, str]:
    service = Accounts()
    server = await aiohttp_server(service.app())
    return service, str(server.make_url("/accounts"))


def connector(**config: Any) -> SoapConnector:
    ctx = CheckContext()
    where = Where("<test>")
    checked = SoapConnector.check_connection(SoapConnector.connection_spec.check(config, where, ctx), where, ctx)
    assert not ctx.problems, ctx.problems
    return SoapConnector("accounts", checked)


def operation(**op: Any) -> dict[str, Any]:
    ctx = CheckContext()
    checked = SoapConnector.operations["send"].check(op, Where("<test>"), ctx)
    assert not ctx.problems, ctx.problems
    return checked


async def send(conn: SoapConnector, op: dict[str, Any], *docs: Document) -> list[Document]:
    await conn.start()
    try:
        return await conn.send(op, list(docs), OperationContext(None))
    finally:
        await conn.stop()


def user(**more: Any) -> dict[str, Any]:
    return {"username": "soap-user", "password": PASSWORD, **more}


SESSION = {"SessionHeader": {"sessionId": "{{ doc.props.session }}"}}


def balance(session: str = "sess-42") -> Document:
    return Document.from_json({"account": "A-1"}, {"session": session})


def security_of(request: etree._Element) -> etree._Element:
    found = request.find(f"{{{SOAP11_ENV}}}Header/{{{WSSE}}}Security")
    if found is None:
        found = request.find(f"{{{SOAP12_ENV}}}Header/{{{WSSE}}}Security")
    assert found is not None
    return found


# ----------------------------------------------------------------------------------- WS-Security


async def test_text_token_passes(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    conn = connector(wsdl=str(WSDL_FILE), address=url, wsse=user())
    [out] = await send(conn, operation(operation="GetBalance", input="json", output="json", headers=SESSION),
                       balance())
    assert out.error is None, out.error
    assert out.json == {"balance": 12.5}
    password = security_of(service.calls[0]).find(f"{{{WSSE}}}UsernameToken/{{{WSSE}}}Password")
    assert password is not None and password.get("Type") == f"{PROFILE}#PasswordText"


async def test_digest_token_passes_with_a_fresh_nonce_per_attempt(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    service.unavailable = 1  # the first attempt is retried: the service refuses a replayed nonce
    conn = connector(wsdl=str(WSDL_FILE), address=url, wsse=user(digest=True), retry=FAST_RETRY)
    out = await send(conn, operation(operation="GetBalance", input="json", output="json", headers=SESSION),
                     balance(), balance())
    assert [(d.error, d.json) for d in out] == [(None, {"balance": 12.5})] * 2
    assert len(service.calls) == 3
    tokens = [security_of(c).find(f"{{{WSSE}}}UsernameToken") for c in service.calls]
    assert all(t is not None and t.find(f"{{{WSSE}}}Password").get("Type") == f"{PROFILE}#PasswordDigest"
               for t in tokens)
    assert len({t.findtext(f"{{{WSSE}}}Nonce") for t in tokens if t is not None}) == 3
    created = tokens[0].findtext(f"{{{WSU}}}Created") if tokens[0] is not None else ""
    assert created and created.endswith("Z")
    sent = b"".join(etree.tostring(c) for c in service.calls)
    assert PASSWORD.encode() not in sent and ESCAPED.encode() not in sent


@pytest.mark.parametrize("digest", [False, True])
async def test_wrong_password_is_an_auth_fault(accounts: tuple[Accounts, str], digest: bool) -> None:
    service, url = accounts
    service.users = {"soap-user": "the-right-one"}
    conn = connector(wsdl=str(WSDL_FILE), address=url, wsse=user(digest=digest), retry=FAST_RETRY)
    [out] = await send(conn, operation(operation="GetBalance", input="json", headers=SESSION), balance())
    assert out.error == (f"connection 'accounts', operation 'GetBalance', document 1 of 1: {url} answered "
                         "SOAP fault wsse:FailedAuthentication: The security token could not be authenticated "
                         "or authorized")
    assert (out.error_kind, out.error_status) == ("auth", 500)
    assert out.props["soap_fault_code"] == "wsse:FailedAuthentication"
    assert len(service.calls) == 1  # a fault is never retried
    detail = out.props["soap_fault_detail"]  # the service echoed the Security header it refused
    assert "UsernameToken" in detail
    if not digest:
        assert "***" in detail
    assert PASSWORD not in repr(out.props) and ESCAPED not in repr(out.props)


async def test_soap12_security_fault_is_auth(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    service.users = {"soap-user": "the-right-one"}
    conn = connector(wsdl=str(WSDL_FILE), address=url, port="AccountsSoap12", wsse=user(digest=True))
    [out] = await send(conn, operation(operation="Ping"), Document(f'<Ping xmlns="{NS}"/>'))
    assert out.props["soap_fault_code"] == "soap:Sender/wsse:FailedAuthentication"
    assert out.error_kind == "auth"


async def test_timestamp_created_and_expires(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    service.require_timestamp = True
    op = operation(operation="Ping", output="json")
    ping = Document(f'<Ping xmlns="{NS}"/>')
    [ok] = await send(connector(wsdl=str(WSDL_FILE), address=url,
                                wsse=user(digest=True, timestamp=True, ttl="90s")), op, ping)
    assert ok.error is None, ok.error
    security = security_of(service.calls[0])
    stamp = security[0]  # the Timestamp comes first, before the token
    assert stamp.tag == f"{{{WSU}}}Timestamp" and stamp.get(f"{{{WSU}}}Id")
    created, expires = _time(stamp.findtext(f"{{{WSU}}}Created")), _time(stamp.findtext(f"{{{WSU}}}Expires"))
    assert expires - created == dt.timedelta(seconds=90)
    assert stamp.findtext(f"{{{WSU}}}Created") == security.findtext(f"{{{WSSE}}}UsernameToken/{{{WSU}}}Created")

    [missing] = await send(connector(wsdl=str(WSDL_FILE), address=url, wsse=user()), op, ping)
    assert (missing.props["soap_fault_code"], missing.error_kind) == ("wsse:InvalidSecurity", "auth")

    service.ahead = 120.0  # the service's clock is two minutes ahead: a 90 s Timestamp has expired
    [expired] = await send(connector(wsdl=str(WSDL_FILE), address=url, wsse=user(timestamp=True, ttl="90s")),
                           op, ping)
    assert (expired.error or "").endswith("SOAP fault wsse:MessageExpired: the message has expired")
    assert expired.error_kind == "auth"


def test_wsse_fields_and_ttl_check() -> None:
    rows = {r["name"]: r for r in SoapConnector.connection_spec.by_name["wsse"].type.spec.describe()}  # type: ignore[attr-defined]
    assert rows["password"]["secret"] and rows["timestamp"]["default"] is False and rows["ttl"]["default"] == 300.0
    ctx = CheckContext()
    where = Where("<test>")
    config = SoapConnector.connection_spec.check(
        {"wsdl": "x.wsdl", "wsse": {"username": "u", "password": "p", "timestamp": True, "ttl": 0}}, where, ctx)
    SoapConnector.check_connection(config, where, ctx)
    assert [p.message for p in ctx.problems] == ["ttl must be more than 0"]
    assert ctx.secrets == ["p"]


# --------------------------------------------------------------------------------- SOAP headers


async def test_declared_headers_from_templates_reach_the_service(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    service.users = None
    headers = {"session": {"sessionId": "{{ doc.props.session }}", "priority": "{{ doc.props.priority | int }}"},
               "Tenant": "{{ doc.props.tenant | upper }}"}
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    xml_doc = Document(f'<GetBalance xmlns="{NS}"><account>A-1</account></GetBalance>',
                       {"session": "sess-42", "priority": "3", "tenant": "acme"})
    [out] = await send(conn, operation(operation="GetBalance", output="json", headers=headers), xml_doc)
    assert out.error is None, out.error
    assert out.json == {"balance": 12.5}
    sent = service.calls[0].find(f"{{{SOAP11_ENV}}}Header")
    assert sent is not None
    assert [etree.QName(h).text for h in sent] == [f"{{{NS}}}SessionHeader", f"{{{NS}}}Tenant"]
    assert sent.findtext(f"{{{NS}}}SessionHeader/{{{NS}}}sessionId") == "sess-42"
    assert sent.findtext(f"{{{NS}}}SessionHeader/{{{NS}}}priority") == "3"
    assert sent.findtext(f"{{{NS}}}Tenant") == "ACME"


async def test_response_headers_become_properties(accounts: tuple[Accounts, str]) -> None:
    _, url = accounts
    conn = connector(wsdl=str(WSDL_FILE), address=url, wsse=user())
    [out] = await send(conn, operation(operation="GetBalance", input="json", headers=SESSION), balance())
    assert out.error is None, out.error
    assert out.xml.tag == f"{{{NS}}}GetBalanceResponse"
    assert out.props["soap_header_CorrelationId"] == "corr-1"
    assert out.props["soap_header_LimitInfo_current"] == "1"
    assert out.props["soap_header_LimitInfo_limit"] == "100"
    limit = etree.fromstring(out.props["soap_header_LimitInfo"])
    assert limit.tag == "{urn:example:limits}LimitInfo"
    assert out.props["session"] == "sess-42" and out.props["status_code"] == "200"


async def test_required_header_missing_is_rejected(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    conn = connector(wsdl=str(WSDL_FILE), address=url, wsse=user())
    [out] = await send(conn, operation(operation="GetBalance", input="json"), balance())
    assert (out.error or "").endswith("SOAP fault soap:Client: a valid SessionHeader is required")
    assert out.error_kind == "rejected"  # a fault without a WS-Security code: the request was refused
    assert len(service.calls) == 1


async def test_headers_the_wsdl_does_not_declare(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    service.users = None
    headers = {f"{{{ROUTING}}}Route": {"to": "eu-{{ doc.props.region }}", "hops": ["a", "b"],
                                      "{urn:example:trace}trace": True},
               f"{{{NS}}}Tenant": "acme",  # declared: written by zeep from the WSDL's type
               f"{{{ROUTING}}}Optional": "{{ doc.props.absent | default(none) }}"}  # null: left out
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    envelope_doc = Document(f'<s:Envelope xmlns:s="{SOAP11_ENV}"><s:Header><Mine xmlns="urn:mine">1</Mine>'
                            f'</s:Header><s:Body><Ping xmlns="{NS}"/></s:Body></s:Envelope>', {"region": "1"})
    [out] = await send(conn, operation(operation="Ping", headers=headers), envelope_doc)
    assert out.error is None, out.error
    sent = service.calls[0].find(f"{{{SOAP11_ENV}}}Header")
    assert sent is not None
    assert [etree.QName(h).text for h in sent] == ["{urn:mine}Mine", f"{{{ROUTING}}}Route", f"{{{NS}}}Tenant"]
    route = sent[1]
    assert route.findtext(f"{{{ROUTING}}}to") == "eu-1"
    assert [h.text for h in route.findall(f"{{{ROUTING}}}hops")] == ["a", "b"]
    assert route.findtext("{urn:example:trace}trace") == "true"
    assert out.props["soap_header_CorrelationId"] == "corr-1"


async def test_header_names_the_operation_does_not_declare(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    with pytest.raises(ConnectorError) as typo:
        await send(conn, operation(operation="GetBalance", headers={"SesionHeader": {"sessionId": "x"}}), balance())
    assert str(typo.value) == ("connection 'accounts', operation 'GetBalance': header 'SesionHeader' is not a "
                               "header of the operation (its headers: SessionHeader, Tenant; name another header "
                               "by its qualified name {namespace}Name)")
    assert typo.value.kind == "error"
    with pytest.raises(ConnectorError) as none:
        await send(conn, operation(operation="Ping", headers={"Tenant": "acme"}), Document(f'<Ping xmlns="{NS}"/>'))
    assert str(none.value).endswith("header 'Tenant': the operation declares no SOAP headers; name a header the "
                                    "WSDL does not declare by its qualified name {namespace}Tenant")
    assert service.calls == []


async def test_header_values_that_do_not_fit_fail_the_document(accounts: tuple[Accounts, str]) -> None:
    service, url = accounts
    conn = connector(wsdl=str(WSDL_FILE), address=url)
    ops = [
        {"SessionHeader": {"sessionid": "s3cret-session-value"}},  # not a child of SessionHeader
        {"SessionHeader": {"sessionId": "{{ process.session_id }}"}},  # no such process property
        {"Tenant": {"name": "s3cret-session-value"}},  # a mapping for a simple type
        {f"{{{ROUTING}}}Route": [["s3cret-session-value"]]},
    ]
    failed = []
    for headers in ops:
        [out] = await send(conn, operation(operation="GetBalance", input="json", headers=headers), balance())
        failed.append(out)
    assert [d.error_kind for d in failed] == ["invalid"] * 4
    messages = [d.error or "" for d in failed]
    prefix = "connection 'accounts', operation 'GetBalance', document 1 of 1: cannot build the request: header "
    assert messages[0].startswith(prefix + "'SessionHeader': ") and "unexpected keyword argument 'sessionid'" in messages[0]
    assert messages[1].startswith(prefix + "'SessionHeader': in '{{ process.session_id }}': ")
    assert messages[2].startswith(prefix + "'Tenant': ")
    assert messages[3].startswith(prefix + f"'{{{ROUTING}}}Route': ")
    assert not any("s3cret-session-value" in m for m in messages)
    assert service.calls == []


def test_header_names_and_templates_are_checked_at_load_time(tmp_path: Path) -> None:
    from atom.loader import load_directory

    (tmp_path / "accounts.yaml").write_text(f"connection: accounts\ntype: soap\nwsdl: {WSDL_FILE}\n")
    (tmp_path / "p.yaml").write_text(
        "process: p\n"
        "start: {passthrough: {}}\n"
        "shapes:\n"
        "  - id: call\n"
        "    connector:\n"
        "      connection: accounts\n"
        "      operation:\n"
        "        operation: GetBalance\n"
        "        headers:\n"
        "          1st: x\n"
        "          SessionHeader: {sessionId: '{{ process.session_id'}\n"
        "          '{urn:x}Route': {'bad name': 1}\n"
        "  - {id: done, return: {}}\n")
    with pytest.raises(LoadError) as err:
        load_directory(tmp_path)
    problems = [(p.location.line, p.message) for p in err.value.problems]
    assert [line for line, _ in problems] == [10, 11, 12]
    assert problems[0][1] == "header name '1st' is not an element name or a qualified name {namespace}Name"
    assert "{{ process.session_id" in problems[1][1]
    assert problems[2][1] == "'bad name' is not an element name or a qualified name {namespace}Name"


# ----------------------------------------------------------------------------- in a real process

def _deploy(tmp_path: Path, url: str, password: str, try_catch: bool) -> Any:
    from atom.loader import load_directory

    (tmp_path / "accounts.yaml").write_text(
        f"connection: accounts\ntype: soap\nwsdl: {WSDL_FILE}\naddress: {url}\n"
        f"wsse: {{username: soap-user, password: {json.dumps(password)}, timestamp: true}}\n"
        "retry: {attempts: 2, backoff: 10ms}\n")
    guard = "  - {id: t, try_catch: {try: call, catch: done}}\n" if try_catch else ""
    (tmp_path / "balance.yaml").write_text(
        "process: balance\n"
        "start: {passthrough: {}}\n"
        "shapes:\n" + guard +
        "  - id: call\n"
        "    connector:\n"
        "      connection: accounts\n"
        "      action: send\n"
        "      operation:\n"
        "        operation: GetBalance\n"
        "        input: json\n"
        "        output: json\n"
        "        headers: {SessionHeader: {sessionId: '{{ process.session_id }}'}, Tenant: acme}\n"
        "  - {id: done, return: {}}\n")
    return load_directory(tmp_path)


async def test_process_sends_headers_and_reads_response_headers(
        accounts: tuple[Accounts, str], tmp_path: Path) -> None:
    from atom.engine import Engine

    service, url = accounts
    service.require_timestamp = True
    engine = Engine(_deploy(tmp_path, url, PASSWORD, try_catch=False))
    try:
        ex = await engine.execute("balance", [Document.from_json({"account": "A-1"})],
                                  properties={"session_id": "sess-42"})
    finally:
        await engine.stop()
    assert ex.status == "COMPLETE", ex.message
    [out] = ex.returned
    assert out.json == {"balance": 12.5}
    assert out.props["soap_header_CorrelationId"] == "corr-1"
    sent = service.calls[0].find(f"{{{SOAP11_ENV}}}Header")
    assert sent is not None and sent.findtext(f"{{{NS}}}SessionHeader/{{{NS}}}sessionId") == "sess-42"


async def test_refused_password_is_never_shown(accounts: tuple[Accounts, str], tmp_path: Path) -> None:
    from atom.engine import Engine

    service, url = accounts
    service.users = {"soap-user": "the-right-one"}
    (tmp_path / "plain").mkdir()
    (tmp_path / "guarded").mkdir()
    engine = Engine(_deploy(tmp_path / "plain", url, PASSWORD, try_catch=False))
    caught_engine = Engine(_deploy(tmp_path / "guarded", url, PASSWORD, try_catch=True))
    try:
        failed = await engine.execute("balance", [Document.from_json({"account": "A-1"})],
                                      properties={"session_id": "sess-42"})
        caught = await caught_engine.execute("balance", [Document.from_json({"account": "A-1"})],
                                             properties={"session_id": "sess-42"})
    finally:
        await engine.stop()
        await caught_engine.stop()
    assert failed.status == "ERROR"
    assert "SOAP fault wsse:FailedAuthentication" in failed.message
    assert [d.error_kind for d in failed.error_documents] == ["auth"]
    [got] = caught.returned
    assert got.props["try_catch_kind"] == "auth" and got.props["try_catch_status"] == "500"
    shown = json.dumps([failed.record(), failed.message, failed.errors,
                        [e.to_dict() for e in failed.logs + caught.logs],
                        [d.props for d in failed.error_documents], got.props, got.error])
    assert "FailedAuthentication" in shown and "UsernameToken" in shown
    for secret in (PASSWORD, ESCAPED, json.dumps(PASSWORD)[1:-1]):
        assert secret not in shown
