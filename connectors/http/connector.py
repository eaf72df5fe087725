"""The `http` connector: an HTTP/HTTPS client on one pooled aiohttp session per connection.

`send` makes one request per document (the document, or a body built from templates, is the request
body) and returns the response body (or the input document, with `response: keep`) with the
properties `status_code` and `header_<Name>`. `get` makes requests without a body and may follow
pages; each page, or each item that `split` selects, becomes a document.

Failures: network errors, timeouts, 429 and 5xx are retried by the connection's retry policy and count
for its circuit breaker; other statuses outside `expect` fail at once. A document that still fails is
returned with its error set (it keeps its content and properties) and takes the catch path.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from atom.connector import Connector, OperationContext
from atom.document import Document
from atom.errors import (
    INVALID,
    TIMEOUT,
    UNAVAILABLE,
    UNREACHABLE,
    ConnectorError,
    DocumentError,
    Location,
    status_kind,
)
from atom.expressions import jsonpath
from atom.resilience import CircuitBreaker, CircuitOpenError, call_with_retry
from atom.spec import CheckContext, Spec
from atom.yamlio import Where

from ._auth import ApiKeyAuth, Auth, make_auth
from ._spec import (
    CONNECTION_SPEC,
    DEFAULT_EXPECT,
    GET_SPEC,
    POOL_DEFAULTS,
    SEND_SPEC,
    TLS_DEFAULTS,
    parse_expect,
)
from ._wire import (
    Answer,
    display_url,
    is_absolute,
    join_url,
    link_next,
    parse_retry_after,
    sniff_content_type,
)

log = logging.getLogger("atom.connectors.http")

#: The operation context of the running call, so breaker transitions reach the right execution log.
_CURRENT: contextvars.ContextVar[OperationContext | None] = contextvars.ContextVar("atom_http_ctx",
                                                                                   default=None)

_CHUNK = 64 * 1024
_MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class _Request:
    method: str
    url: URL
    headers: CIMultiDict[str]
    data: bytes | None
    timeout: float
    expect: frozenset[int]


class HttpConnector(Connector):
    """HTTP client connection: `send` (one request per document) and `get` (paginated reads)."""

    type = "http"
    summary = "HTTP/HTTPS client: one request per document (send), or paginated reads (get)"
    connection_spec: ClassVar[Spec] = CONNECTION_SPEC
    operations: ClassVar[dict[str, Spec]] = {"send": SEND_SPEC, "get": GET_SPEC}

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.base_url = URL(str(config["url"]))
        self.default_headers: dict[str, str] = dict(config.get("headers") or {})
        self.connect_timeout: float = config.get("connect_timeout", 10.0)
        self.follow_redirects: bool = config.get("follow_redirects", True)
        self.max_response_size: int = config.get("max_response_size", 64 * 1024 * 1024)
        self.tls: dict[str, Any] = {**TLS_DEFAULTS, **(config.get("tls") or {})}
        self.pool: dict[str, Any] = {**POOL_DEFAULTS, **(config.get("pool") or {})}
        self.auth: Auth = make_auth(config.get("auth"), name, self.timeout)
        self._hidden_params = [self.auth.query] if isinstance(self.auth, ApiKeyAuth) and self.auth.query \
            else []
        self.session: aiohttp.ClientSession | None = None
        self.breaker.on_change = self._breaker_changed

    # ------------------------------------------------------------------------------------ load checks

    @classmethod
    def check_connection(cls, config: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        url = config.get("url")
        if isinstance(url, str):
            _check_http_url(url, "url", where.value("url"), ctx, base=True)
        auth = config.get("auth") or {}
        if auth.get("type") == "oauth2" and isinstance(auth.get("token_url"), str):
            _check_http_url(auth["token_url"], "auth.token_url", where.child("auth").value("token_url"), ctx)
        tls = config.get("tls") or {}
        if tls.get("key_file") and not tls.get("cert_file"):
            ctx.error(where.child("tls").value("key_file"),
                      "key_file needs cert_file (the client certificate)")
        return config

    @classmethod
    def check_operation(cls, action: str, op: dict[str, Any], where: Where,
                        ctx: CheckContext) -> dict[str, Any]:
        path = op.get("path")
        if path is not None and path.is_constant and is_absolute(path.source):
            ctx.error(where.value("path"), f"path '{path.source}' is an absolute URL; "
                                           "paths are relative to the connection url")
        body = op.get("body")
        if isinstance(body, dict) and body.get("json") is not None and body["json"].is_constant:
            try:
                orjson.loads(body["json"].source)
            except orjson.JSONDecodeError as exc:
                ctx.error(where.child("body").value("json"), f"body.json is not valid JSON: {exc}")
        return op

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the connection pool (one aiohttp session). TLS files are read here."""
        if self.session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self.pool["limit"], limit_per_host=self.pool["limit_per_host"],
                                         ssl=self._ssl())
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.connect_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies shared between executions
            raise_for_status=False,
            trust_env=False,
        )
        await super().start()

    async def stop(self) -> None:
        """Close the pool; requests in flight are cancelled by aiohttp."""
        session, self.session = self.session, None
        if session is not None:
            await session.close()
        await super().stop()

    def _ssl(self) -> ssl.SSLContext | bool:
        tls = self.tls
        ca, cert, key = tls.get("ca_file"), tls.get("cert_file"), tls.get("key_file")
        verify = tls.get("verify", True) is not False
        if verify and not (ca or cert):
            return True
        try:
            ctx = ssl.create_default_context(cafile=ca) if verify else ssl.create_default_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConnectorError(f"connection '{self.name}': cannot load tls.ca_file '{ca}': {exc}") from None
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            log.warning("connection '%s': TLS certificate verification is off (tls.verify: false); "
                        "the server's identity is not checked", self.name)
        if cert:
            try:
                ctx.load_cert_chain(cert, key, password=tls.get("key_password"))
            except (OSError, ssl.SSLError) as exc:
                raise ConnectorError(f"connection '{self.name}': cannot load tls.cert_file '{cert}'"
                                     f"{f' / key_file {key!r}' if key else ''}: {exc}") from None
        return ctx

    def describe(self) -> dict[str, Any]:
        """Secret-free summary: URL without credentials, auth kind, TLS files, pool, resilience."""
        return {
            "name": self.name,
            "type": self.type,
            "url": display_url(self.base_url, self._hidden_params),
            "auth": self.auth.describe(),
            "headers": sorted(self.default_headers),
            "tls": {k: v for k, v in self.tls.items() if k != "key_password"},
            "pool": dict(self.pool),
            "timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            "retry": {"attempts": self.retry.attempts, "backoff": self.retry.backoff,
                      "max_backoff": self.retry.max_backoff},
            "circuit_breaker": {"state": self.breaker.state,
                                "failure_threshold": self.breaker.failure_threshold,
                                "reset_timeout": self.breaker.reset_timeout},
            "started": self.started,
        }

    # ------------------------------------------------------------------------------------ send

    async def send(self, op: Mapping[str, Any], docs: list[Document],
                   ctx: OperationContext) -> list[Document]:
        """One request per document; returns one document per input, in order.

        Success: the response body (or, with `response: keep`, the input document) with the input's
        properties plus `status_code` and `header_<Name>`. Failure: the input document with its error
        set (and `status_code` / `header_*` when an answer came). An empty batch sends nothing.
        """
        if not docs:
            return []
        token = _CURRENT.set(ctx)
        try:
            limit = int(op.get("concurrency") or 1)
            if limit == 1 or len(docs) == 1:
                return [await self._send_one(op, doc, ctx) for doc in docs]
            sem = asyncio.Semaphore(limit)

            async def bounded(doc: Document) -> Document:
                async with sem:
                    return await self._send_one(op, doc, ctx)

            return list(await asyncio.gather(*(bounded(d) for d in docs)))
        finally:
            _CURRENT.reset(token)

    async def _send_one(self, op: Mapping[str, Any], doc: Document, ctx: OperationContext) -> Document:
        method = op.get("method", "POST")
        try:
            req = self._build(op, ctx.scope(doc), doc)
        except (DocumentError, ValueError) as exc:
            return doc.copy().fail(self._scrub(f"connection '{self.name}': {method}: cannot build the "
                                               f"request: {exc}"), getattr(exc, "kind", INVALID))
        try:
            answer = await self._call(req, ctx)
        except ConnectorError as exc:
            return self._failed(doc, exc)
        props = {**doc.props, **answer.properties()}
        if op.get("response") == "keep":
            out = doc.copy()
            out.props = props
            return out
        return doc.derive(answer.body, props=props)

    # ------------------------------------------------------------------------------------ get

    async def get(self, op: Mapping[str, Any], docs: list[Document],
                  ctx: OperationContext) -> list[Document]:
        """Read documents: one request series without input, else one per input document.

        Each page becomes one document, or with `split` one document per selected item (a page with no
        items gives none); a page that only marks the end of `page` pagination (empty) is dropped.
        Documents carry the input's properties plus `status_code` and `header_<Name>` of their page.
        If a page still fails after the retries, the documents already read for that input are
        discarded and one failed document (the input, or an empty one) carries the error.
        """
        token = _CURRENT.set(ctx)
        try:
            out: list[Document] = []
            inputs: list[Document | None] = list(docs) if docs else [None]
            for doc in inputs:
                out.extend(await self._get_one(op, doc, ctx))
            return out
        finally:
            _CURRENT.reset(token)

    async def _get_one(self, op: Mapping[str, Any], doc: Document | None,
                       ctx: OperationContext) -> list[Document]:
        source = doc if doc is not None else Document(b"")
        method = op.get("method", "GET")
        try:
            req = self._build(op, ctx.scope(doc), None)
        except (DocumentError, ValueError) as exc:
            return [source.copy().fail(self._scrub(f"connection '{self.name}': {method}: cannot build the "
                                                   f"request: {exc}"), getattr(exc, "kind", INVALID))]
        pager = _Pager.create(op.get("paginate"), req.url)
        split: str | None = op.get("split")
        max_pages = int(op.get("max_pages") or 100)
        out: list[Document] = []
        url: URL | None = pager.first()
        pages = 0
        while url is not None:
            pages += 1
            page_req = replace(req, url=url)
            try:
                answer = await self._call(page_req, ctx)
                items = _page_items(answer, split) if split or pager.counts else None
                nxt = pager.next(answer, items)
                if nxt is not None and nxt.origin() != self.base_url.origin():
                    raise ConnectorError(f"{method} {self._show(url)}: the next page is on another origin "
                                         f"({nxt.origin()}); not followed", kind=INVALID)
            except (ConnectorError, DocumentError) as exc:
                if isinstance(exc, ConnectorError):
                    return [self._failed(source, exc, page=pages if pager.paged else 0)]
                return [source.copy().fail(self._scrub(
                    f"connection '{self.name}': {method} {self._show(url)}: {exc}"), exc.kind)]
            props = {**source.props, **answer.properties()}
            if split:
                out.extend(Document.from_json(item, dict(props)) for item in items or [])
            elif not (pager.counts and items == []):  # an empty numbered page carries nothing
                out.append(source.derive(answer.body, props=props))
            if nxt is not None and pages >= max_pages:
                ctx.log("warning", f"connection '{self.name}': {method} {self._show(req.url)}: stopped after "
                                   f"max_pages ({max_pages}); more pages were announced")
                nxt = None
            url = nxt
        return out

    # ------------------------------------------------------------------------------------ requests

    def _build(self, op: Mapping[str, Any], scope: Mapping[str, Any], doc: Document | None) -> _Request:
        """Render the operation's templates for one document into a request (raises DocumentError)."""
        params: list[tuple[str, str]] = []
        for key, tmpl in (op.get("query") or {}).items():
            value = tmpl.render(scope)
            if value != "":
                params.append((key, value))
        path_t = op.get("path")
        url = join_url(self.base_url, path_t.render(scope) if path_t is not None else "", params)
        headers: CIMultiDict[str] = CIMultiDict(self.default_headers)
        for key, tmpl in (op.get("headers") or {}).items():
            value = tmpl.render(scope)
            if "\r" in value or "\n" in value:
                raise DocumentError(f"header '{key}' renders a line break, which HTTP headers cannot hold")
            if value != "":
                headers[key] = value
        data: bytes | None = None
        content_type: str | None = None
        body = op.get("body", "document") if doc is not None else "none"
        if body == "document":
            data = doc.data if doc is not None else None
            content_type = sniff_content_type(data) if data else None
        elif isinstance(body, Mapping):
            if body.get("json") is not None:
                text = body["json"].render(scope)
                try:
                    orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise DocumentError(f"body.json did not render valid JSON ({exc}): "
                                        f"{text[:200]}") from None
                data, content_type = text.encode(), "application/json"
            elif body.get("form") is not None:
                fields = [(k, t.render(scope)) for k, t in body["form"].items()]
                data, content_type = urlencode(fields).encode(), "application/x-www-form-urlencoded"
            elif body.get("template") is not None:
                data, content_type = body["template"].render(scope).encode(), "text/plain; charset=utf-8"
        if op.get("content_type"):
            headers["Content-Type"] = op["content_type"]
        elif content_type and "Content-Type" not in headers:
            headers["Content-Type"] = content_type
        expect = op.get("expect")
        if expect is None:
            expect = DEFAULT_EXPECT
        elif not isinstance(expect, frozenset):
            expect = parse_expect(expect) or DEFAULT_EXPECT
        return _Request(op.get("method", "GET" if doc is None else "POST"), url, headers, data,
                        float(op.get("timeout") or self.timeout), expect)

    async def _call(self, req: _Request, ctx: OperationContext) -> Answer:
        """One request with retries and the circuit breaker; raises ConnectorError when it fails."""
        if self.session is None:
            raise ConnectorError(f"{req.method} {self._show(req.url)}: connection is not started")

        failures: list[ConnectorError] = []

        async def attempt() -> Answer:
            trial = self.breaker.state == CircuitBreaker.HALF_OPEN
            try:
                return await self._attempt(req)
            except ConnectorError as exc:
                failures.append(exc)
                raise
            except asyncio.CancelledError:
                if trial:  # a cancelled trial call must not leave the breaker half-open for ever
                    self.breaker.record_failure()
                raise
            except Exception as exc:  # a bug or an unexpected library error: fail, do not retry
                raise ConnectorError(f"{req.method} {self._show(req.url)}: "
                                     f"{type(exc).__name__}: {exc}") from exc

        try:
            return await call_with_retry(attempt, policy=self.retry, breaker=self.breaker,
                                         connection=self.name,
                                         log=lambda lv, msg: ctx.log(lv, self._scrub(msg)))
        except CircuitOpenError as exc:
            reason = str(exc).split(": ", 1)[-1]
            if failures:  # the breaker opened during our own retries: keep the real error in front
                last = failures[-1]
                err = ConnectorError(f"{last} (after {len(failures)} attempts; then the {reason})",
                                     status=last.status, kind=UNAVAILABLE)
                err.answer = getattr(last, "answer", None)  # type: ignore[attr-defined]
            else:
                err = ConnectorError(f"{req.method} {self._show(req.url)}: {reason}", kind=UNAVAILABLE)
            raise err from None

    async def _attempt(self, req: _Request) -> Answer:
        assert self.session is not None
        headers = CIMultiDict(req.headers)
        url, credential = await self.auth.apply(self.session, headers, req.url)
        answer = await self._exchange(req, url, headers)
        if answer.status == 401 and self.auth.renewable and 401 not in req.expect:
            log.info("connection '%s': %s %s answered 401; renewing the token once", self.name, req.method,
                     self._show(url))
            headers = CIMultiDict(req.headers)
            url, _ = await self.auth.apply(self.session, headers, req.url, stale=credential)
            answer = await self._exchange(req, url, headers)
        if answer.status in req.expect:
            return answer
        status = answer.status
        retryable = status == 429 or status >= 500
        retry_after = parse_retry_after(answer.headers.get("Retry-After")) if retryable else None
        note = f" (Retry-After: {retry_after:g}s)" if retry_after is not None else ""
        err = ConnectorError(f"{req.method} {self._show(url)} answered {status} {answer.reason}{note}: "
                             f"{answer.excerpt() or '(empty body)'}", retryable=retryable, status=status,
                             kind=status_kind(status))
        if retry_after is not None:
            err.retry_after = retry_after  # type: ignore[attr-defined]
        err.answer = answer  # type: ignore[attr-defined]
        raise err

    async def _exchange(self, req: _Request, url: URL, headers: CIMultiDict[str]) -> Answer:
        """Send the request, following redirects unless the status is expected. A redirect to another
        origin drops the credentials (the request goes on with the operation's headers only)."""
        method, data = req.method, req.data
        for hop in range(_MAX_REDIRECTS + 1):
            answer, location = await self._exchange_once(req, method, url, headers, data)
            if location is None or not self.follow_redirects or answer.status in req.expect:
                return answer
            target = answer.url.join(URL(location))
            what = f"{method} {self._show(url)}"
            if hop == _MAX_REDIRECTS:
                raise ConnectorError(f"{what}: more than {_MAX_REDIRECTS} redirects", status=answer.status,
                                     kind=status_kind(answer.status))
            if target.scheme not in ("http", "https"):
                raise ConnectorError(f"{what}: redirect to a non-HTTP URL is not followed", status=answer.status,
                                     kind=status_kind(answer.status))
            if target.origin() != url.origin():
                headers = CIMultiDict(req.headers)  # no Authorization, no API key header
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else method
                data = None
                headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() != "content-type")
            url = target
        raise AssertionError("unreachable")

    async def _exchange_once(self, req: _Request, method: str, url: URL, headers: CIMultiDict[str],
                             data: bytes | None) -> tuple[Answer, str | None]:
        """One HTTP exchange, the body read in full. Returns the answer and, for a redirect status, its
        Location. Raises ConnectorError (retryable for network errors and timeouts)."""
        assert self.session is not None
        what = f"{method} {self._show(url)}"
        try:
            async with self.session.request(
                method, url, headers=headers, data=data, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=req.timeout, sock_connect=self.connect_timeout),
            ) as resp:
                location = resp.headers.get("Location") if resp.status in _REDIRECTS else None
                if resp.content_length is not None and resp.content_length > self.max_response_size:
                    raise ConnectorError(f"{what}: response of {resp.content_length} bytes is larger than "
                                         f"max_response_size ({self.max_response_size})", status=resp.status,
                                         kind=INVALID)
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    buf += chunk
                    if len(buf) > self.max_response_size:
                        raise ConnectorError(f"{what}: response is larger than max_response_size "
                                             f"({self.max_response_size})", status=resp.status, kind=INVALID)
                answer = Answer(resp.status, resp.reason or "", CIMultiDictProxy(CIMultiDict(resp.headers)),
                                bytes(buf), resp.url)
                return answer, location
        except ConnectorError:
            raise
        except TimeoutError:
            raise ConnectorError(f"{what}: no answer within {req.timeout:g}s", retryable=True,
                                 kind=TIMEOUT) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise ConnectorError(f"{what}: TLS error: {exc}", kind=UNREACHABLE) from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise ConnectorError(f"{what}: {type(exc).__name__}: {exc}", kind=INVALID) from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise ConnectorError(f"{what}: network error: {detail}", retryable=True, kind=UNREACHABLE) from None

    # ------------------------------------------------------------------------------------ internals

    def _failed(self, doc: Document, exc: ConnectorError, page: int = 0) -> Document:
        failed = doc.copy()
        answer = getattr(exc, "answer", None) or getattr(exc.__cause__, "answer", None)
        if isinstance(answer, Answer):
            failed.props = {**failed.props, **answer.properties()}
        where = f" (page {page})" if page > 1 else ""
        status = exc.status if exc.status is not None and exc.status >= 300 else None  # what made it fail
        return failed.fail(self._scrub(f"connection '{self.name}'{where}: {exc}"), exc.kind, status)

    def _show(self, url: URL) -> str:
        return display_url(url, self._hidden_params)

    def _scrub(self, message: str) -> str:
        """Remove every secret value of this connection from a message."""
        for secret in self.auth.secrets():
            if secret and len(secret) >= 3:
                message = message.replace(secret, "***")
        return message

    def _breaker_changed(self, old: str, new: str) -> None:
        message = f"connection '{self.name}': circuit breaker {old} -> {new}"
        if new == CircuitBreaker.OPEN:
            message += f" after {self.breaker.failures} failed call(s); calls fail at once for " \
                       f"{self.breaker.reset_timeout:g}s"
        level = "warning" if new == CircuitBreaker.OPEN else "info"
        log.log(logging.WARNING if new == CircuitBreaker.OPEN else logging.INFO, message)
        ctx = _CURRENT.get()
        if ctx is not None:
            ctx.log(level, message)


# ---------------------------------------------------------------------------------------- pagination


def _page_items(answer: Answer, split: str | None) -> list[Any] | None:
    """Items of a page: the `split` matches, else a top-level JSON array; None if not countable."""
    if not answer.body.strip():
        return []
    if split is None and answer.body.lstrip()[:1] != b"[":
        return None
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        if split is None:
            return None
        raise DocumentError(f"answer is not valid JSON, cannot split it ({exc})") from None
    if split is None:
        return data if isinstance(data, list) else None
    got = jsonpath(data, split)
    if isinstance(got, list):  # `$.items[*]` gives the matches, `$.items` the array: split both
        return got
    return [] if got is None else [got]


class _Pager:
    """No pagination: one request."""

    #: True if pages are numbered requests of one operation (messages name the page)
    paged = False
    #: True if the pager needs the page's item count
    counts = False

    def __init__(self, cfg: Mapping[str, Any], url: URL) -> None:
        self.cfg = cfg
        self.url = url

    @staticmethod
    def create(cfg: Mapping[str, Any] | None, url: URL) -> _Pager:
        kind = (cfg or {}).get("type")
        if kind == "link_header":
            return _LinkPager(cfg or {}, url)
        if kind == "cursor":
            return _CursorPager(cfg or {}, url)
        if kind == "page":
            return _PagePager(cfg or {}, url)
        return _Pager(cfg or {}, url)

    def first(self) -> URL:
        return self.url

    def next(self, answer: Answer, items: list[Any] | None) -> URL | None:
        """URL of the next page, or None when this was the last one."""
        return None


class _LinkPager(_Pager):
    paged = True

    def next(self, answer: Answer, items: list[Any] | None) -> URL | None:
        return link_next(answer.headers, answer.url)


class _CursorPager(_Pager):
    paged = True

    def __init__(self, cfg: Mapping[str, Any], url: URL) -> None:
        super().__init__(cfg, url)
        self.seen: set[str] = set()

    def next(self, answer: Answer, items: list[Any] | None) -> URL | None:
        try:
            data = orjson.loads(answer.body) if answer.body.strip() else None
        except orjson.JSONDecodeError as exc:
            raise DocumentError(f"answer is not valid JSON, cannot read the cursor ({exc})") from None
        cursor = jsonpath(data, self.cfg["cursor_path"]) if data is not None else None
        if isinstance(cursor, list):
            cursor = cursor[0] if cursor else None
        if cursor is None or cursor == "" or cursor is False:
            return None
        value = str(cursor)
        if value in self.seen:  # a cursor that repeats would loop for ever
            return None
        self.seen.add(value)
        return self.url.update_query({self.cfg.get("param", "cursor"): value})


class _PagePager(_Pager):
    paged = True
    counts = True

    def __init__(self, cfg: Mapping[str, Any], url: URL) -> None:
        super().__init__(cfg, url)
        self.number = int(cfg.get("start", 1))

    def _url(self) -> URL:
        query: dict[str, str] = {self.cfg.get("param", "page"): str(self.number)}
        if self.cfg.get("size_param") and self.cfg.get("size"):
            query[self.cfg["size_param"]] = str(self.cfg["size"])
        return self.url.update_query(query)

    def first(self) -> URL:
        return self._url()

    def next(self, answer: Answer, items: list[Any] | None) -> URL | None:
        if items is not None:
            if not items and self.cfg.get("stop_when_empty", True):
                return None
            size = self.cfg.get("size")
            if size and len(items) < int(size):
                return None
        self.number += 1
        return self._url()


def _check_http_url(url: str, name: str, loc: Location, ctx: CheckContext, base: bool = False) -> None:
    try:
        parsed = URL(url)
    except ValueError as exc:
        ctx.error(loc, f"{name} is not a valid URL: {exc}")
        return
    if parsed.scheme not in ("http", "https") or not parsed.host:
        ctx.error(loc, f"{name} must be an absolute http:// or https:// URL, got '{display_url(parsed)}'")
        return
    if parsed.user or parsed.password:
        ctx.error(loc, f"{name} must not hold credentials; use auth: {{type: basic, username: ..., "
                       "password: ...}")
    if base and parsed.fragment:
        ctx.error(loc, f"{name} must not have a #fragment")
