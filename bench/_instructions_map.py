"""Run by bench_instructions.py under callgrind: `python _instructions_map.py hand|map N` maps the
benchmark's order N times (by hand, or with the map of bench/processes/order-transform.yaml)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from baseline_aiohttp import to_erp

BENCH = Path(__file__).resolve().parent


def main() -> None:
    what, n = sys.argv[1], int(sys.argv[2])
    body = (BENCH / "data" / "order.json").read_bytes()
    if what == "hand":
        for _ in range(n):
            orjson.dumps(to_erp(orjson.loads(body)))
        return
    from atom.document import Document
    from atom.loader import load_directory
    from atom.maps import LocalMapContext

    os.environ["BENCH_MODE"] = "low_latency"
    dep = load_directory(str(BENCH / "processes"))
    m = dep.processes["order-transform"].shapes["to-erp"].compiled  # type: ignore[attr-defined]
    ctx = LocalMapContext()
    for _ in range(n):
        m.apply(Document(body), ctx)


if __name__ == "__main__":
    main()
