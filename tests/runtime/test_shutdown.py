"""Graceful shutdown in-process: stop accepting (503), drain in-flight executions, abort what outlasts
the grace period (recorded ABORTED), flush the store."""

from __future__ import annotations

import asyncio
import sqlite3

from .conftest import MakeAtom, slow_files, wait_for


async def test_drain_lets_in_flight_executions_finish(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("400ms"))
    first = asyncio.ensure_future(atom.client.post("/ws/simple/executeSlow", data=b"last"))
    await wait_for(lambda: bool(atom.runtime.jobs), what="execution start")
    drain = asyncio.ensure_future(atom.runtime.drain(10))
    await wait_for(lambda: atom.runtime.state == "stopping", what="stopping")
    resp = await atom.client.post("/ws/simple/executeSlow", data=b"late")
    assert resp.status == 503
    assert (await atom.client.get("/_admin/status")).status == 503
    done = await first
    assert done.status == 200 and await done.read() == b"done last"
    await drain
    eid = done.headers["X-Execution-Id"]
    await atom.runtime.stop()
    con = sqlite3.connect(atom.runtime.config.store_path)
    try:
        row = con.execute("SELECT status FROM executions WHERE id=?", (eid,)).fetchone()
    finally:
        con.close()
    assert row == ("COMPLETE",)


async def test_executions_outlasting_the_grace_period_are_aborted(make_atom: MakeAtom) -> None:
    atom = await make_atom(slow_files("5s"))
    first = asyncio.ensure_future(atom.client.post("/ws/simple/executeSlow", data=b"x"))
    await wait_for(lambda: bool(atom.runtime.jobs), what="execution start")
    eid = next(iter(atom.runtime.jobs))
    await atom.runtime.drain(0.2)
    resp = await first
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "ABORTED"
    await atom.runtime.stop()
    con = sqlite3.connect(atom.runtime.config.store_path)
    try:
        row = con.execute("SELECT status, message FROM executions WHERE id=?", (eid,)).fetchone()
    finally:
        con.close()
    assert row[0] == "ABORTED"
