"""The execution store: what each mode keeps, purge, crash recovery (ABORTED + retry), keyset pagination
and its indexes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from atom.document import Document
from atom.engine import Engine
from atom.loader import load_sources
from atom.store import ListQuery, SqliteStore, days_ago, decode_cursor, encode_cursor

from .conftest import MakeAtom, slow_files

GENERAL = """
process: keep
mode: {mode}
start:
  listen: {{object: Keep, input: json, output: json}}
shapes:
  - {{id: n, notify: {{message: "saw {{{{ doc.json.id }}}}"}}}}
  - {{id: m, message: {{template: '{{"ack": {{{{ doc.json.id }}}}}}'}}}}
  - {{id: r, return: {{}}}}
"""


def keep(mode: str) -> dict[str, str]:
    return {"keep.yaml": GENERAL.format(mode=mode)}


async def test_general_keeps_record_log_documents_and_response(make_atom: MakeAtom) -> None:
    atom = await make_atom(keep("general"))
    resp = await atom.client.post("/ws/simple/executeKeep?x=1", data=b'{"id": 5}', headers={"X-Tag": "t"})
    assert resp.status == 200
    eid = resp.headers["X-Execution-Id"]
    rec = await atom.record(eid)
    assert rec["status"] == "COMPLETE"
    assert rec["inboundDocumentCount"] == 1 and rec["outboundDocumentCount"] == 1
    assert rec["inboundDocumentSize"] == 9 and rec["outboundDocumentSize"] == len(b'{"ack": 5}')
    for field in ("executionId", "processName", "processVersion", "executionType", "status", "executionTime",
                  "executionDuration", "inboundDocumentCount", "inboundErrorDocumentCount",
                  "outboundDocumentCount", "inboundDocumentSize", "outboundDocumentSize", "message",
                  "parentExecutionId", "topLevelExecutionId", "atomName", "nodeId"):
        assert field in rec
    logs = await (await atom.client.get(f"/api/v1/executions/{eid}/logs")).json()
    assert [e["message"] for e in logs["items"]] == ["saw 5"]
    docs = (await (await atom.client.get(f"/api/v1/executions/{eid}/documents")).json())["items"]
    assert [(d["direction"], d["data"]) for d in docs] == [("inbound", '{"id": 5}'), ("outbound", '{"ack": 5}')]
    assert docs[0]["properties"]["inheader_X-Tag"] == "t"
    stored = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert stored.status == 200 and await stored.read() == b'{"ack": 5}'


async def test_bridge_keeps_record_and_log_only(make_atom: MakeAtom) -> None:
    atom = await make_atom(keep("bridge"))
    resp = await atom.client.post("/ws/simple/executeKeep", data=b'{"id": 6}')
    eid = resp.headers["X-Execution-Id"]
    assert (await atom.record(eid))["status"] == "COMPLETE"
    logs = await (await atom.client.get(f"/api/v1/executions/{eid}/logs")).json()
    assert len(logs["items"]) == 1
    docs = await (await atom.client.get(f"/api/v1/executions/{eid}/documents")).json()
    assert docs["items"] == []
    resp = await atom.client.get(f"/api/v1/executions/{eid}/response")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "NO_RESPONSE"
    retry = await atom.client.post(f"/api/v1/executions/{eid}/retry")
    assert retry.status == 409 and (await retry.json())["error"]["code"] == "NOT_RETRYABLE"


async def test_low_latency_keeps_nothing_unless_debug(make_atom: MakeAtom) -> None:
    atom = await make_atom(keep("low_latency"))
    resp = await atom.client.post("/ws/simple/executeKeep", data=b'{"id": 7}')
    assert resp.status == 200
    eid = resp.headers["X-Execution-Id"]
    await atom.runtime.store.flush()
    assert (await atom.client.get(f"/api/v1/executions/{eid}")).status == 404
    resp = await atom.client.post("/ws/simple/executeKeep", data=b'{"id": 8}', headers={"X-Atom-Debug": "true"})
    eid = resp.headers["X-Execution-Id"]
    rec = await atom.record(eid)
    assert rec["status"] == "COMPLETE" and rec["mode"] == "low_latency"
    docs = (await (await atom.client.get(f"/api/v1/executions/{eid}/documents")).json())["items"]
    assert len(docs) == 2
    page = await (await atom.client.get("/api/v1/executions?process=keep")).json()
    assert [r["executionId"] for r in page["items"]] == [eid]


async def test_purge_deletes_old_executions_and_their_data(make_atom: MakeAtom) -> None:
    atom = await make_atom(keep("general"))
    ids = []
    for i in range(3):
        resp = await atom.client.post("/ws/simple/executeKeep", data=b'{"id": %d}' % i)
        ids.append(resp.headers["X-Execution-Id"])
    store = atom.runtime.store
    await store.flush()
    con = sqlite3.connect(atom.runtime.config.store_path)
    con.execute("UPDATE executions SET start_ts = start_ts - 40 * 86400 WHERE id IN (?, ?)", ids[:2])
    con.commit()
    con.close()
    assert await store.purge(days_ago(30)) == 2
    assert (await atom.client.get(f"/api/v1/executions/{ids[0]}")).status == 404
    assert (await atom.client.get(f"/api/v1/executions/{ids[0]}/documents")).status == 404
    assert (await atom.client.get(f"/api/v1/executions/{ids[2]}")).status == 200
    con = sqlite3.connect(atom.runtime.config.store_path)
    left = con.execute("SELECT COUNT(*) FROM execution_data WHERE id IN (?, ?)", ids[:2]).fetchone()[0]
    con.close()
    assert left == 0


def _engine(mode: str = "general") -> Engine:
    text = ("process: p\nmode: " + mode + "\nstart: {listen: {object: P, input: data, output: data}}\n"
            "shapes:\n  - {id: r, return: {}}\n")
    return Engine(load_sources([("p.yaml", text)]))


async def test_crash_left_inprocess_becomes_aborted_and_retryable(tmp_path: Path, make_atom: MakeAtom) -> None:
    # a store that "crashes": the execution is persisted in process and never finished
    eng = _engine()
    data = tmp_path / "crashed"
    store = SqliteStore(data / "atom.db")
    await store.open()
    ex = eng.new_execution("p", [Document(b"payload", {"inheader_X-A": "1"})], properties={"query_q": "v"},
                           execution_type="exec_listener")
    await store.execution_started(ex)
    await store.persist(ex)
    await store.close()

    files = {"p.yaml": "process: p\nstart: {listen: {object: P, input: data, output: data}}\n"
                       "shapes:\n  - {id: m, message: {template: '{{ doc.text }}/{{ process.query_q }}'}}\n"
                       "  - {id: r, return: {}}\n"}
    atom = await make_atom(files, env={"ATOM_DATA_DIR": str(data)})
    assert atom.runtime.aborted_at_start == 1
    rec = await atom.record(ex.id)
    assert rec["status"] == "ABORTED" and "stopped" in rec["message"]
    resp = await atom.client.post(f"/api/v1/executions/{ex.id}/retry", headers={"X-Max-Wait": "5000"})
    assert resp.status == 200, await resp.text()
    assert await resp.read() == b"payload/v"
    new = await atom.record(resp.headers["X-Execution-Id"])
    assert new["executionType"] == "retry_manual" and new["status"] == "COMPLETE"
    logs = (await (await atom.client.get(f"/api/v1/executions/{new['executionId']}/logs")).json())["items"]
    assert f"retry of execution {ex.id}" in logs[0]["message"]


async def test_keyset_pagination_and_filters(tmp_path: Path) -> None:
    eng = _engine()
    store = SqliteStore(tmp_path / "atom.db")
    await store.open()
    try:
        ids = []
        for i in range(25):
            ex = eng.new_execution("p", [Document(b"x")])
            if i % 5 == 0:
                ex.status = "ERROR"
            else:
                ex.status = "COMPLETE"
            await store.execution_started(ex)
            await store.execution_finished(ex)
            ids.append(ex.id)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await store.list_records(ListQuery(limit=10, cursor=cursor))
            seen += [r["executionId"] for r in page.items]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == 3
        assert seen == list(reversed(ids))  # newest first, nothing twice, nothing lost
        errors = await store.list_records(ListQuery(status="ERROR", limit=100))
        assert len(errors.items) == 5 and errors.next_cursor is None
        assert (await store.list_records(ListQuery(process="other"))).items == []
        future = await store.list_records(ListQuery(since=time.time() + 3600))
        assert future.items == []
        past = await store.list_records(ListQuery(until=time.time() + 3600, limit=5))
        assert len(past.items) == 5
    finally:
        await store.close()


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(1700000000.123456, "execution-x")) == (1700000000.123456, "execution-x")
    with pytest.raises(ValueError):
        decode_cursor("!!!")


@pytest.mark.parametrize("query", [
    ListQuery(), ListQuery(process="p"), ListQuery(status="ERROR"), ListQuery(process="p", status="COMPLETE"),
    ListQuery(since=1.0, until=2.0),
])
def test_listing_queries_use_an_index_without_sorting(tmp_path: Path, query: ListQuery) -> None:
    from atom.store import SCHEMA

    con = sqlite3.connect(tmp_path / "plan.db")
    con.executescript(SCHEMA)
    sql, args = SqliteStore.list_sql(query, (1.5, "execution-z"))
    plan = " | ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql, args))
    con.close()
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_listing_stays_fast_with_many_records(tmp_path: Path) -> None:
    """200k records: a deep page via the cursor costs about as much as the first."""
    store = SqliteStore(tmp_path / "big.db")
    await store.open()
    try:
        con = sqlite3.connect(tmp_path / "big.db")
        t0 = 1_600_000_000.0
        rows = ((f"execution-{i:07d}", "p" if i % 3 else "q", "COMPLETE" if i % 7 else "ERROR", t0 + i)
                for i in range(200_000))
        con.executemany("INSERT INTO executions (id, process, status, start_ts, start_iso) VALUES (?, ?, ?, ?, '')",
                        rows)
        con.commit()
        con.close()
        start = time.perf_counter()
        first = await store.list_records(ListQuery(limit=100))
        cursor = first.next_cursor
        for _ in range(20):
            page = await store.list_records(ListQuery(limit=100, process="q", status="ERROR", cursor=cursor))
            cursor = page.next_cursor
        elapsed = time.perf_counter() - start
        assert first.items[0]["executionId"] == "execution-0199999"
        assert elapsed < 2.0, f"21 pages took {elapsed:.3f} s"
    finally:
        await store.close()


async def test_purge_loop_runs_at_start(tmp_path: Path, make_atom: MakeAtom) -> None:
    data = tmp_path / "old"
    eng = _engine()
    store = SqliteStore(data / "atom.db")
    await store.open()
    ex = eng.new_execution("p", [Document(b"x")])
    ex.status = "COMPLETE"
    await store.execution_finished(ex)
    await store.close()
    con = sqlite3.connect(data / "atom.db")
    con.execute("UPDATE executions SET start_ts = start_ts - 3 * 86400")
    con.commit()
    con.close()
    atom = await make_atom(slow_files(), config="purge_days: 2\n", env={"ATOM_DATA_DIR": str(data)})
    deadline = time.monotonic() + 10
    while (await atom.client.get(f"/api/v1/executions/{ex.id}")).status != 404:
        assert time.monotonic() < deadline, "the old execution was not purged"
        await asyncio.sleep(0.02)
