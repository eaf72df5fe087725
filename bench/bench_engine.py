"""Engine overhead: a trivial 3-shape process run in-process, against the same work done by hand.

    python bench/bench_engine.py [N]

Prints microseconds per execution for the Atom engine and for a hand-written coroutine doing the
same work (parse JSON, decide on a field, set a property, build a reply), and their ratio.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

from atom.document import Document
from atom.engine import Engine
from atom.loader import load_directory

PROCESS = """
process: trivial
mode: low_latency
shapes:
  - {id: d, decision: {when: "{{ doc.json.total > 100 }}", then: s, else: s}}
  - {id: s, set_properties: {document: {tier: "{{ doc.json.tier }}"}}}
  - {id: r, return: {}}
"""
BODY = b'{"id": "A-1", "total": 250, "tier": "gold"}'


async def atom_run(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "p.yaml").write_text(PROCESS)
        eng = Engine(load_directory(d))
        for _ in range(200):
            await eng.execute("trivial", [Document(BODY)])
        t0 = time.perf_counter()
        for _ in range(n):
            ex = await eng.execute("trivial", [Document(BODY)])
        dt = time.perf_counter() - t0
        assert ex.status == "COMPLETE" and ex.returned[0].props["tier"] == "gold"
        await eng.stop()
    return dt / n


async def by_hand(n: int) -> float:
    async def run(body: bytes) -> list[dict[str, str]]:
        doc = orjson.loads(body)
        props: dict[str, str] = {}
        if doc["total"] > 100:
            props["tier"] = str(doc["tier"])
        else:
            props["tier"] = str(doc["tier"])
        return [props]

    t0 = time.perf_counter()
    for _ in range(n):
        await run(BODY)
    return (time.perf_counter() - t0) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    a = asyncio.run(atom_run(n))
    h = asyncio.run(by_hand(n))
    print(f"executions: {n}")
    print(f"atom engine, 3 shapes : {a * 1e6:8.1f} us/execution ({1 / a:,.0f}/s)")
    print(f"hand-written baseline : {h * 1e6:8.1f} us/execution ({1 / h:,.0f}/s)")
    print(f"ratio atom/hand (time): {a / h:8.1f}x")


if __name__ == "__main__":
    main()
