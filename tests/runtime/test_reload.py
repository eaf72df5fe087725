"""Hot deployment: the watched component directory is redeployed atomically when valid; an invalid
change is reported and the previous version keeps serving; removed processes unmount."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .conftest import ECHO_JSON, Atom, MakeAtom, slow_files

TICK = """
process: tick
start:
  schedule: {every: 0.1s}
shapes:
  - {id: n, notify: {message: tick}}
"""


async def _until(atom: Atom, pred: Any, what: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await (await atom.client.get("/_admin/status")).json()
        if pred(status):
            return dict(status)
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {status}"
        await asyncio.sleep(0.05)


async def test_valid_change_is_deployed_with_a_new_version(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON}, watch=True)
    gen = atom.runtime.engine.deployment.generation
    atom.write("echo.yaml", ECHO_JSON.replace("  - {id: r, return: {}}",
                                              "  - {id: m, message: {template: '{\"v\": 2}'}}\n"
                                              "  - {id: r, return: {}}"))
    await _until(atom, lambda s: s["generation"] > gen, "redeploy")
    info = await (await atom.client.get("/api/v1/processes/echo")).json()
    assert info["version"] == 2
    resp = await atom.client.post("/ws/simple/executeEcho", data=b"{}")
    assert await resp.json() == {"v": 2}
    # a new process appears with its listener
    atom.write("other.yaml", ECHO_JSON.replace("process: echo", "process: other").replace("Echo", "Other"))
    await _until(atom, lambda s: s["processes"] == 2, "new process")
    assert (await atom.client.post("/ws/simple/executeOther", data=b"[1]")).status == 200


async def test_invalid_change_is_reported_and_the_old_version_serves(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON}, watch=True)
    atom.write("echo.yaml", ECHO_JSON.replace("return: {}", "retrun: {}"))
    status = await _until(atom, lambda s: s["deploymentProblems"], "the rejection")
    problem = status["deploymentProblems"][0]
    assert "echo.yaml:6:" in problem and "unknown shape type or field 'retrun'" in problem
    assert status["status"] == "ready"
    resp = await atom.client.post("/ws/simple/executeEcho", data=b'{"still": 1}')
    assert resp.status == 200 and await resp.json() == {"still": 1}
    assert (await (await atom.client.get("/api/v1/processes/echo")).json())["version"] == 1
    # fixing the file deploys it and clears the problems
    atom.write("echo.yaml", ECHO_JSON.replace("{id: r, return: {}}", "{id: r2, return: {}}"))
    status = await _until(atom, lambda s: not s["deploymentProblems"], "the fix")
    assert (await (await atom.client.get("/api/v1/processes/echo")).json())["version"] == 2


async def test_removed_processes_unmount_listeners_and_schedules(make_atom: MakeAtom) -> None:
    atom = await make_atom({"echo.yaml": ECHO_JSON, "tick.yaml": TICK}, watch=True)
    assert atom.runtime.scheduler.next_run("tick") is not None
    (atom.components / "echo.yaml").unlink()
    (atom.components / "tick.yaml").unlink()
    await _until(atom, lambda s: s["processes"] == 0, "removal")
    assert (await atom.client.post("/ws/simple/executeEcho", data=b"{}")).status == 404
    assert atom.runtime.scheduler.next_run("tick") is None
    await atom.runtime.store.flush()
    before = len((await (await atom.client.get("/api/v1/executions?process=tick&limit=1000")).json())["items"])
    await asyncio.sleep(0.4)
    after = len((await (await atom.client.get("/api/v1/executions?process=tick&limit=1000")).json())["items"])
    assert after == before


async def test_in_flight_execution_finishes_on_its_version(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("600ms"), watch=True)
    first = asyncio.ensure_future(atom.client.post("/ws/simple/executeSlow", data=b"a"))
    deadline = time.monotonic() + 5
    while not atom.runtime.jobs:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    eid = next(iter(atom.runtime.jobs))
    atom.write("slow.yaml", slow_files()["slow.yaml"].replace('reply: "done', 'reply: "v2'))
    await _until(atom, lambda s: s["generation"] > 1, "redeploy")
    resp = await first
    assert await resp.read() == b"done a"
    assert (await atom.record(eid))["processVersion"] == 1
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"b")
    assert await resp.read() == b"v2 b"
