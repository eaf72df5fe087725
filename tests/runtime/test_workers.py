"""The parts of a multi-process Atom that run inside one process: `server.workers`, the refusals, a
worker's Runtime (no schedules fired, no recovery at store open, worker in the status), the store
shared by several writer processes, and worker-named log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from atom.config import load_config
from atom.document import Document
from atom.engine import Engine
from atom.errors import LoadError
from atom.loader import load_sources
from atom.runtime import JsonFormatter, Runtime
from atom.store import ListQuery, SqliteStore, abort_in_process
from atom.workers import describe_exit, node_id_of, probe_port, workers_problem

from .conftest import MakeAtom

TICK = """
process: tick
start:
  schedule: {every: 0.1s}
shapes:
  - {id: n, notify: {message: "tick"}}
"""


def test_server_workers_default_env_and_minimum(tmp_path: Path) -> None:
    assert load_config(None, env={}).server.workers == 1
    assert load_config(None, env={"ATOM_SERVER_WORKERS": "4"}).server.workers == 4
    cfg = tmp_path / "atom.yaml"
    cfg.write_text("server:\n  workers: 3\n", encoding="utf-8")
    assert load_config(str(cfg), env={}).server.workers == 3
    assert load_config(str(cfg), env={}, overrides={"server.workers": 2}).server.workers == 2
    cfg.write_text("server:\n  workers: 0\n", encoding="utf-8")
    with pytest.raises(LoadError) as exc:
        load_config(str(cfg), env={})
    assert "atom.yaml:2:12" in str(exc.value.problems[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing is Linux's")
def test_refusals() -> None:
    base = load_config(None, env={"ATOM_SERVER_PORT": "9099"})
    assert workers_problem(base) is None
    two = replace(base, server=replace(base.server, workers=2))
    assert workers_problem(two) is None
    port0 = replace(two, server=replace(two.server, port=0))
    assert "port 0 (any free port) cannot be shared" in (workers_problem(port0) or "")
    https0 = replace(two, server=replace(two.server, tls_cert="c.pem", tls_key="k.pem", https_port=0))
    assert "https_port 0" in (workers_problem(https0) or "")
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(3) == "exit status 3"


def test_probe_port_fails_when_something_listens() -> None:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        probe_port("127.0.0.1", port)  # bound but not listening: a server could still take it
        s.listen()
        with pytest.raises(OSError, match=f"port {port}"):
            probe_port("127.0.0.1", port)
    probe_port("127.0.0.1", port)


async def test_a_worker_other_than_the_first_fires_no_schedule(tmp_path: Path, aiohttp_client: Any) -> None:
    comp = tmp_path / "processes"
    comp.mkdir()
    (comp / "tick.yaml").write_text(textwrap.dedent(TICK), encoding="utf-8")
    cfg = load_config(None, env={"ATOM_COMPONENTS": str(comp), "ATOM_DATA_DIR": str(tmp_path / "data"),
                                 "ATOM_WATCH_ENABLED": "false"})
    rt = Runtime(cfg, worker=1, workers=2, recover=False, run_schedules=False)
    client = await aiohttp_client(rt.app)
    await asyncio.sleep(0.45)
    page = await (await client.get("/api/v1/executions?process=tick")).json()
    assert page["items"] == []
    info = await (await client.get("/api/v1/processes/tick")).json()
    assert info["nextRun"]  # known from the schedule, though another worker runs it
    status = await (await client.get("/_admin/status")).json()
    assert (status["worker"], status["workers"]) == (1, 2)
    assert rt._purge_task is None


async def test_one_process_atom_says_worker_0_of_1(make_atom: MakeAtom) -> None:
    atom = await make_atom({"tick.yaml": TICK})
    status = await (await atom.client.get("/_admin/status")).json()
    assert (status["worker"], status["workers"]) == (0, 1)


def _engine() -> Engine:
    text = "process: p\nstart: {listen: {object: P, input: data, output: data}}\nshapes:\n  - {id: r, return: {}}\n"
    return Engine(load_sources([("p.yaml", text)]), node_id="host:1")


async def test_open_without_recovery_and_abort_by_node(tmp_path: Path) -> None:
    path = tmp_path / "atom.db"
    store = SqliteStore(path)
    await store.open()
    a, b = _engine(), Engine(_engine().deployment, node_id="host:2")
    exs = [a.new_execution("p", [Document(b"1")]), b.new_execution("p", [Document(b"2")])]
    for ex in exs:
        await store.execution_started(ex)
        await store.persist(ex)
    await store.close()

    other = SqliteStore(path)
    assert await other.open(recover=False) == 0
    assert [(await other.get_record(ex.id) or {}).get("status") for ex in exs] == ["INPROCESS", "INPROCESS"]
    await other.close()
    assert abort_in_process(path, "host:1") == 1
    again = SqliteStore(path)
    await again.open(recover=False)
    recs = [await again.get_record(ex.id) or {} for ex in exs]
    assert [r.get("status") for r in recs] == ["ABORTED", "INPROCESS"]
    assert "stopped while the execution was in process" in recs[0]["message"]
    await again.close()
    assert node_id_of(123).endswith(":123")


WRITER = """
import asyncio, sys
from atom.document import Document
from atom.engine import Engine
from atom.loader import load_sources
from atom.store import SqliteStore

async def main(path, n, tag):
    text = "process: p\\nstart: {listen: {object: P, input: data, output: data}}\\nshapes:\\n  - {id: r, return: {}}\\n"
    eng = Engine(load_sources([("p.yaml", text)]), node_id=tag)
    store = SqliteStore(path)
    await store.open(recover=False)
    for i in range(n):
        ex = eng.new_execution("p", [Document(b"x" * 100)])
        ex.status = "COMPLETE"
        await store.execution_started(ex)
        await store.execution_finished(ex)
        if i % 7 == 0:
            await asyncio.sleep(0.001)
    await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


async def test_several_processes_write_one_store(tmp_path: Path) -> None:
    path = tmp_path / "atom.db"
    first = SqliteStore(path)
    await first.open()
    await first.close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), "300", f"writer:{k}"])
             for k in range(3)]
    try:
        deadline = time.monotonic() + 40
        while any(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "the writers did not finish"
            await asyncio.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert [p.returncode for p in procs] == [0, 0, 0]
    store = SqliteStore(path)
    await store.open(recover=False)
    try:
        page = await store.list_records(ListQuery(limit=1000))
    finally:
        await store.close()
    nodes: dict[str, int] = {}
    for r in page.items:
        nodes[r["nodeId"]] = nodes.get(r["nodeId"], 0) + 1
    assert nodes == {"writer:0": 300, "writer:1": 300, "writer:2": 300}


def test_log_lines_name_the_worker() -> None:
    rec = logging.LogRecord("atom.runtime", logging.INFO, __file__, 1, "ready", (), None)
    line = json.loads(JsonFormatter({"worker": 1}).format(rec))
    assert line["worker"] == 1 and line["message"] == "ready" and line["logger"] == "atom.runtime"
    assert "worker" not in json.loads(JsonFormatter().format(rec))
