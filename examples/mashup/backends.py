"""The demo backends of the mashup example, so it can be tried by hand.

Starts, on 127.0.0.1 only:

- a CRM service (JSON): ``GET /customers/{id}`` answers the customer, or 404 for an unknown id;
- a billing service (XML): ``GET /invoices?customer={id}`` answers the customer's invoices;

and seeds the support database (SQLite, table ``ticket``) with a few tickets. The table is created
with the ``init`` SQL of ``support-db.yaml``, so the Atom and this script agree on it.

Run from the repository root, with the defaults the example's connections expect::

    .venv/bin/python examples/mashup/backends.py
    .venv/bin/python examples/mashup/backends.py --crm-port 9191 --billing-port 9192 --db data/support.db
    .venv/bin/python examples/mashup/backends.py --delay 10    # answer after 10 s: try the timeouts

Ctrl-C (or SIGTERM) stops it. The tests import ``crm_app``, ``billing_app`` and ``seed_database``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from ruamel.yaml import YAML

HERE = Path(__file__).resolve().parent

CUSTOMERS: dict[str, dict[str, Any]] = {
    "C-1001": {"id": "C-1001", "firstName": "Ada", "lastName": "Lovelace", "email": "Ada.Lovelace@Example.com",
               "segment": "ENT", "address": {"street": "12 St James's Square", "city": "London", "country": "GB"},
               "createdAt": "2019-03-14T09:30:00Z"},
    "C-1002": {"id": "C-1002", "firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com",
               "segment": "SMB", "address": {"street": "1 Navy Way", "city": "Arlington", "country": "US"},
               "createdAt": "2021-07-01T12:00:00Z"},
}

INVOICES: dict[str, list[dict[str, str]]] = {
    "C-1001": [
        {"number": "INV-2026-0191", "status": "open", "date": "2026-11-05", "amount": "89.90",
         "due": "2026-12-05"},
        {"number": "INV-2026-0107", "status": "paid", "date": "2026-10-02", "amount": "120.50"},
    ],
}

#: (id, customer_id, subject, status, priority, opened_at)
TICKETS: list[tuple[int, str, str, str, str, str]] = [
    (498, "C-1001", "Cannot download the October invoice as PDF", "closed", "low", "2026-10-03T10:00:00Z"),
    (501, "C-1001", "Billing address out of date", "open", "high", "2026-11-12T08:15:00Z"),
    (502, "C-1001", "Add a second contact person", "pending", "normal", "2026-11-14T16:40:00Z"),
]


@dataclass
class Behaviour:
    """How a demo backend behaves; changeable while it runs (the tests slow a backend down)."""

    delay: float = 0.0  # seconds to wait before answering


BEHAVIOUR = web.AppKey("behaviour", Behaviour)


async def _pause(request: web.Request) -> None:
    delay = request.app[BEHAVIOUR].delay
    if delay > 0:
        await asyncio.sleep(delay)


async def _customer(request: web.Request) -> web.Response:
    await _pause(request)
    cid = request.match_info["id"]
    customer = CUSTOMERS.get(cid)
    if customer is None:
        return web.json_response({"error": f"customer {cid} not found"}, status=404)
    return web.json_response(customer)


async def _invoices(request: web.Request) -> web.Response:
    await _pause(request)
    cid = request.query.get("customer")
    if not cid:
        return web.Response(status=400, text="query parameter 'customer' is required")
    root = ET.Element("Invoices", {"customer": cid, "currency": "EUR"})
    for inv in INVOICES.get(cid, []):
        el = ET.SubElement(root, "Invoice", {"number": inv["number"], "status": inv["status"]})
        ET.SubElement(el, "Date").text = inv["date"]
        ET.SubElement(el, "Amount").text = inv["amount"]
        if "due" in inv:
            ET.SubElement(el, "DueDate").text = inv["due"]
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return web.Response(body=body, content_type="application/xml")


def crm_app(behaviour: Behaviour | None = None) -> web.Application:
    """The CRM service: ``GET /customers/{id}`` -> the customer as JSON, 404 when unknown."""
    app = web.Application()
    app[BEHAVIOUR] = behaviour or Behaviour()
    app.router.add_get("/customers/{id}", _customer)
    return app


def billing_app(behaviour: Behaviour | None = None) -> web.Application:
    """The billing service: ``GET /invoices?customer={id}`` -> ``<Invoices>`` (empty for an unknown id)."""
    app = web.Application()
    app[BEHAVIOUR] = behaviour or Behaviour()
    app.router.add_get("/invoices", _invoices)
    return app


def seed_database(path: Path) -> None:
    """Create the ticket table (with the connection's own init SQL) and replace its rows with TICKETS."""
    conn_spec = YAML(typ="safe").load((HERE / "support-db.yaml").read_text(encoding="utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        for sql in conn_spec["init"]:
            db.executescript(sql)
        db.execute("DELETE FROM ticket")
        db.executemany("INSERT INTO ticket (id, customer_id, subject, status, priority, opened_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", TICKETS)
    db.close()


async def _serve(crm_port: int, billing_port: int, delay: float) -> None:
    behaviour = Behaviour(delay)
    runners = [web.AppRunner(crm_app(behaviour), shutdown_timeout=1.0),
               web.AppRunner(billing_app(behaviour), shutdown_timeout=1.0)]
    try:
        for runner, port in zip(runners, (crm_port, billing_port), strict=True):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"CRM      http://127.0.0.1:{crm_port}/customers/C-1001", flush=True)
        print(f"billing  http://127.0.0.1:{billing_port}/invoices?customer=C-1001", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Demo backends of the mashup example (127.0.0.1 only).")
    parser.add_argument("--crm-port", type=int, default=8091, help="port of the CRM service (default 8091)")
    parser.add_argument("--billing-port", type=int, default=8092, help="port of the billing service (default 8092)")
    parser.add_argument("--db", type=Path, default=Path(".atom/mashup-support.db"),
                        help="SQLite file to seed (default .atom/mashup-support.db, as support-db.yaml expects)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds both services wait before answering")
    args = parser.parse_args(argv)
    seed_database(args.db)
    print(f"support  {args.db}: {len(TICKETS)} tickets", flush=True)
    asyncio.run(_serve(args.crm_port, args.billing_port, args.delay))


if __name__ == "__main__":
    main()
