"""Print one table of the headline figures, ratios and targets from bench/results/*.json.

    python bench/summary.py [--since FILE]

With --since, only results written after FILE was touched are shown (bench/run uses it so the
table reflects this run only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, at_size, machine_line, ratio, table, verdict

#: throughput ratio targets: b = Atom low_latency, c = Atom general, a = bare aiohttp, d = Node-RED
RATIO_TARGETS = {"b/a": 0.6, "c/a": 0.4, "b/d": 1.5, "c/d": 1.0}


def load(since: float) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(RESULTS.glob("*.json")):
        if p.stat().st_mtime >= since:
            out[p.stem] = json.loads(p.read_text())
    return out


def rows(res: dict[str, dict[str, Any]]) -> list[list[Any]]:
    r: list[list[Any]] = []
    lst = res.get("listener", {}).get("targets", {})

    def rps(k: str) -> float | None:
        return lst[k]["max"]["rps"] if k in lst else None

    for key in ("aiohttp", "atom-ll", "atom-general", "atom-ll-template", "atom-ll-echo", "atom-ll-w2",
                "atom-general-w2", "node-red"):
        if key in lst:
            t = lst[key]
            r.append([f"listener {t['label']}: req/s (p50 / p99 ms)",
                      f"{t['max']['rps']:,.0f} ({t['max']['ms']['p50']:.2f} / {t['max']['ms']['p99']:.2f})", "", ""])
    for name, a, b, target in (("b/a low_latency / aiohttp", "atom-ll", "aiohttp", 0.6),
                               ("c/a general / aiohttp", "atom-general", "aiohttp", 0.4),
                               ("b/d low_latency / node-red", "atom-ll", "node-red", 1.5),
                               ("c/d general / node-red", "atom-general", "node-red", 1.0),
                               ("b2/a low_latency 2 workers / aiohttp", "atom-ll-w2", "aiohttp", 0.6),
                               ("c2/a general 2 workers / aiohttp", "atom-general-w2", "aiohttp", 0.4),
                               ("b2/d low_latency 2 workers / node-red", "atom-ll-w2", "node-red", 1.5),
                               ("c2/d general 2 workers / node-red", "atom-general-w2", "node-red", 1.0)):
        v = ratio(rps(a), rps(b))
        if v is not None:
            r.append([f"listener ratio {name}", v, f">= {target}", verdict(v, target)])
    for name, v in res.get("listener", {}).get("cpu_ratios", {}).items():
        if v is not None:
            target = RATIO_TARGETS.get(name.split()[0], 0.0)
            r.append([f"listener ratio {name}", v, f">= {target}", verdict(v, target)])
    for name, a, b in (("b'/a low_latency template / aiohttp", "atom-ll-template", "aiohttp"),
                       ("e/a echo (no mapping) / aiohttp", "atom-ll-echo", "aiohttp")):
        v = ratio(rps(a), rps(b))
        if v is not None:
            r.append([f"listener ratio {name}", v, "-", "-"])
    for key in ("atom-ll", "atom-general", "atom-ll-w2", "atom-general-w2"):
        if key in lst:
            for what, who in (("half", "many clients"), ("half10", "10 clients")):
                h = lst[key].get(what)
                if h:
                    r.append([f"listener {lst[key]['label']} p99 ms at {h['rps']:,.0f} req/s (50%), {who}",
                              h["ms"]["p99"], "< 10", verdict(h["ms"]["p99"], 10, higher_is_better=False)])
    ir = res.get("instructions")
    if ir:
        for name, v in ir.get("ratios", {}).items():
            if v is not None:
                r.append([f"instructions ratio {name}", v, "", ""])
    lg = res.get("large")
    if lg:
        n = lg["records"]
        a = lg["runs"].get(f"atom-{n}", {})
        b = lg["runs"].get(f"baseline-{n}", {})
        done = a.get("exit") == 0 and not a.get("timed_out")
        if b:
            r.append([f"large XML {n:,} records: streaming baseline wall s / peak RSS MB",
                      f"{b['wall_s']:.1f} / {b['peak_rss_mb']:.0f}", "", ""])
        if a:
            state = "" if done else (" (timed out)" if a.get("timed_out") else f" (failed, exit {a.get('exit')})")
            r.append([f"large XML {n:,} records: atom wall s / peak RSS MB{state}",
                      f"{a['wall_s']:.1f} / {a['peak_rss_mb']:.0f}", "RSS < 300",
                      at_size(verdict(a["peak_rss_mb"], 300, higher_is_better=False) if done else "MISSED", n,
                              1_000_000)])
            if done and b:
                r.append(["large XML: atom / baseline wall time", ratio(a["wall_s"], b["wall_s"]), "", ""])
    sc = res.get("scale", {})
    st = sc.get("startup")
    if st:
        r.append([f"start-up with {st['processes']:,} processes, s (1 process: {st['start_s_one']:.2f})",
                  st["start_s_many"], "< 3",
                  at_size(verdict(st["start_s_many"], 3, higher_is_better=False), st["processes"], 1000)])
    ex = sc.get("executions")
    if ex:
        q = ex["queries"]
        newest = q.get("newest page (default limit)")
        if newest:
            r.append([f"GET /api/v1/executions, {ex['records']:,} records, p50 ms", newest["p50_ms"], "< 50",
                      at_size(verdict(newest["p50_ms"], 50, higher_is_better=False), ex["records"], 1_000_000)])
        worst_k = max(q, key=lambda k: q[k]["p50_ms"])
        r.append([f"  slowest filter ({worst_k}), p50 ms", q[worst_k]["p50_ms"], "< 50",
                  at_size(verdict(q[worst_k]["p50_ms"], 50, higher_is_better=False), ex["records"], 1_000_000)])
    mw = sc.get("maxwait")
    if mw:
        r.append(["X-Max-Wait: 202 p50 ms vs synchronous 200 p50 ms",
                  f"{mw['accepted_p50_ms']:.2f} vs {mw['fast_p50_ms']:.2f}", "", ""])
        r.append(["  immediate polls that found the record", f"{mw['polls_found']}/{mw['requests']}",
                  "all", "met" if mw["polls_found"] == mw["requests"] else "MISSED"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description="summary of the benchmark results")
    ap.add_argument("--since", type=Path, help="only results newer than this file")
    args = ap.parse_args()
    since = args.since.stat().st_mtime if args.since and args.since.exists() else 0.0
    res = load(since)
    if not res:
        print("no results")
        return
    print(f"machine: {machine_line()}")
    print(table(["figure", "value", "target", "verdict"], rows(res)))


if __name__ == "__main__":
    main()
