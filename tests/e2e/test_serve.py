"""End to end: `atom serve` as a subprocess, driven over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port

from .conftest import AtomServer, http, write_components

FILES = {
    "echo.yaml": """
        process: echo
        start:
          listen: {object: Echo, input: json, output: json}
        shapes:
          - {id: r, return: {}}
    """,
    "props.yaml": """
        process: props
        start:
          listen: {rest: {method: POST, path: "/orders/{id}"}, input: json, output: json}
        shapes:
          - id: m
            message:
              template: >-
                {"id": "{{ process.param_id }}", "q": "{{ process.query_q }}",
                "method": "{{ process.inmethod }}", "hdr": "{{ doc.props['inheader_X-Trace'] }}",
                "total": {{ doc.json.total }}}
          - id: s
            set_properties:
              document: {outstatuscode: "201", outheader_X-Order: "{{ process.param_id }}"}
          - {id: r, return: {}}
    """,
    "failing.yaml": """
        process: failing
        start:
          listen: {object: Fail, input: json, output: json}
        shapes:
          - {id: x, exception: {message: "cannot take {{ doc.json.id }}", scope: execution}}
    """,
    "peer.yaml": """
        connection: peer
        type: test
        delay: 1200ms
    """,
    "slow.yaml": """
        process: slow
        start:
          listen: {object: Slow, input: data, output: data, max_concurrent: 1}
        shapes:
          - {id: k, connector: {connection: peer, action: send, operation: {reply: "slow {{ doc.text }}"}}}
          - {id: r, return: {}}
    """,
    "limited.yaml": """
        process: limited
        start:
          listen: {object: Limited, input: none, output: data}
        shapes:
          - {id: r, return: {}}
    """,
    "tick.yaml": """
        process: tick
        start:
          schedule: {every: 0.3s}
        shapes:
          - {id: n, notify: {message: tick}}
    """,
}

SECRET = "e2e-secret"


@pytest.fixture(scope="module")
def atom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AtomServer]:
    work = tmp_path_factory.mktemp("e2e")
    comp = write_components(work / "processes", FILES)
    srv = AtomServer(work, comp, {"ATOM_LIMITS_MAX_REQUEST_BYTES": "4096", "ATOM_CALLBACKS_SECRET": SECRET,
                                  "ATOM_CALLBACKS_BACKOFF": "100ms", "ATOM_LIMITS_RATE_LIMIT_REQUESTS": "40",
                                  "ATOM_LIMITS_RATE_LIMIT_PER": "60s"})
    srv.start()
    yield srv
    assert srv.terminate(timeout=30) == 0, srv.log()


def test_json_round_trip(atom: AtomServer) -> None:
    r = atom.request("POST", "/ws/simple/executeEcho", b'{"hello": "world"}')
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert r.json() == {"hello": "world"}
    assert r.header("Server") == "Atom"  # no Python or aiohttp version for a scanner to match
    assert atom.request("GET", "/no/such/path").header("Server") == "Atom"


def test_properties_status_and_headers(atom: AtomServer) -> None:
    r = atom.request("POST", "/ws/rest/orders/A-17?q=fast", b'{"total": 12.5}', {"X-Trace": "t-1"})
    assert r.status == 201, r.body
    assert r.header("X-Order") == "A-17"
    assert r.json() == {"id": "A-17", "q": "fast", "method": "POST", "hdr": "t-1", "total": 12.5}


def test_error_statuses(atom: AtomServer) -> None:
    r = atom.request("POST", "/ws/simple/executeEcho", b'{"broken": ')
    assert r.status == 400 and r.json()["error"]["code"] == "INVALID_INPUT"
    r = atom.request("POST", "/ws/simple/executeMissing", b"{}")
    assert r.status == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = atom.request("GET", "/ws/simple/executeEcho")
    assert r.status == 405
    r = atom.request("POST", "/ws/simple/executeLimited", b"a body")
    assert r.status == 405
    r = atom.request("POST", "/ws/simple/executeEcho", b"[" + b"1," * 3000 + b"1]")
    assert r.status == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    r = atom.request("POST", "/ws/simple/executeFail", b'{"id": 3}')
    assert r.status == 500
    err = r.json()["error"]
    assert err["code"] == "PROCESS_ERROR" and err["message"] == "cannot take 3" and err["executionId"]
    # 40 requests a minute per client and listener (the 405 above took one)
    replies = [atom.request("GET", "/ws/simple/executeLimited") for _ in range(40)]
    assert [x.status for x in replies] == [200] * 39 + [429]
    assert int(replies[-1].header("Retry-After") or 0) >= 1


def test_saturation_is_503(atom: AtomServer) -> None:
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(atom.request, "POST", "/ws/simple/executeSlow", b"1")
        deadline = time.monotonic() + 10
        while atom.request("GET", "/api/v1/processes/slow").json()["inFlight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = atom.request("POST", "/ws/simple/executeSlow", b"2")
        assert r.status == 503 and r.json()["error"]["code"] == "SATURATED"
        assert first.result(timeout=30).status == 200


def test_slow_process_answers_202_and_polls_to_complete(atom: AtomServer) -> None:
    sync = atom.request("POST", "/ws/simple/executeSlow", b"abc")
    assert sync.status == 200 and sync.body == b"slow abc"
    r = atom.request("POST", "/ws/simple/executeSlow", b"abc", {"X-Max-Wait": "100"})
    assert r.status == 202
    eid = r.header("X-Execution-Id")
    link = r.header("X-Execution-Status-Link")
    assert link == f"{atom.url}/api/v1/executions/{eid}" and r.header("Location") == link
    assert r.json() == {"executionId": eid, "status": "INPROCESS", "statusLink": link}
    first = http("GET", link)  # immediately
    assert first.status == 200 and first.json()["status"] == "INPROCESS"
    pending = http("GET", link + "/response")
    assert pending.status == 202 and pending.header("Retry-After")
    atom.wait_record(str(eid), "COMPLETE")
    stored = http("GET", link + "/response")
    assert (stored.status, stored.body, stored.header("Content-Type")) == (sync.status, sync.body,
                                                                         sync.header("Content-Type"))


class _Hook(BaseHTTPRequestHandler):
    calls: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        type(self).calls.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_callback_is_received_and_signed(atom: AtomServer) -> None:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Hook)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        r = atom.request("POST", "/ws/simple/executeSlow", b"cb",
                         {"X-Max-Wait": "10", "X-Callback-Url": f"http://127.0.0.1:{port}/hook"})
        assert r.status == 202
        deadline = time.monotonic() + 20
        while not _Hook.calls:
            assert time.monotonic() < deadline, "no callback received"
            time.sleep(0.05)
        headers, body = _Hook.calls[0]
        sig = headers["X-Atom-Signature"]
        assert sig == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        payload = json.loads(body)
        assert payload["record"]["executionId"] == r.header("X-Execution-Id")
        assert payload["record"]["status"] == "COMPLETE"
        assert payload["response"]["status"] == 200 and payload["response"]["body"] == "slow cb"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_schedule_fires(atom: AtomServer) -> None:
    deadline = time.monotonic() + 20
    while True:
        page = atom.request("GET", "/api/v1/executions?process=tick&status=COMPLETE").json()
        if len(page["items"]) >= 2:
            break
        assert time.monotonic() < deadline, "the schedule did not fire"
        time.sleep(0.1)
    assert page["items"][0]["executionType"] == "exec_sched"
    info = atom.request("GET", "/api/v1/processes/tick").json()
    assert info["nextRun"]


def test_metrics(atom: AtomServer) -> None:
    r = atom.request("GET", "/metrics")
    assert r.status == 200
    assert b"atom_executions_total" in r.body and b"atom_http_requests_total" in r.body


# ------------------------------------------------------------------------------------------ own servers


def test_hot_reload_valid_and_invalid(start_atom: Any) -> None:
    srv = start_atom({"echo.yaml": FILES["echo.yaml"]}, env={"ATOM_WATCH_INTERVAL": "0.2s"}, name="reload")
    srv.write("echo.yaml", textwrap.dedent(FILES["echo.yaml"]).replace(
        "- {id: r, return: {}}", "- {id: m, message: {template: '{\"v\": 2}'}}\n  - {id: r, return: {}}"))
    deadline = time.monotonic() + 15
    while srv.request("GET", "/api/v1/processes/echo").json()["version"] != 2:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    assert srv.request("POST", "/ws/simple/executeEcho", b"{}").json() == {"v": 2}
    srv.write("echo.yaml", "process: echo\nshapes: [{id: r, retrun: {}}]\n")
    deadline = time.monotonic() + 15
    while not (status := srv.request("GET", "/_admin/status").json())["deploymentProblems"]:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    assert "echo.yaml:2:" in status["deploymentProblems"][0]
    assert srv.request("POST", "/ws/simple/executeEcho", b"{}").json() == {"v": 2}
    assert "is not deployed" in srv.log() and "retrun" in srv.log()
    assert srv.terminate() == 0


def test_sigterm_lets_the_in_flight_request_complete(start_atom: Any) -> None:
    srv = start_atom({"peer.yaml": FILES["peer.yaml"], "slow.yaml": FILES["slow.yaml"]}, name="term")
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(srv.request, "POST", "/ws/simple/executeSlow", b"bye")
        deadline = time.monotonic() + 10
        while srv.request("GET", "/_admin/status").json()["inFlight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert srv.proc is not None
        srv.proc.terminate()
        # while draining, the Atom refuses new work
        deadline = time.monotonic() + 5
        while True:
            try:
                s = srv.request("GET", "/_admin/status", timeout=2).status
            except OSError:
                s = 0
            if s in (503, 0):
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        resp = fut.result(timeout=30)
    assert resp.status == 200 and resp.body == b"slow bye"
    assert srv.proc.wait(timeout=30) == 0, srv.log()
    assert "stopped" in srv.log()


def test_kill_9_then_restart_marks_aborted_and_retries(start_atom: Any, tmp_path: Path) -> None:
    files = {"peer.yaml": FILES["peer.yaml"].replace("1200ms", "1500ms"), "slow.yaml": FILES["slow.yaml"]}
    srv = start_atom(files, name="crash")
    r = srv.request("POST", "/ws/simple/executeSlow", b"keep me", {"X-Max-Wait": "50"})
    assert r.status == 202
    eid = str(r.header("X-Execution-Id"))
    srv.kill()  # SIGKILL mid-execution
    again = AtomServer(srv.workdir, srv.components, {"ATOM_DATA_DIR": str(srv.data_dir)})
    again.start()
    try:
        rec = again.request("GET", f"/api/v1/executions/{eid}").json()
        assert rec["status"] == "ABORTED"
        assert "ABORTED" in again.log()
        retry = again.request("POST", f"/api/v1/executions/{eid}/retry", headers={"X-Max-Wait": "20000"})
        assert retry.status == 200, retry.body
        assert retry.body == b"slow keep me"
        new = again.request("GET", f"/api/v1/executions/{retry.header('X-Execution-Id')}").json()
        assert new["executionType"] == "retry_manual" and new["status"] == "COMPLETE"
    finally:
        assert again.terminate() == 0


def test_invalid_components_at_start_exit_1_with_located_errors(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    comp = write_components(tmp_path / "processes", {"bad.yaml": "process: bad\nshapes:\n  - {id: r, retrun: {}}\n"})
    env = {**os.environ, "ATOM_DATA_DIR": str(tmp_path / "data")}
    res = subprocess.run([sys.executable, "-c", "from atom.cli import main; main()", "serve", str(comp),
                          "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1
    assert "processes/bad.yaml:3:" in res.stderr and "unknown shape type or field 'retrun'" in res.stderr
    assert "the Atom did not start" in res.stderr
