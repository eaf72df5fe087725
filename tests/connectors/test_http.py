"""The http connector against real aiohttp upstream servers on 127.0.0.1: methods, templates, bodies,
response properties, authentication, pagination, load-time checks and the reference docs."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from atom.connector import ConnectorRegistry, OperationContext
from atom.document import Document
from atom.spec import CheckContext, Custom, ListOf, MapOf, Object, OneOf, Spec
from atom.yamlio import Where, load_yaml
from connectors.http import HttpConnector
from connectors.http._spec import Tagged
from connectors.http._wire import display_url, link_next, parse_retry_after

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors"


# ---------------------------------------------------------------------------------- building blocks


class Recorder(OperationContext):
    """An operation context that keeps what the connector logs."""

    def __init__(self) -> None:
        super().__init__(None, "k")
        self.lines: list[tuple[str, str]] = []

    def log(self, level: str, message: str) -> None:
        self.lines.append((level, message))


def connection(config: dict[str, Any], name: str = "api") -> HttpConnector:
    """Check a connection config through the spec (as the loader does) and build the connector."""
    ctx = CheckContext()
    values = HttpConnector.connection_spec.check(config, Where("<test>"), ctx)
    values = HttpConnector.check_connection(values, Where("<test>"), ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return HttpConnector(name, values)


def operation(action: str, op: dict[str, Any]) -> dict[str, Any]:
    ctx = CheckContext()
    values = HttpConnector.operations[action].check(op, Where("<test>"), ctx)
    values = HttpConnector.check_operation(action, values, Where("<test>"), ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return values


def problems(action: str | None, yaml_text: str) -> list[str]:
    """Load-time problems of a connection (action None) or an operation, as `file:line:col: ...`."""
    node, errs = load_yaml(yaml_text, "c.yaml")
    assert not errs
    ctx = CheckContext()
    where = Where("c.yaml", node)
    if action is None:
        values = HttpConnector.connection_spec.check(node, where, ctx)
        HttpConnector.check_connection(values, where, ctx)
    else:
        values = HttpConnector.operations[action].check(node, where, ctx)
        HttpConnector.check_operation(action, values, where, ctx)
    return [str(p) for p in ctx.problems]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def upstream(aiohttp_server: Any, routes: dict[str, Handler], **kwargs: Any) -> str:
    """Start an upstream app (`"METHOD /path"` or `"* /path"` -> handler); returns its base URL."""
    app = web.Application()
    for key, handler in routes.items():
        method, path = key.split(" ", 1)
        app.router.add_route(method, path, handler)
    server = await aiohttp_server(app, **kwargs)
    return str(server.make_url("")).rstrip("/")


Starter = Callable[[HttpConnector], Awaitable[HttpConnector]]


@asynccontextmanager
async def running() -> AsyncIterator[Starter]:
    """Gives `start(connector)`, which starts it; every connector started is stopped at the end."""
    conns: list[HttpConnector] = []

    async def start(conn: HttpConnector) -> HttpConnector:
        await conn.start()
        conns.append(conn)
        return conn

    try:
        yield start
    finally:
        for conn in conns:
            await conn.stop()


@pytest.fixture
async def started() -> AsyncIterator[Starter]:
    async with running() as start:
        yield start


def seen(request: web.Request, body: bytes) -> dict[str, Any]:
    return {"method": request.method, "path": request.path, "query": dict(request.query),
            "headers": dict(request.headers), "body": body.decode()}


# ---------------------------------------------------------------------------------------------- send


async def test_send_posts_the_document_and_returns_the_response(aiohttp_server: Any, started: Any) -> None:
    calls: list[dict[str, Any]] = []

    async def order(request: web.Request) -> web.Response:
        calls.append(seen(request, await request.read()))
        return web.json_response({"ok": True, "id": request.match_info["id"]}, status=201,
                                 headers={"X-Reply": "yes", "Location": f"/orders/{request.match_info['id']}"})

    url = await upstream(aiohttp_server, {"POST /api/orders/{id}": order})
    conn = await started(connection({"url": url + "/api/", "headers": {"X-Client": "atom"}}))
    op = operation("send", {
        "path": "/orders/{{ doc.json.id }}",
        "query": {"source": "{{ doc.props.src }}", "empty": "{{ '' }}", "fixed": "1"},
        "headers": {"X-Order": "order-{{ doc.json.id }}"},
    })
    docs = [Document.from_json({"id": 7, "total": 10}, {"src": "web"}),
            Document.from_json({"id": 8, "total": 20}, {"src": "edi"})]
    out = await conn.send(op, docs, Recorder())

    assert [c["path"] for c in calls] == ["/api/orders/7", "/api/orders/8"]
    assert calls[0]["query"] == {"source": "web", "fixed": "1"}  # the empty one is left out
    assert calls[0]["headers"]["X-Order"] == "order-7"
    assert calls[0]["headers"]["X-Client"] == "atom"
    assert calls[0]["headers"]["Content-Type"] == "application/json"
    assert calls[1]["body"] == '{"id":8,"total":20}'
    assert [d.error for d in out] == [None, None]
    assert out[0].json == {"ok": True, "id": "7"}
    assert out[0].props["status_code"] == "201"
    assert out[0].props["header_X-Reply"] == "yes"
    assert out[0].props["header_Location"] == "/orders/7"
    assert out[0].props["header_Content-Type"].startswith("application/json")
    assert out[0].props["src"] == "web"  # input properties go on
    assert docs[0].props == {"src": "web"}  # inputs are not changed


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_every_method(aiohttp_server: Any, started: Any, method: str) -> None:
    calls: list[dict[str, Any]] = []

    async def any_method(request: web.Request) -> web.Response:
        calls.append(seen(request, await request.read()))
        return web.Response(text="" if request.method == "HEAD" else f"did {request.method}",
                            headers={"X-Method": request.method})

    url = await upstream(aiohttp_server, {"* /thing": any_method})
    conn = await started(connection({"url": url}))
    op = operation("send", {"method": method, "path": "/thing", "body": "none"})
    [out] = await conn.send(op, [Document(b"ignored")], Recorder())
    assert out.error is None
    assert calls[0]["method"] == method
    assert calls[0]["body"] == ""
    assert out.props["header_X-Method"] == method
    assert out.data == (b"" if method == "HEAD" else f"did {method}".encode())


async def test_bodies_json_template_form_xml_and_text(aiohttp_server: Any, started: Any) -> None:
    calls: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        calls.append(seen(request, await request.read()))
        return web.Response(text="ok")

    url = await upstream(aiohttp_server, {"POST /in": echo})
    conn = await started(connection({"url": url}))
    doc = Document.from_json({"id": 3, "name": "Zoë & co"})
    ctx = Recorder()

    await conn.send(operation("send", {"path": "/in", "body": {
        "json": '{"ref": {{ doc.json.id }}, "who": {{ doc.json.name | tojson }}}'}}), [doc], ctx)
    await conn.send(operation("send", {"path": "/in", "body": {
        "form": {"ref": "{{ doc.json.id }}", "who": "{{ doc.json.name }}"}}}), [doc], ctx)
    await conn.send(operation("send", {"path": "/in"}), [Document(b"  <order id='1'/>")], ctx)
    await conn.send(operation("send", {"path": "/in", "content_type": "application/vnd.acme+xml"}),
                    [Document(b"<order/>")], ctx)
    await conn.send(operation("send", {"path": "/in", "body": {"template": "id;{{ doc.json.id }}"},
                                       "headers": {"Content-Type": "text/csv"}}), [doc], ctx)
    await conn.send(operation("send", {"path": "/in"}), [Document(b"plain words")], ctx)

    assert calls[0]["headers"]["Content-Type"] == "application/json"
    assert calls[0]["body"] == '{"ref": 3, "who": "Zo\\u00eb & co"}'
    assert calls[1]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert calls[1]["body"] == "ref=3&who=Zo%C3%AB+%26+co"
    assert calls[2]["headers"]["Content-Type"] == "application/xml"
    assert calls[2]["body"] == "  <order id='1'/>"
    assert calls[3]["headers"]["Content-Type"] == "application/vnd.acme+xml"
    assert calls[4]["headers"]["Content-Type"] == "text/csv"
    assert calls[4]["body"] == "id;3"
    assert calls[5]["headers"]["Content-Type"] == "text/plain; charset=utf-8"


async def test_a_json_template_that_renders_bad_json_fails_the_document(aiohttp_server: Any,
                                                                        started: Any) -> None:
    hits = 0

    async def echo(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(text="ok")

    url = await upstream(aiohttp_server, {"POST /in": echo})
    conn = await started(connection({"url": url}))
    op = operation("send", {"path": "/in", "body": {"json": '{"name": {{ doc.json.name }}}'}})
    [out] = await conn.send(op, [Document.from_json({"name": "bare words"})], Recorder())
    assert out.error is not None
    assert out.error.startswith("connection 'api': POST: cannot build the request: body.json did not render")
    assert (out.error_kind, out.error_status) == ("invalid", None)
    assert hits == 0

    op = operation("send", {"path": "/in", "headers": {"X-Note": "{{ doc.text }}"}})
    [out] = await conn.send(op, [Document(b"two\r\nX-Injected: 1")], Recorder())
    assert out.error == ("connection 'api': POST: cannot build the request: header 'X-Note' renders a line "
                         "break, which HTTP headers cannot hold")
    assert hits == 0


async def test_response_keep_keeps_the_input_document(aiohttp_server: Any, started: Any) -> None:
    async def accept(request: web.Request) -> web.Response:
        return web.Response(status=202, text="queued", headers={"X-Ticket": "T-1"})

    url = await upstream(aiohttp_server, {"PUT /q": accept})
    conn = await started(connection({"url": url}))
    op = operation("send", {"method": "PUT", "path": "/q", "response": "keep"})
    [out] = await conn.send(op, [Document(b"payload", {"a": "1"})], Recorder())
    assert out.data == b"payload"
    assert out.props["a"] == "1"
    assert out.props["status_code"] == "202"
    assert out.props["header_X-Ticket"] == "T-1"


async def test_status_outside_expect_fails_without_retry(aiohttp_server: Any, started: Any) -> None:
    hits: list[str] = []

    async def missing(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=404, text="no such order " + "x" * 2000)

    url = await upstream(aiohttp_server, {"POST /orders/{id}": missing})
    conn = await started(connection({"url": url, "retry": {"attempts": 3, "backoff": "10ms"}}))
    op = operation("send", {"path": "/orders/{{ doc.json.id }}"})
    [out] = await conn.send(op, [Document.from_json({"id": 5}, {"keep": "me"})], Recorder())
    assert hits == ["/orders/5"]
    assert out.error is not None
    assert out.error.startswith(f"connection 'api': POST {url}/orders/5 answered 404 Not Found: no such order")
    assert len(out.error) < 700  # the body excerpt is bounded (500 bytes)
    assert out.props["status_code"] == "404"
    assert (out.error_kind, out.error_status) == ("status", 404)
    assert out.props["keep"] == "me"
    assert out.json == {"id": 5}  # a failed document keeps its content

    accept_404 = operation("send", {"path": "/orders/{{ doc.json.id }}", "expect": [200, "4xx"]})
    [ok] = await conn.send(accept_404, [Document.from_json({"id": 6})], Recorder())
    assert ok.error is None and ok.props["status_code"] == "404"


async def test_concurrency_keeps_the_order(aiohttp_server: Any, started: Any) -> None:
    async def slow(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        await asyncio.sleep(0.1 if n % 2 == 0 else 0.02)
        return web.Response(text=str(n))

    url = await upstream(aiohttp_server, {"POST /n/{n}": slow})
    conn = await started(connection({"url": url}))
    op = operation("send", {"path": "/n/{{ doc.text }}", "concurrency": 4})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    out = await conn.send(op, [Document(str(i)) for i in range(8)], Recorder())
    assert [d.text for d in out] == [str(i) for i in range(8)]
    assert loop.time() - t0 < 0.6  # 8 requests of up to 0.1 s, four at a time


async def test_redirects(aiohttp_server: Any, started: Any) -> None:
    seen_by: dict[str, list[dict[str, Any]]] = {"home": [], "away": []}

    async def away(request: web.Request) -> web.Response:
        seen_by["away"].append(seen(request, await request.read()))
        return web.Response(text="away")

    other = await upstream(aiohttp_server, {"* /landing": away})

    async def home(request: web.Request) -> web.StreamResponse:
        seen_by["home"].append(seen(request, await request.read()))
        where = request.match_info["where"]
        if where == "moved":
            raise web.HTTPTemporaryRedirect("/here/final")
        if where == "see-other":
            raise web.HTTPSeeOther("/here/final")
        if where == "leave":
            raise web.HTTPFound(other + "/landing")
        return web.Response(text=f"{request.method} final")

    url = await upstream(aiohttp_server, {"* /here/{where}": home})
    conn = await started(connection({"url": url, "auth": {"type": "api_key", "header": "X-Api-Key",
                                                          "value": "k-12345"}}))
    [kept] = await conn.send(operation("send", {"method": "PUT", "path": "/here/moved"}), [Document(b"{}")],
                             Recorder())
    assert kept.text == "PUT final"  # 307 keeps the method and the body
    assert seen_by["home"][-1]["headers"]["X-Api-Key"] == "k-12345"
    assert seen_by["home"][-1]["body"] == "{}"

    [got] = await conn.send(operation("send", {"path": "/here/see-other"}), [Document(b"{}")], Recorder())
    assert got.text == "GET final" and seen_by["home"][-1]["body"] == ""

    [left] = await conn.send(operation("send", {"method": "PUT", "path": "/here/leave"}), [Document(b"{}")],
                             Recorder())
    assert left.text == "away"
    assert "X-Api-Key" not in seen_by["away"][0]["headers"]  # credentials stay with their origin

    [as_is] = await conn.get(operation("get", {"path": "/here/leave", "expect": [302]}), [], Recorder())
    assert as_is.props["status_code"] == "302" and as_is.props["header_Location"] == other + "/landing"
    assert len(seen_by["away"]) == 1

    stay = await started(connection({"url": url, "follow_redirects": False}, name="nofollow"))
    [failed] = await stay.get(operation("get", {"path": "/here/moved"}), [], Recorder())
    assert failed.error is not None and "answered 307 Temporary Redirect" in failed.error


# ---------------------------------------------------------------------------------------------- get


async def test_get_without_and_with_input_documents(aiohttp_server: Any, started: Any) -> None:
    async def customer(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"], "q": request.query.get("fields")})

    url = await upstream(aiohttp_server, {"GET /customers/{id}": customer})
    conn = await started(connection({"url": url}))
    [one] = await conn.get(operation("get", {"path": "/customers/1", "query": {"fields": "all"}}), [],
                           Recorder())
    assert one.json == {"id": "1", "q": "all"} and one.props["status_code"] == "200"

    op = operation("get", {"path": "/customers/{{ doc.json.cid }}"})
    out = await conn.get(op, [Document.from_json({"cid": 4}, {"n": "a"}), Document.from_json({"cid": 9})],
                         Recorder())
    assert [d.json["id"] for d in out] == ["4", "9"]
    assert out[0].props["n"] == "a"


async def test_get_failure_gives_one_failed_document(aiohttp_server: Any, started: Any) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=410, text="gone")

    url = await upstream(aiohttp_server, {"GET /old": gone})
    conn = await started(connection({"url": url}))
    [failed] = await conn.get(operation("get", {"path": "/old"}), [], Recorder())
    assert failed.error == f"connection 'api': GET {url}/old answered 410 Gone: gone"
    assert failed.props["status_code"] == "410"


async def test_paginate_link_header_with_split(aiohttp_server: Any, started: Any) -> None:
    pages = {"1": ([1, 2], '</items?page=2&size=2>; rel="next", </items?page=3>; rel="last"'),
             "2": ([3, 4], '<{base}/items?page=3&size=2>; rel="last next"'),
             "3": ([5], None)}

    async def items(request: web.Request) -> web.Response:
        got, link = pages[request.query.get("page", "1")]
        headers = {"Link": link.replace("{base}", f"http://{request.host}")} if link else {}
        return web.json_response({"items": [{"n": n} for n in got]}, headers=headers)

    url = await upstream(aiohttp_server, {"GET /items": items})
    conn = await started(connection({"url": url}))
    op = operation("get", {"path": "/items", "paginate": {"type": "link_header"}, "split": "$.items[*]"})
    out = await conn.get(op, [], Recorder())
    assert [d.json["n"] for d in out] == [1, 2, 3, 4, 5]
    assert all(d.props["status_code"] == "200" for d in out)


async def test_paginate_link_header_to_another_origin_is_refused(aiohttp_server: Any, started: Any) -> None:
    async def items(request: web.Request) -> web.Response:
        return web.json_response([1], headers={"Link": '<http://127.0.0.2:9/steal>; rel="next"'})

    url = await upstream(aiohttp_server, {"GET /items": items})
    conn = await started(connection({"url": url}))
    [failed] = await conn.get(operation("get", {"path": "/items", "paginate": {"type": "link_header"}}), [],
                              Recorder())
    assert failed.error is not None
    assert "the next page is on another origin (http://127.0.0.2:9); not followed" in failed.error
    assert failed.error_kind == "invalid"


async def test_paginate_cursor(aiohttp_server: Any, started: Any) -> None:
    cursors: list[str | None] = []
    data = {None: (["a", "b"], "c1"), "c1": (["c"], "c2"), "c2": (["d"], None)}

    async def events(request: web.Request) -> web.Response:
        cur = request.query.get("after")
        cursors.append(cur)
        got, nxt = data[cur]
        return web.json_response({"data": got, "meta": {"next": nxt}, "kind": request.query["kind"]})

    url = await upstream(aiohttp_server, {"GET /events": events})
    conn = await started(connection({"url": url}))
    op = operation("get", {"path": "/events", "query": {"kind": "x"}, "split": "$.data",
                           "paginate": {"type": "cursor", "cursor_path": "$.meta.next", "param": "after"}})
    out = await conn.get(op, [], Recorder())
    assert [d.json for d in out] == ["a", "b", "c", "d"]
    assert cursors == [None, "c1", "c2"]


async def test_paginate_cursor_that_repeats_stops(aiohttp_server: Any, started: Any) -> None:
    hits = 0

    async def stuck(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response({"next": "same"})

    url = await upstream(aiohttp_server, {"GET /s": stuck})
    conn = await started(connection({"url": url}))
    op = operation("get", {"path": "/s", "paginate": {"type": "cursor", "cursor_path": "$.next"}})
    out = await conn.get(op, [], Recorder())
    assert hits == 2 and len(out) == 2


async def test_paginate_page_numbers(aiohttp_server: Any, started: Any) -> None:
    rows = list(range(1, 8))
    asked: list[dict[str, str]] = []

    async def table(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        page, size = int(request.query["p"]), int(request.query["per_page"])
        return web.json_response(rows[page * size:(page + 1) * size])

    url = await upstream(aiohttp_server, {"GET /rows": table})
    conn = await started(connection({"url": url}))
    sized = operation("get", {"path": "/rows", "paginate": {
        "type": "page", "param": "p", "start": 0, "size_param": "per_page", "size": 3}})
    out = await conn.get(sized, [], Recorder())
    assert [d.json for d in out] == [[1, 2, 3], [4, 5, 6], [7]]  # a short page is the last one
    assert [a["p"] for a in asked] == ["0", "1", "2"]

    asked.clear()
    until_empty = operation("get", {"path": "/rows", "query": {"per_page": "4"}, "split": "$[*]",
                                    "paginate": {"type": "page", "param": "p", "start": 0}})
    out = await conn.get(until_empty, [], Recorder())
    assert [d.json for d in out] == rows
    assert [a["p"] for a in asked] == ["0", "1", "2"]  # page 2 is empty: the end


async def test_max_pages_guard(aiohttp_server: Any, started: Any) -> None:
    hits = 0

    async def endless(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response([hits], headers={"Link": f'</endless?n={hits}>; rel="next"'})

    url = await upstream(aiohttp_server, {"GET /endless": endless})
    conn = await started(connection({"url": url}))
    ctx = Recorder()
    op = operation("get", {"path": "/endless", "paginate": {"type": "link_header"}, "max_pages": 4})
    out = await conn.get(op, [], ctx)
    assert hits == 4 and len(out) == 4
    assert ctx.lines == [("warning", f"connection 'api': GET {url}/endless: stopped after max_pages (4); "
                                     "more pages were announced")]


async def test_a_page_that_fails_discards_the_pages_read(aiohttp_server: Any, started: Any) -> None:
    async def flaky(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        if page == 3:
            return web.Response(status=400, text="bad page")
        return web.json_response([page])

    url = await upstream(aiohttp_server, {"GET /f": flaky})
    conn = await started(connection({"url": url}))
    op = operation("get", {"path": "/f", "paginate": {"type": "page"}})
    [failed] = await conn.get(op, [Document(b"in", {"x": "1"})], Recorder())
    assert failed.error == f"connection 'api' (page 3): GET {url}/f?page=3 answered 400 Bad Request: bad page"
    assert failed.data == b"in" and failed.props["x"] == "1"


async def test_split_of_an_answer_that_is_not_json_fails(aiohttp_server: Any, started: Any) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    url = await upstream(aiohttp_server, {"GET /h": html})
    conn = await started(connection({"url": url}))
    [failed] = await conn.get(operation("get", {"path": "/h", "split": "$.items[*]"}), [], Recorder())
    assert failed.error is not None
    assert failed.error.startswith(f"connection 'api': GET {url}/h: answer is not valid JSON, cannot split it")
    assert (failed.error_kind, failed.error_status) == ("invalid", None)


# ---------------------------------------------------------------------------------------------- auth


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("auth, check", [
    ({"type": "basic", "username": "svc", "password": "s3cret-pw"},
     lambda r: r.headers.get("Authorization") == _basic("svc", "s3cret-pw")),
    ({"type": "bearer", "token": "tok-123456"},
     lambda r: r.headers.get("Authorization") == "Bearer tok-123456"),
    ({"type": "api_key", "header": "X-Api-Key", "value": "key-987654"},
     lambda r: r.headers.get("X-Api-Key") == "key-987654"),
    ({"type": "api_key", "query": "api_key", "value": "key-987654"},
     lambda r: r.query.get("api_key") == "key-987654"),
], ids=["basic", "bearer", "api_key-header", "api_key-query"])
async def test_static_auth(aiohttp_server: Any, started: Any, auth: dict[str, Any],
                           check: Callable[[web.Request], bool]) -> None:
    async def guarded(request: web.Request) -> web.Response:
        if not check(request):
            return web.Response(status=401, text="who are you?")
        if request.match_info["what"] == "deny":
            return web.Response(status=403, text="not for you")
        return web.Response(text="welcome")

    url = await upstream(aiohttp_server, {"GET /{what}": guarded})
    conn = await started(connection({"url": url, "auth": auth}))
    [ok] = await conn.get(operation("get", {"path": "/ok"}), [], Recorder())
    assert ok.error is None and ok.text == "welcome"
    [denied] = await conn.get(operation("get", {"path": "/deny", "query": {"q": "1"}}), [], Recorder())
    secret = auth.get("password") or auth.get("token") or auth["value"]
    assert denied.error is not None and "403" in denied.error
    assert secret not in denied.error
    assert secret not in repr(conn.describe())
    if auth.get("query"):  # the key is shown as *** in messages
        assert f"{url}/deny?q=1&api_key=***" in denied.error


async def test_unauthenticated_call_is_a_401_failure(aiohttp_server: Any, started: Any) -> None:
    async def guarded(request: web.Request) -> web.Response:
        return web.Response(status=401, text="who are you?")

    url = await upstream(aiohttp_server, {"GET /x": guarded})
    conn = await started(connection({"url": url, "auth": {"type": "bearer", "token": "wrong-token"}}))
    [failed] = await conn.get(operation("get", {"path": "/x"}), [], Recorder())
    assert failed.error == f"connection 'api': GET {url}/x answered 401 Unauthorized: who are you?"
    assert (failed.error_kind, failed.error_status) == ("auth", 401)


class TokenServer:
    """An OAuth 2.0 token endpoint and an API that accepts only the tokens it issued."""

    def __init__(self, expires_in: float | None = 3600, client_auth: str = "basic") -> None:
        self.expires_in = expires_in
        self.client_auth = client_auth
        self.fetches = 0
        self.valid: set[str] = set()
        self.forms: list[dict[str, str]] = []

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.forms.append(form)
        if self.client_auth == "basic":
            ok = request.headers.get("Authorization") == _basic("cid", "csecret-xyz")
        else:
            ok = form.get("client_id") == "cid" and form.get("client_secret") == "csecret-xyz"
        if not ok or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        self.fetches += 1
        tok = f"access-{self.fetches}"
        self.valid.add(tok)
        body: dict[str, Any] = {"access_token": tok, "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)

    async def api(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"token": auth[7:]})

    def revoke_all(self) -> None:
        self.valid.clear()


def oauth_config(url: str, **more: Any) -> dict[str, Any]:
    return {"url": url, "auth": {"type": "oauth2", "token_url": url + "/oauth/token", "client_id": "cid",
                                 "client_secret": "csecret-xyz", "scope": "read write", "audience": "erp",
                                 **more}}


async def test_oauth2_token_is_cached(aiohttp_server: Any, started: Any) -> None:
    ts = TokenServer()
    url = await upstream(aiohttp_server, {"POST /oauth/token": ts.token, "GET /api": ts.api})
    conn = await started(connection(oauth_config(url)))
    op = operation("get", {"path": "/api"})
    out = []
    for _ in range(3):
        out += await conn.get(op, [], Recorder())
    results = await asyncio.gather(*(conn.get(op, [], Recorder()) for _ in range(5)))
    out += [d for r in results for d in r]
    assert [d.error for d in out] == [None] * 8
    assert [d.json["token"] for d in out] == ["access-1"] * 8
    assert ts.fetches == 1
    assert ts.forms[0] == {"grant_type": "client_credentials", "scope": "read write", "audience": "erp"}
    assert "csecret-xyz" not in repr(conn.describe())


async def test_oauth2_client_credentials_in_the_body(aiohttp_server: Any, started: Any) -> None:
    ts = TokenServer(client_auth="body")
    url = await upstream(aiohttp_server, {"POST /oauth/token": ts.token, "GET /api": ts.api})
    conn = await started(connection(oauth_config(url, client_auth="body")))
    [doc] = await conn.get(operation("get", {"path": "/api"}), [], Recorder())
    assert doc.json == {"token": "access-1"}


async def test_oauth2_token_is_renewed_before_expiry(aiohttp_server: Any, started: Any) -> None:
    ts = TokenServer(expires_in=0.5)
    url = await upstream(aiohttp_server, {"POST /oauth/token": ts.token, "GET /api": ts.api})
    conn = await started(connection(oauth_config(url)))
    op = operation("get", {"path": "/api"})
    [a] = await conn.get(op, [], Recorder())
    [b] = await conn.get(op, [], Recorder())
    assert a.json["token"] == b.json["token"] == "access-1"
    await asyncio.sleep(0.46)  # renewed at 90 % of its lifetime
    [c] = await conn.get(op, [], Recorder())
    assert c.json["token"] == "access-2"
    assert ts.fetches == 2


async def test_oauth2_token_is_renewed_once_on_401(aiohttp_server: Any, started: Any) -> None:
    ts = TokenServer(expires_in=None)  # no expires_in: kept until the API refuses it
    api_hits = 0

    async def api(request: web.Request) -> web.Response:
        nonlocal api_hits
        api_hits += 1
        return await ts.api(request)

    url = await upstream(aiohttp_server, {"POST /oauth/token": ts.token, "POST /api": api})
    conn = await started(connection(oauth_config(url)))
    op = operation("send", {"path": "/api"})
    [a] = await conn.send(op, [Document(b"{}")], Recorder())
    assert a.json["token"] == "access-1"
    ts.revoke_all()
    [b] = await conn.send(op, [Document(b"{}")], Recorder())
    assert b.error is None and b.json["token"] == "access-2"
    assert ts.fetches == 2 and api_hits == 3

    async def always_401(request: web.Request) -> web.Response:
        nonlocal api_hits
        api_hits += 1
        return web.Response(status=401, text="nope")

    url2 = await upstream(aiohttp_server, {"POST /oauth/token": ts.token, "POST /api": always_401})
    conn2 = await started(connection(oauth_config(url2), name="api2"))
    api_hits = 0
    [c] = await conn2.send(op, [Document(b"{}")], Recorder())
    assert api_hits == 2  # one forced renewal and one more try, no retry loop
    assert c.error == f"connection 'api2': POST {url2}/api answered 401 Unauthorized: nope"
    assert ts.fetches == 4


async def test_oauth2_bad_client_secret_fails_without_retry(aiohttp_server: Any, started: Any) -> None:
    ts = TokenServer()
    url = await upstream(aiohttp_server, {"POST /oauth/token": ts.token, "GET /api": ts.api})
    cfg = oauth_config(url)
    cfg["auth"]["client_secret"] = "wrong-secret"
    cfg["retry"] = {"attempts": 3, "backoff": "10ms"}
    conn = await started(connection(cfg))
    [failed] = await conn.get(operation("get", {"path": "/api"}), [], Recorder())
    assert failed.error == (f"connection 'api': OAuth token request to {url}/oauth/token answered 401 "
                            'Unauthorized: {"error": "invalid_client"}')
    assert len(ts.forms) == 1
    assert "wrong-secret" not in failed.error
    assert (failed.error_kind, failed.error_status) == ("auth", 401)


# ---------------------------------------------------------------------------------------------- checks


def test_load_time_problems_are_located() -> None:
    assert problems(None, "url: http://h\nauth: {type: basik, username: u}\n") == [
        "c.yaml:2:14: error: 'basik' is not one of basic, bearer, api_key, oauth2 (did you mean 'basic'?)"]
    assert problems(None, "url: http://h\nauth: {type: api_key, value: k}\n") == [
        "c.yaml:2:7: error: expected one of: header, query"]
    assert problems(None, "url: http://h\nauth:\n  type: basic\n  username: u\n") == [
        "c.yaml:3:3: error: missing required field 'password'"]
    assert problems(None, "url: https://svc:pw@h/api\n") == [
        "c.yaml:1:6: error: url must not hold credentials; use auth: {type: basic, username: ..., "
        "password: ...}"]
    assert problems(None, "url: ftp://h/x\n") == [
        "c.yaml:1:6: error: url must be an absolute http:// or https:// URL, got 'ftp://h/x'"]
    assert sorted(problems(None, "url: http://h\ntls: {key_file: k.pem}\npool: {limt: 3}\n")) == [
        "c.yaml:2:17: error: key_file needs cert_file (the client certificate)",
        "c.yaml:3:8: error: unknown field 'limt' (did you mean 'limit'?)"]
    got = sorted(problems("get", "split: $.items[\npaginate: {type: cursor}\n"))
    assert got[0].startswith("c.yaml:1:8: error: invalid JSONPath '$.items[': ")
    assert got[1:] == ["c.yaml:2:11: error: missing required field 'cursor_path'"]
    assert sorted(problems("send", "path: http://elsewhere/x\nmethod: pots\nexpect: [200, 2xy]\n")) == [
        "c.yaml:1:7: error: path 'http://elsewhere/x' is an absolute URL; paths are relative to the "
        "connection url",
        "c.yaml:2:9: error: 'POTS' is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS "
        "(did you mean 'POST'?)",
        "c.yaml:3:9: error: expected status codes like 200, 2xx or [200, 404], got [200, '2xy']"]
    assert problems("send", "body: {json: '{\"a\": }'}\n")[0].startswith(
        "c.yaml:1:14: error: body.json is not valid JSON")
    assert problems("send", "body: {json: '{}', form: {a: b}}\n") == [
        "c.yaml:1:7: error: expected only one of: json, form, template"]
    assert operation("send", {"method": "patch", "expect": "2xx"})["method"] == "PATCH"
    assert operation("get", {"expect": [200, "3xx"]})["expect"] == frozenset([200, *range(300, 400)])


def test_secrets_are_declared_and_recorded() -> None:
    ctx = CheckContext()
    HttpConnector.connection_spec.check(
        {"url": "http://h", "auth": {"type": "oauth2", "token_url": "http://h/t", "client_id": "c",
                                     "client_secret": "cs-1"}, "tls": {"key_password": "kp-1"}},
        Where("<test>"), ctx)
    assert not ctx.problems
    assert sorted(ctx.secrets) == ["cs-1", "kp-1"]


async def test_send_before_start_fails_the_documents() -> None:
    conn = connection({"url": "http://127.0.0.1:9"})
    [out] = await conn.send(operation("send", {}), [Document(b"x")], Recorder())
    assert out.error == "connection 'api': POST http://127.0.0.1:9: connection is not started"


def test_registered_as_entry_point() -> None:
    assert ConnectorRegistry.discover().get("http") is HttpConnector


def test_wire_functions() -> None:
    from datetime import UTC, datetime

    from multidict import CIMultiDict
    from yarl import URL

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert display_url(URL("http://u:p@h/x?key=abc&b=2"), ["key"]) == "http://h/x?key=***&b=2"
    base = URL("http://h/api/items?page=1")
    headers = CIMultiDict([("Link", '<https://h/p?x=1>; rel="prev first"'),
                           ("Link", '</api/items?page=2>; title="a, b"; rel=next')])
    assert link_next(headers, base) == URL("http://h/api/items?page=2")
    assert link_next(CIMultiDict(), base) is None


# ---------------------------------------------------------------------------------------------- docs


def spec_field_names(spec: Spec) -> set[str]:
    """Every field name of a spec, nested mappings and variants included."""
    names: set[str] = set()

    def walk_type(t: Any) -> None:
        if isinstance(t, Object):
            walk(t.spec)
        elif isinstance(t, Tagged):
            names.update(t.variants)
            for s in t.variants.values():
                walk(s)
        elif isinstance(t, OneOf):
            for alt in t.alternatives:
                walk_type(alt)
        elif isinstance(t, (ListOf, MapOf)):
            walk_type(t.item)
        elif isinstance(t, Custom):
            pass

    def walk(s: Spec) -> None:
        for f in s.fields:
            names.add(f.name)
            walk_type(f.type)

    walk(spec)
    return names


def test_docs_describe_every_field() -> None:
    text = (DOCS / "http.md").read_text()
    specs = [HttpConnector.connection_spec, *HttpConnector.operations.values()]
    missing = sorted({n for s in specs for n in spec_field_names(s)
                      if not re.search(rf"`{re.escape(n)}`", text)})
    assert not missing, f"fields not described in docs/connectors/http.md: {missing}"
    for word in ("status_code", "header_", "Retry-After", "aiohttp", "circuit"):
        assert word in text
    resilience = (DOCS / "resilience.md").read_text()
    for word in ("atom_connector_calls_total", "atom_connector_retries_total", "atom_circuit_breaker_state",
                 "Retry-After", "half-open", "max_retry_after", "failure_threshold", "reset_timeout"):
        assert word in resilience
