"""The floor for Python: a bare aiohttp handler doing the benchmark's order mapping by hand.

    python bench/baseline_aiohttp.py --port 18080

POST /ws/simple/createOrder with the order JSON answers the mapped order (the same output as
bench/processes/order-transform.yaml and the Node-RED flow); POST /ws/simple/createOrderEcho answers
the order unchanged once it parses (the floor of a listener, as bench/processes/order-echo.yaml).
Binds 127.0.0.1 only. Uses orjson for parsing and serialising, as the Atom does, and the default
asyncio event loop, as the Atom does, so the difference to the Atom is the engine and runtime, not
the libraries.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from aiohttp import web


def to_erp(o: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's transformation: rename fields, compute line amounts and the order total."""
    total = 0.0
    lines = []
    for i in o["items"]:
        amount = round(i["qty"] * i["unitPrice"], 2)
        total += amount
        lines.append({"productCode": i["sku"], "quantity": i["qty"], "price": i["unitPrice"], "amount": amount})
    return {
        "id": o["orderId"], "customerId": o["customer"]["id"], "customerName": o["customer"]["name"],
        "currency": o["currency"], "country": o["shipTo"]["country"], "lineCount": len(o["items"]),
        "lines": lines, "total": round(total, 2),
    }


async def create_order(request: web.Request) -> web.Response:
    try:
        order = orjson.loads(await request.read())
        body = orjson.dumps(to_erp(order))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return web.json_response({"error": {"code": "BAD_INPUT", "message": str(exc)}}, status=400)
    return web.Response(body=body, content_type="application/json")


async def echo_order(request: web.Request) -> web.Response:
    """The floor of any listener: read the JSON body, check it parses, answer it unchanged (what the
    Atom's echo process does, without the Atom)."""
    body = await request.read()
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return web.json_response({"error": {"code": "BAD_INPUT", "message": str(exc)}}, status=400)
    return web.Response(body=body, content_type="application/json")


def app() -> web.Application:
    a = web.Application()
    a.router.add_post("/ws/simple/createOrder", create_order)
    a.router.add_post("/ws/simple/createOrderEcho", echo_order)
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=18080)
    args = ap.parse_args()
    web.run_app(app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
