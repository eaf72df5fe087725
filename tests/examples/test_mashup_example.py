"""End to end: the mashup example (examples/mashup) served by `atom serve` as a subprocess.

Its two demo backends (examples/mashup/backends.py) run as real aiohttp servers on free 127.0.0.1
ports in a thread of this test, the support database is a seeded SQLite file in a temporary
directory, and the Atom finds all three through the environment variables of the connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.conftest import AtomServer, Response
from tests.examples._support import EXAMPLES, BackgroundApp, background_loop, load_example_module, stop_atom

EXAMPLE = EXAMPLES / "mashup"
OVERVIEW = "/ws/rest/customers/{}/overview"


backends = load_example_module(EXAMPLE / "backends.py", "mashup_backends")


class Backend(BackgroundApp):
    """One demo backend on its own port."""

    def __init__(self, loop: asyncio.AbstractEventLoop, factory: Callable[[Any], web.Application]) -> None:
        self.behaviour = backends.Behaviour()
        super().__init__(loop, lambda: factory(self.behaviour))


class Setup:
    def __init__(self, atom: AtomServer, crm: Backend, billing: Backend) -> None:
        self.atom, self.crm, self.billing = atom, crm, billing

    def overview(self, customer: str) -> Response:
        return self.atom.request("GET", OVERVIEW.format(customer))


@pytest.fixture(scope="module")
def mashup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("mashup")
    db = work / "support.db"
    backends.seed_database(db)
    with background_loop() as loop:
        crm, billing = Backend(loop, backends.crm_app), Backend(loop, backends.billing_app)
        atom = AtomServer(work, EXAMPLE, {"CRM_URL": crm.url, "BILLING_URL": billing.url, "SUPPORT_DB": str(db),
                                          "BACKEND_TIMEOUT": "1s"})
        try:
            crm.start()
            billing.start()
            atom.start()
            yield Setup(atom, crm, billing)
        finally:
            stop_atom(atom)
            crm.stop()
            billing.stop()


ADA = {
    "customer": {"id": "C-1001", "name": "Ada Lovelace", "email": "ada.lovelace@example.com",
                 "segment": "Enterprise", "city": "London", "country": "GB", "customerSince": "2019-03-14"},
    "billing": {"currency": "EUR", "openBalance": 89.9, "invoices": [
        {"number": "INV-2026-0191", "status": "open", "date": "2026-11-05", "amount": 89.9,
         "dueDate": "2026-12-05"},
        {"number": "INV-2026-0107", "status": "paid", "date": "2026-10-02", "amount": 120.5},
    ]},
    "support": {"openTickets": 2, "tickets": [
        {"id": 502, "subject": "Add a second contact person", "status": "pending", "priority": "normal",
         "openedAt": "2026-11-14T16:40:00Z"},
        {"id": 501, "subject": "Billing address out of date", "status": "open", "priority": "high",
         "openedAt": "2026-11-12T08:15:00Z"},
    ]},
}


def test_a_known_customer_gets_one_combined_json_answer(mashup: Setup) -> None:
    r = mashup.overview("C-1001")
    assert r.status == 200, r.body
    assert r.header("Content-Type") == "application/json"
    assert r.json() == ADA
    record = mashup.atom.request("GET", f"/api/v1/executions/{r.header('X-Execution-Id')}").json()
    assert (record["processName"], record["status"]) == ("customer-overview", "COMPLETE")


def test_a_customer_without_invoices_or_tickets_gets_empty_parts(mashup: Setup) -> None:
    r = mashup.overview("C-1002")
    assert r.status == 200, r.body
    assert r.json() == {
        "customer": {"id": "C-1002", "name": "Grace Hopper", "email": "grace@example.com",
                     "segment": "Small business", "city": "Arlington", "country": "US",
                     "customerSince": "2021-07-01"},
        "billing": {"currency": "EUR", "openBalance": 0, "invoices": []},
        "support": {"openTickets": 0, "tickets": []},
    }


def test_an_unknown_customer_answers_404(mashup: Setup) -> None:
    r = mashup.overview("C-9")
    assert r.status == 404, r.body
    assert r.header("Content-Type") == "application/json"
    assert r.json() == {"error": {"code": "CUSTOMER_NOT_FOUND", "message": "no customer 'C-9' in the CRM"}}


def test_a_stopped_backend_answers_503_naming_it_then_recovers(mashup: Setup) -> None:
    mashup.billing.stop()
    try:
        r = mashup.overview("C-1001")
    finally:
        mashup.billing.start()
    assert r.status == 503, r.body
    assert r.header("Retry-After") == "5"
    error = r.json()["error"]
    assert (error["code"], error["backend"]) == ("BACKEND_UNAVAILABLE", "billing")
    prefix = (f"backend 'billing' is unavailable: connection 'billing': GET {mashup.billing.url}"
              "/invoices?customer=C-1001: network error: ")
    assert error["message"].startswith(prefix), error["message"]
    assert error["message"].endswith("(after 2 attempts)"), error["message"]
    record = mashup.atom.request("GET", f"/api/v1/executions/{r.header('X-Execution-Id')}").json()
    assert record["status"] == "COMPLETE_WARN"
    assert record["message"], record
    assert mashup.overview("C-1001").json() == ADA


def test_a_backend_that_does_not_answer_gives_503_after_its_timeout(mashup: Setup) -> None:
    mashup.crm.behaviour.delay = 5.0  # longer than BACKEND_TIMEOUT (1s)
    try:
        r = mashup.overview("C-1001")
    finally:
        mashup.crm.behaviour.delay = 0.0
    assert r.status == 503, r.body
    assert r.json() == {"error": {
        "code": "BACKEND_UNAVAILABLE", "backend": "crm",
        "message": f"backend 'crm' is unavailable: connection 'crm': GET {mashup.crm.url}/customers/C-1001: "
                   "no answer within 1s (after 2 attempts)"}}
    assert mashup.overview("C-1001").json() == ADA
