"""PostgreSQL specifics of the database connector: typed parameters, retries, an unreachable server.

Uses the machine's PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, database test), skipped
when unreachable unless ATOM_REQUIRE_SERVICES=1. The unreachable case uses a closed local port.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from atom.connector import OperationContext
from atom.errors import ConnectorError
from connectors.database import DatabaseConnector
from tests.connectors.test_database import FAST_RETRY, PG_URL, connection_config, docs, operation
from tests.services import free_port, require_service


class RecordingContext(OperationContext):
    """An operation context that keeps the log lines (retry warnings land here)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.lines: list[tuple[str, str]] = []

    def log(self, level: str, message: str) -> None:
        self.lines.append((level, message))


@pytest.fixture
async def pg() -> AsyncIterator[tuple[DatabaseConnector, str]]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    table = f"t_{uuid.uuid4().hex[:12]}"
    values, _ = connection_config({
        "url": PG_URL, "pool": {"min_size": 1, "max_size": 1}, "retry": FAST_RETRY,
        "init": [f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, qty INTEGER, price NUMERIC(10, 2), "
                 f"due DATE, seen TIMESTAMPTZ, ok BOOLEAN, ref UUID, data JSONB, tags TEXT[])"],
    })
    conn = DatabaseConnector("pg", values)
    await conn.start()
    try:
        yield conn, table
    finally:
        await conn.stop()
        c = await asyncpg.connect(PG_URL)
        try:
            await c.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await c.close()


async def test_json_strings_are_converted_to_the_column_types(pg: tuple[DatabaseConnector, str]) -> None:
    conn, t = pg
    ctx = RecordingContext()
    out = await conn.send(operation("send", {"table": t, "columns": {
        "id": "{{ row.id }}", "qty": "$.qty", "price": "$.price", "due": "$.due", "seen": "$.seen", "ok": "$.ok",
        "ref": "$.ref", "data": "$.data", "tags": "$.tags"}}), docs({
            "id": "1", "qty": "5", "price": "12.50", "due": "2024-05-01", "seen": "2024-05-01T10:30:00Z",
            "ok": "true", "ref": "8a3f1c2e-7a4b-4c1d-9e2f-0123456789ab", "data": {"a": [1, 2]}, "tags": ["x", "y"]}),
        ctx)
    assert out[0].error is None, out[0].error
    (row,) = await conn.get(operation("get", {"query": f"SELECT * FROM {t}"}), [], ctx)
    assert row.json == {"id": 1, "qty": 5, "price": 12.5, "due": "2024-05-01", "seen": "2024-05-01T10:30:00+00:00",
                        "ok": True, "ref": "8a3f1c2e-7a4b-4c1d-9e2f-0123456789ab", "data": {"a": [1, 2]},
                        "tags": ["x", "y"]}
    # JSON text in a jsonb parameter is stored as JSON, not as a string
    await conn.send(operation("send", {"table": t, "mode": "update", "key": "id",
                                       "columns": {"id": 1, "data": "{{ doc.text }}"}}), docs({"k": "v"}), ctx)
    (row,) = await conn.get(operation("get", {"query": f"SELECT data FROM {t}"}), [], ctx)
    assert row.json == {"data": {"k": "v"}}


async def test_a_value_that_does_not_fit_its_column_names_the_column(pg: tuple[DatabaseConnector, str]) -> None:
    conn, t = pg
    ctx = RecordingContext()
    (doc,) = await conn.send(operation("send", {"table": t}), docs({"id": 1, "qty": "five"}), ctx)
    assert doc.error is not None and "parameter qty (int4): 'five' is not an integer" in doc.error
    assert doc.error_kind == "invalid"
    assert not ctx.lines  # a bad value is never retried


async def test_a_constraint_violation_is_not_retried(pg: tuple[DatabaseConnector, str]) -> None:
    conn, t = pg
    ctx = RecordingContext()
    out = await conn.send(operation("send", {"table": t, "transaction": "document"}),
                          docs({"id": 1}, {"id": 1}), ctx)
    assert out[0].error is None
    assert out[1].error is not None and "duplicate key value violates unique constraint" in out[1].error
    assert f"{t}_pkey" in out[1].error and "Key (id)=(1) already exists" in out[1].error
    assert (out[1].error_kind, out[1].error_status) == ("rejected", None)
    assert not ctx.lines
    assert conn.breaker.state == "closed"


async def test_a_connection_lost_in_the_middle_of_a_write_is_retried(pg: tuple[DatabaseConnector, str]) -> None:
    conn, t = pg
    ctx = RecordingContext()
    op = operation("send", {"statement": f"INSERT INTO {t} (id, qty) SELECT :id, :qty FROM pg_sleep(0.3)",
                            "params": {"id": "$.id", "qty": "$.qty"}})
    task = asyncio.ensure_future(conn.send(op, docs({"id": 1, "qty": 2}), ctx))
    admin = await asyncpg.connect(PG_URL)
    try:
        for _ in range(100):  # bounded: about 1 s
            pids = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t_%pg_sleep(0.3)'")
            if pids:
                await admin.execute("SELECT pg_terminate_backend($1)", pids[0]["pid"])
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the statement never showed up in pg_stat_activity")
    finally:
        await admin.close()
    (doc,) = await asyncio.wait_for(task, 10)
    assert doc.error is None, doc.error
    assert doc.props["rows_affected"] == "1"
    assert [level for level, _ in ctx.lines] == ["warning"] and "attempt 1 failed" in ctx.lines[0][1]
    rows = await conn.get(operation("get", {"query": f"SELECT id, qty FROM {t}"}), [], ctx)
    assert [r.json for r in rows] == [{"id": 1, "qty": 2}]  # written once


async def test_get_with_a_modifying_query_rolls_back_past_max_rows(pg: tuple[DatabaseConnector, str]) -> None:
    conn, t = pg
    ctx = RecordingContext()
    await conn.send(operation("send", {"table": t}), docs([{"id": i, "qty": 0} for i in range(3)]), ctx)
    claim = operation("get", {"query": f"UPDATE {t} SET qty = qty + 1 RETURNING id", "max_rows": 2})
    (doc,) = await conn.get(claim, [], ctx)
    assert doc.error is not None and "max_rows (2)" in doc.error
    rows = await conn.get(operation("get", {"query": f"SELECT qty FROM {t}"}), [], ctx)
    assert {r.json["qty"] for r in rows} == {0}


async def test_unreachable_server_fails_clearly_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://svc:url-s3cret@127.0.0.1:{port}/test"
    values, ctx = connection_config({"url": url, "password": "field-s3cret", "retry": FAST_RETRY,
                                     "connect_timeout": "2s"})
    assert {"url-s3cret", "field-s3cret"} <= set(ctx.secrets)
    conn = DatabaseConnector("erp-db", values)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConnectorError) as info:
        await conn.start()
    message = str(info.value)
    assert message.startswith(f"connection 'erp-db' (postgresql://svc@127.0.0.1:{port}/test): cannot connect: ")
    assert message.endswith("(after 2 attempts)")
    assert "refused" in message.lower() or "connect call failed" in message.lower()
    assert info.value.kind == "unreachable"
    # the same through send: the connection starts on first use and every document fails with the reason
    out = await conn.send(operation("send", {"table": "orders"}), docs({"id": 1}, {"id": 2}), OperationContext(None))
    assert all(d.error and "cannot connect" in d.error for d in out)
    assert [(d.error_kind, d.error_status) for d in out] == [("unreachable", None)] * 2
    description: dict[str, Any] = conn.describe()
    for text in (message, caplog.text, repr(description), *(d.error or "" for d in out)):
        assert "s3cret" not in text
    assert "attempt 1 failed" in caplog.text and "erp-db" in caplog.text
    await conn.stop()


async def test_a_slow_statement_times_out_without_retry() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    values, _ = connection_config({"url": PG_URL, "timeout": "200ms", "retry": FAST_RETRY})
    conn = DatabaseConnector("pg", values)
    await conn.start()
    try:
        ctx = RecordingContext()
        (doc,) = await conn.get(operation("get", {"query": "SELECT pg_sleep(5)"}), [], ctx)
        assert doc.error is not None and "statement timed out after 0.2s" in doc.error
        assert doc.error_kind == "timeout"
        assert not ctx.lines
        (ok,) = await conn.get(operation("get", {"query": "SELECT 1 AS one"}), [], ctx)  # the pool still works
        assert ok.json == {"one": 1}
    finally:
        await conn.stop()


async def test_the_circuit_breaker_opens_on_an_unreachable_server() -> None:
    values, _ = connection_config({"url": f"postgresql://svc@127.0.0.1:{free_port()}/test",
                                   "retry": {"attempts": 1}, "circuit_breaker": {"failure_threshold": 2}})
    conn = DatabaseConnector("erp-db", values)
    ctx = RecordingContext()
    op = operation("get", {"query": "SELECT 1"})
    got = [(await conn.get(op, [], ctx))[0] for _ in range(3)]
    first, second, third = (d.error or "" for d in got)
    assert "cannot connect" in first and "cannot connect" in second
    assert "circuit breaker is open" in third
    assert [d.error_kind for d in got] == ["unreachable", "unreachable", "unavailable"]
    assert ctx.lines[-1][0] == "warning" and "circuit breaker closed -> open after 2 failed call(s)" in ctx.lines[-1][1]
    assert conn.breaker.state == "open"
    assert conn.describe()["circuit_breaker"]["state"] == "open"
    await conn.stop()
