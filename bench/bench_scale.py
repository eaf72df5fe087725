"""Scale: start-up with 1,000 processes, listing executions among 1M records, the X-Max-Wait 202 path.

    python bench/bench_scale.py [startup] [executions] [maxwait] [--processes 1000] [--records 1000000]

startup     `atom serve` on a generated directory of N listener processes, timed from the start of
            the command until `GET /_admin/status` answers 200; against the same with 1 process
            (the fixed cost of starting Python and the runtime) and `atom validate` of the same
            directory (loading alone).
executions  1M execution records generated directly into the SQLite store (schema and columns read
            from `atom.store`, so the rows are what the runtime writes), then `GET
            /api/v1/executions` with the usual filters, timed over repeated calls; against the same
            SQL run directly with sqlite3 (the floor).
maxwait     a slow process (the test connector's `delay`) called with `X-Max-Wait: 1` answers 202
            with a status link; its latency against the synchronous answer of the same process
            without the delay; checks that an immediate poll of the status link finds the record.

Everything binds 127.0.0.1 and runs in temporary directories that are deleted afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ATOM,
    RESULTS,
    Server,
    at_size,
    atom_available,
    free_port,
    machine_line,
    note,
    ratio,
    save_results,
    section,
    table,
    verdict,
    wait_ready,
)
from profile_summary import py_spy_record, summarize

# --------------------------------------------------------------------------------------- processes
LISTENER = """\
process: {name}
description: Generated for the start-up benchmark ({i} of {n}).
mode: {mode}
start:
  listen: {{operation: create, object: {obj}, input: json, output: json}}
shapes:
  - id: check
    decision: {{when: "{{{{ doc.json.total > 100 }}}}", then: big, else: small}}
  - id: big
    set_properties: {{document: {{tier: big}}}}
    next: ack
  - id: small
    set_properties: {{document: {{tier: small}}}}
  - id: ack
    message:
      content_type: application/json
      template: '{{"id": {{{{ doc.json.id | tojson }}}}, "tier": "{{{{ doc.props.tier }}}}"}}'
  - id: reply
    return: {{}}
"""


def write_processes(directory: Path, n: int) -> None:
    """N listener processes, 5 shapes each, on /ws/simple/createBench<i>."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (directory / f"bench-{i:04d}.yaml").write_text(
            LISTENER.format(name=f"bench-{i:04d}", i=i + 1, n=n, obj=f"Bench{i:04d}",
                            mode="low_latency" if i % 2 else "general"))


def start_serve(components: Path, data: Path, log: Path, extra_env: dict[str, str] | None = None,
                profile: Path | None = None) -> tuple[Server, str, float]:
    """Start `atom serve` and wait for /_admin/status 200; returns (server, base URL, seconds to ready).
    With `profile`, py-spy samples the start-up (attached as soon as the interpreter is up)."""
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    s = Server("atom serve", [ATOM, "serve", str(components), "--host", "127.0.0.1", "--port", str(port)],
               env={"ATOM_DATA_DIR": str(data), "ATOM_LOG_LEVEL": "warning", **(extra_env or {})}, cwd=data,
               log=log)
    if profile is not None:
        deadline = time.perf_counter() + 5
        while time.perf_counter() < deadline:
            spy = py_spy_record(s.pid, 120, profile, rate=200)
            if spy is None:
                break
            time.sleep(0.15)
            if spy.poll() is None:  # attached
                break
    base = f"http://127.0.0.1:{port}"
    ready = wait_ready(s, base + "/_admin/status", timeout=120, interval=0.01)
    return s, base, ready


def bench_startup(work: Path, n: int, rounds: int, profile: bool = False) -> dict[str, Any]:
    many, one = work / "many", work / "one"
    write_processes(many, n)
    write_processes(one, 1)
    out: dict[str, Any] = {"processes": n}
    t0 = time.perf_counter()
    v = subprocess.run([ATOM, "validate", str(many)], capture_output=True, text=True, timeout=300)
    out["validate_s"] = time.perf_counter() - t0
    if v.returncode != 0:
        raise RuntimeError(f"atom validate failed on the generated processes:\n{v.stdout}{v.stderr}"[:2000])
    for key, comp in (("one", one), ("many", many)):
        times = []
        for r in range(rounds):
            prof = work / "profile-startup.raw" if profile and key == "many" and r == 0 else None
            s, base, ready = start_serve(comp, work / f"data-{key}-{r}", work / f"serve-{key}-{r}.log", profile=prof)
            try:
                if key == "many" and r == 0:
                    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
                    conn.request("POST", f"/ws/simple/createBench{n - 1:04d}", b'{"id": "x", "total": 5}',
                                 {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    body = resp.read()
                    conn.close()
                    if resp.status != 200 or b'"small"' not in body:
                        raise RuntimeError(f"last generated listener answered {resp.status}: {body[:200]!r}")
                    out["rss_mb_many"] = s.peak_rss_mb()
            finally:
                s.stop()
            times.append(ready)
            if prof is not None:
                time.sleep(1)  # py-spy writes its file when the process it samples has exited
                if prof.exists():
                    text = summarize(prof, top=30)
                    (RESULTS / "profile-startup.txt").write_text(text)
                    print(text)
        out[f"start_s_{key}"] = min(times)
        out[f"start_s_{key}_all"] = times
    print(f"   start with 1 process {out['start_s_one']:.2f} s, with {n:,} {out['start_s_many']:.2f} s "
          f"(best of {rounds}); atom validate {out['validate_s']:.2f} s", flush=True)
    return out


# --------------------------------------------------------------------------------------- executions
def generate_records(db: Path, n: int, processes: int = 20, days: float = 20.0) -> dict[str, Any]:
    """Write N records straight into the store's tables, spread over the last `days` days (inside
    the purge window), oldest first as a running Atom writes them.

    The table and its indexes come from `atom.store.SCHEMA`; each column is filled by the record
    field `atom.store.COLUMNS` maps it to (columns the store adds beyond those get their default).
    The rows are produced by SQLite itself (a recursive CTE), which takes seconds, not minutes."""
    from atom.store import COLUMNS, SCHEMA

    now = time.time()
    start = now - days * 86400
    step = (now - 60 - start) / n
    uuid_sql = ("substr(h,1,8) || '-' || substr(h,9,4) || '-4' || substr(h,14,3) || '-a' || substr(h,18,3) "
                "|| '-' || substr(h,21,12)")
    by_field = {
        "executionId": f"'execution-' || {uuid_sql} || '-' || strftime('%Y.%m.%d', ts, 'unixepoch')",
        "processName": f"'orders-' || printf('%02d', p % {processes})",
        "processVersion": "1", "executionType": "'exec_listener'",
        "status": ("CASE WHEN i % 100000 = 7 THEN 'ABORTED' WHEN r < 90 THEN 'COMPLETE' "
                   "WHEN r < 95 THEN 'COMPLETE_WARN' ELSE 'ERROR' END"),
        "executionTime": "strftime('%Y-%m-%dT%H:%M:%fZ', ts, 'unixepoch')",
        "executionDuration": "1 + r * 3", "inboundDocumentCount": "1", "inboundErrorDocumentCount": "0",
        "outboundDocumentCount": "1", "inboundDocumentSize": "1117", "outboundDocumentSize": "916",
        "message": "CASE WHEN r >= 95 THEN 'connector ''store'' (orders-db): connection refused' ELSE '' END",
        "parentExecutionId": "NULL", "topLevelExecutionId": "NULL", "atomName": "'atom'", "nodeId": "'bench:1'",
        "mode": "'general'", "errorDocumentCount": "CASE WHEN r >= 95 THEN 1 ELSE 0 END",
    }
    extra = {"start_ts": "ts", "properties": "'{\"inmethod\": \"POST\"}'", "has_inputs": "0"}
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.executescript(SCHEMA)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(executions)")]
    field_of = dict(COLUMNS)
    exprs = []
    for c in cols:
        if c in field_of and field_of[c] in by_field:
            exprs.append(by_field[field_of[c]])
        elif c in extra:
            exprs.append(extra[c])
        else:
            exprs.append("NULL")
    chosen = [(c, e) for c, e in zip(cols, exprs, strict=True) if e != "NULL"]
    sql = (f"WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {n - 1}) "
           f"INSERT INTO executions ({', '.join(c for c, _ in chosen)}) "
           f"SELECT {', '.join(e for _, e in chosen)} FROM ("
           f"SELECT i, {start!r} + i * {step!r} AS ts, abs(random()) % 100 AS r, abs(random()) AS p, "
           f"lower(hex(randomblob(16))) AS h FROM seq)")
    conn.execute("BEGIN")
    conn.execute(sql)
    conn.execute("UPDATE executions SET top = id WHERE top IS NULL")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    got = conn.execute("SELECT count(*) FROM executions").fetchone()[0]
    conn.close()
    if got != n:
        raise RuntimeError(f"generated {got} records, expected {n}")
    return {"records": n, "generate_s": time.perf_counter() - t0, "db_mb": db.stat().st_size / 1e6,
            "start": start, "now": now}


def timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, int, bytes]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return time.perf_counter() - t0, r.status, body


def bench_executions(work: Path, n: int, repeat: int) -> dict[str, Any]:
    import orjson

    from atom.store import ListQuery, SqliteStore

    data = work / "store"
    data.mkdir()
    db = data / "atom.db"
    gen = generate_records(db, n)
    print(f"   generated {n:,} records in {gen['generate_s']:.1f} s ({gen['db_mb']:.0f} MB)", flush=True)
    empty = work / "no-processes"
    empty.mkdir()
    s, base, ready = start_serve(empty, data, work / "serve-executions.log")
    out: dict[str, Any] = {"records": n, "generate_s": gen["generate_s"], "db_mb": gen["db_mb"],
                           "start_s_with_store": ready, "queries": {}}
    mid = gen["start"] + (gen["now"] - gen["start"]) / 2
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    queries: list[tuple[str, dict[str, str], ListQuery]] = [
        ("newest page (default limit)", {}, ListQuery()),
        ("limit=200", {"limit": "200"}, ListQuery(limit=200)),
        ("process=orders-07", {"process": "orders-07"}, ListQuery(process="orders-07")),
        ("status=ERROR", {"status": "ERROR"}, ListQuery(status="ERROR")),
        ("status=ABORTED (rare)", {"status": "ABORTED"}, ListQuery(status="ABORTED")),
        ("process + status=ERROR", {"process": "orders-07", "status": "ERROR"},
         ListQuery(process="orders-07", status="ERROR")),
        ("since/until, one hour mid-range", {"since": iso(mid), "until": iso(mid + 3600)},
         ListQuery(since=float(int(mid)), until=float(int(mid + 3600)))),
    ]
    port = int(base.rsplit(":", 1)[1])
    raw = sqlite3.connect(db)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for label, params, q in queries:
            path = "/api/v1/executions" + ("?" + urllib.parse.urlencode(params) if params else "")
            first, status, body = timed_get(conn, path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
            page = orjson.loads(body)
            items = page.get("items", page) if isinstance(page, dict) else page
            cursor = page.get("nextCursor") if isinstance(page, dict) else None
            lat = [timed_get(conn, path)[0] for _ in range(repeat)]
            sql, args = SqliteStore.list_sql(q, None)
            t_sql = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                raw.execute(sql, args).fetchall()
                t_sql.append(time.perf_counter() - t0)
            row: dict[str, Any] = {"path": path, "items": len(items), "first_ms": first * 1000,
                                   "p50_ms": statistics.median(lat) * 1000,
                                   "p95_ms": sorted(lat)[max(0, int(len(lat) * 0.95) - 1)] * 1000,
                                   "sql_p50_ms": statistics.median(t_sql) * 1000}
            if cursor and label.startswith("newest"):
                # walk to the middle of the data set with the cursor of a page there
                deep = [timed_get(conn, path + ("&" if "?" in path else "?") + "cursor=" + cursor)[0]
                        for _ in range(repeat)]
                row["page2_p50_ms"] = statistics.median(deep) * 1000
            out["queries"][label] = row
        conn.close()
    finally:
        raw.close()
        s.stop()
    return out


# --------------------------------------------------------------------------------------- max wait
MAXWAIT = """\
process: {name}
mode: general
start:
  listen: {{operation: execute, object: {obj}, input: json, output: json}}
shapes:
  - id: call
    connector: {{connection: {conn}, action: send}}
  - id: reply
    return: {{}}
"""
CONN = """\
connection: {name}
type: test
delay: {delay}
"""


def bench_maxwait(work: Path, requests: int, delay_s: float) -> dict[str, Any]:
    comp = work / "maxwait"
    comp.mkdir()
    (comp / "fast.yaml").write_text(MAXWAIT.format(name="fast", obj="Fast", conn="peer-fast"))
    (comp / "slow.yaml").write_text(MAXWAIT.format(name="slow", obj="Slow", conn="peer-slow"))
    (comp / "peer-fast.yaml").write_text(CONN.format(name="peer-fast", delay="0s"))
    (comp / "peer-slow.yaml").write_text(CONN.format(name="peer-slow", delay=f"{int(delay_s * 1000)}ms"))
    s, base, _ = start_serve(comp, work / "data-maxwait", work / "serve-maxwait.log")
    port = int(base.rsplit(":", 1)[1])
    body = b'{"id": "A-1", "total": 250}'
    hdr = {"Content-Type": "application/json"}
    out: dict[str, Any] = {"requests": requests, "slow_delay_s": delay_s}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        poll = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def call(path: str, headers: dict[str, str]) -> tuple[float, int, dict[str, str], bytes]:
            t0 = time.perf_counter()
            conn.request("POST", path, body, headers)
            r = conn.getresponse()
            data = r.read()
            return time.perf_counter() - t0, r.status, dict(r.getheaders()), data

        for _ in range(50):  # warm-up
            call("/ws/simple/executeFast", hdr)
        fast = []
        for _ in range(requests):
            dt, status, _, _ = call("/ws/simple/executeFast", hdr)
            if status != 200:
                raise RuntimeError(f"fast process answered {status}")
            fast.append(dt)
        accepted, found, polls = [], 0, []
        pace = delay_s / 40  # keeps about 40 slow executions in flight, under the per-listener limit
        for _ in range(requests):
            dt, status, headers, data = call("/ws/simple/executeSlow", {**hdr, "X-Max-Wait": "1"})
            if status != 202:
                raise RuntimeError(f"slow process with X-Max-Wait: 1 answered {status}: {data[:200]!r}")
            accepted.append(dt)
            link = urllib.parse.urlsplit(headers.get("X-Execution-Status-Link") or headers["Location"])
            t0 = time.perf_counter()
            poll.request("GET", link.path)
            pr = poll.getresponse()
            pr.read()
            polls.append(time.perf_counter() - t0)
            found += pr.status == 200
            time.sleep(pace)
        conn.close()
        poll.close()
    finally:
        s.stop()

    def ms(xs: list[float], q: float) -> float:
        return sorted(xs)[max(0, int(len(xs) * q) - 1)] * 1000

    out.update(fast_p50_ms=ms(fast, 0.5), fast_p99_ms=ms(fast, 0.99), accepted_p50_ms=ms(accepted, 0.5),
               accepted_p99_ms=ms(accepted, 0.99), poll_p50_ms=ms(polls, 0.5), polls_found=found)
    out["overhead_p50_ms"] = out["accepted_p50_ms"] - out["fast_p50_ms"]
    print(f"   sync 200 p50 {out['fast_p50_ms']:.2f} ms; 202 (X-Max-Wait: 1) p50 {out['accepted_p50_ms']:.2f} ms; "
          f"immediate polls finding the record: {found}/{requests}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="start-up, executions listing and X-Max-Wait at scale")
    ap.add_argument("parts", nargs="*", default=["startup", "executions", "maxwait"])
    ap.add_argument("--processes", type=int, default=1000)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3, help="start-ups per directory (best is reported)")
    ap.add_argument("--repeat", type=int, default=30, help="timed calls per executions query")
    ap.add_argument("--requests", type=int, default=300, help="requests per X-Max-Wait case")
    ap.add_argument("--profile", action="store_true", help="sample the start-up with py-spy")
    args = ap.parse_args()
    print(f"machine: {machine_line()}")
    if not atom_available():
        note("`atom serve` is not available in this checkout: scale benchmarks skipped")
        return 0
    results: dict[str, Any] = {}
    verdicts: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="atom-bench-scale-") as tmp:
        work = Path(tmp)
        if "startup" in args.parts:
            with section(f"scale: start-up with {args.processes:,} processes"):
                try:
                    r = results["startup"] = bench_startup(work, args.processes, args.rounds, args.profile)
                    print(table(["measure", "seconds"], [
                        ["atom serve, 1 process, until /_admin/status is 200", r["start_s_one"]],
                        [f"atom serve, {args.processes:,} processes", r["start_s_many"]],
                        [f"atom validate, {args.processes:,} processes", r["validate_s"]],
                    ]))
                    verdicts.append([f"start with {args.processes:,} processes (s)", r["start_s_many"], "< 3",
                                     at_size(verdict(r["start_s_many"], 3, higher_is_better=False),
                                             args.processes, 1000)])
                    verdicts.append(["  ratio to start with 1 process", ratio(r["start_s_many"], r["start_s_one"]),
                                     "-", "-"])
                except Exception as exc:
                    note(f"start-up: FAILED: {exc}")
        if "executions" in args.parts:
            with section(f"scale: GET /api/v1/executions with {args.records:,} records"):
                try:
                    r = results["executions"] = bench_executions(work, args.records, args.repeat)
                    rows = [[k, v["items"], v["first_ms"], v["p50_ms"], v["p95_ms"], v["sql_p50_ms"],
                             ratio(v["p50_ms"], v["sql_p50_ms"])] for k, v in r["queries"].items()]
                    print(table(["query", "items", "first ms", "p50 ms", "p95 ms", "raw SQL p50 ms", "API / SQL"],
                                rows))
                    worst = max(v["p50_ms"] for v in r["queries"].values())
                    newest = r["queries"]["newest page (default limit)"]
                    verdicts.append([f"executions list, newest page, {args.records:,} records (ms)",
                                     newest["p50_ms"], "< 50",
                                     at_size(verdict(newest["p50_ms"], 50, higher_is_better=False), args.records,
                                             1_000_000)])
                    if "page2_p50_ms" in newest:
                        verdicts.append(["  next page by cursor (ms)", newest["page2_p50_ms"], "< 50",
                                         at_size(verdict(newest["page2_p50_ms"], 50, higher_is_better=False),
                                                 args.records, 1_000_000)])
                    verdicts.append(["  slowest filtered query (ms)", worst, "< 50",
                                     at_size(verdict(worst, 50, higher_is_better=False), args.records,
                                             1_000_000)])
                except Exception as exc:
                    note(f"executions: FAILED: {exc}")
        if "maxwait" in args.parts:
            with section("scale: X-Max-Wait 202 path"):
                try:
                    r = results["maxwait"] = bench_maxwait(work, args.requests, 0.5)
                    print(table(["case", "p50 ms", "p99 ms"], [
                        ["fast process, synchronous 200", r["fast_p50_ms"], r["fast_p99_ms"]],
                        ["slow process, X-Max-Wait: 1 -> 202", r["accepted_p50_ms"], r["accepted_p99_ms"]],
                        ["immediate GET of the status link", r["poll_p50_ms"], None],
                    ]))
                    verdicts.append(["202 path p50 - sync p50 (ms)", r["overhead_p50_ms"], "-", "-"])
                    verdicts.append(["immediate polls that found the record", f"{r['polls_found']}/{r['requests']}",
                                     f"{r['requests']}/{r['requests']}",
                                     "met" if r["polls_found"] == r["requests"] else "MISSED"])
                except Exception as exc:
                    note(f"X-Max-Wait: FAILED: {exc}")
    if verdicts:
        print()
        print(table(["scale", "value", "target", "verdict"], verdicts))
    save_results("scale", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
