"""MySQL / MariaDB through the database connector: every operation, types, errors, retries, the pool.

Uses the machine's MariaDB at 127.0.0.1:3306 (user root, empty password, database test), skipped when
unreachable unless ATOM_REQUIRE_SERVICES=1. Each test creates uniquely named tables and drops them
afterwards. The unreachable case uses a closed local port.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomysql
import orjson
import pymysql
import pytest

from atom.connector import OperationContext
from atom.document import Document
from atom.errors import ConnectorError
from atom.spec import CheckContext, Spec
from atom.yamlio import Where, load_yaml
from connectors.database import DatabaseConnector
from connectors.database._backends import _my_error
from connectors.database._sql import NamedSQL, build_statement
from tests.connectors.test_database import CTX, FAST_RETRY, connection_config, docs, operation
from tests.services import free_port, require_service

HOST, PORT = "127.0.0.1", 3306
MY_URL = f"mysql://root@{HOST}:{PORT}/test"


class RecordingContext(OperationContext):
    """An operation context that keeps the log lines (retry warnings land here)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.lines: list[tuple[str, str]] = []

    def log(self, level: str, message: str) -> None:
        self.lines.append((level, message))


async def plain(sql: str) -> list[dict[str, Any]]:
    """Run SQL with the plain driver, not through the connector (its notes, such as "unknown table" for
    DROP TABLE IF EXISTS, are not errors)."""
    conn = await aiomysql.connect(host=HOST, port=PORT, user="root", db="test", autocommit=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            async with conn.cursor(aiomysql.DictCursor) as cur:
                await cur.execute(sql)
                return list(await cur.fetchall())
    finally:
        conn.close()


class My:
    """Connectors and uniquely named tables of one test; everything is stopped and dropped afterwards."""

    def __init__(self) -> None:
        self.tables: list[str] = []
        self.connectors: list[DatabaseConnector] = []

    def table(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.tables.append(name)
        return name

    async def connect(self, init: list[str] | None = None, name: str = "db", **extra: Any) -> DatabaseConnector:
        cfg = {"url": MY_URL, "init": init or [], "retry": FAST_RETRY, **extra}
        values, _ = connection_config(cfg)
        conn = DatabaseConnector(name, values)
        self.connectors.append(conn)
        await conn.start()
        return conn

    async def cleanup(self) -> None:
        for conn in self.connectors:
            await conn.stop()
        if self.tables:
            await plain("DROP TABLE IF EXISTS " + ", ".join(reversed(self.tables)))


@pytest.fixture
async def my() -> AsyncIterator[My]:
    require_service("MariaDB", HOST, PORT)
    m = My()
    try:
        yield m
    finally:
        await m.cleanup()


async def accounts(my: My) -> tuple[DatabaseConnector, str]:
    """A connector and an empty accounts table (id key, unique email, a column named `order`)."""
    t = my.table()
    conn = await my.connect(init=[f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, "
                                  f"email VARCHAR(100) UNIQUE, city VARCHAR(100), `order` INT)"])
    return conn, t


# ------------------------------------------------------------------------------------------ get


async def test_get_rows_per_input_document_array_output_and_max_rows(my: My) -> None:
    conn, t = await accounts(my)
    ctx = RecordingContext()
    await conn.send(operation("send", {"table": t}), docs(
        {"id": 1, "name": "Acme", "city": "Oslo"}, {"id": 2, "name": "Globex", "city": "Oslo"},
        {"id": 3, "name": "Initech", "city": "Rome"}), ctx)
    op = operation("get", {"query": f"SELECT id, name FROM {t} WHERE city = :city AND id >= :min ORDER BY id",
                           "params": {"city": "$.city", "min": "{{ doc.props.min_id | int }}"}})
    out = await conn.get(op, docs({"city": "Oslo"}, {"city": "Nowhere"}, min_id="2"), ctx)
    assert [d.json for d in out] == [{"id": 2, "name": "Globex"}]
    assert out[0].props == {"min_id": "2"} and out[0].error is None
    # a name used twice binds one value; a literal % stays as it is
    arr = operation("get", {"query": f"SELECT id FROM {t} WHERE (city = :c OR name = :c OR name LIKE 'I%') "
                                     "ORDER BY id", "params": {"c": "Oslo"}, "output": "array"})
    (doc,) = await conn.get(arr, [], ctx)
    assert doc.json == [{"id": 1}, {"id": 2}, {"id": 3}] and doc.props["row_count"] == "3"
    (big,) = await conn.get(operation("get", {"query": f"SELECT * FROM {t}", "max_rows": 2}), [], ctx)
    assert big.error is not None and "more than max_rows (2)" in big.error
    (bad,) = await conn.get(operation("get", {"query": "SELECT * FROM no_such_table_x"}), [], ctx)
    assert bad.error is not None and "no_such_table_x" in bad.error and "doesn't exist" in bad.error
    assert not ctx.lines


# ------------------------------------------------------------------------------------------ send


async def test_insert_update_upsert_delete_with_affected_rows(my: My) -> None:
    conn, t = await accounts(my)
    out = await conn.send(operation("send", {"table": t}), docs(
        {"id": 1, "name": "Acme", "order": 7, "address": {"street": "not a scalar"}},
        [{"id": 2, "name": "Globex"}, {"id": 3, "name": "Initech", "email": "i@x.org"}], []), CTX)
    assert [d.error for d in out] == [None, None, None]
    assert [d.props["rows_affected"] for d in out] == ["1", "2", "0"]
    assert "last_row_id" not in out[0].props
    up = operation("send", {"table": t, "mode": "update", "key": "id"})
    out = await conn.send(up, docs({"id": 1, "name": "Acme AS", "city": "Oslo"}, {"id": 99, "name": "ghost"},
                                   {"id": 1, "name": "Acme AS", "city": "Oslo"}), CTX)
    # FOUND_ROWS: a matched row counts even when its values do not change (the third document)
    assert [d.props["rows_affected"] for d in out] == ["1", "0", "1"]
    ups = operation("send", {"table": t, "mode": "upsert", "key": "id"})
    (u,) = await conn.send(ups, docs([{"id": 2, "name": "Globex Corp"}, {"id": 4, "name": "Hooli"}]), CTX)
    assert u.error is None and u.props["rows_affected"] == "2"  # one per row, not MySQL's 2 per update
    (k,) = await conn.send(operation("send", {"table": t, "mode": "upsert", "key": "id", "columns": {"id": "$.id"}}),
                           docs({"id": 4}), CTX)
    assert k.error is not None and "name" in k.error  # key only: the row exists, but a new one needs a name
    (d,) = await conn.send(operation("send", {"table": t, "mode": "delete", "key": ["id"]}), docs({"id": 3}), CTX)
    assert d.props["rows_affected"] == "1"
    assert await plain(f"SELECT id, name, city, `order` FROM {t} ORDER BY id") == [
        {"id": 1, "name": "Acme AS", "city": "Oslo", "order": 7},
        {"id": 2, "name": "Globex Corp", "city": None, "order": None},  # columns not given keep their value
        {"id": 4, "name": "Hooli", "city": None, "order": None}]


async def test_composite_keys_and_statements(my: My) -> None:
    t = my.table()
    conn = await my.connect(init=[f"CREATE TABLE {t} (region VARCHAR(8), sku VARCHAR(8), qty INT, "
                                  "PRIMARY KEY (region, sku))"])
    up = operation("send", {"table": t, "mode": "upsert", "key": ["region", "sku"]})
    await conn.send(up, docs([{"region": "EU", "sku": "A", "qty": 1}, {"region": "US", "sku": "A", "qty": 2}]), CTX)
    await conn.send(up, docs({"region": "EU", "sku": "A", "qty": 10}), CTX)
    (u,) = await conn.send(operation("send", {"table": t, "mode": "update", "key": ["region", "sku"]}),
                           docs({"region": "US", "sku": "A", "qty": 20}), CTX)
    assert u.props["rows_affected"] == "1"
    st = operation("send", {"statement": f"UPDATE {t} SET qty = qty + :n WHERE region = :r AND sku <> 'it''s :not' "
                                         "AND sku LIKE 'A%'", "params": {"n": "$.n", "r": "{{ row.region }}"}})
    (s,) = await conn.send(st, docs({"region": "EU", "n": 5}), CTX)
    assert s.error is None and s.props["rows_affected"] == "1"
    assert await plain(f"SELECT region, sku, qty FROM {t} ORDER BY region") == [
        {"region": "EU", "sku": "A", "qty": 15}, {"region": "US", "sku": "A", "qty": 20}]


async def test_returning_reads_the_written_rows_back(my: My) -> None:
    t = my.table()
    conn = await my.connect(init=[f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20), "
                                  "n INT DEFAULT 5)"])
    ins = operation("send", {"table": t, "returning": ["id", "name", "n"]})
    one, many, explicit = await conn.send(ins, docs({"name": "Acme"}, [{"name": "B"}, {"name": "C"}],
                                                    {"id": 40, "name": "D"}), CTX)
    assert one.props["returning_id"] == "1" and one.props["returning_n"] == "5"  # the default is read back
    assert orjson.loads(many.props["returning"]) == [{"id": 2, "name": "B", "n": 5}, {"id": 3, "name": "C", "n": 5}]
    assert many.props["rows_affected"] == "2" and explicit.props["returning_id"] == "40"
    (u,) = await conn.send(operation("send", {"table": t, "mode": "update", "key": "id", "returning": "*"}),
                           docs({"id": 2, "name": "B2"}), CTX)
    assert orjson.loads(u.props["returning"]) == [{"id": 2, "name": "B2", "n": 5}]
    (ups,) = await conn.send(operation("send", {"table": t, "mode": "upsert", "key": "id", "returning": ["name"]}),
                             docs({"id": 3, "name": "C2"}), CTX)
    assert ups.props["returning_name"] == "C2"
    dels = await conn.send(operation("send", {"table": t, "mode": "delete", "key": "id", "returning": ["name"]}),
                           docs({"id": 1}, {"id": 77}), CTX)
    assert [d.props["returning"] for d in dels] == ['[{"name":"Acme"}]', "[]"]
    # without an AUTO_INCREMENT column the inserted row is found by key
    k = my.table()
    await conn.send(operation("send", {"statement": f"CREATE TABLE {k} (code VARCHAR(5) PRIMARY KEY, at DATE "
                                                    "DEFAULT '2024-01-01')"}), docs({}), CTX)
    (byk,) = await conn.send(operation("send", {"table": k, "key": "code", "returning": "*"}), docs({"code": "x"}), CTX)
    assert byk.props["returning"] == '[{"code":"x","at":"2024-01-01"}]'
    (nok,) = await conn.send(operation("send", {"table": k, "returning": "*"}), docs({"code": "y"}), CTX)
    assert nok.error is not None and f"table {k} has no AUTO_INCREMENT column" in nok.error
    assert await plain(f"SELECT code FROM {k}") == [{"code": "x"}]  # the failed document rolled back


# ------------------------------------------------------------------------------------------ values


async def test_column_values_become_json_like_on_the_other_databases(my: My) -> None:
    t = my.table()
    conn = await my.connect(init=[
        f"CREATE TABLE {t} (id INT PRIMARY KEY, price DECIMAL(10, 2), big DECIMAL(30, 2), ratio DOUBLE, "
        "due DATE, at DATETIME(3), seen TIMESTAMP NULL, t TIME, ok BOOLEAN, flags BIT(8), data JSON, "
        "raw BLOB, note TEXT, tiny TINYINT)"])
    text = "it's a \"quote\", a back\\slash, %s and %(1)s, \u00e6\u00f8\u00e5 \U0001f600\n"
    (doc,) = await conn.send(operation("send", {"table": t, "columns": {
        "id": 1, "price": "$.price", "big": "$.big", "ratio": 0.25, "due": "$.due", "at": "$.at", "seen": "$.seen",
        "t": "10:30:00", "ok": "$.ok", "data": "$.data", "raw": "hi", "note": "$.note", "tiny": "$.tiny"}}), docs({
            "price": "12.50", "big": "12345678901234567.89", "due": "2024-05-01", "at": "2024-05-01T10:30:00.250",
            "seen": "2024-05-01 10:30:00", "ok": True, "data": {"a": [1, 2]}, "note": text, "tiny": None}), CTX)
    assert doc.error is None, doc.error
    await plain(f"UPDATE {t} SET flags = b'10000001'")
    (row,) = await conn.get(operation("get", {"query": f"SELECT * FROM {t}"}), [], CTX)
    got = row.json
    data = got.pop("data")
    assert got == {"id": 1, "price": 12.5, "big": "12345678901234567.89", "ratio": 0.25, "due": "2024-05-01",
                   "at": "2024-05-01T10:30:00.250000", "seen": "2024-05-01T10:30:00+00:00", "t": "10:30:00",
                   "ok": 1, "flags": 129, "raw": "aGk=", "note": text, "tiny": None}
    # MySQL's JSON type reads as its value; MariaDB's JSON is LONGTEXT and reads as the JSON text
    assert data == {"a": [1, 2]} or orjson.loads(data) == {"a": [1, 2]}
    # the text went in as it was: escaping, not pasting
    assert await plain(f"SELECT HEX(note) AS h FROM {t}") == [{"h": text.encode().hex().upper()}]


async def test_a_value_that_does_not_fit_fails_without_retry(my: My) -> None:
    conn, t = await accounts(my)
    ctx = RecordingContext()
    (doc,) = await conn.send(operation("send", {"table": t}), docs({"id": "five", "name": "x"}), ctx)
    assert doc.error is not None and "Incorrect integer value: 'five' for column" in doc.error and "`id`" in doc.error
    (nan,) = await conn.send(operation("send", {"table": t, "columns": {"id": 1, "name": "{{ 1e400 }}"}}),
                             [Document.from_json({})], ctx)
    assert nan.error is not None and nan.error.endswith("parameter name: inf cannot be stored in MySQL")
    assert not ctx.lines


# ------------------------------------------------------------------------------------------ transactions


async def test_duplicate_key_fails_its_document_and_rolls_back_the_batch(my: My) -> None:
    conn, t = await accounts(my)
    ctx = RecordingContext()
    await conn.send(operation("send", {"table": t}), docs({"id": 1, "name": "Acme", "email": "a@x.org"}), ctx)
    out = await conn.send(operation("send", {"table": t}), docs(
        {"id": 2, "name": "ok"}, {"id": 3, "name": "dup", "email": "a@x.org"}, {"id": 4, "name": "ok too"}), ctx)
    where = f"connection 'db' (mysql://root@127.0.0.1:3306/test): insert into {t}"
    assert out[1].error == f"{where}, document 2 of 3: Duplicate entry 'a@x.org' for key 'email'"
    for d in (out[0], out[2]):
        assert d.error is not None and d.error.endswith(
            "rolled back: document 2 failed: Duplicate entry 'a@x.org' for key 'email'")
    assert out[0].error is not None and out[0].error.startswith(f"{where}, document 1 of 3: ")
    assert await plain(f"SELECT id FROM {t}") == [{"id": 1}]
    assert not ctx.lines and conn.breaker.state == "closed"  # not retried; the server is up
    # one transaction per document: only the bad document fails, an array document as a whole
    per_doc = operation("send", {"table": t, "transaction": "document"})
    out = await conn.send(per_doc, docs({"id": 2, "name": "ok"}, [{"id": 3, "name": "x"}, {"id": 3, "name": "dup"}],
                                        {"id": 4, "name": None}, {"id": 5, "name": "ok too"}), ctx)
    assert out[0].error is None and out[3].error is None
    assert out[1].error is not None and "Duplicate entry '3' for key 'PRIMARY'" in out[1].error
    assert out[2].error is not None and "Column 'name' cannot be null" in out[2].error
    assert [r["id"] for r in await plain(f"SELECT id FROM {t} ORDER BY id")] == [1, 2, 5]


# ------------------------------------------------------------------------------------------ failures


async def test_a_killed_connection_is_retried_and_the_write_happens_once(my: My) -> None:
    t = my.table()
    conn = await my.connect(init=[f"CREATE TABLE {t} (id INT PRIMARY KEY, qty INT)"], pool={"min_size": 1,
                                                                                             "max_size": 1})
    ctx = RecordingContext()
    op = operation("send", {"statement": f"INSERT INTO {t} (id, qty) SELECT :id, :qty FROM DUAL WHERE SLEEP(0.3) = 0",
                            "params": {"id": "$.id", "qty": "$.qty"}})
    task = asyncio.ensure_future(conn.send(op, docs({"id": 1, "qty": 2}), ctx))
    for _ in range(100):  # bounded: about 1 s
        ids = await plain(f"SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO {t}%'")
        if ids:
            await plain(f"KILL {int(ids[0]['ID'])}")
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the statement never showed up in the process list")
    (doc,) = await asyncio.wait_for(task, 10)
    assert doc.error is None, doc.error
    assert doc.props["rows_affected"] == "1"
    assert [level for level, _ in ctx.lines] == ["warning"] and "attempt 1 failed" in ctx.lines[0][1]
    assert await plain(f"SELECT id, qty FROM {t}") == [{"id": 1, "qty": 2}]  # written once


async def test_a_lock_wait_timeout_is_retried(my: My) -> None:
    t = my.table()
    conn = await my.connect(init=[f"CREATE TABLE {t} (id INT PRIMARY KEY, qty INT) ENGINE=InnoDB",
                                  f"INSERT INTO {t} VALUES (1, 0)"])
    ctx = RecordingContext()
    holder = await aiomysql.connect(host=HOST, port=PORT, user="root", db="test")
    try:
        async with holder.cursor() as cur:
            await cur.execute(f"SELECT qty FROM {t} WHERE id = 1 FOR UPDATE")  # holds the row's lock
        op = operation("send", {"statement": f"SET STATEMENT innodb_lock_wait_timeout = 1 FOR "
                                             f"UPDATE {t} SET qty = :qty WHERE id = 1", "params": {"qty": "$.qty"}})
        task = asyncio.ensure_future(conn.send(op, docs({"qty": 5}), ctx))
        await asyncio.sleep(1.3)  # past the first attempt's lock wait: then let the retry have the row
        await holder.commit()
        (doc,) = await asyncio.wait_for(task, 5)
    finally:
        holder.close()
    assert doc.error is None and doc.props["rows_affected"] == "1"
    assert len(ctx.lines) == 1 and "attempt 1 failed (Lock wait timeout exceeded" in ctx.lines[0][1]
    assert await plain(f"SELECT qty FROM {t}") == [{"qty": 5}]


async def test_an_idle_connection_the_server_closed_is_replaced_without_a_retry(my: My) -> None:
    conn = await my.connect(pool={"min_size": 1, "max_size": 1})
    ctx = RecordingContext()
    op = operation("get", {"query": "SELECT CONNECTION_ID() AS id"})
    (first,) = await conn.get(op, [], ctx)
    await plain(f"KILL {int(first.json['id'])}")
    await asyncio.sleep(0.1)  # the end of the stream reaches the idle connection
    (second,) = await conn.get(op, [], ctx)
    assert second.error is None and second.json["id"] != first.json["id"]
    assert not ctx.lines


def test_transient_errors_are_retried_and_answers_are_not() -> None:
    cases = {
        pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"): (True, None, "error"),
        pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"): (True, None, "timeout"),
        pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"): (True, None, "unreachable"),
        pymysql.err.OperationalError(1927, "Connection was killed"): (True, None, "unreachable"),
        pymysql.err.InterfaceError("(0, 'Not connected')"): (True, None, "unreachable"),
        pymysql.err.IntegrityError(1062, "Duplicate entry '1' for key 'PRIMARY'"): (False, 409, "rejected"),
        pymysql.err.IntegrityError(1452, "Cannot add or update a child row"): (False, 409, "rejected"),
        pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"): (False, 400, "error"),
        pymysql.err.OperationalError(1045, "Access denied for user 'svc'"): (False, 401, "auth"),
        pymysql.err.DataError(1406, "Data too long for column 'name'"): (False, 400, "invalid"),
        pymysql.err.OperationalError(3024, "maximum statement execution time exceeded"): (False, 400, "timeout"),
    }
    for exc, (retryable, status, kind) in cases.items():
        err = _my_error(exc, 30)
        assert err.retryable is retryable, exc
        assert err.kind == kind, exc
        if status is not None:
            assert err.status == status, exc
    assert str(_my_error(pymysql.err.OperationalError(1969, "max_statement_time exceeded"), 0.2)) == \
        "statement timed out after 0.2s"


async def test_a_slow_statement_times_out_without_retry(my: My) -> None:
    conn = await my.connect(timeout="300ms")
    ctx = RecordingContext()
    start = time.monotonic()
    (doc,) = await conn.get(operation("get", {"query": "SELECT SLEEP(5) AS s"}), [], ctx)
    assert doc.error is not None and "statement timed out after 0.3s" in doc.error
    assert doc.error_kind == "timeout"
    assert time.monotonic() - start < 2.5 and not ctx.lines
    (ok,) = await conn.get(operation("get", {"query": "SELECT 1 AS one"}), [], ctx)  # the pool still works
    assert ok.json == {"one": 1}


async def test_past_the_servers_own_limit_the_client_drops_the_connection_and_kills_the_statement(my: My) -> None:
    conn = await my.connect(timeout="200ms")
    ctx = RecordingContext()
    # MariaDB's SET STATEMENT lifts the server's limit for this statement (MySQL's applies to SELECT only)
    op = operation("get", {"query": "SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP(3) AS s /* atom-slow */"})
    start = time.monotonic()
    (doc,) = await conn.get(op, [], ctx)
    assert doc.error is not None and "statement timed out after 0.2s" in doc.error
    assert time.monotonic() - start < 2.5 and not ctx.lines
    assert await plain("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%atom-slow%' "
                       "AND ID <> CONNECTION_ID()") == []
    (ok,) = await conn.get(operation("get", {"query": "SELECT 1 AS one"}), [], ctx)
    assert ok.json == {"one": 1}


async def test_unreachable_server_fails_fast_and_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    url = f"mariadb://svc:url-s3cret@127.0.0.1:{port}/test"
    values, ctx = connection_config({"url": url, "password": "field-s3cret", "retry": FAST_RETRY,
                                     "connect_timeout": "2s"})
    assert {"url-s3cret", "field-s3cret"} <= set(ctx.secrets)
    conn = DatabaseConnector("erp-db", values)
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    with pytest.raises(ConnectorError) as info:
        await conn.start()
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert message == (f"connection 'erp-db' (mariadb://svc@127.0.0.1:{port}/test): cannot connect: Connection "
                       f"refused (Connect call failed ('127.0.0.1', {port})) (after 2 attempts)")
    assert info.value.kind == "unreachable"
    out = await conn.send(operation("send", {"table": "orders"}), docs({"id": 1}), OperationContext(None))
    assert out[0].error is not None and "cannot connect" in out[0].error
    assert (out[0].error_kind, out[0].error_status) == ("unreachable", None)
    for text in (message, caplog.text, repr(conn.describe()), out[0].error):
        assert "s3cret" not in text
    assert conn.describe()["url"] == f"mariadb://svc@127.0.0.1:{port}/test"
    await conn.stop()


async def test_a_wrong_password_is_refused_without_retry_or_showing_it(my: My) -> None:
    values, _ = connection_config({"url": f"mysql://atom_nobody:Pa55-s3cret@{HOST}:{PORT}/test",
                                   "retry": FAST_RETRY})
    conn = DatabaseConnector("db", values)
    with pytest.raises(ConnectorError) as info:
        await conn.start()
    message = str(info.value)
    assert message.startswith(f"connection 'db' (mysql://atom_nobody@{HOST}:{PORT}/test): cannot connect: "
                              "Access denied for user 'atom_nobody'")
    assert "after" not in message and "Pa55-s3cret" not in message and info.value.status == 401
    assert info.value.kind == "auth"
    # a password in the URL of a working connection stays out of messages too (root has none: it is ignored)
    values, _ = connection_config({"url": MY_URL, "retry": FAST_RETRY})
    ok = DatabaseConnector("db", values)
    my.connectors.append(ok)
    (doc,) = await ok.get(operation("get", {"query": "SELECT * FROM no_such_table_y"}), [], CTX)
    assert doc.error is not None and doc.error.startswith(f"connection 'db' ({MY_URL}): get: ")


# ------------------------------------------------------------------------------------------ connection


async def test_tls_is_used_when_asked_for_or_the_start_fails(my: My) -> None:
    values, _ = connection_config({"url": f"{MY_URL}?ssl=required", "retry": FAST_RETRY})
    conn = DatabaseConnector("db", values)
    my.connectors.append(conn)
    try:
        await conn.start()
    except ConnectorError as exc:  # a server without TLS: never a silent plain connection
        assert str(exc).endswith("cannot connect: the server does not offer TLS, and the URL asks for it (ssl)")
        return
    (doc,) = await conn.get(operation("get", {"query": "SHOW SESSION STATUS LIKE 'Ssl_cipher'"}), [], CTX)
    assert doc.json["Value"]


async def test_init_runs_several_statements_and_a_failing_one_fails_the_start(my: My) -> None:
    t = my.table()
    conn = await my.connect(init=[f"CREATE TABLE IF NOT EXISTS {t} (k VARCHAR(5) PRIMARY KEY, v INT); "
                                  f"INSERT INTO {t} VALUES ('a', 1); INSERT INTO {t} VALUES ('b', 2);",
                                  f"CREATE TABLE IF NOT EXISTS {t} (k INT)"])  # exists: a note, no error
    (doc,) = await conn.get(operation("get", {"query": f"SELECT k, v FROM {t} ORDER BY k", "output": "array"}), [], CTX)
    assert doc.json == [{"k": "a", "v": 1}, {"k": "b", "v": 2}]
    values, _ = connection_config({"url": MY_URL, "retry": FAST_RETRY,
                                   "init": ["SELECT 1", f"INSERT INTO {t} VALUES ('c', 3); CREATE TABLEX broken"]})
    bad = DatabaseConnector("db", values)
    with pytest.raises(ConnectorError, match=rf"connection 'db' \({MY_URL}\): init statement 2 failed: .*SQL syntax"):
        await bad.start()
    assert bad.backend is None


async def test_the_pool_holds_at_most_max_size_connections(my: My) -> None:
    conn = await my.connect(pool={"min_size": 2, "max_size": 2})
    op = operation("get", {"query": "SELECT CONNECTION_ID() AS id, SLEEP(0.1) AS s"})
    start = time.monotonic()
    results = await asyncio.gather(*(conn.get(op, [], CTX) for _ in range(4)))
    assert time.monotonic() - start >= 0.2  # four queries on two connections take two rounds
    assert len({r[0].json["id"] for r in results}) == 2
    assert conn.describe()["pool"] == {"min_size": 2, "max_size": 2}


# ------------------------------------------------------------------------------------------ SQL text


def test_mysql_statements_use_backticks_and_on_duplicate_key() -> None:
    up = build_statement("mysql", "upsert", "sales.orders", ["id"], ["id", "order", "qty"], [])
    assert up.sql == ("INSERT INTO `sales`.`orders` (`id`, `order`, `qty`) VALUES (%(1)s, %(2)s, %(3)s) "
                      "ON DUPLICATE KEY UPDATE `order` = VALUES(`order`), `qty` = VALUES(`qty`)")
    assert build_statement("mysql", "upsert", "t", ["id"], ["id"], []).sql.endswith(
        "ON DUPLICATE KEY UPDATE `id` = `id`")
    upd = build_statement("mysql", "update", "t", ["id"], ["id", "qty"], ["id"])
    assert upd.sql == "UPDATE `t` SET `qty` = %(1)s WHERE `id` = %(2)s" and upd.read_back is not None
    assert upd.read_back.select(("id",)) == "SELECT `id` FROM `t` WHERE `id` = %(1)s"
    sql = NamedSQL("SELECT * FROM t WHERE a = :a AND b LIKE 'x%' AND c = :a -- :no")
    assert sql.text("mysql") == "SELECT * FROM t WHERE a = %(1)s AND b LIKE 'x%%' AND c = %(1)s -- :no"


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://root@127.0.0.1/test?sslmode=require", "unknown MySQL URL parameter 'sslmode' (known: charset, ssl, ssl_ca)"),
    ("mariadb://root@127.0.0.1/test?charset=gbk", "the character set 'gbk' is not supported"),
    ("mysql://root@127.0.0.1/test?ssl=maybe", "ssl=maybe is not one of: false, disabled, required"),
    ("mysql://root@127.0.0.1/a/b", "a MySQL URL names one database after the host, not 'a/b'"),
])
def test_mysql_url_checks(url: str, message: str) -> None:
    node, _ = load_yaml(f"connection: db\ntype: database\nurl: {url}\n", "db.yaml")
    ctx = CheckContext()
    where = Where("db.yaml", node)
    spec = Spec(list(DatabaseConnector.connection_spec.fields), open=True)
    values = spec.check({k: v for k, v in node.items() if k not in ("connection", "type")}, where, ctx)
    DatabaseConnector.check_connection(values, where, ctx)
    assert [str(p) for p in ctx.problems] and str(ctx.problems[0]).startswith("db.yaml:3:6: error: url: " + message)


# ------------------------------------------------------------------------------------------ in a process


async def test_salesforce_like_upsert_process_on_mariadb(my: My, tmp_path: Path) -> None:
    """The example of docs/connectors/database.md with a MariaDB connection, loaded and run by the engine."""
    from atom.engine import Engine
    from atom.loader import load_directory

    t = my.table()
    (tmp_path / "crm-db.yaml").write_text(
        "connection: crm-db\n"
        "type: database\n"
        f"url: {MY_URL.replace('mysql://', 'mariadb://')}\n"
        "init:\n"
        "  - |\n"
        f"    CREATE TABLE IF NOT EXISTS {t} (\n"
        "      sf_id VARCHAR(18) PRIMARY KEY, name VARCHAR(255) NOT NULL, account_number VARCHAR(40),\n"
        "      billing_city VARCHAR(80), annual_revenue DECIMAL(18, 2), modified_at VARCHAR(40))\n")
    (tmp_path / "sync-accounts.yaml").write_text(
        "process: sync-accounts\n"
        "start:\n"
        "  listen: {operation: upsert, object: Accounts, input: json, output: json}\n"
        "shapes:\n"
        "  - id: records\n"
        "    split: {jsonpath: \"$.records[*]\"}\n"
        "  - id: upsert\n"
        "    connector:\n"
        "      connection: crm-db\n"
        "      action: send\n"
        "      operation:\n"
        f"        table: {t}\n"
        "        mode: upsert\n"
        "        key: sf_id\n"
        "        columns:\n"
        "          sf_id: $.Id\n"
        "          name: $.Name\n"
        "          account_number: $.AccountNumber\n"
        "          billing_city: $.BillingAddress.city\n"
        "          annual_revenue: $.AnnualRevenue\n"
        "          modified_at: $.LastModifiedDate\n"
        "  - id: stored\n"
        "    connector:\n"
        "      connection: crm-db\n"
        "      action: get\n"
        "      operation:\n"
        f"        query: SELECT sf_id, name, billing_city, annual_revenue FROM {t} WHERE sf_id = :id\n"
        "        params: {id: $.Id}\n"
        "  - id: reply\n"
        "    combine: {json_array: true}\n"
        "  - id: done\n"
        "    return: {}\n")
    records: list[dict[str, Any]] = [
        {"attributes": {"type": "Account"}, "Id": "001A01", "Name": "Acme", "AccountNumber": "CD45",
         "BillingAddress": {"city": "Oslo"}, "AnnualRevenue": 1250000.5, "LastModifiedDate": "2024-05-01T10:30:00.000+0000"},
        {"attributes": {"type": "Account"}, "Id": "001A02", "Name": "Globex", "AccountNumber": None,
         "BillingAddress": {"city": "Rome"}, "AnnualRevenue": None, "LastModifiedDate": "2024-05-02T08:00:00.000+0000"},
    ]
    engine = Engine(load_directory(tmp_path))
    try:
        ex = await engine.execute("sync-accounts", [Document.from_json({"totalSize": 2, "records": records})])
        assert ex.status == "COMPLETE", ex.message
        records[0]["Name"] = "Acme Corp"
        ex = await engine.execute("sync-accounts", [Document.from_json({"totalSize": 1, "records": records[:1]})])
        assert ex.status == "COMPLETE", ex.message
        assert [d.json for d in ex.returned] == [[{"sf_id": "001A01", "name": "Acme Corp", "billing_city": "Oslo",
                                                 "annual_revenue": 1250000.5}]]
    finally:
        await engine.stop()
    assert await plain(f"SELECT sf_id, name, annual_revenue, modified_at FROM {t} ORDER BY sf_id") == [
        {"sf_id": "001A01", "name": "Acme Corp", "annual_revenue": Decimal("1250000.50"),
         "modified_at": "2024-05-01T10:30:00.000+0000"},
        {"sf_id": "001A02", "name": "Globex", "annual_revenue": None, "modified_at": "2024-05-02T08:00:00.000+0000"}]

