"""Expressions and maps in-process: what one listener request of the benchmark costs without HTTP.

    python bench/bench_templates.py [N] [--startup 1000]

Prints microseconds per call (best of five timed runs of N calls, after a warm-up) for:

- the order mapping by hand (orjson parse, map, orjson dump): the floor;
- `engine.execute` of `bench/processes/order-transform.yaml` (a map) and of
  `order-transform-template.yaml` (one `message` template), low_latency;
- the map of the map process alone (`CompiledMap.apply`), and the `message` template alone;
- single expressions: a name path (`{{ item.qty }}`), a computed sole expression, a mixed template.

With `--startup N`, also the time to load N generated listener processes (`load_directory`, the
processes of `bench_scale.py`), best of three.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from baseline_aiohttp import to_erp  # noqa: E402

from atom.document import Document  # noqa: E402
from atom.engine import Engine  # noqa: E402
from atom.expressions import compile_template  # noqa: E402
from atom.loader import load_directory  # noqa: E402
from atom.maps import LocalMapContext  # noqa: E402

ORDER = (BENCH / "data" / "order.json").read_bytes()


def per_call_us(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    """Microseconds per call: a warm-up, then the best of `rounds` timed runs (the machine is shared)."""
    for _ in range(max(50, n // 10)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


async def engine_us(dep: Any, name: str, n: int, rounds: int = 5) -> float:
    eng = Engine(dep)
    pdef = dep.processes[name]
    want = to_erp(orjson.loads(ORDER))
    for _ in range(200):
        ex = await eng.execute(pdef, [Document(ORDER)], execution_type="exec_listener")
    assert ex.status == "COMPLETE", ex.message
    got = ex.returned[0].json
    assert got.keys() == want.keys() and got["total"] == want["total"], (got, want)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            await eng.execute(pdef, [Document(ORDER)], execution_type="exec_listener")
        best = min(best, time.perf_counter() - t0)
    await eng.stop()
    return best / n * 1e6


def startup_s(n: int) -> float:
    from bench_scale import write_processes

    best = float("inf")
    with tempfile.TemporaryDirectory() as d:
        write_processes(Path(d), n)
        for _ in range(3):
            t0 = time.perf_counter()
            dep = load_directory(d)
            best = min(best, time.perf_counter() - t0)
            assert len(dep.processes) == n
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("n", nargs="?", type=int, default=3000)
    ap.add_argument("--startup", type=int, default=0, metavar="N", help="also time loading N processes")
    args = ap.parse_args()
    n = args.n

    os.environ["BENCH_MODE"] = "low_latency"
    dep = load_directory(str(BENCH / "processes"))
    rows: list[tuple[str, float]] = []
    rows.append(("by hand (parse, map, dump)", per_call_us(lambda: orjson.dumps(to_erp(orjson.loads(ORDER))), n)))
    rows.append(("engine.execute, map process", asyncio.run(engine_us(dep, "order-transform", n))))
    rows.append(("engine.execute, template process", asyncio.run(engine_us(dep, "order-transform-template", n))))

    cmap = dep.processes["order-transform"].shapes["to-erp"].compiled  # type: ignore[attr-defined]
    ctx = LocalMapContext()
    rows.append(("map alone (CompiledMap.apply)", per_call_us(lambda: cmap.apply(Document(ORDER), ctx), n)))

    template = dep.processes["order-transform-template"].shapes["to-erp"].template  # type: ignore[attr-defined]
    scope: dict[str, Any] = {"doc": None, "process": {}, "execution": {}, "env": {}}

    def render() -> None:
        scope["doc"] = Document(ORDER)
        template.render(scope)

    rows.append(("message template alone (render)", per_call_us(render, n)))

    doc = Document(ORDER)
    doc.json  # noqa: B018
    item = doc.json["items"][3]
    s = {"doc": doc, "process": {"rate": "1.5"}, "execution": {}, "env": {}, "item": item}
    for label, src in (("name path {{ item.qty }}", "{{ item.qty }}"),
                       ("name path {{ doc.json.customer.id }}", "{{ doc.json.customer.id }}"),
                       ("sole expression {{ item.qty * item.unitPrice }}", "{{ item.qty * item.unitPrice }}"),
                       ("mixed template 'n={{ item.sku }}'", "n={{ item.sku }}")):
        t = compile_template(src)
        rows.append((label, per_call_us(lambda t=t: t.evaluate(s), n * 10)))

    width = max(len(k) for k, _ in rows)
    print(f"calls per run: {n} (expressions: {n * 10}); best of 5 runs")
    for k, v in rows:
        print(f"{k:{width}}  {v:9.2f} us")
    if args.startup:
        print(f"{'load ' + str(args.startup) + ' processes':{width}}  {startup_s(args.startup):9.2f} s")


if __name__ == "__main__":
    main()
