"""Schedules: `every` and `cron` starts, exec_sched records, skip-when-running, scheduled connector
starts, next run times."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from .conftest import MakeAtom

TICK = """
process: tick
start:
  schedule: {every: 0.2s}
shapes:
  - {id: n, notify: {message: "tick"}}
"""

SLOW_TICK = """
process: slowtick
allow_simultaneous: false
start:
  schedule: {every: 0.1s}
shapes:
  - {id: k, connector: {connection: sleepy, action: send}}
"""

SLEEPY = """
connection: sleepy
type: test
delay: 450ms
documents: ['{"from": "peer"}']
"""

PULL = """
process: pull
start:
  connector:
    connection: sleepy
    operation: {documents: ['{"n": 1}', '{"n": 2}']}
    schedule: {every: 0.2s}
shapes:
  - {id: r, return: {}}
"""


async def _records(atom: object, process: str) -> list[dict[str, object]]:
    client = atom.client  # type: ignore[attr-defined]
    page = await (await client.get(f"/api/v1/executions?process={process}&limit=100")).json()
    return list(page["items"])


async def test_every_runs_and_records_exec_sched(make_atom: MakeAtom) -> None:
    atom = await make_atom({"tick.yaml": TICK})
    deadline = time.monotonic() + 10
    while len(recs := await _records(atom, "tick")) < 3:
        assert time.monotonic() < deadline, "the schedule did not fire three times"
        await asyncio.sleep(0.05)
    assert {r["executionType"] for r in recs} == {"exec_sched"}
    assert {r["status"] for r in recs} == {"COMPLETE"}
    info = await (await atom.client.get("/api/v1/processes/tick")).json()
    assert info["schedule"]["every"] == 0.2
    assert info["nextRun"] is not None


async def test_skip_when_previous_run_is_still_going(make_atom: MakeAtom, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="atom.runtime")
    atom = await make_atom({"sleepy.yaml": SLEEPY, "slowtick.yaml": SLOW_TICK})
    deadline = time.monotonic() + 10
    while "skipped" not in caplog.text or len(
            [r for r in await _records(atom, "slowtick") if r["status"] == "COMPLETE"]) < 2:
        assert time.monotonic() < deadline, "no run was skipped"
        await asyncio.sleep(0.05)
    assert "scheduled run skipped, the previous run is still in process" in caplog.text
    import datetime as dt

    recs = [r for r in await _records(atom, "slowtick") if r["status"] == "COMPLETE"]
    spans = sorted((dt.datetime.fromisoformat(str(r["executionTime"]).replace("Z", "+00:00")).timestamp(),
                    int(str(r["executionDuration"])) / 1000) for r in recs)
    # never two at once: each run started after the previous one had ended
    for (start, took), (nxt, _) in itertools.pairwise(spans):
        assert nxt >= start + took - 0.005


async def test_connector_start_on_a_schedule(make_atom: MakeAtom) -> None:
    atom = await make_atom({"sleepy.yaml": SLEEPY.replace("450ms", "0s"), "pull.yaml": PULL})
    deadline = time.monotonic() + 10
    while not [r for r in await _records(atom, "pull") if r["status"] == "COMPLETE"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    done = next(r for r in await _records(atom, "pull") if r["status"] == "COMPLETE")
    assert done["outboundDocumentCount"] == 2
    assert done["executionType"] == "exec_sched"


async def test_cron_next_run_in_its_time_zone(make_atom: MakeAtom) -> None:
    text = TICK.replace("{every: 0.2s}", '{cron: "30 2 * * *", timezone: America/New_York}')
    atom = await make_atom({"tick.yaml": text})
    info = await (await atom.client.get("/api/v1/processes/tick")).json()
    import datetime as dt
    import zoneinfo

    nxt = dt.datetime.fromisoformat(info["nextRun"].replace("Z", "+00:00"))
    local = nxt.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (2, 30) or local.hour == 3  # 3:30 on a DST spring-forward day
    assert nxt > dt.datetime.now(dt.UTC)
