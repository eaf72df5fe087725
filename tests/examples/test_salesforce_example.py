"""End to end: the Salesforce outbound-message example (examples/salesforce-to-db) served by `atom serve`
as a subprocess, driven over real HTTP the way Salesforce calls it, with its rows read back from the
SQLite file through the stdlib `sqlite3`."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.e2e.conftest import AtomServer, Response
from tests.services import require_service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "salesforce-to-db"
SAMPLE = (EXAMPLE / "sample-notification.xml").read_bytes()
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
NS = {"soap": SOAP_ENV, "o": OUTBOUND}
# the headers of Salesforce's outbound-message requests
SALESFORCE_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
COLUMNS = ("sf_id", "name", "account_number", "account_type", "industry", "phone", "billing_city",
           "billing_country", "annual_revenue", "employees", "last_modified", "organization_id", "notification_id")
SAMPLE_ROWS = [
    ("0018d00000GenPtAAA", "GenePoint", "CC978213", "Customer - Channel", "Biotechnology", "(650) 867-3450",
     "Mountain View", "USA", 30000000, 265, "2024-06-03T14:05:12.000Z", "00D8d000009AbCdEAK", "04l8d00000QwErTAAR"),
    ("0018d00000UnOilAAB", "United Oil & Gas Corp.", "CD355118", "Customer - Direct", "Energy", "(212) 842-5500",
     "New York", "USA", 5600000000, 145000, "2024-06-03T14:05:13.000Z", "00D8d000009AbCdEAK", "04l8d00000QwErUAAR"),
    ("0018d00000UniAzAAC", "University of Arizona", None, "Customer - Direct", "Education", "(520) 773-9050",
     "Tucson", "USA", None, 39000, "2024-06-03T14:05:15.000Z", "00D8d000009AbCdEAK", "04l8d00000QwErVAAR"),
]


@pytest.fixture(scope="module")
def atom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AtomServer]:
    work = tmp_path_factory.mktemp("salesforce")
    srv = AtomServer(work, EXAMPLE, {"SALESFORCE_DB_URL": f"sqlite:///{work / 'accounts.db'}"})
    try:
        yield srv.start()
    finally:
        if srv.proc is not None:
            srv.terminate()


def db_rows(srv: AtomServer) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(srv.workdir / "accounts.db")) as db:
        return db.execute(f"SELECT {', '.join(COLUMNS)} FROM accounts ORDER BY sf_id").fetchall()


def post(srv: AtomServer, body: bytes) -> Response:
    return srv.request("POST", "/ws/soap", body, SALESFORCE_HEADERS)


def assert_ack(r: Response) -> None:
    assert r.status == 200, r.body
    assert r.header("Content-Type") == "text/xml; charset=utf-8"
    env = etree.fromstring(r.body)
    body = env.find("soap:Body", NS)
    assert body is not None, r.body
    assert [etree.QName(e).text for e in body] == [f"{{{OUTBOUND}}}notificationsResponse"]
    assert env.xpath("/soap:Envelope/soap:Body/o:notificationsResponse/o:Ack/text()", namespaces=NS) == ["true"]


def fault(r: Response) -> tuple[str, str]:
    assert r.header("Content-Type") == "text/xml; charset=utf-8"
    env = etree.fromstring(r.body)
    f = env.find("soap:Body/soap:Fault", NS)
    assert f is not None, r.body
    return f.findtext("faultcode") or "", f.findtext("faultstring") or ""


def test_outbound_message_is_upserted_and_acknowledged(atom: AtomServer) -> None:
    assert_ack(post(atom, SAMPLE))
    assert db_rows(atom) == SAMPLE_ROWS

    # Salesforce delivers the same message again (no Ack seen in time): the rows are updated in place
    with closing(sqlite3.connect(atom.workdir / "accounts.db")) as db, db:
        db.execute("UPDATE accounts SET name = 'stale', phone = NULL WHERE sf_id = '0018d00000GenPtAAA'")
    assert_ack(post(atom, SAMPLE))
    assert db_rows(atom) == SAMPLE_ROWS

    # a later message changes one account; a field cleared in Salesforce arrives as xsi:nil
    changed = (SAMPLE.replace(b"<sf:Name>GenePoint</sf:Name>", b"<sf:Name>GenePoint Inc.</sf:Name>")
               .replace(b"<sf:Phone>(650) 867-3450</sf:Phone>", b'<sf:Phone xsi:nil="true"/>'))
    assert_ack(post(atom, changed))
    rows = db_rows(atom)
    assert len(rows) == 3
    assert rows[0][:6] == ("0018d00000GenPtAAA", "GenePoint Inc.", "CC978213", "Customer - Channel", "Biotechnology",
                           None)
    assert rows[1:] == SAMPLE_ROWS[1:]


def test_malformed_envelope_is_a_client_fault_and_writes_nothing(atom: AtomServer) -> None:
    before = db_rows(atom) if (atom.workdir / "accounts.db").exists() else []
    broken = SAMPLE.replace(b"0018d00000GenPtAAA", b"0018d00000NewAcAAA").replace(b"</sf:Name>", b"</sf:Nam>", 1)
    r = post(atom, broken)
    assert r.status == 500
    code, message = fault(r)
    assert code == "soap:Client"
    assert message.startswith("SOAP request is not well-formed XML: Opening and ending tag mismatch: Name line 20")
    not_soap = post(atom, b'<notifications xmlns="http://soap.sforce.com/2005/09/outbound"/>')
    assert not_soap.status == 500
    assert fault(not_soap) == ("soap:Client", f"not a SOAP envelope: the root element is {{{OUTBOUND}}}notifications; "
                                              f"expected {{{SOAP_ENV}}}Envelope (SOAP 1.1) or "
                                              "{http://www.w3.org/2003/05/soap-envelope}Envelope (SOAP 1.2)")
    assert (db_rows(atom) if (atom.workdir / "accounts.db").exists() else []) == before


def test_database_failure_is_a_server_fault_and_rolls_back_the_message(atom: AtomServer) -> None:
    assert_ack(post(atom, SAMPLE))
    # the first account changes, the second has lost its (NOT NULL) name: nothing of the message is written
    bad = (SAMPLE.replace(b"<sf:Name>GenePoint</sf:Name>", b"<sf:Name>GenePoint Renamed</sf:Name>")
           .replace(b"<sf:Name>United Oil &amp; Gas Corp.</sf:Name>", b""))
    r = post(atom, bad)
    assert r.status == 500
    code, message = fault(r)
    assert code == "soap:Server"
    assert re.fullmatch(r"connection 'salesforce-db' \(sqlite:///.*accounts\.db\): upsert into accounts, "
                        r"document \d of 3: .*NOT NULL constraint failed: accounts\.name.*", message), message
    assert db_rows(atom) == SAMPLE_ROWS


def test_other_sobject_types_are_refused_by_name(atom: AtomServer) -> None:
    contact = SAMPLE.replace(b'xsi:type="sf:Account"', b'xsi:type="sf:Contact"', 1)
    r = post(atom, contact)
    assert r.status == 500
    assert fault(r) == ("soap:Server", "notification 04l8d00000QwErTAAR carries a 'sf:Contact' sObject: this process "
                                       "stores Accounts only (xsi:type sf:Account)")


def test_wsdl_describes_the_notifications_operation(atom: AtomServer) -> None:
    r = atom.request("GET", "/ws/soap?wsdl")
    assert r.status == 200
    wsdl = etree.fromstring(r.body)
    ops = wsdl.xpath("//wsdl:portType/wsdl:operation/@name", namespaces={"wsdl": "http://schemas.xmlsoap.org/wsdl/"})
    assert ops == ["notifications"]


def test_messages_of_another_organization_are_refused(tmp_path: Path) -> None:
    srv = AtomServer(tmp_path, EXAMPLE, {"SALESFORCE_DB_URL": f"sqlite:///{tmp_path / 'accounts.db'}",
                                         "SALESFORCE_ORGANIZATION_ID": "00D000000000001AAA"})
    try:
        srv.start()
        r = post(srv, SAMPLE)
        assert r.status == 500
        assert fault(r) == ("soap:Server", "outbound message from organization '00D8d000009AbCdEAK' refused: this "
                                           "listener accepts organization '00D000000000001AAA' only")
        assert_ack(post(srv, SAMPLE.replace(b"00D8d000009AbCdEAK", b"00D000000000001AAA")))
        assert [row[0] for row in db_rows(srv)] == [row[0] for row in SAMPLE_ROWS]
    finally:
        if srv.proc is not None:
            srv.terminate()


def test_the_same_example_writes_to_postgresql(tmp_path: Path) -> None:
    """Only the connection URL changes (SALESFORCE_DB_URL), as the example's README says. Runs against the
    machine's PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth), in a database of its own."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    server = "postgresql://postgres@127.0.0.1:5432"
    name = f"atom_sf_example_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        c = await asyncpg.connect(f"{server}/postgres")
        try:
            await c.execute(sql)
        finally:
            await c.close()

    async def rows() -> list[tuple[Any, ...]]:
        c = await asyncpg.connect(f"{server}/{name}")
        try:
            return [tuple(r) for r in await c.fetch(f"SELECT {', '.join(COLUMNS)} FROM accounts ORDER BY sf_id")]
        finally:
            await c.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    srv = AtomServer(tmp_path, EXAMPLE, {"SALESFORCE_DB_URL": f"{server}/{name}"})
    try:
        srv.start()
        assert_ack(post(srv, SAMPLE))
        assert_ack(post(srv, SAMPLE))
        got = asyncio.run(rows())
        assert [r[:8] + r[9:] for r in got] == [r[:8] + r[9:] for r in SAMPLE_ROWS]
        assert [r[8] for r in got] == [30000000, 5600000000, None]   # NUMERIC: Decimal values
    finally:
        if srv.proc is not None:
            srv.terminate()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
