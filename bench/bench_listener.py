"""Listener throughput and latency: the Atom against a bare aiohttp handler and Node-RED.

    python bench/bench_listener.py [--duration 10] [--connections 50] [--only aiohttp,node-red,...]
                                   [--profile]

Each target answers POST /ws/simple/createOrder with the same mapping of the same ~1 KB order
(bench/data/order.json, 10 line items): (a) a bare aiohttp handler (bench/baseline_aiohttp.py),
(b) the Atom in low_latency mode and (c) in general mode (bench/processes/order-transform.yaml,
one definition, BENCH_MODE picks the mode), (d) Node-RED (bench/nodered/). Each is started on
127.0.0.1, checked to give the expected output, warmed up, then loaded by wrk (one thread, fixed
connections and duration): first closed-loop for its maximum throughput, then paced at half of
that maximum for the latency a lightly loaded server gives. Prints req/s, p50/p99 and the ratios.
(b2) and (c2) run the Atom with `--workers 2`. With --profile, py-spy samples the Atom during its
maximum-throughput run and the hottest functions are printed (bench/results/profile-*.txt); py-spy
pauses the process to sample it, so take throughput figures from a run without --profile.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ATOM,
    BENCH,
    NODE_RED,
    PYTHON,
    RESULTS,
    Server,
    atom_available,
    free_port,
    http,
    machine_line,
    note,
    paced_wrk,
    ratio,
    run_wrk,
    save_results,
    section,
    table,
    verdict,
    wait_ready,
)
from baseline_aiohttp import to_erp
from profile_summary import py_spy_record, summarize

ORDER = BENCH / "data" / "order.json"
PATH = "/ws/simple/createOrder"


@dataclass
class Target:
    key: str
    label: str
    start: Callable[[Path], tuple[Server, str]]   # workdir -> (server, base URL)
    python: bool = False
    atom_mode: str | None = None
    path: str = PATH
    result: dict[str, Any] = field(default_factory=dict)


def start_aiohttp(work: Path) -> tuple[Server, str]:
    port = free_port()
    s = Server("aiohttp baseline", [PYTHON, str(BENCH / "baseline_aiohttp.py"), "--port", str(port)],
               log=work / "aiohttp.log")
    return s, f"http://127.0.0.1:{port}"


def start_atom(mode: str, workers: int = 1) -> Callable[[Path], tuple[Server, str]]:
    def start(work: Path) -> tuple[Server, str]:
        port = free_port()
        data = Path(tempfile.mkdtemp(prefix=f"atom-{mode}-", dir=work))
        extra = ["--workers", str(workers)] if workers > 1 else []
        s = Server(f"atom {mode}", [ATOM, "serve", str(BENCH / "processes"), "--host", "127.0.0.1",
                                    "--port", str(port), *extra],
                   env={"BENCH_MODE": mode, "ATOM_DATA_DIR": str(data), "ATOM_LOG_LEVEL": "warning"},
                   cwd=work, log=work / f"atom-{mode}-{workers}.log")
        wait_ready(s, f"http://127.0.0.1:{port}/_admin/status", timeout=60)
        return s, f"http://127.0.0.1:{port}"
    return start


def start_node_red(work: Path) -> tuple[Server, str]:
    port = free_port()
    user_dir = work / "node-red"
    user_dir.mkdir()
    s = Server("node-red", ["node", str(NODE_RED), "--settings", str(BENCH / "nodered" / "settings.js")],
               env={"NODE_RED_PORT": str(port), "NODE_RED_USER_DIR": str(user_dir)},
               log=work / "node-red.log")
    return s, f"http://127.0.0.1:{port}"


def same_mapping(got: Any, want: Any) -> bool:
    """Equal JSON, numbers compared to the cent (JavaScript writes 19 where Python writes 19.0)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(
            same_mapping(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            same_mapping(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float | int) and not isinstance(want, bool):
        return isinstance(got, float | int) and abs(got - want) < 0.005
    return bool(got == want)


def check_output(url: str, echo: bool = False) -> None:
    """The target answers 200 with the expected mapping (or, for the echo process, the order itself)."""
    body = ORDER.read_bytes()
    status, _, out = http("POST", url, body, {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"POST {url} answered {status}: {out[:300]!r}")
    want = json.loads(body) if echo else to_erp(json.loads(body))
    if not same_mapping(json.loads(out), want):
        raise RuntimeError(f"POST {url} gave a different mapping:\n{out[:400]!r}\nexpected\n{json.dumps(want)[:400]}")


def measure(t: Target, work: Path, args: argparse.Namespace) -> None:
    server, base = t.start(work)
    url = base + t.path
    try:
        wait_ready(server, url, method="POST", body=ORDER.read_bytes(),
                   headers={"Content-Type": "application/json"}, timeout=60)
        check_output(url, echo=t.key.endswith("-echo"))
        run_wrk(url, duration=args.warmup, connections=args.connections)
        prof = None
        if args.profile and t.atom_mode and not t.key.endswith("-w2"):  # one process: the supervisor is idle
            prof = py_spy_record(server.pid, args.duration, work / f"profile-listener-{t.key}.raw")
        cpu0 = server.cpu_seconds()
        peak = run_wrk(url, duration=args.duration, connections=args.connections)
        cpu1 = server.cpu_seconds()
        if cpu0 is not None and cpu1 is not None and peak["requests"]:
            # CPU time per request does not depend on how much CPU the shared machine left us
            peak["cpu_us_per_request"] = (cpu1 - cpu0) / peak["requests"] * 1e6
            peak["cpu_cores_used"] = (cpu1 - cpu0) / (peak["duration_us"] / 1e6)
        if prof is not None:
            prof.wait(args.duration + 30)
        half = paced_wrk(url, peak["rps"] / 2, duration=args.duration)
        half10 = paced_wrk(url, peak["rps"] / 2, duration=args.duration, connections=10)
        t.result = {"max": peak, "half": half, "half10": half10, "rss_mb": server.peak_rss_mb()}
        if t.atom_mode == "general":
            status, _, body = http("GET", f"{base}/api/v1/executions?limit=1")
            t.result["records_persisted"] = status == 200 and bool(json.loads(body).get("items"))
            if not t.result["records_persisted"]:
                note(f"{t.label}: no execution record found after the run ({status})")
        if prof is not None:
            raw = work / f"profile-listener-{t.key}.raw"
            if raw.exists():
                text = summarize(raw, top=25)
                (RESULTS / f"profile-listener-{t.key}.txt").write_text(text)
                t.result["profile"] = str((RESULTS / f"profile-listener-{t.key}.txt").relative_to(BENCH.parent))
                print(text)
    finally:
        server.stop()
    for what in ("max", "half", "half10"):
        if t.result[what]["error_count"]:
            note(f"{t.label}: {t.result[what]['errors']} socket/status errors in the {what} run")
    m, h = t.result["max"], t.result["half"]
    print(f"   {t.label:32} {m['rps']:9,.0f} req/s  p50 {m['ms']['p50']:6.2f} ms  p99 {m['ms']['p99']:6.2f} ms"
          f"  | at {h['rps']:,.0f} req/s: p50 {h['ms']['p50']:.2f} ms, p99 {h['ms']['p99']:.2f} ms"
          f" (10 clients: p99 {t.result['half10']['ms']['p99']:.2f} ms)"
          f"  | server CPU {m.get('cpu_us_per_request', 0):.0f} us/request, {m.get('cpu_cores_used', 0):.2f} cores",
          flush=True)


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    """Microseconds per call: warm up, then the best of three timed runs (the machine is shared)."""
    for _ in range(max(50, n // 10)):
        fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def breakdown(n: int = 2000) -> dict[str, float]:
    """In-process cost of one request's work, in microseconds: the mapping by hand (parse, map,
    serialise), the `message` template of the template variant alone, and whole engine executions
    (low_latency, no HTTP) of the map process and of the template process. Separates the cost of
    the transformation from the engine's and, by difference with the HTTP figures, the server's."""
    import asyncio
    import os

    import orjson

    from atom.document import Document
    from atom.engine import Engine
    from atom.loader import load_directory

    os.environ["BENCH_MODE"] = "low_latency"
    dep = load_directory(str(BENCH / "processes"))
    body = ORDER.read_bytes()
    out: dict[str, float] = {}
    out["by_hand_us"] = _per_call_us(lambda: orjson.dumps(to_erp(orjson.loads(body))), n)

    template = getattr(dep.processes["order-transform-template"].shapes["to-erp"], "template", None)
    if template is not None:
        scope: dict[str, Any] = {"doc": None, "process": {}, "execution": {}, "env": {}}

        def render() -> None:
            scope["doc"] = Document(body)
            template.render(scope)

        out["template_us"] = _per_call_us(render, n)

    async def engine_run(name: str) -> float:
        eng = Engine(dep)
        pdef = dep.processes[name]
        for _ in range(200):
            await eng.execute(pdef, [Document(body)], execution_type="exec_listener")
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                ex = await eng.execute(pdef, [Document(body)], execution_type="exec_listener")
            best = min(best, time.perf_counter() - t0)
            assert ex.status == "COMPLETE", ex.message
        await eng.stop()
        return best / n * 1e6

    out["engine_map_us"] = asyncio.run(engine_run("order-transform"))
    out["engine_template_us"] = asyncio.run(engine_run("order-transform-template"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="listener throughput and latency")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load per target")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--only", default="",
                    help="comma-separated subset of: aiohttp,atom-ll,atom-general,atom-ll-template,atom-ll-echo,"
                         "atom-ll-w2,atom-general-w2,node-red")
    ap.add_argument("--profile", action="store_true", help="sample the Atom with py-spy during its max run")
    args = ap.parse_args()

    targets = [Target("aiohttp", "(a) aiohttp bare", start_aiohttp, python=True)]
    if atom_available():
        targets += [Target("atom-ll", "(b) atom low_latency", start_atom("low_latency"), atom_mode="low_latency"),
                    Target("atom-general", "(c) atom general", start_atom("general"), atom_mode="general"),
                    Target("atom-ll-template", "(b') atom low_latency, template", start_atom("low_latency"),
                           atom_mode="low_latency", path=PATH + "Template"),
                    Target("atom-ll-echo", "(e) atom low_latency, echo", start_atom("low_latency"),
                           atom_mode="low_latency", path=PATH + "Echo"),
                    Target("atom-ll-w2", "(b2) atom low_latency, 2 workers", start_atom("low_latency", 2),
                           atom_mode="low_latency"),
                    Target("atom-general-w2", "(c2) atom general, 2 workers", start_atom("general", 2),
                           atom_mode="general")]
    else:
        note("`atom serve` is not available in this checkout: the Atom rows are skipped")
    if NODE_RED.exists():
        targets.append(Target("node-red", "(d) node-red", start_node_red))
    else:
        note("Node-RED is not installed (bench/install.sh installs it under bench/.node/): skipped")
    if args.only:
        keep = set(args.only.split(","))
        targets = [t for t in targets if t.key in keep]

    print(f"machine: {machine_line()}")
    bd: dict[str, float] = {}
    if atom_available():
        with section("listener: in-process cost of one request's work (no HTTP)"):
            bd = breakdown()
            print(table(["work", "us per request"], [
                ["mapping by hand (orjson parse, map, orjson dump)", bd["by_hand_us"]],
                ["engine.execute, map process (low_latency)", bd["engine_map_us"]],
                ["engine.execute, message-template process (low_latency)", bd["engine_template_us"]],
                ["  its message template alone (Jinja sandbox)", bd.get("template_us")],
            ]))
    print(f"load: wrk 1 thread, {args.connections} connections, {args.duration:.0f} s per run, "
          f"POST {ORDER.stat().st_size} B JSON order (10 items), loopback")
    with section("listener: max throughput (closed loop), then paced at 50% of it"), \
            tempfile.TemporaryDirectory(prefix="atom-bench-") as tmp:
        for t in targets:
            try:
                measure(t, Path(tmp), args)
            except Exception as exc:  # one broken target must not hide the others' figures
                note(f"{t.label}: FAILED: {exc}")
                t.result = {}

    got = {t.key: t for t in targets if t.result}
    rows = []
    for t in got.values():
        m, h, h10 = t.result["max"], t.result["half"], t.result["half10"]
        rows.append([t.label, m["rps"], m["ms"]["p50"], m["ms"]["p99"], m.get("cpu_us_per_request"),
                     m.get("cpu_cores_used"), h["rps"], h["ms"]["p50"], h["ms"]["p99"], h10["ms"]["p99"],
                     t.result.get("rss_mb"), m["error_count"] + h["error_count"] + h10["error_count"]])
    print()
    print(table(["target", "max req/s", "p50 ms", "p99 ms", "CPU us/req", "cores", "paced req/s", "paced p50 ms",
                 "paced p99 ms", "paced p99 ms, 10 clients", "peak RSS MB", "errors"], rows))

    def rps(k: str) -> float | None:
        return got[k].result["max"]["rps"] if k in got else None

    checks = [
        ("b/a  atom low_latency / aiohttp", ratio(rps("atom-ll"), rps("aiohttp")), 0.6),
        ("c/a  atom general / aiohttp", ratio(rps("atom-general"), rps("aiohttp")), 0.4),
        ("b/d  atom low_latency / node-red", ratio(rps("atom-ll"), rps("node-red")), 1.5),
        ("c/d  atom general / node-red", ratio(rps("atom-general"), rps("node-red")), 1.0),
    ]
    def cost(k: str) -> float | None:
        return got[k].result["max"].get("cpu_us_per_request") if k in got else None

    ratio_rows: list[list[Any]] = [[n, r, f">= {tgt}", verdict(r, tgt)] for n, r, tgt in checks]
    # The same ratios from server CPU time per request (a/b = b's throughput per core relative to a's)
    cpu_checks = [
        ("b/a  by CPU per request", ratio(cost("aiohttp"), cost("atom-ll")), 0.6),
        ("c/a  by CPU per request", ratio(cost("aiohttp"), cost("atom-general")), 0.4),
        ("b/d  by CPU per request", ratio(cost("node-red"), cost("atom-ll")), 1.5),
        ("c/d  by CPU per request", ratio(cost("node-red"), cost("atom-general")), 1.0),
    ]
    ratio_rows += [[n, r, f">= {tgt}", verdict(r, tgt)] for n, r, tgt in cpu_checks if r is not None]
    # --workers 2 (`atom serve --workers N` is one of the remedies the targets name): the Atom on both
    # cores, still shared with wrk, against the single-process baselines; the same targets
    w2_checks = [
        ("b2/a atom low_latency, 2 workers / aiohttp", ratio(rps("atom-ll-w2"), rps("aiohttp")), 0.6),
        ("c2/a atom general, 2 workers / aiohttp", ratio(rps("atom-general-w2"), rps("aiohttp")), 0.4),
        ("b2/d atom low_latency, 2 workers / node-red", ratio(rps("atom-ll-w2"), rps("node-red")), 1.5),
        ("c2/d atom general, 2 workers / node-red", ratio(rps("atom-general-w2"), rps("node-red")), 1.0),
    ]
    ratio_rows += [[n, r, f">= {tgt}", verdict(r, tgt)] for n, r, tgt in w2_checks if r is not None]
    info = [("b'/a atom low_latency, template / aiohttp", ratio(rps("atom-ll-template"), rps("aiohttp"))),
            ("e/a  atom echo (no mapping) / aiohttp", ratio(rps("atom-ll-echo"), rps("aiohttp")))]
    info += [(n, r) for n, r, _ in w2_checks]
    ratio_rows += [[n, r, "-", "-"] for n, r in info[:2] if r is not None]
    # p99 at half load: with many clients (each pausing ~20 ms) and with 10 clients sending more often;
    # the bare handler's figures show how much of the tail the shared machine and wrk add by themselves
    for k in ("aiohttp", "atom-ll", "atom-general", "atom-ll-w2", "atom-general-w2"):
        if k in got:
            for what, who in (("half", "many clients"), ("half10", "10 clients")):
                p99 = got[k].result[what]["ms"]["p99"]
                ratio_rows.append([f"p99 at 50% load, {who}, {got[k].label.split(') ', 1)[-1]}", p99, "< 10 ms",
                                   "-" if k == "aiohttp" else verdict(p99, 10, higher_is_better=False)])
    print()
    print(table(["ratio (throughput)", "value", "target", "verdict"], ratio_rows))
    save_results("listener", {
        "settings": {"duration_s": args.duration, "connections": args.connections, "wrk_threads": 1,
                     "body_bytes": ORDER.stat().st_size},
        "targets": {k: {"label": t.label, **t.result} for k, t in got.items()},
        "ratios": {**{n: r for n, r, _ in checks}, **dict(info)},
        "cpu_ratios": {n: r for n, r, _ in cpu_checks},
        "in_process_us": bd,
    })
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"listener: done in {time.perf_counter() - t0:.0f} s")
    sys.exit(rc)
