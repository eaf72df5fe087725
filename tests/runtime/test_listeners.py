"""Listener round trips through a real aiohttp server: input and output types, request properties,
response control, and every error status."""

from __future__ import annotations

import asyncio
import json

import pytest

from .conftest import ECHO_JSON, MakeAtom, slow_files, wait_for

PROPS = """
process: props
start:
  listen:
    rest: {method: POST, path: "/orders/{id}/lines/{line}"}
    input: data
    output: json
shapes:
  - id: m
    message:
      template: >-
        {"id": "{{ process.param_id }}", "line": "{{ process.param_line }}",
        "q": "{{ process.query_foo }}", "method": "{{ process.inmethod }}", "path": "{{ process.inpath }}",
        "hdr": "{{ doc.props['inheader_X-Name'] }}", "user": "{{ process.inuser | default('') }}",
        "rid": "{{ doc.props['inheader_X-Request-Id'] }}",
        "auth": {{ ('inheader_Authorization' in doc.props) | tojson }},
        "cookie": {{ ('inheader_Cookie' in doc.props) | tojson }},
        "body": "{{ doc.text }}"}
  - {id: r, return: {}}
"""

STATUS = """
process: created
start:
  listen: {rest: {method: PUT, path: "/things/{id}"}, input: json, output: json}
shapes:
  - id: s
    set_properties:
      document:
        outstatuscode: "201"
        outheader_X-Thing: "{{ process.param_id }}"
        outheader_Cache-Control: no-store
  - {id: r, return: {}}
"""

FAIL = """
process: failing
start:
  listen: {object: Fail, input: json, output: json}
shapes:
  - {id: x, exception: {message: "order {{ doc.json.id }} is not acceptable", scope: execution}}
"""

NO_RETURN = """
process: sink
start:
  listen: {object: Sink, input: data, output: json}
shapes:
  - {id: n, notify: {message: "got {{ doc.text }}"}}
"""

NONE_INPUT = """
process: ping
start:
  listen: {operation: get, object: Ping, input: none, output: data}
shapes:
  - {id: m, message: {template: "pong", content_type: text/plain}}
  - {id: r, return: {}}
"""

MULTI_JSON = """
process: multi
start:
  listen: {object: Multi, input: json_multiple, output: json}
shapes:
  - {id: m, message: {template: '{"seen": {{ doc.json.n }}}'}}
  - {id: r, return: {}}
"""

MULTI_XML = """
process: multixml
start:
  listen: {object: MultiXml, input: xml_multiple, output: xml}
shapes:
  - {id: m, message: {template: "<item n='{{ doc.xml.get('n') }}'/>"}}
  - {id: r, return: {}}
"""

XML_IN = """
process: xmlin
start:
  listen: {object: Xml, input: xml, output: xml}
shapes:
  - {id: r, return: {}}
"""

DATA_MULTI = """
process: datamulti
start:
  listen: {object: Lines, input: data, output: data}
shapes:
  - {id: sp, split: {lines: true}}
  - {id: m, message: {template: "[{{ doc.text }}]"}}
  - {id: r, return: {}}
"""


async def test_json_round_trip(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON})
    resp = await atom.client.post("/ws/simple/executeEcho", data=b'{"id": 7, "items": [1, 2]}')
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert await resp.json() == {"id": 7, "items": [1, 2]}
    assert resp.headers["X-Execution-Id"].startswith("execution-")


async def test_request_properties(make_atom: MakeAtom) -> None:
    atom = await make_atom({"props.yaml": PROPS})
    resp = await atom.client.post("/ws/rest/orders/42/lines/3?foo=bar&foo=baz", data=b"hello",
                                  headers={"X-Name": "value", "Authorization": "Basic eDp5", "Cookie": "a=b",
                                           "X-Request-Id": "r-1"})
    assert resp.status == 200, await resp.text()
    got = await resp.json()
    assert got == {"id": "42", "line": "3", "q": "bar", "method": "POST", "path": "/ws/rest/orders/42/lines/3",
                   "hdr": "value", "user": "", "auth": False, "cookie": False, "body": "hello",
                   "rid": "r-1"}


async def test_outstatuscode_and_outheaders(make_atom: MakeAtom) -> None:
    atom = await make_atom({"created.yaml": STATUS})
    resp = await atom.client.put("/ws/rest/things/abc", data=b'{"a": 1}')
    assert resp.status == 201
    assert resp.headers["X-Thing"] == "abc"
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.json() == {"a": 1}


async def test_no_return_answers_200_empty(make_atom: MakeAtom) -> None:
    atom = await make_atom({"sink.yaml": NO_RETURN})
    resp = await atom.client.post("/ws/simple/executeSink", data=b"x")
    assert resp.status == 200
    assert await resp.read() == b""


async def test_input_none_and_data_output(make_atom: MakeAtom) -> None:
    atom = await make_atom({"ping.yaml": NONE_INPUT})
    for method in ("GET", "POST"):
        resp = await atom.client.request(method, "/ws/simple/getPing")
        assert resp.status == 200
        assert await resp.read() == b"pong"
        assert resp.headers["Content-Type"].startswith("text/plain")
    resp = await atom.client.post("/ws/simple/getPing", data=b"unexpected")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_json_multiple_splits_and_joins(make_atom: MakeAtom) -> None:
    atom = await make_atom({"multi.yaml": MULTI_JSON})
    resp = await atom.client.post("/ws/simple/executeMulti", data=b'[{"n": 1}, {"n": 2}, {"n": 3}]')
    assert resp.status == 200
    assert await resp.json() == [{"seen": 1}, {"seen": 2}, {"seen": 3}]


async def test_xml_multiple_splits_and_wraps(make_atom: MakeAtom) -> None:
    atom = await make_atom({"multixml.yaml": MULTI_XML})
    resp = await atom.client.post("/ws/simple/executeMultiXml", data=b'<list><i n="1"/><i n="2"/></list>')
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/xml"
    assert await resp.read() == b'<Response><item n=\'1\'/><item n=\'2\'/></Response>'


async def test_xml_round_trip_and_data_concatenation(make_atom: MakeAtom) -> None:
    atom = await make_atom({"xmlin.yaml": XML_IN, "datamulti.yaml": DATA_MULTI})
    resp = await atom.client.post("/ws/simple/executeXml", data=b"<a><b>1</b></a>")
    assert resp.status == 200 and await resp.read() == b"<a><b>1</b></a>"
    resp = await atom.client.post("/ws/simple/executeLines", data=b"x\ny\nz")
    assert resp.status == 200
    assert await resp.read() == b"[x][y][z]"
    assert resp.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/ws/simple/executeEcho", b'{"id": ', "not valid JSON"),
    ("/ws/simple/executeEcho", b"", "empty"),
    ("/ws/simple/executeXml", b"<a><b></a>", "not well-formed XML"),
    ("/ws/simple/executeXml", b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', "entity"),
])
async def test_malformed_input_is_400(make_atom: MakeAtom, path: str, body: bytes, needle: str) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON, "xmlin.yaml": XML_IN})
    resp = await atom.client.post(path, data=body)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["code"] == "INVALID_INPUT"
    assert needle in err["message"]


async def test_unknown_listener_is_404_and_wrong_method_405(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON, "created.yaml": STATUS})
    resp = await atom.client.post("/ws/simple/executeNothing", data=b"{}")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "NOT_FOUND"
    resp = await atom.client.post("/ws/rest/nowhere", data=b"{}")
    assert resp.status == 404
    resp = await atom.client.get("/ws/simple/executeEcho")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    resp = await atom.client.post("/ws/rest/things/1", data=b"{}")
    assert resp.status == 405
    assert resp.headers["Allow"] == "PUT"


async def test_process_error_is_500_envelope(make_atom: MakeAtom) -> None:
    atom = await make_atom({"failing.yaml": FAIL})
    resp = await atom.client.post("/ws/simple/executeFail", data=b'{"id": 9}')
    assert resp.status == 500
    err = (await resp.json())["error"]
    assert err["code"] == "PROCESS_ERROR"
    assert "order 9 is not acceptable" in err["message"]
    assert err["executionId"] == resp.headers["X-Execution-Id"]
    rec = await atom.record(err["executionId"])
    assert rec["status"] == "ERROR"


async def _raw(port: int, request: bytes, read_timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()


async def test_413_from_content_length_before_the_body_is_read(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON}, config="limits: {max_request_bytes: 1000}\n")
    port = atom.client.port
    assert port is not None
    # the body is announced but never sent: the answer can only come from the Content-Length check
    head = (b"POST /ws/simple/executeEcho HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n")
    got = await _raw(port, head)
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    assert b"PAYLOAD_TOO_LARGE" in got
    # the same with Expect: 100-continue gets 413 instead of 100 Continue
    got = await _raw(port, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
    assert got.startswith(b"HTTP/1.1 413"), got[:200]


async def test_413_while_reading_a_chunked_body(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON}, config="limits: {max_request_bytes: 1000}\n")

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 400

    resp = await atom.client.post("/ws/simple/executeEcho", data=chunks())
    assert resp.status == 413
    # under the limit, chunked, is fine
    async def small():  # type: ignore[no-untyped-def]
        yield b'{"a":'
        yield b' 1}'

    resp = await atom.client.post("/ws/simple/executeEcho", data=small())
    assert resp.status == 200
    assert await resp.json() == {"a": 1}


async def test_429_rate_limit(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON}, config="limits: {rate_limit: {requests: 2, per: 60s}}\n")
    for _ in range(2):
        assert (await atom.client.post("/ws/simple/executeEcho", data=b"{}")).status == 200
    resp = await atom.client.post("/ws/simple/executeEcho", data=b"{}")
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "RATE_LIMITED"


async def test_503_when_a_listener_is_saturated(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("400ms", extra=", max_concurrent: 1"))
    first = asyncio.ensure_future(atom.client.post("/ws/simple/executeSlow", data=b"1"))
    await wait_for(lambda: atom.runtime.active.get("slow") == 1, what="first execution")
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"2")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "SATURATED"
    assert (await first).status == 200


async def test_server_wide_concurrency_limit(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("400ms"), config="limits: {max_concurrent_per_listener: 2}\n")
    first = [asyncio.ensure_future(atom.client.post("/ws/simple/executeSlow", data=b"1")) for _ in range(2)]
    await wait_for(lambda: atom.runtime.active.get("slow") == 2, what="two executions")
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"2")
    assert resp.status == 503
    assert [(await f).status for f in first] == [200, 200]


async def test_allow_simultaneous_false_refuses_with_409(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("400ms", simultaneous=False))
    first = asyncio.ensure_future(atom.client.post("/ws/simple/executeSlow", data=b"1"))
    await wait_for(lambda: atom.runtime.active.get("slow") == 1, what="first execution")
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"2")
    assert resp.status == 409
    err = (await resp.json())["error"]
    assert err["code"] == "ALREADY_RUNNING" and "allow_simultaneous" in err["message"]
    assert (await first).status == 200
    assert (await atom.client.post("/ws/simple/executeSlow", data=b"3")).status == 200


async def test_503_while_stopping(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON})
    atom.runtime.state = "stopping"
    resp = await atom.client.post("/ws/simple/executeEcho", data=b"{}")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "STOPPING"
    status = await atom.client.get("/_admin/status")
    assert status.status == 503
    atom.runtime.state = "ready"
    assert (await atom.client.get("/_admin/status")).status == 200


async def test_bad_x_max_wait_is_400(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON})
    resp = await atom.client.post("/ws/simple/executeEcho", data=b"{}", headers={"X-Max-Wait": "soon"})
    assert resp.status == 400
    assert "X-Max-Wait" in (await resp.json())["error"]["message"]


SOAP = """
process: notify
start:
  listen:
    soap: {operation: notifications, namespace: "urn:test"}
    input: xml
    output: xml
shapes:
  - {id: m, message: {template: "<Ack>{{ xpath(doc, 'string(/*/*[1])') }}</Ack>"}}
  - {id: r, return: {}}
"""


async def test_soap_listener_and_wsdl(make_atom: MakeAtom) -> None:
    soap = pytest.importorskip("atom.soap")
    atom = await make_atom({"notify.yaml": SOAP})
    env = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
           b'<t:notifications xmlns:t="urn:test"><t:id>42</t:id></t:notifications></s:Body></s:Envelope>')
    resp = await atom.client.post("/ws/soap", data=env, headers={"Content-Type": "text/xml"})
    body = await resp.read()
    assert resp.status == 200, body
    assert resp.headers["Content-Type"] == soap.content_type("1.1")
    assert b"notificationsResponse" in body and b"42" in body
    wsdl = await atom.client.get("/ws/soap?wsdl")
    assert wsdl.status == 200
    assert b"notifications" in await wsdl.read()
    # unknown operation: a SOAP fault with 404
    other = env.replace(b"notifications", b"other")
    resp = await atom.client.post("/ws/soap", data=other, headers={"Content-Type": "text/xml"})
    assert resp.status == 404
    assert b"Fault" in await resp.read()
    # malformed envelope: a Client fault
    resp = await atom.client.post("/ws/soap", data=b"<nope", headers={"Content-Type": "text/xml"})
    assert resp.status == 500
    assert b"Client" in await resp.read()


async def test_metrics_count_requests(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON})
    await atom.client.post("/ws/simple/executeEcho", data=b"{}")
    resp = await atom.client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    assert 'atom_http_requests_total{route="simple",status="200"}' in text
    assert 'atom_executions_total{process="echo",status="COMPLETE"}' in text
    json.dumps(text)  # plain text
