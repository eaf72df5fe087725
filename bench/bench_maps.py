"""Map engine benchmark: a JSON -> XML map of a ~1 KB order (10 lines) and the XML -> JSON map back,
against hand-written lxml/orjson functions producing the same bytes.

Run: `python bench/bench_maps.py` (about 10 s). Prints documents per second and the map/hand ratio;
the target is a ratio of at least 0.5 for both directions.
"""

from __future__ import annotations

import statistics
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atom.document import Document
from atom.maps import MAP_SPEC, CompiledMap, LocalMapContext, compile_map
from atom.spec import CheckContext
from atom.yamlio import Where, load_yaml

ORDER = {
    "id": "SO-10042",
    "date": "2026-11-22",
    "currency": "EUR",
    "customer": {"id": "C-981", "name": "Acme Industrial Supplies", "email": "orders@acme.example",
                 "city": "Lyon", "country": "FR"},
    "items": [{"sku": f"SKU-{i:04d}", "description": f"Widget model {i}", "qty": i + 1,
               "price": round(9.5 + i * 1.25, 2)} for i in range(10)],
    "total": 612.5,
}

TO_XML = """
input: json
output: xml
root: Order
fields:
  "@id": $.id
  Date: $.date
  Currency: $.currency
  Customer/@id: $.customer.id
  Customer/Name: $.customer.name
  Customer/Email: $.customer.email
  Customer/City: $.customer.city
  Customer/Country: $.customer.country
  Lines/Line:
    foreach: $.items[*]
    fields:
      Sku: $.sku
      Description: $.description
      Quantity: $.qty
      Price: $.price
  Total: $.total
"""

TO_JSON = """
input: xml
output: json
fields:
  id: "@id"
  date: Date
  currency: Currency
  customer/id: Customer/@id
  customer/name: Customer/Name
  customer/email: Customer/Email
  customer/city: Customer/City
  customer/country: Customer/Country
  items:
    foreach: Lines/Line
    fields:
      sku: Sku
      description: Description
      qty: {source: Quantity, type: int}
      price: {source: Price, type: number}
  total: {source: Total, type: number}
"""


def build(text: str, name: str) -> CompiledMap:
    node, problems = load_yaml(textwrap.dedent(text), f"{name}.yaml")
    assert not problems, problems
    ctx = CheckContext()
    where = Where(f"{name}.yaml", node)
    m = compile_map(MAP_SPEC.check(node, where, ctx), where, ctx, name)
    assert m is not None and not ctx.problems, ctx.problems
    return m


def _text(v: Any) -> str:
    return v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)


def hand_to_xml(data: bytes) -> bytes:
    o = orjson.loads(data)
    root = etree.Element("Order")
    root.set("id", o["id"])
    sub = etree.SubElement
    sub(root, "Date").text = o["date"]
    sub(root, "Currency").text = o["currency"]
    c = o["customer"]
    cust = sub(root, "Customer")
    cust.set("id", c["id"])
    sub(cust, "Name").text = c["name"]
    sub(cust, "Email").text = c["email"]
    sub(cust, "City").text = c["city"]
    sub(cust, "Country").text = c["country"]
    lines = sub(root, "Lines")
    for it in o["items"]:
        line = sub(lines, "Line")
        sub(line, "Sku").text = it["sku"]
        sub(line, "Description").text = it["description"]
        sub(line, "Quantity").text = _text(it["qty"])
        sub(line, "Price").text = _text(it["price"])
    sub(root, "Total").text = _text(o["total"])
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _num(s: str) -> int | float:
    try:
        return int(s)
    except ValueError:
        return float(s)


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def hand_to_json(data: bytes) -> bytes:
    # one pass over each element's children (faster than findtext per field)
    r = etree.fromstring(data, _PARSER)
    top = {ch.tag: ch for ch in r}
    c = top["Customer"]
    cf = {ch.tag: ch.text for ch in c}
    items = []
    for ln in top["Lines"]:
        f = {ch.tag: ch.text for ch in ln}
        items.append({"sku": f["Sku"], "description": f["Description"], "qty": int(str(f["Quantity"])),
                      "price": _num(str(f["Price"]))})
    out = {
        "id": r.get("id"),
        "date": top["Date"].text,
        "currency": top["Currency"].text,
        "customer": {"id": c.get("id"), "name": cf["Name"], "email": cf["Email"], "city": cf["City"],
                     "country": cf["Country"]},
        "items": items,
        "total": _num(str(top["Total"].text)),
    }
    return orjson.dumps(out)


def rate(fn: Callable[[], Any], seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= end:
            return n / (now - t0)


def compare(mapped: Callable[[], Any], hand: Callable[[], Any], rounds: int = 25) -> tuple[float, float, float]:
    """Best rates of each, and the median of per-round ratios (rounds alternate, so a busy machine
    slows both sides of a round alike)."""
    rate(mapped, 0.2)
    rate(hand, 0.2)
    ms, hs, ratios = [], [], []
    for _ in range(rounds):
        m, h = rate(mapped, 0.08), rate(hand, 0.08)
        ms.append(m)
        hs.append(h)
        ratios.append(m / h)
    return max(ms), max(hs), statistics.median(ratios)


def main() -> int:
    to_xml, to_json = build(TO_XML, "order-to-xml"), build(TO_JSON, "order-to-json")
    ctx = LocalMapContext()
    src = orjson.dumps(ORDER)
    xml = hand_to_xml(src)
    assert to_xml.apply(Document(src), ctx).data == xml, "the map and the hand-written function disagree"
    assert to_json.apply(Document(xml), ctx).data == hand_to_json(xml), "XML -> JSON outputs differ"
    assert orjson.loads(hand_to_json(xml)) == ORDER
    print(f"order: {len(src)} bytes JSON, {len(xml)} bytes XML, {len(ORDER['items'])} lines")  # type: ignore[arg-type]
    worst = 10.0
    for label, mapped, hand in (
        ("json -> xml", lambda: to_xml.apply(Document(src), ctx), lambda: hand_to_xml(src)),
        ("xml -> json", lambda: to_json.apply(Document(xml), ctx), lambda: hand_to_json(xml)),
    ):
        m, h, ratio = compare(mapped, hand)
        worst = min(worst, ratio)
        print(f"{label}: map {m:10,.0f} docs/s   hand-written {h:10,.0f} docs/s   ratio {ratio:.2f} (median of rounds)")
    print(f"worst ratio {worst:.2f} (target >= 0.50): {'ok' if worst >= 0.5 else 'BELOW TARGET'}")
    return 0 if worst >= 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
