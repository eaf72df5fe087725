"""End to end: the webify-inventory example (examples/webify-inventory) served by `atom serve` as a
subprocess.

The legacy inventory database is a SQLite file in a temporary directory (the connection's `init`
creates and seeds it), and the listeners verify JWTs signed with a test secret; both come in through
the environment variables of the example."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.e2e.conftest import AtomServer, Response
from tests.examples._support import EXAMPLES, stop_atom

EXAMPLE = EXAMPLES / "webify-inventory"
SECRET = "test-secret-for-the-webify-inventory-example"
ISSUER = "inventory-test"
OPS_KEY = "ops-test-key"


def token(user: str, secret: str = SECRET, issuer: str = ISSUER) -> str:
    return jwt.encode({"sub": user, "iss": issuer, "exp": int(time.time()) + 300}, secret, algorithm="HS256")


class Setup:
    def __init__(self, atom: AtomServer, db: Path) -> None:
        self.atom, self.db = atom, db

    def get(self, path: str, user: str | None = "storefront") -> Response:
        headers = {"Authorization": f"Bearer {token(user)}"} if user else {}
        return self.atom.request("GET", f"/ws/rest/inventory{path}", headers=headers)

    def reserve(self, body: object, headers: dict[str, str] | None = None) -> Response:
        if headers is None:
            headers = {"Authorization": f"Bearer {token('warehouse-app')}"}
        return self.atom.request("POST", "/ws/rest/inventory/reservations", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **headers})

    def on_hand(self, sku: str) -> int:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT QTY_OH FROM INV_ITEM WHERE ITM_NO = ?", (sku,)).fetchone()[0]

    def reservations(self) -> list[tuple[str, str, int, str, str]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT RES_NO, RES_ITM_NO, RES_QTY, RES_REF, RES_USER FROM INV_RESERVATION "
                                "ORDER BY RES_TS, RES_NO").fetchall()


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("webify-inventory")
    db = work / "inventory.db"
    env = {"INVENTORY_DB_URL": f"sqlite:///{db}", "INVENTORY_JWT_SECRET": SECRET, "INVENTORY_JWT_ISSUER": ISSUER,
           "INVENTORY_OPS_KEY": OPS_KEY, "ATOM_WATCH_ENABLED": "false"}
    atom = AtomServer(work, EXAMPLE, env)
    try:
        atom.start()
        yield Setup(atom, db)
    finally:
        stop_atom(atom)


def test_a_reader_gets_an_item_with_the_legacy_columns_mapped(inventory: Setup) -> None:
    r = inventory.get("/items/A-1001")
    assert r.status == 200, r.body
    assert r.json() == {"sku": "A-1001", "description": "BOLT HEX M8X40 ZINC", "warehouse": "W1", "onHand": 500,
                        "unit": "each", "lastUpdated": "2026-09-14"}
    assert r.header("Content-Type") == "application/json"


def test_an_unknown_sku_answers_404_with_the_error_envelope(inventory: Setup) -> None:
    r = inventory.get("/items/Z-999")
    assert r.status == 404, r.body
    assert r.json() == {"error": {"code": "ITEM_NOT_FOUND", "message": "no item with SKU 'Z-999'"}}


def test_the_items_of_a_warehouse(inventory: Setup) -> None:
    r = inventory.get("/items?warehouse=W2")
    assert r.status == 200, r.body
    assert r.json() == {"warehouse": "W2", "count": 2, "items": [
        {"sku": "B-3001", "description": "CABLE TIE 200MM BLACK", "onHand": 3, "unit": "box"},
        {"sku": "B-3002", "description": "GREASE LITHIUM 1KG", "onHand": 40, "unit": "kg"}]}
    # the query parameter is a bound value, not SQL
    r = inventory.get("/items?warehouse=W1%27%20OR%20%271%27%3D%271")
    assert (r.status, r.json()["count"]) == (200, 0)


def test_a_reservation_takes_the_stock_and_is_stored(inventory: Setup) -> None:
    before = inventory.on_hand("A-2001")
    r = inventory.reserve({"sku": "A-2001", "quantity": 5, "reference": "SO-1001"})
    assert r.status == 201, r.body
    body = r.json()
    assert {k: v for k, v in body.items() if k not in ("reservationId", "reservedAt")} == {
        "sku": "A-2001", "quantity": 5, "reference": "SO-1001", "reservedBy": "warehouse-app", "status": "reserved",
        "warehouse": "W1", "remainingOnHand": before - 5}
    assert r.header("Location") == f"/ws/rest/inventory/reservations/{body['reservationId']}"
    assert inventory.on_hand("A-2001") == before - 5
    assert (body["reservationId"], "A-2001", 5, "SO-1001", "warehouse-app") in inventory.reservations()
    assert inventory.get("/items/A-2001").json()["onHand"] == before - 5


def test_not_enough_stock_answers_409_and_leaves_the_stock(inventory: Setup) -> None:
    before, stored = inventory.on_hand("B-3001"), len(inventory.reservations())
    r = inventory.reserve({"sku": "B-3001", "quantity": before + 1, "reference": "SO-1002"})
    assert r.status == 409, r.body
    assert r.json()["error"] == {"code": "INSUFFICIENT_STOCK", "requested": before + 1, "onHand": before,
                                 "message": f"not enough stock of 'B-3001': {before + 1} requested, {before} on hand"}
    assert inventory.on_hand("B-3001") == before
    assert len(inventory.reservations()) == stored


def test_an_incomplete_body_or_an_unknown_sku_is_refused(inventory: Setup) -> None:
    r = inventory.reserve({"sku": "A-2001", "quantity": 2})
    assert (r.status, r.json()["error"]["code"]) == (400, "INVALID_RESERVATION"), r.body
    r = inventory.reserve({"sku": "Q-1", "quantity": 1, "reference": "SO-1003"})
    assert (r.status, r.json()["error"]["code"]) == (404, "ITEM_NOT_FOUND"), r.body


def test_who_may_reserve_is_checked_before_the_process_runs(inventory: Setup) -> None:
    before, stored = inventory.on_hand("A-1002"), len(inventory.reservations())
    body = {"sku": "A-1002", "quantity": 1, "reference": "SO-1004"}
    r = inventory.reserve(body, {"Authorization": f"Bearer {token('storefront')}"})
    assert (r.status, r.json()["error"]["code"]) == (403, "FORBIDDEN"), r.body
    assert r.header("X-Execution-Id") is None
    r = inventory.reserve(body, {})
    assert (r.status, r.json()["error"]["code"]) == (401, "UNAUTHORIZED"), r.body
    r = inventory.reserve(body, {"Authorization": f"Bearer {token('warehouse-app', secret='another-secret-of-32-chars-or-more')}"})
    assert (r.status, r.json()["error"]["code"]) == (401, "UNAUTHORIZED"), r.body
    assert inventory.get("/items/A-1002", user="someone-else").status == 403
    assert inventory.atom.request("GET", "/ws/rest/inventory/items/A-1002").status == 401
    assert inventory.on_hand("A-1002") == before
    assert len(inventory.reservations()) == stored


def test_the_reservation_is_recorded_for_audit_and_reads_are_not(inventory: Setup) -> None:
    r = inventory.reserve({"sku": "A-1001", "quantity": 3, "reference": "SO-1005"})
    assert r.status == 201, r.body
    execution = r.header("X-Execution-Id")
    ops = {"X-API-Key": OPS_KEY}
    assert inventory.atom.request("GET", "/api/v1/executions?process=inventory-reserve").status == 401
    listed = inventory.atom.request("GET", "/api/v1/executions?process=inventory-reserve&limit=100", headers=ops)
    assert listed.status == 200, listed.body
    records = {item["executionId"]: item for item in listed.json()["items"]}
    assert records[execution]["status"] == "COMPLETE"
    assert records[execution]["mode"] == "general"
    docs = inventory.atom.request("GET", f"/api/v1/executions/{execution}/documents", headers=ops).json()["items"]
    inbound = [d for d in docs if d["direction"] == "inbound"]
    assert json.loads(inbound[0]["data"])["reference"] == "SO-1005"
    assert inventory.get("/items/A-1001").status == 200
    reads = inventory.atom.request("GET", "/api/v1/executions?process=inventory-item", headers=ops)
    assert reads.json()["items"] == []
