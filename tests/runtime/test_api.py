"""The management API (/api/v1) and the `atom executions` CLI against a real server."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from atom.cli import main

from .conftest import ECHO_JSON, MakeAtom, slow_files

MANUAL = """
process: report
description: Build a report.
start:
  schedule: {cron: "0 6 * * *", timezone: Europe/Paris}
shapes:
  - {id: m, message: {template: "report for {{ process.region | default('all') }} by {{ process.inuser | default('-') }}"}}
  - {id: r, return: {}}
"""


async def test_processes_listing(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON, "report.yaml": MANUAL, **slow_files()})
    resp = await atom.client.get("/api/v1/processes")
    assert resp.status == 200
    items = {p["name"]: p for p in (await resp.json())["items"]}
    assert set(items) == {"echo", "report", "slow"}
    echo = items["echo"]
    assert echo["version"] == 1 and echo["startKind"] == "listen" and echo["mode"] == "general"
    assert echo["listenerUrl"] == f"http://127.0.0.1:{atom.client.port}/ws/simple/executeEcho"
    assert echo["schedule"] is None and echo["nextRun"] is None
    report = items["report"]
    assert report["startKind"] == "schedule" and report["listenerUrl"] is None
    assert report["schedule"] == {"cron": "0 6 * * *", "timezone": "Europe/Paris"}
    assert report["nextRun"].endswith("Z")
    one = await atom.client.get("/api/v1/processes/report")
    assert (await one.json())["name"] == "report"
    assert (await atom.client.get("/api/v1/processes/nope")).status == 404


async def test_execute_now_answers_202_by_default(make_atom: MakeAtom) -> None:
    atom = await make_atom({"report.yaml": MANUAL})
    resp = await atom.client.post("/api/v1/processes/report/executions?prop.region=EU")
    assert resp.status == 202
    eid = (await resp.json())["executionId"]
    rec = await atom.wait_status(eid, "COMPLETE")
    assert rec["executionType"] == "exec_manual"
    out = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert await out.read() == b"report for EU by -"


async def test_execute_now_with_max_wait_answers_the_result(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON, **slow_files("300ms")})
    resp = await atom.client.post("/api/v1/processes/echo/executions", data=b'{"k": 1}',
                                  headers={"X-Max-Wait": "5000"})
    assert resp.status == 200
    assert await resp.json() == {"k": 1}
    assert resp.headers["X-Execution-Id"]
    bad = await atom.client.post("/api/v1/processes/echo/executions", data=b"{",
                                 headers={"X-Max-Wait": "5000"})
    assert bad.status == 400
    slow = await atom.client.post("/api/v1/processes/slow/executions", data=b"z", headers={"X-Max-Wait": "20"})
    assert slow.status == 202
    assert (await atom.client.post("/api/v1/processes/nope/executions")).status == 404


async def test_list_validation(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON})
    for q in ("status=WRONG", "limit=0", "limit=abc", "cursor=@@@", "since=yesterday"):
        resp = await atom.client.get(f"/api/v1/executions?{q}")
        assert resp.status == 400, q
        assert (await resp.json())["error"]["code"] == "BAD_REQUEST"


async def test_list_through_the_api_pages_newest_first(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON})
    ids = []
    for i in range(7):
        r = await atom.client.post("/ws/simple/executeEcho", data=b'{"i": %d}' % i)
        ids.append(r.headers["X-Execution-Id"])
    got: list[str] = []
    cursor = ""
    while True:
        page = await (await atom.client.get(f"/api/v1/executions?limit=3&process=echo&cursor={cursor}")).json()
        got += [r["executionId"] for r in page["items"]]
        if not page["nextCursor"]:
            break
        cursor = page["nextCursor"]
    assert got == ids[::-1]
    since = await (await atom.client.get("/api/v1/executions?since=2000-01-01T00:00:00Z&status=COMPLETE")).json()
    assert len(since["items"]) == 7


async def test_cli_executions_list_show_retry(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON})
    r = await atom.client.post("/ws/simple/executeEcho", data=b'{"cli": true}')
    eid = r.headers["X-Execution-Id"]
    url = str(atom.client.make_url("")).rstrip("/")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        res = runner.invoke(main, ["executions", *args, "--url", url])
        return res.exit_code, res.output

    code, out = await asyncio.to_thread(run, "list")
    assert code == 0, out
    assert eid in out and "COMPLETE" in out
    code, out = await asyncio.to_thread(run, "show", eid, "--documents", "--logs")
    assert code == 0, out
    assert "processName" in out and '{"cli": true}' in out
    code, out = await asyncio.to_thread(run, "retry", eid, "--wait", "5000")
    assert code == 0, out
    new_id = out.splitlines()[0]
    assert new_id.startswith("execution-") and new_id != eid
    assert (await atom.record(new_id))["executionType"] == "retry_manual"
    code, out = await asyncio.to_thread(run, "show", "execution-unknown")
    assert code == 1 and "HTTP 404" in out
