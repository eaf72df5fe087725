"""End to end: the mashup example (examples/mashup) served by `atom serve` as a subprocess.

Its two demo backends (examples/mashup/backends.py) run as real aiohttp servers on free 127.0.0.1
ports in a thread of this test, the support database is a seeded SQLite file in a temporary
directory, and the Atom finds all three through the environment variables of the connections."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.conftest import AtomServer, Response
from tests.services import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mashup"
OVERVIEW = "/ws/rest/customers/{}/overview"


def _load_backends() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mashup_backends", EXAMPLE / "backends.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


backends = _load_backends()


class Backend:
    """One demo backend on its own port, served by an event loop in a background thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, factory: Callable[[Any], web.Application]) -> None:
        self.loop = loop
        self.factory = factory
        self.behaviour = backends.Behaviour()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runner: web.AppRunner | None = None

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    def start(self) -> None:
        async def go() -> web.AppRunner:
            runner = web.AppRunner(self.factory(self.behaviour), shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self.runner = self._call(go())

    def stop(self) -> None:
        if self.runner is not None:
            self._call(self.runner.cleanup())
            self.runner = None


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
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    crm, billing = Backend(loop, backends.crm_app), Backend(loop, backends.billing_app)
    atom = AtomServer(work, EXAMPLE, {"CRM_URL": crm.url, "BILLING_URL": billing.url, "SUPPORT_DB": str(db),
                                      "BACKEND_TIMEOUT": "1s"})
    try:
        crm.start()
        billing.start()
        atom.start()
        yield Setup(atom, crm, billing)
    finally:
        if atom.proc is not None:
            try:
                atom.terminate(timeout=15)
            except Exception:
                atom.kill()
        crm.stop()
        billing.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


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
