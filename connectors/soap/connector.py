"""The `soap` connector: call the operations of a SOAP service described by a WSDL.

zeep reads the WSDL (in a worker thread, in `start()`), builds request envelopes from JSON arguments
and reads typed responses; aiohttp carries the requests, so calls are truly asynchronous and share
the retry policy and circuit breaker of every network connector.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import aiohttp
from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.helpers import serialize_object
from zeep.wsdl.bindings.soap import SoapOperation
from zeep.xsd.context import XmlParserContext

from atom.connector import Connector, OperationContext
from atom.document import Document, dump_json, parse_xml
from atom.errors import AUTH, INVALID, REJECTED, TIMEOUT, UNREACHABLE, ConnectorError, DocumentError, status_kind
from atom.resilience import NETWORK_FIELDS, call_with_retry
from atom.spec import Bool, CheckContext, Duration, Enum, Field, MapOf, Object, Spec, Str
from atom.yamlio import Where

from . import _headers
from . import _messages as msgs
from ._wsdl import Target, load, safe_url

AUTH_SPEC = Spec([
    Field("type", Enum("basic"), default="basic", description="HTTP authentication scheme"),
    Field("username", Str(), required=True, description="user name"),
    Field("password", Str(), required=True, secret=True, description="password"),
], summary="HTTP authentication, used to fetch the WSDL and to call the service")

WSSE_SPEC = Spec([
    Field("username", Str(), required=True, description="user name of the UsernameToken"),
    Field("password", Str(), required=True, secret=True, description="password of the UsernameToken"),
    Field("digest", Bool(), default=False,
          description="send a password digest (with nonce and creation time) instead of the plain text"),
    Field("timestamp", Bool(), default=False,
          description="add a wsu:Timestamp (Created, Expires) to the Security header"),
    Field("ttl", Duration(), default=300.0, description="lifetime of the Timestamp: Expires is Created + ttl"),
], summary="WS-Security UsernameToken (and optional Timestamp) added to the header of every request")

CONNECTION_SPEC = Spec([
    Field("wsdl", Str(), required=True,
          description="WSDL location: a local file path (relative to the Atom's working directory) "
                      "or an http(s) URL", example="https://erp.example.com/services/Orders?wsdl"),
    Field("service", Str(), description="service to use (default: the first one with a SOAP port)"),
    Field("port", Str(), description="port of the service to use (default: its first SOAP port)"),
    Field("address", Str(pattern=r"https?://\S+"),
          description="endpoint URL to call instead of the port's address in the WSDL"),
    Field("auth", Object(AUTH_SPEC), description="HTTP basic authentication"),
    Field("wsse", Object(WSSE_SPEC), description="WS-Security UsernameToken and Timestamp"),
    Field("headers", MapOf(Str()), default=dict, description="extra HTTP headers sent with every request"),
    Field("verify_tls", Bool(), default=True, description="verify the server's TLS certificate"),
    *NETWORK_FIELDS,
], summary="A SOAP 1.1 / 1.2 service described by a WSDL")

SEND_SPEC = Spec([
    Field("operation", Str(), required=True,
          description="operation name in the WSDL (checked at first use; the error lists the available ones)"),
    Field("input", Enum("xml", "json"), default="xml",
          description="xml: the document is the operation's request element (or a whole envelope); "
                      "json: the document is a JSON object of the operation's arguments"),
    Field("output", Enum("xml", "json"), default="xml",
          description="xml: the response element as XML; json: the response element's content as JSON"),
    Field("headers", _headers.HeaderValues(), default=dict,
          description="SOAP headers: header name (as the WSDL's binding declares it, or {namespace}Name) "
                      "to a value, a template or a mapping for a complex header; evaluated per document"),
], summary="Call a SOAP operation once per document")


class SoapConnector(Connector):
    """One instance per connection: the WSDL is loaded once, at `start()`, and shared by all executions.

    `send` calls the operation once per document, in order, and returns one document per input:
    the response (with document properties `status_code` and `soap_header_<Name>`), or the input
    document failed with the SOAP fault (properties `soap_fault_code`, `soap_fault_string`,
    `soap_fault_detail`) or the transport error. Network errors, 429 and 5xx answers without a fault
    are retried per the connection's policy; faults and other 4xx are not.
    """

    type = "soap"
    summary = "Call SOAP 1.1 / 1.2 web services described by a WSDL (zeep)"
    connection_spec = CONNECTION_SPEC
    operations: ClassVar[dict[str, Spec]] = {"send": SEND_SPEC}

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.connect_timeout: float = config.get("connect_timeout", 10.0)
        self._target: Target | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock: asyncio.Lock | None = None
        wsse = config.get("wsse")
        self._wsse: Mapping[str, Any] | None = wsse or None
        secrets = [(config.get("auth") or {}).get("password"), (wsse or {}).get("password"),
                   urlsplit(config.get("wsdl", "")).password, urlsplit(config.get("address") or "").password]
        # as written, and as an XML text or attribute holds it (a fault may echo the request's header)
        variants = {v for s in secrets if s for v in (s, escape(s), escape(s, {'"': "&quot;", "'": "&apos;"}))}
        self._secrets = sorted((s for s in variants if len(s) >= 3), key=len, reverse=True)

    @classmethod
    def check_connection(cls, config: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        wsse = config.get("wsse")
        if isinstance(wsse, dict) and float(wsse.get("ttl", 300.0)) <= 0:
            ctx.error(where.child("wsse").value("ttl"), "ttl must be more than 0")
        return config

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the HTTP client pool and load the WSDL. A WSDL that cannot be loaded raises
        ConnectorError; `send` tries again to load it at its next call."""
        if self._session is None:
            headers = {"User-Agent": "atom-soap", **(self.config.get("headers") or {})}
            auth = self.config.get("auth")
            if auth:
                token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode("ascii")
                headers["Authorization"] = f"Basic {token}"
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.connect_timeout),
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=bool(self.config.get("verify_tls", True))),
            )
        self.started = True
        await self._ready()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._target = None
        self.started = False

    async def _ready(self) -> Target:
        if self._target is not None:
            return self._target
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._target is None:
                try:
                    self._target = await asyncio.to_thread(load, self.name, self.config)
                except ConnectorError as exc:
                    raise ConnectorError(self._scrub(str(exc)), retryable=exc.retryable,
                                         status=exc.status, kind=exc.kind) from None
        return self._target

    def _scrub(self, message: str) -> str:
        """`message` with every secret value of this connection replaced by `***`."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    def _fail(self, doc: Document, message: str, kind: str, status: int | None = None) -> Document:
        """A failed copy of `doc` (same content and properties) carrying `message`, secrets removed, its
        kind and the HTTP status that made it fail (a 2xx answer is not given as one)."""
        return doc.copy().fail(self._scrub(message), kind, status if status is not None and status >= 300 else None)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {**super().describe(), "wsdl": safe_url(self.config.get("wsdl", ""))}
        for key in ("service", "port", "address"):
            if self.config.get(key):
                out[key] = safe_url(self.config[key])
        if self._target is not None:
            out.update(version=self._target.version, endpoint=safe_url(self._target.address),
                       operations=self._target.operation_names())
        return out

    # ---------------------------------------------------------------------------------------- send

    async def send(self, op: Mapping[str, Any], docs: list[Document], ctx: OperationContext) -> list[Document]:
        """Call `op["operation"]` once per document. An operation the WSDL does not have, or a WSDL that
        cannot be loaded, raises ConnectorError (the whole batch fails)."""
        if self._session is None:
            raise ConnectorError(f"connection '{self.name}': not started")
        target = await self._ready()
        name = op["operation"]
        operation = self._operation(target, name)
        try:
            plan = _headers.HeaderPlan.for_operation(operation, op.get("headers") or {})
        except _headers.UnknownHeader as exc:
            raise ConnectorError(f"connection '{self.name}', operation '{name}': {exc}") from None
        out: list[Document] = []
        for i, doc in enumerate(docs, 1):
            where = f"connection '{self.name}', operation '{name}', document {i} of {len(docs)}"
            out.append(await self._call(target, operation, op, plan, doc, where, ctx))
        return out

    def _operation(self, target: Target, name: str) -> SoapOperation:
        operations = target.binding.all()
        found = operations.get(name)
        if found is None:
            where = f"port '{target.port}'" if target.port else "its binding"
            raise ConnectorError(
                f"connection '{self.name}': operation '{name}' is not in the WSDL's {where} "
                f"(operations: {', '.join(sorted(operations)) or 'none'})")
        return found  # type: ignore[no-any-return]

    async def _call(self, target: Target, operation: SoapOperation, op: Mapping[str, Any],
                    plan: _headers.HeaderPlan, doc: Document, where: str, ctx: OperationContext) -> Document:
        try:
            envelope, headers = self._request(target, operation, op["input"], doc)
            if plan.entries:
                msgs.add_headers(envelope, plan.build(ctx.scope(doc), self._secrets))
        except (DocumentError, ZeepError, TypeError, ValueError) as exc:
            return self._fail(doc, f"{where}: cannot build the request: {exc}", getattr(exc, "kind", INVALID))

        async def attempt() -> tuple[int, etree._Element | None]:
            return await self._post(target, envelope, headers)

        try:
            status, reply = await call_with_retry(attempt, policy=self.retry, breaker=self.breaker,
                                                  connection=self.name,
                                                  log=lambda level, message: ctx.log(level, self._scrub(message)))
        except ConnectorError as exc:
            failed = self._fail(doc, f"{where}: {exc}", exc.kind, exc.status)
            if exc.status:
                failed.props["status_code"] = str(exc.status)
            return failed
        props = {**doc.props, "status_code": str(status)}
        if reply is None:
            return doc.derive(b"", props=props)
        answer_headers = {k: self._scrub(v) for k, v in msgs.header_properties(reply).items()}
        props.update(answer_headers)
        fault = msgs.find_fault(reply)
        if fault is not None:
            # a WS-Security fault refuses the credentials (or the security header); others the request
            failed = self._fail(doc, f"{where}: {safe_url(target.address)} answered {fault.describe()}",
                                AUTH if fault.security else REJECTED, status)
            failed.props.update(answer_headers)
            failed.props.update(status_code=str(status), soap_fault_code=self._scrub(fault.code),
                                soap_fault_string=self._scrub(fault.message))
            if fault.detail is not None:
                failed.props["soap_fault_detail"] = self._scrub(fault.detail)
            return failed
        _, body = msgs.envelope_parts(reply)
        if body is None:
            return self._fail(doc, f"{where}: the response of {safe_url(target.address)} has no SOAP Body",
                              INVALID, status)
        if op["output"] == "xml" or not any(isinstance(c.tag, str) for c in body):
            return doc.derive(msgs.response_xml(body), props=props)  # an empty Body: an empty document
        try:
            value = self._json_result(target, operation, body)
        except (ZeepError, TypeError, ValueError) as exc:
            return self._fail(doc, f"{where}: the response of {safe_url(target.address)} does not match "
                                f"the WSDL: {exc}", INVALID, status)
        return doc.derive(dump_json(value), json_value=value, props=props)

    def _request(self, target: Target, operation: SoapOperation, kind: str,
                 doc: Document) -> tuple[etree._Element, dict[str, str]]:
        """The request envelope (without WS-Security, added per attempt) and its HTTP headers."""
        if kind == "json":
            args = doc.json if doc.data.strip() else {}
            if not isinstance(args, dict):
                raise DocumentError(f"input: json expects a JSON object of arguments, got {type(args).__name__}")
            envelope = operation.create(**args).content
        else:
            if not doc.data.strip():
                raise DocumentError("the document is empty; input: xml expects the request element")
            root = doc.xml
            expected = _input_element(operation)
            version, _ = msgs.envelope_parts(root)
            if version is None and expected is not None and root.tag != expected:
                raise DocumentError(f"the document's root element is {root.tag}, "
                                    f"the operation expects {expected}")
            if version is not None and version != target.version:
                raise DocumentError(f"the document is a SOAP {version} envelope, "
                                    f"the port speaks SOAP {target.version}")
            envelope = msgs.envelope_for(target.version, root)
        return envelope, msgs.http_headers(target.version, operation.soapaction)

    async def _post(self, target: Target, envelope: etree._Element,
                    headers: dict[str, str]) -> tuple[int, etree._Element | None]:
        """One attempt. Returns (status, envelope) for a success or a fault, (status, None) for an empty
        success (one-way operations); raises ConnectorError, retryable for network errors, 429 and 5xx."""
        assert self._session is not None
        if self._wsse:  # made again for every attempt: a fresh nonce, creation time and expiry
            envelope = copy.deepcopy(envelope)
            envelope, headers = _headers.security(self._wsse).apply(envelope, dict(headers))
        data = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        url = safe_url(target.address)
        try:
            # no redirects: a SOAP POST is never replayed elsewhere, nor are its credentials
            async with self._session.post(target.address, data=data, headers=headers,
                                          allow_redirects=False) as resp:
                status = resp.status
                content = await resp.read()
                retry_after = msgs.retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            raise ConnectorError(f"POST {url}: no answer within {self.timeout:g}s", retryable=True,
                                 kind=TIMEOUT) from None
        except aiohttp.ClientError as exc:
            raise ConnectorError(f"POST {url}: network error: {exc}", retryable=True, kind=UNREACHABLE) from None
        reply: etree._Element | None = None
        problem = ""
        if content.strip():
            try:
                reply = parse_xml(content, "the response")
            except DocumentError as exc:
                problem = str(exc)
        if reply is not None and msgs.find_fault(reply) is not None:
            return status, reply
        if status == 429 or status >= 500:
            err = ConnectorError(f"POST {url}: HTTP {status}{_snippet(content)}", retryable=True, status=status,
                                 kind=status_kind(status))
            if retry_after is not None:
                err.retry_after = retry_after  # type: ignore[attr-defined]
            raise err
        if status >= 300:
            raise ConnectorError(f"POST {url}: HTTP {status}{_snippet(content)}", status=status,
                                 kind=status_kind(status))
        if not content.strip():
            return status, None
        if reply is None:
            raise ConnectorError(f"POST {url}: HTTP {status}: {problem}", status=status, kind=INVALID)
        if msgs.envelope_parts(reply)[0] is None:
            raise ConnectorError(f"POST {url}: HTTP {status}: the response is not a SOAP envelope "
                                 f"(root element {reply.tag})", status=status, kind=INVALID)
        return status, reply

    def _json_result(self, target: Target, operation: SoapOperation, body: etree._Element) -> Any:
        """The response element's content as JSON values (no unwrapping of single children)."""
        message = operation.output
        element = getattr(message, "body", None) if message is not None else None
        if element is None:
            return None
        node: etree._Element | None = body  # several parts: zeep models the Body itself
        if etree.QName(element.qname).text != etree.QName(body).text:
            node = next((c for c in body if isinstance(c.tag, str)), None)
            if node is None:
                return None
        context = XmlParserContext(settings=target.client.settings)
        value = element.parse(node, target.client.wsdl.types, context=context)
        return msgs.jsonable(serialize_object(value, dict))


def _input_element(operation: SoapOperation) -> str | None:
    message = operation.input
    element = getattr(message, "body", None) if message is not None else None
    if element is None or etree.QName(element.qname).localname == "Body":
        return None
    return str(etree.QName(element.qname).text)


def _snippet(content: bytes, limit: int = 200) -> str:
    text = content.decode("utf-8", "replace").strip()
    if not text:
        return ""
    return ": " + (text[:limit] + "..." if len(text) > limit else text)
