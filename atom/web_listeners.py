"""Listener routes: `/ws/simple/{operation}{Object}`, `/ws/rest/{path}`, `/ws/soap`, `/ws/soap12`.

Routes are not static aiohttp routes: every request is looked up in the current deployment's
`ListenerTable` (a dict lookup; REST paths with `{param}` segments try their compiled patterns), so a
redeploy mounts and unmounts listeners atomically by swapping the table.

Request -> execution (DESIGN 2.2): path parameter `{id}` -> process property `param_id`, query
`?foo=x` -> `query_foo` (first value), method -> `inmethod`, path -> `inpath`, authenticated user ->
`inuser`; request header `X-Name` -> document property `inheader_X-Name` (never credentials or
hop-by-hop headers). The body becomes documents by the listener's input type.

Execution -> response: the documents that reached `return` (see `build_result`); `outstatuscode` and
`outheader_<Name>` document properties set the status and headers (the first document that sets one
wins). An execution that ends in ERROR answers 500 with the error envelope.

Rate limits: `limits.rate_limit` (atom.yaml, every listener, checked before authentication) and a
listener's own `rate_limit` (checked after authentication, so it can count per user). The listeners'
limiters and usage counters live on `ListenerRoutes`, not on the table, so a redeploy that keeps a
listener's limit keeps its buckets.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from lxml import etree

from . import metrics
from .auth import ApiKeyAuth, Authenticator, AuthError, ListenerAuth, listener_auth
from .document import Document, parse_xml
from .errors import DocumentError
from .loader import listener_key
from .model import Deployment, ProcessDef
from .web_http import (
    JSON_TYPE,
    HttpResult,
    error_response,
    error_result,
    header_properties,
    parse_max_wait,
)

if TYPE_CHECKING:
    from .engine import Execution
    from .runtime import Runtime

log = logging.getLogger("atom.listeners")

OUTPUT_TYPES = {"json": JSON_TYPE, "xml": "application/xml", "data": "application/octet-stream"}
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>\s*")


class Listener:
    """A mounted listener: its process definition and everything the request path needs, resolved
    once at deploy time."""

    __slots__ = ("auth", "input", "key_header", "kind", "limiter", "max_concurrent", "methods", "output", "path",
                 "process", "rate", "usage")

    def __init__(self, process: ProcessDef, kind: str, path: str, methods: frozenset[str], auth: ListenerAuth,
                 max_concurrent: int) -> None:
        cfg = process.start.config
        self.process = process
        self.kind = kind  # simple | rest | soap
        self.path = path  # the URL path clients call
        self.methods = methods
        self.input: str = cfg.get("input", "data")
        self.output: str = cfg.get("output", "data")
        self.auth = auth
        a = auth.authenticator
        #: the header carrying an api_key listener's key (lower case): a credential, never a property
        self.key_header: str | None = a.header.lower() if isinstance(a, ApiKeyAuth) else None
        self.max_concurrent = max_concurrent
        #: the listener's own rate limit as (requests, per, burst, by), or None
        self.rate = rate_settings(cfg.get("rate_limit"))
        #: resolved by ListenerRoutes on the first request: the limiter (kept across deploys while
        #: `rate` stays the same) and the usage counters of the process
        self.limiter: ListenerRateLimit | None = None
        self.usage: ListenerUsage | None = None


class _RestRoute:
    __slots__ = ("by_method", "names", "pattern", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        self.names: list[str] = []
        parts = []
        for seg in template.strip("/").split("/"):
            m = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", seg)
            if m:
                self.names.append(m.group(1))
                parts.append(f"(?P<{m.group(1)}>[^/]+)")
            else:
                parts.append(re.escape(seg))
        self.pattern = re.compile("/" + "/".join(parts))
        self.by_method: dict[str, Listener] = {}


def _norm(path: str) -> str:
    path = "/" + path.strip("/")
    return path


class ListenerTable:
    """The listeners of one deployment. Immutable once built; a redeploy builds a new table."""

    def __init__(self, deployment: Deployment, server_auth_cfg: Mapping[str, Any], server_auth: Authenticator,
                 max_concurrent: int) -> None:
        self.simple: dict[str, Listener] = {}
        self.rest_static: dict[str, dict[str, Listener]] = {}
        self.rest_dynamic: list[_RestRoute] = []
        self.soap: dict[str, Listener] = {}
        self.processes: dict[str, Listener] = {}
        dynamic: dict[str, _RestRoute] = {}
        for pdef in deployment.processes.values():
            key = listener_key(pdef)
            if key is None:
                continue
            cfg = pdef.start.config
            auth = listener_auth(cfg.get("auth"), server_auth_cfg, server_auth)
            limit = int(cfg.get("max_concurrent") or max_concurrent)
            kind, route = key
            if kind == "simple":
                methods = frozenset({"POST", "GET"} if cfg.get("input") == "none" else {"POST"})
                lst = Listener(pdef, kind, f"/ws/simple/{route}", methods, auth, limit)
                self.simple[route] = lst
            elif kind == "rest":
                method = cfg["rest"].get("method", "POST")
                template = _norm(cfg["rest"]["path"])
                lst = Listener(pdef, kind, "/ws/rest" + template, frozenset({method}), auth, limit)
                if "{" in template:
                    r = dynamic.get(template)
                    if r is None:
                        r = dynamic[template] = _RestRoute(template)
                        self.rest_dynamic.append(r)
                    r.by_method[method] = lst
                else:
                    self.rest_static.setdefault(template, {})[method] = lst
            else:
                lst = Listener(pdef, kind, "/ws/soap", frozenset({"POST"}), auth, limit)
                self.soap[route] = lst
            self.processes[pdef.name] = lst
        # static segments before parameters: /orders/latest wins over /orders/{id}
        self.rest_dynamic.sort(key=lambda r: [seg.startswith("{") for seg in r.template.split("/")])

    def match_rest(self, path: str) -> tuple[dict[str, Listener], dict[str, str]] | None:
        """The listeners (by method) serving a path under /ws/rest, and its path parameters."""
        path = _norm(path)
        got = self.rest_static.get(path)
        if got is not None:
            return got, {}
        for r in self.rest_dynamic:
            m = r.pattern.fullmatch(path)
            if m:
                return r.by_method, m.groupdict()
        return None


# ------------------------------------------------------------------------------------- documents


class InputError(Exception):
    """The request body does not fit the listener's input type (400)."""


def read_documents(input_type: str, body: bytes, props: dict[str, str]) -> list[Document]:
    """The documents of a request body. `props` (the inheader_* properties) is copied onto each.

    none and data: one document (none: empty); json / xml: one validated document; json_multiple: one
    per element of a JSON array (any other JSON value is one document); xml_multiple: one per child
    element of the root. Raises InputError with the parser's message for malformed input.
    """
    if input_type == "data" or input_type == "none":
        return [Document(body, props)]
    if input_type in ("json", "json_multiple"):
        if not body.strip():
            raise InputError("the request body is empty, expected JSON")
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the request body is not valid JSON: {exc}") from None
        if input_type == "json_multiple" and isinstance(value, list):
            return [Document(b"").derive(orjson.dumps(v), json_value=v, props=dict(props)) for v in value]
        doc = Document(body, props)
        if value is not None:
            doc = Document(b"").derive(body, json_value=value, props=props)
        return [doc]
    # xml, xml_multiple
    if not body.strip():
        raise InputError("the request body is empty, expected XML")
    try:
        root = parse_xml(body, "the request body")
    except DocumentError as exc:
        raise InputError(str(exc)) from None
    if input_type == "xml_multiple":
        return [Document(etree.tostring(child, encoding="utf-8"), dict(props))
                for child in root if isinstance(child.tag, str)]
    return [Document(body, props)]


def build_result(ex: Execution, output: str) -> HttpResult:
    """The HTTP response of a finished execution, by the listener's output type.

    One document: its bytes; several: a JSON array (json), a `<Response>` element holding each
    document's root (xml), or the bytes concatenated (data); none: an empty body. No document: 200
    with an empty body. ERROR answers 500 with the error envelope; ABORTED 503.
    """
    if ex.status == "ERROR":
        return error_result(500, "PROCESS_ERROR", ex.message or "the process failed", ex.id)
    if ex.status == "ABORTED":
        return error_result(503, "ABORTED", ex.message or "the execution was aborted", ex.id)
    docs = ex.returned
    status = 0
    headers: dict[str, str] = {}
    content_type = None
    for d in docs:
        for k, v in d.props.items():
            if k.startswith("out"):
                if k == "outstatuscode":
                    if not status:
                        try:
                            code = int(v)
                        except ValueError:
                            code = 0
                        if 100 <= code <= 599:
                            status = code
                elif k.startswith("outheader_") and len(k) > 10:
                    headers.setdefault(k[10:], v)
            elif k == "content_type" and content_type is None:
                content_type = v
    if output == "none" or not docs:
        body = b""
    elif len(docs) == 1:
        body = docs[0].data
    elif output == "json":
        body = b"[" + b",".join(d.data.strip() for d in docs) + b"]"
    elif output == "xml":
        body = b"<Response>" + b"".join(_XML_DECL.sub(b"", d.data) for d in docs) + b"</Response>"
    else:
        body = b"".join(d.data for d in docs)
    out: dict[str, str] = {}
    if body or output != "none":
        ct = OUTPUT_TYPES.get(output)
        if output == "data" and content_type:
            ct = content_type
        if ct and body:
            out["Content-Type"] = ct
    out["X-Execution-Id"] = ex.id
    for k, v in headers.items():
        if k.lower() == "content-type":
            out["Content-Type"] = v
        else:
            out[k] = v
    return HttpResult(status or 200, out, body)


# ------------------------------------------------------------------------------------- rate limit


class TokenBuckets:
    """Token buckets, `burst` deep and refilled at `rate` tokens per second, one per key; idle full
    buckets are pruned once there are more than 50,000."""

    __slots__ = ("buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[Any, list[float]] = {}

    def take(self, key: Any) -> float:
        """Take a token from `key`'s bucket: the tokens left (>= 0), or -seconds to wait (< 0).

        Answers with a float so the request path allocates nothing but a new bucket."""
        now = time.monotonic()
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) > 50000:
                self._prune(now)
            b = self.buckets[key] = [self.burst, now]
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return b[0]
        b[0] = tokens
        return -(1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (t, last) in self.buckets.items() if t + (now - last) * self.rate >= self.burst]
        for k in full:
            del self.buckets[k]


class RateLimiter(TokenBuckets):
    """The server-wide `limits.rate_limit`: `requests` per `per` seconds, `burst` deep, keyed by client
    and listener or by listener alone."""

    __slots__ = ("by_client",)

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(float(cfg["requests"]) / float(cfg.get("per") or 1.0),
                         float(cfg.get("burst") or cfg["requests"]))
        self.by_client = cfg.get("by", "client") == "client"

    def wait(self, listener: str, client: str) -> float:
        """0 when the request may go on, else the seconds until a token is available."""
        left = self.take((listener, client if self.by_client else ""))
        return 0.0 if left >= 0 else -left


RateSettings = tuple[int, float, int, str]


def rate_settings(cfg: Mapping[str, Any] | None) -> RateSettings | None:
    """A listener's `rate_limit` as (requests, per seconds, burst, by); None without one."""
    if not cfg or not cfg.get("requests"):
        return None
    requests = int(cfg["requests"])
    return requests, float(cfg.get("per") or 1.0), int(cfg.get("burst") or requests), str(cfg.get("by") or "client")


_BY = {"client": 0, "user": 1, "listener": 2}


class ListenerRateLimit(TokenBuckets):
    """The token buckets of one listener's `rate_limit`: `requests` per `per` seconds, `burst` deep, one
    bucket per client address, per user (the client address for anonymous calls) or one in all.
    `take` (see TokenBuckets) answers the whole tokens left, or minus the seconds to wait."""

    __slots__ = ("_counts", "by", "limit_header", "settings")

    def __init__(self, settings: RateSettings) -> None:
        requests, per, burst, by = settings
        super().__init__(requests / per, float(burst))
        self.settings = settings
        self.by = _BY[by]
        #: X-RateLimit-Limit, and X-RateLimit-Remaining for each possible count, made once
        self.limit_header = str(burst)
        self._counts = tuple(str(i) for i in range(min(burst, 1000) + 1))

    def key(self, client: str | None, user: str | None) -> str:
        """The bucket of a request."""
        if self.by == 2:
            return ""
        if self.by == 1 and user is not None:
            return user
        return client or ""

    def remaining(self, left: float) -> str:
        """X-RateLimit-Remaining for `left` tokens: the whole requests that may follow at once."""
        n = int(left)
        return self._counts[n] if n < len(self._counts) else str(n)

    def refused(self, wait: float, path: str) -> HttpResult:
        """The 429 answer for a request that has to wait `wait` seconds."""
        secs = str(max(1, math.ceil(wait)))
        return error_result(429, "RATE_LIMITED", f"rate limit of listener {path} exceeded; retry in {secs} s",
                            headers={"Retry-After": secs, "X-RateLimit-Limit": self.limit_header,
                                     "X-RateLimit-Remaining": "0"})


#: distinct `user` label values of atom_listener_requests_total per process; further users count as "other"
MAX_USERS_PER_PROCESS = 1000


class _UserCounters:
    __slots__ = ("by_status", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self.by_status: dict[int, Any] = {}


class ListenerUsage:
    """The usage counters of one listener process: requests by user and status, and throttled
    requests. Label children are made once and kept, so counting is two dictionary lookups."""

    __slots__ = ("_anonymous", "_other", "_users", "process", "throttled")

    def __init__(self, process: str) -> None:
        self.process = process
        self.throttled: Any = metrics.LISTENER_THROTTLED.labels(process)
        self._users: dict[str, _UserCounters] = {}
        self._anonymous = _UserCounters("anonymous")
        self._other = _UserCounters("other")

    def done(self, user: str | None, resp: web.StreamResponse) -> web.StreamResponse:
        """Count an answered request of `user` (None: anonymous) and hand the response back."""
        if user is None:
            uc = self._anonymous
        else:
            got = self._users.get(user)
            if got is None:
                if len(self._users) >= MAX_USERS_PER_PROCESS:
                    got = self._other
                else:
                    got = self._users[user] = _UserCounters(user)
            uc = got
        status = resp.status
        c = uc.by_status.get(status)
        if c is None:
            c = uc.by_status[status] = metrics.LISTENER_REQUESTS.labels(self.process, uc.label, str(status))
        c.inc()
        return resp


# ------------------------------------------------------------------------------------- handlers


class ListenerRoutes:
    """The aiohttp handlers of the listener paths, bound to a runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        #: outlive deployments (each deploy builds a new ListenerTable): per process, the usage
        #: counters and the listener's limiter, whose buckets go on while its settings stay the same
        self._usage: dict[str, ListenerUsage] = {}
        self._limiters: dict[str, ListenerRateLimit] = {}

    def _resolve(self, lst: Listener) -> ListenerUsage:
        """Bind a listener of a new deployment to its process's counters and limiter (once per
        Listener): the limiter of the previous deployment when its settings did not change, else a new
        one with full buckets."""
        name = lst.process.name
        usage = self._usage.get(name)
        if usage is None:
            usage = self._usage[name] = ListenerUsage(name)
        if lst.rate is None:
            self._limiters.pop(name, None)
        else:
            lim = self._limiters.get(name)
            if lim is None or lim.settings != lst.rate:
                lim = self._limiters[name] = ListenerRateLimit(lst.rate)
            lst.limiter = lim
        lst.usage = usage
        return usage

    def add_to(self, app: web.Application) -> None:
        limit_expect = self._expect
        r = app.router
        r.add_route("*", "/ws/simple/{name}", self.simple, expect_handler=limit_expect)
        r.add_route("*", "/ws/rest/{tail:.*}", self.rest, expect_handler=limit_expect)
        r.add_route("*", "/ws/soap", self.soap11, expect_handler=limit_expect)
        r.add_route("*", "/ws/soap12", self.soap12, expect_handler=limit_expect)

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """Answer 413 before `100 Continue` when the announced body is over the limit."""
        cl = request.content_length
        if cl is not None and cl > self.rt.config.limits.max_request_bytes:
            return self._too_large(cl)
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the 100 is not part of the response
        return None

    def _too_large(self, size: int | None) -> web.Response:
        limit = self.rt.config.limits.max_request_bytes
        what = f"{size} bytes" if size is not None else "the request body"
        self.rt.count("listener", 413)
        return error_response(413, "PAYLOAD_TOO_LARGE", f"{what} is over the limit of {limit} bytes",
                              headers={"Connection": "close"})

    async def simple(self, request: web.Request) -> web.StreamResponse:
        lst = self.rt.listeners.simple.get(request.match_info["name"])
        if lst is None:
            return self._not_found(request)
        return await self.serve(request, lst, None)

    async def rest(self, request: web.Request) -> web.StreamResponse:
        got = self.rt.listeners.match_rest(request.match_info["tail"])
        if got is None:
            return self._not_found(request)
        by_method, params = got
        lst = by_method.get(request.method)
        if lst is None:
            allow = ", ".join(sorted(by_method))
            self.rt.count("listener", 405)
            return error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on "
                                  f"{request.path}; allowed: {allow}", headers={"Allow": allow})
        return await self.serve(request, lst, params)

    def _not_found(self, request: web.Request) -> web.Response:
        self.rt.count("listener", 404)
        if not self.rt.ready:
            return self.rt.unavailable()
        return error_response(404, "NOT_FOUND", f"no listener at {request.method} {request.path}")

    async def serve(self, request: web.Request, lst: Listener, params: dict[str, str] | None,
                    body: bytes | None = None, soap_version: str | None = None) -> web.StreamResponse:
        """Run a listener's process for a request and answer (or 202 when it outlasts X-Max-Wait).

        In order: ready, method, the server-wide rate limit (before authentication, by client), the
        listener's authentication, the listener's own rate limit (after it, so `by: user` knows the
        user and a refused login takes no token), then the execution. Every answer is counted in
        atom_listener_requests_total by process, user and status."""
        rt = self.rt
        usage = lst.usage
        if usage is None:
            usage = self._resolve(lst)
        if not rt.ready:
            return usage.done(None, self._fail(soap_version, rt.unavailable_result()))
        if request.method not in lst.methods:
            allow = ", ".join(sorted(lst.methods))
            return usage.done(None, self._fail(soap_version, error_result(
                405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {lst.path}; allowed: {allow}",
                headers={"Allow": allow})))
        server_limit = rt.rate_limiter
        if server_limit is not None:
            wait = server_limit.wait(lst.process.name, request.remote or "")
            if wait:
                usage.throttled.inc()
                secs = str(max(1, math.ceil(wait)))
                return usage.done(None, self._fail(soap_version, error_result(
                    429, "RATE_LIMITED", f"rate limit of listener {lst.path} exceeded; retry in {secs} s",
                    headers={"Retry-After": secs})))
        headers = request.headers
        try:
            user = lst.auth.check(headers)
        except AuthError as exc:
            h = {"WWW-Authenticate": exc.challenge} if exc.challenge else None
            return usage.done(None, self._fail(soap_version, error_result(exc.status, exc.code, exc.message,
                                                                          headers=h)))
        limiter = lst.limiter
        if limiter is None:
            return usage.done(user, await self._run(request, lst, params, body, soap_version, user))
        left = limiter.take(limiter.key(request.remote, user))
        if left < 0:
            usage.throttled.inc()
            return usage.done(user, self._fail(soap_version, limiter.refused(-left, lst.path)))
        resp = await self._run(request, lst, params, body, soap_version, user)
        rh = resp.headers
        rh["X-RateLimit-Limit"] = limiter.limit_header
        rh["X-RateLimit-Remaining"] = limiter.remaining(left)
        return usage.done(user, resp)

    async def _run(self, request: web.Request, lst: Listener, params: dict[str, str] | None, body: bytes | None,
                   soap_version: str | None, user: str | None) -> web.StreamResponse:
        """Read the body, start the execution and answer (the request is admitted by `serve`)."""
        rt = self.rt
        headers = request.headers
        try:
            max_wait = parse_max_wait(headers.get("X-Max-Wait"), rt.config.limits.max_wait_ms,
                                      rt.config.limits.max_wait_ms)
            callback = rt.callback_url(headers.get("X-Callback-Url"))
        except ValueError as exc:
            return self._fail(soap_version, error_result(400, "BAD_REQUEST", str(exc)))
        pdef = lst.process
        busy = rt.admit(pdef, lst.max_concurrent)
        if busy is not None:
            return self._fail(soap_version, busy)
        started = False
        try:
            if body is None:
                limit = rt.config.limits.max_request_bytes
                cl = request.content_length
                if cl is not None and cl > limit:
                    return self._too_large(cl)
                if lst.input == "none":
                    if cl or (cl is None and request.body_exists):
                        data = await request.content.read(1)
                        if data:
                            return self._fail(soap_version, error_result(
                                405, "METHOD_NOT_ALLOWED", f"listener {lst.path} takes no request body "
                                                           "(input: none)"))
                    body = b""
                elif cl is not None:
                    body = await request.content.readexactly(cl) if cl else b""
                else:
                    body = await _read_limited(request, limit)
                    if body is None:
                        return self._too_large(None)
            hprops = header_properties(request.raw_headers)
            if lst.key_header is not None:
                _drop_header(hprops, lst.key_header)
            try:
                docs = read_documents(lst.input, body, hprops)
            except InputError as exc:
                return self._fail(soap_version, error_result(400, "INVALID_INPUT", f"{lst.path}: {exc}"))
            props = {"inmethod": request.method, "inpath": request.path}
            if user is not None:
                props["inuser"] = user
            if params:
                for k, v in params.items():
                    props["param_" + k] = v
            if request.query_string:
                for k, v in request.query.items():
                    props.setdefault("query_" + k, v)
            debug = headers.get("X-Atom-Debug", "").lower() == "true"
            ex = rt.engine.new_execution(pdef, docs, properties=props, execution_type="exec_listener",
                                         debug=debug)
            job = rt.start_job(ex, output=lst.output, soap=pdef.start.config if soap_version else None,
                               soap_version=soap_version, callback=callback, admitted=True)
            started = True
            resp = await rt.answer(request, job, max_wait)
            rt.count(lst.kind, resp.status)
            return resp
        except (ConnectionError, EOFError) as exc:  # the client went away while sending its body
            log.debug("listener %s: request body not received: %s", lst.path, exc)
            return error_response(400, "BAD_REQUEST", f"request body incomplete: {exc}")
        finally:
            if not started:
                rt.release(pdef)

    def _fail(self, soap_version: str | None, result: HttpResult) -> web.Response:
        self.rt.count("listener" if soap_version is None else "soap", result.status)
        if soap_version is None:
            return result.to_web()
        return soap_fault_result(soap_version, result).to_web()

    # ---------------------------------------------------------------------------------- SOAP
    async def soap11(self, request: web.Request) -> web.StreamResponse:
        return await self._soap(request, "1.1")

    async def soap12(self, request: web.Request) -> web.StreamResponse:
        return await self._soap(request, "1.2")

    async def _soap(self, request: web.Request, version: str) -> web.StreamResponse:
        rt = self.rt
        from . import soap

        if request.method == "GET" and "wsdl" in {k.lower() for k in request.query}:
            procs = [lst.process for lst in rt.listeners.soap.values()]
            from .web_http import base_url

            wsdl = soap.generate_wsdl(procs, base_url(request, rt.config.server.base_url), version)
            return web.Response(body=wsdl, headers={"Content-Type": "text/xml; charset=utf-8"})
        if request.method != "POST":
            return self._fail(version, error_result(405, "METHOD_NOT_ALLOWED",
                                                    f"{request.method} is not allowed on {request.path}; use "
                                                    "POST (or GET ?wsdl)", headers={"Allow": "GET, POST"}))
        if not rt.ready:
            return self._fail(version, rt.unavailable_result())
        limit = rt.config.limits.max_request_bytes
        cl = request.content_length
        if cl is not None and cl > limit:
            return self._fail(version, error_result(413, "PAYLOAD_TOO_LARGE",
                                                    f"{cl} bytes is over the limit of {limit} bytes"))
        body = await _read_limited(request, limit)
        if body is None:
            return self._fail(version, error_result(413, "PAYLOAD_TOO_LARGE",
                                                    f"the request body is over the limit of {limit} bytes"))
        try:
            req = soap.parse_request(body, request.headers.get("Content-Type", ""))
        except soap.SoapError as exc:
            v = exc.version or version
            rt.count("soap", 400 if v == "1.2" else 500)
            return web.Response(status=400 if v == "1.2" else 500, body=soap.build_fault(v, exc.code, exc.message),
                                headers={"Content-Type": soap.content_type(v)})
        lst = rt.listeners.soap.get(req.operation)
        if lst is None:
            return self._fail(req.version, error_result(404, "NOT_FOUND",
                                                        f"no SOAP operation '{req.operation}' is deployed"))
        return await self.serve(request, lst, None, body=req.payload, soap_version=req.version)


def soap_fault_result(version: str, result: HttpResult) -> HttpResult:
    """An error envelope turned into a SOAP Fault (same status; Client for 4xx, Server for 5xx)."""
    from . import soap

    try:
        err = orjson.loads(result.body)["error"]
        message, eid = err.get("message", ""), err.get("executionId")
    except Exception:
        message, eid = result.body.decode("utf-8", "replace"), None
    code = "Client" if result.status < 500 else "Server"
    headers = {k: v for k, v in result.headers.items() if k.lower() != "content-type"}
    headers["Content-Type"] = soap.content_type(version)
    detail = f"executionId: {eid}" if eid else None
    return HttpResult(result.status, headers, soap.build_fault(version, code, message, detail))


def _drop_header(props: dict[str, str], name: str) -> None:
    """Remove the `inheader_<Name>` property of header `name` (lower case), however the client spelled it."""
    for k in [k for k in props if k[9:].lower() == name]:
        del props[k]


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The whole body (chunked or not), or None as soon as it grows past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
