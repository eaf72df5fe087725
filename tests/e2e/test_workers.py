"""End to end: `atom serve --workers 2`, a supervisor and two worker processes sharing one port
(SO_REUSEPORT), driven over real HTTP on 127.0.0.1. Every request opens a new connection, so the
kernel spreads them over the workers. Every process started here is stopped by PID, also on failure."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from atom.workers import reuse_port_available

from .conftest import AtomServer, http, write_components

pytestmark = pytest.mark.skipif(not reuse_port_available(), reason="needs SO_REUSEPORT (Linux)")

FILES = {
    "echo.yaml": """
        process: echo
        start:
          listen: {object: Echo, input: json, output: json}
        shapes:
          - {id: r, return: {}}
    """,
    "peer.yaml": """
        connection: peer
        type: test
        delay: 1500ms
    """,
    "slow.yaml": """
        process: slow
        start:
          listen: {object: Slow, input: data, output: data}
        shapes:
          - {id: k, connector: {connection: peer, action: send, operation: {reply: "slow {{ doc.text }}"}}}
          - {id: r, return: {}}
    """,
    "tick.yaml": """
        process: tick
        start:
          schedule: {every: 0.5s}
        shapes:
          - {id: n, notify: {message: tick}}
    """,
}


def node_of(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def is_worker(pid: int) -> bool:
    """Whether `pid` is still an Atom worker process (not a number reused by another process)."""
    try:
        return b"atom-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_until(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Workers(AtomServer):
    """`atom serve` as a supervisor of worker processes."""

    def __init__(self, workdir: Path, components: Path, env: Mapping[str, str] | None = None,
                 args: tuple[str, ...] = ("--workers", "2")) -> None:
        super().__init__(workdir, components, env)
        self.args = args
        self.started_at = 0.0

    def start(self) -> Workers:
        cmd = [sys.executable, "-c", "from atom.cli import main; main()", "serve", str(self.components),
               "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        self.wait_ready()
        self.wait_workers({0, 1})
        return self

    def status(self) -> dict[str, Any]:
        """/_admin/status over a new connection (whichever worker the kernel picks)."""
        return dict(self.request("GET", "/_admin/status", timeout=5).json())

    def wait_workers(self, wanted: set[int], timeout: float = 20.0) -> None:
        seen: set[int] = set()

        def all_seen() -> bool:
            try:
                s = self.status()
            except OSError:
                return False
            if s["status"] == "ready":
                seen.add(s["worker"])
            return wanted <= seen

        wait_until(all_seen, timeout, f"workers {wanted} to answer:\n{self.log()}")

    def pids(self) -> dict[int, int]:
        """Worker index -> current pid, from the supervisor's log."""
        text = self.log()
        m = re.search(r"started (\d+) workers \(pids ([\d, ]+)\)", text)
        assert m, text
        out = dict(enumerate(int(p) for p in m.group(2).split(", ")))
        for idx, pid in re.findall(r"worker (\d+) restarted \(pid (\d+)\)", text):
            out[int(idx)] = int(pid)
        return out

    def known_pids(self) -> set[int]:
        text = self.log()
        return {int(p) for m in re.findall(r"\(pids ([\d, ]+)\)", text) for p in m.split(", ")} | {
            int(p) for p in re.findall(r"restarted \(pid (\d+)\)", text)}

    def stop_all(self) -> None:
        """Kill whatever is still running (after a failure): the supervisor, then every worker, by PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in self.known_pids():
            if alive(pid) and is_worker(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def start_workers(work: Path, env: Mapping[str, str] | None = None,
                  args: tuple[str, ...] = ("--workers", "2")) -> Workers:
    comp = write_components(work / "processes", FILES)
    srv = Workers(work, comp, env, args)
    try:
        return srv.start()
    except BaseException:
        srv.stop_all()
        raise


def stop_cleanly(srv: Workers) -> None:
    """SIGTERM to the supervisor: exit 0 and no worker left."""
    pids = srv.known_pids()
    assert srv.terminate(timeout=30) == 0, srv.log()
    assert pids and not [p for p in pids if alive(p)], srv.log()
    assert "Atom 'atom' stopped (2 workers)" in srv.log()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    srv = start_workers(tmp_path_factory.mktemp("workers"), env={"ATOM_WATCH_INTERVAL": "0.2s"})
    try:
        yield srv
        stop_cleanly(srv)
    finally:
        srv.stop_all()


def test_requests_are_served_by_both_workers(cluster: Workers) -> None:
    statuses = [cluster.status() for _ in range(30)]
    assert {s["worker"] for s in statuses} == {0, 1}
    assert {s["workers"] for s in statuses} == {2}
    pids = cluster.pids()
    assert {s["nodeId"] for s in statuses} == {node_of(pids[0]), node_of(pids[1])}
    log = cluster.log()
    assert "[worker 0] atom.runtime: Atom 'atom' ready" in log and "[worker 1] atom.runtime: Atom 'atom' ready" in log
    assert "[supervisor] atom.workers: started 2 workers" in log


def test_records_of_every_worker_are_listed_and_readable_anywhere(cluster: Workers) -> None:
    def call(i: int) -> tuple[str, bytes]:
        r = cluster.request("POST", "/ws/simple/executeEcho", f'{{"n": {i}}}'.encode())
        assert r.status == 200, r.body
        return str(r.header("X-Execution-Id")), r.body

    with ThreadPoolExecutor(8) as pool:
        done = dict(pool.map(call, range(60)))

    def listed() -> dict[str, dict[str, Any]] | None:
        page = cluster.request("GET", "/api/v1/executions?process=echo&limit=200").json()
        recs = {r["executionId"]: r for r in page["items"]}
        return recs if set(done) <= set(recs) else None

    recs = wait_until(listed, 10, "every record to be listed")
    pids = cluster.pids()
    assert {recs[eid]["nodeId"] for eid in done} == {node_of(pids[0]), node_of(pids[1])}
    assert {recs[eid]["status"] for eid in done} == {"COMPLETE"}
    # each record and stored response, asked over new connections: whichever worker answers finds it
    for eid, body in list(done.items())[:20]:
        rec = cluster.request("GET", f"/api/v1/executions/{eid}")
        assert rec.status == 200 and rec.json()["status"] == "COMPLETE"
        resp = cluster.request("GET", f"/api/v1/executions/{eid}/response")
        assert resp.status == 200 and resp.body == body


def test_a_status_link_is_answered_by_any_worker(cluster: Workers) -> None:
    r = cluster.request("POST", "/ws/simple/executeSlow", b"later", {"X-Max-Wait": "20"})
    assert r.status == 202, r.body
    link = str(r.header("X-Execution-Status-Link"))
    states = [http("GET", link).json()["status"] for _ in range(6)]  # the INPROCESS record is durable
    assert set(states) <= {"INPROCESS", "COMPLETE"}
    wait_until(lambda: http("GET", link).json()["status"] == "COMPLETE", 15, "the execution to complete")
    # the worker that ran it may report COMPLETE before its writer committed; once the record and the
    # response are in the file, every worker answers with them
    eid = str(r.header("X-Execution-Id"))
    wait_until(lambda: written(cluster, eid) == ("COMPLETE", True), 10, "the record and response to be written")
    records = [http("GET", link).json()["status"] for _ in range(10)]
    answers = [http("GET", link + "/response") for _ in range(10)]
    assert set(records) == {"COMPLETE"}
    assert {(a.status, a.body) for a in answers} == {(200, b"slow later")}


def written(srv: Workers, eid: str) -> tuple[str, bool] | None:
    """The status and whether a response is stored, read from the SQLite file itself."""
    with closing(sqlite3.connect(srv.data_dir / "atom.db", timeout=10)) as c:
        row = c.execute("SELECT e.status, d.response IS NOT NULL FROM executions e "
                        "LEFT JOIN execution_data d ON d.id = e.id WHERE e.id = ?", (eid,)).fetchone()
    return (row[0], bool(row[1])) if row else None


def test_the_schedule_runs_on_one_worker_only(cluster: Workers) -> None:
    time.sleep(max(0.0, cluster.started_at + 2.0 - time.monotonic()))
    t0 = time.time()
    time.sleep(2.0)
    page = cluster.request("GET", "/api/v1/executions?process=tick&limit=100").json()
    items = page["items"]
    pids = cluster.pids()
    assert {r["nodeId"] for r in items} == {node_of(pids[0])}
    times = sorted(_epoch(r["executionTime"]) for r in items)
    window = [t for t in times if t0 <= t < t0 + 2.0]
    assert 3 <= len(window) <= 5, times  # every 0.5 s over 2 s
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0.2, gaps  # one execution per tick: no worker but the first fires it
    infos = [cluster.request("GET", "/api/v1/processes/tick").json() for _ in range(6)]
    assert all(i["nextRun"] for i in infos)


def test_a_component_change_reaches_every_worker(cluster: Workers) -> None:
    processes = cluster.status()["processes"]
    cluster.write("added.yaml", FILES["echo.yaml"].replace("process: echo", "process: added")
                  .replace("object: Echo", "object: Added"))
    deployed: dict[int, int] = {}

    def both_deployed() -> bool:
        s = cluster.status()
        deployed[s["worker"]] = s["processes"]
        return deployed == {0: processes + 1, 1: processes + 1}

    wait_until(both_deployed, 15, f"both workers to deploy the new file:\n{cluster.log()}")
    replies = [cluster.request("POST", "/ws/simple/executeAdded", b'{"a": 1}') for _ in range(10)]
    assert {(r.status, r.body) for r in replies} == {(200, b'{"a": 1}')}


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------------------ own servers


def test_a_killed_worker_is_restarted_and_sigterm_stops_everything(tmp_path: Path) -> None:
    srv = start_workers(tmp_path, env={"ATOM_SERVER_WORKERS": "2"}, args=())
    try:
        before = srv.pids()
        # an execution in flight on worker 1 (its record is durable: it was answered 202)
        for _ in range(40):
            r = srv.request("POST", "/ws/simple/executeSlow", b"x", {"X-Max-Wait": "10"})
            assert r.status == 202, r.body
            eid = str(r.header("X-Execution-Id"))
            if srv.request("GET", f"/api/v1/executions/{eid}").json()["nodeId"] == node_of(before[1]):
                break
        else:
            raise AssertionError("no slow execution landed on worker 1")
        os.kill(before[1], signal.SIGKILL)
        wait_until(lambda: "worker 1 (pid" in srv.log() and "restarted" in srv.log(), 15, "the restart")
        assert f"worker 1 (pid {before[1]}) exited unexpectedly (killed by SIGKILL)" in srv.log()
        # worker 0 keeps serving while worker 1 restarts, and the killed worker's execution is ABORTED
        for _ in range(10):
            assert srv.request("POST", "/ws/simple/executeEcho", b"{}").status == 200
        rec = srv.request("GET", f"/api/v1/executions/{eid}").json()
        assert rec["status"] == "ABORTED", rec
        after = srv.pids()
        assert after[0] == before[0] and after[1] != before[1] and alive(after[1])
        srv.wait_workers({1})
        assert node_of(after[1]) in {srv.status()["nodeId"] for _ in range(30)}
        stop_cleanly(srv)
        assert not alive(before[0]) and not alive(after[1])
    finally:
        srv.stop_all()


def _run(tmp_path: Path, files: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    comp = write_components(tmp_path / "processes", files)
    env = {**os.environ, "ATOM_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-c", "from atom.cli import main; main()", "serve", str(comp), "--host", "127.0.0.1",
           *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_invalid_components_exit_1_without_starting_workers(tmp_path: Path) -> None:
    from tests.services import free_port

    res = _run(tmp_path, {"bad.yaml": "process: bad\nshapes:\n  - {id: r, retrun: {}}\n"},
               "--port", str(free_port()), "--workers", "2")
    assert res.returncode == 1
    assert "processes/bad.yaml:3:" in res.stderr and "unknown shape type or field 'retrun'" in res.stderr
    assert "the Atom did not start" in res.stderr
    assert "started" not in res.stderr and "[worker" not in res.stderr


def test_port_0_is_refused_with_several_workers(tmp_path: Path) -> None:
    res = _run(tmp_path, {"echo.yaml": FILES["echo.yaml"]}, "--port", "0", "--workers", "2")
    assert res.returncode == 1
    assert "port 0 (any free port) cannot be shared between worker processes" in res.stderr
    assert "[worker" not in res.stderr
