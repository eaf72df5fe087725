"""X-Max-Wait (DESIGN 4.1): 202 + status link, immediate polls, the stored response, the server-wide
max_wait_ms, callbacks signed with HMAC-SHA256, and clients that go away."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from atom.callbacks import verify

from .conftest import MakeAtom, slow_files, wait_for


async def test_fast_execution_within_max_wait_answers_normally(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("10ms"))
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"x", headers={"X-Max-Wait": "5000"})
    assert resp.status == 200
    assert await resp.read() == b"done x"


async def test_202_then_poll_then_stored_response_equals_synchronous(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("300ms"))
    sync = await atom.client.post("/ws/simple/executeSlow", data=b"abc")
    sync_body = await sync.read()
    assert sync.status == 200 and sync_body == b"done abc"

    resp = await atom.client.post("/ws/simple/executeSlow", data=b"abc", headers={"X-Max-Wait": "20"})
    assert resp.status == 202
    body = await resp.json()
    eid = resp.headers["X-Execution-Id"]
    link = resp.headers["X-Execution-Status-Link"]
    port = atom.client.port
    assert link == f"http://127.0.0.1:{port}/api/v1/executions/{eid}"
    assert resp.headers["Location"] == link
    assert int(resp.headers["Retry-After"]) >= 1
    assert body == {"executionId": eid, "status": "INPROCESS", "statusLink": link}

    # an immediate poll finds the record, in process
    rec = await atom.record(eid)
    assert rec["status"] == "INPROCESS" and rec["processName"] == "slow"
    early = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert early.status == 202 and "Retry-After" in early.headers

    rec = await atom.wait_status(eid, "COMPLETE")
    assert rec["executionType"] == "exec_listener"
    stored = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert stored.status == sync.status
    assert await stored.read() == sync_body
    assert stored.headers["Content-Type"] == sync.headers["Content-Type"]
    assert stored.headers["X-Execution-Id"] == eid


async def test_record_is_durable_before_the_202(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("500ms", mode="low_latency"))
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"abc", headers={"X-Max-Wait": "0"})
    assert resp.status == 202
    eid = resp.headers["X-Execution-Id"]
    # read straight from the database file, bypassing the runtime and the store's queue
    import sqlite3

    con = sqlite3.connect(atom.runtime.config.store_path)
    try:
        row = con.execute("SELECT status, process FROM executions WHERE id=?", (eid,)).fetchone()
    finally:
        con.close()
    assert row == ("INPROCESS", "slow")
    await atom.wait_status(eid, "COMPLETE")
    stored = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert stored.status == 200 and await stored.read() == b"done abc"


async def test_server_max_wait_ms_applies_without_the_header(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("400ms"), config="limits: {max_wait_ms: 50}\n")
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"x")
    assert resp.status == 202
    # and X-Max-Wait cannot go beyond it
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"x", headers={"X-Max-Wait": "100000"})
    assert resp.status == 202
    await atom.wait_status(resp.headers["X-Execution-Id"], "COMPLETE")


async def test_unknown_execution_is_404(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files())
    for path in ("", "/response", "/logs", "/documents"):
        resp = await atom.client.get(f"/api/v1/executions/execution-nope{path}")
        assert resp.status == 404, path
        assert (await resp.json())["error"]["code"] == "NOT_FOUND"


async def test_error_after_202_is_stored_as_the_error_envelope(make_atom: MakeAtom) -> None:
    files = slow_files("200ms")
    files["slow.yaml"] = files["slow.yaml"].replace(
        "  - {id: r, return: {}}", '  - {id: x, exception: {message: "late failure", scope: execution}}')
    atom = await make_atom(files)
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"x", headers={"X-Max-Wait": "10"})
    assert resp.status == 202
    eid = resp.headers["X-Execution-Id"]
    rec = await atom.wait_status(eid, "ERROR")
    assert rec["message"] == "late failure"
    stored = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert stored.status == 500
    assert (await stored.json())["error"] == {"code": "PROCESS_ERROR", "message": "late failure",
                                              "executionId": eid}


@pytest.mark.parametrize("cancel_handlers", [False, True])
async def test_client_disconnect_does_not_cancel_the_execution(make_atom: MakeAtom, cancel_handlers: bool) -> None:
    atom = await make_atom(slow_files("400ms"), server_kwargs={"handler_cancellation": cancel_handlers})
    port = atom.client.port
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /ws/simple/executeSlow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nbye")
    await writer.drain()
    await wait_for(lambda: bool(atom.runtime.jobs), what="execution start")
    eid = next(iter(atom.runtime.jobs))
    writer.close()  # the client goes away mid-execution
    await wait_for(lambda: not atom.runtime.jobs, what="execution end")
    rec = await atom.wait_status(eid, "COMPLETE")
    assert rec["outboundDocumentCount"] == 1


class Receiver:
    """A local HTTP endpoint that records callbacks; the first `fail_first` answers are 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((dict(request.headers), body))
        if len(self.calls) <= self.fail_first:
            return web.Response(status=503)
        return web.Response(status=204)


async def _receiver(fail_first: int = 0) -> tuple[Receiver, TestServer]:
    rec = Receiver(fail_first)
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return rec, server


async def test_callback_is_signed_and_retried(make_atom: MakeAtom) -> None:
    receiver, server = await _receiver(fail_first=1)
    try:
        atom = await make_atom(slow_files("200ms"), config="callbacks: {secret: s3cret, backoff: 50ms}\n")
        url = str(server.make_url("/hook"))
        resp = await atom.client.post("/ws/simple/executeSlow", data=b"cb",
                                      headers={"X-Max-Wait": "10", "X-Callback-Url": url})
        assert resp.status == 202
        eid = resp.headers["X-Execution-Id"]
        await wait_for(lambda: len(receiver.calls) >= 2, what="callback retry")
        headers, body = receiver.calls[-1]
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Atom-Signature"] == expected
        assert verify("s3cret", body, headers["X-Atom-Signature"])
        assert headers["X-Execution-Id"] == eid
        import json

        payload: dict[str, Any] = json.loads(body)
        assert payload["record"]["executionId"] == eid
        assert payload["record"]["status"] == "COMPLETE"
        assert payload["response"] == {"status": 200, "headers": {"Content-Type": "application/octet-stream",
                                                                 "X-Execution-Id": eid},
                                       "body": "done cb", "bodyEncoding": "utf-8"}
    finally:
        await server.close()


async def test_bad_callback_url_is_400(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("10ms"))
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"x", headers={"X-Callback-Url": "ftp://x/y"})
    assert resp.status == 400
    assert "X-Callback-Url" in (await resp.json())["error"]["message"]


async def test_many_concurrent_202s_are_all_findable(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("200ms"))

    async def one(i: int) -> str:
        r = await atom.client.post("/ws/simple/executeSlow", data=str(i).encode(), headers={"X-Max-Wait": "0"})
        assert r.status == 202
        eid = r.headers["X-Execution-Id"]
        rec = await atom.record(eid)  # immediately
        assert rec["status"] in ("INPROCESS", "COMPLETE")
        return eid

    ids = await asyncio.gather(*(one(i) for i in range(20)))
    for i, eid in enumerate(ids):
        await atom.wait_status(eid, "COMPLETE")
        r = await atom.client.get(f"/api/v1/executions/{eid}/response")
        assert await r.read() == f"done {i}".encode()


async def test_real_client_timeout_free_round_trip(make_atom: MakeAtom) -> None:
    """A plain aiohttp client session (not the test client) against the test server."""
    atom = await make_atom(slow_files("10ms"))
    async with aiohttp.ClientSession() as s:
        async with s.post(str(atom.client.make_url("/ws/simple/executeSlow")), data=b"q") as r:
            assert r.status == 200 and await r.read() == b"done q"


RETRYING = """
process: retrying
start:
  listen: {object: Retrying, input: data, output: data}
shapes:
  - {id: t, try_catch: {try: boom, catch: caught, retries: 1, backoff: BACKOFF}}
  - {id: boom, exception: {message: "always fails"}}
  - {id: caught, message: {template: "caught: {{ doc.props.try_catch_message }}"}}
  - {id: r, return: {}}
"""


async def test_a_computing_process_that_waits_goes_on_after_202(make_atom: MakeAtom) -> None:
    """A process without I/O starts in the request's task; when it sleeps (retry back-off) it carries
    on in a task of its own, and 202 + the stored response work as for any other."""
    atom = await make_atom({"retrying.yaml": RETRYING.replace("BACKOFF", "300ms")})
    assert atom.runtime.engine.deployment.processes["retrying"] is not None
    resp = await atom.client.post("/ws/simple/executeRetrying", data=b"x", headers={"X-Max-Wait": "50"})
    assert resp.status == 202
    eid = resp.headers["X-Execution-Id"]
    rec = await atom.wait_status(eid, "COMPLETE", "COMPLETE_WARN")
    assert rec["outboundDocumentCount"] == 1
    stored = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert await stored.read() == b"caught: always fails"
    sync = await atom.client.post("/ws/simple/executeRetrying", data=b"y")
    assert sync.status == 200 and await sync.read() == b"caught: always fails"


async def test_a_sleeping_computing_process_is_aborted_at_shutdown(make_atom: MakeAtom) -> None:
    atom = await make_atom({"retrying.yaml": RETRYING.replace("BACKOFF", "10s")})
    first = asyncio.ensure_future(atom.client.post("/ws/simple/executeRetrying", data=b"x"))
    await wait_for(lambda: bool(atom.runtime.jobs), what="execution start")
    eid = next(iter(atom.runtime.jobs))
    await asyncio.sleep(0.05)
    await atom.runtime.drain(0.1)
    resp = await first
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "ABORTED"
    rec = await atom.runtime.store.get_record(eid)
    assert rec is not None and rec["status"] == "ABORTED"
