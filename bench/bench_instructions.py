"""Instructions per request: the listener targets counted by valgrind's callgrind, not timed.

    python bench/bench_instructions.py [--requests 300] [--only aiohttp,aiohttp-echo,atom-echo,atom-ll,atom-general]

A wall-clock figure on a shared machine moves by half between two runs; the number of instructions
a server executes for a request does not (callgrind counts them whatever else the machine does).
Each server is started under callgrind, warmed up with 100 requests, its counters are zeroed
(`callgrind_control --zero`), it then answers `--requests` sequential keep-alive POSTs of the
benchmark's order, and the counters are dumped: the total divided by the requests is the cost of a
request in the server (HTTP parsing, routing, the handler, the answer; wrk is not counted). Also
counted in-process: the order mapping by hand and by the Atom's map. Node-RED is not counted (a JIT
under valgrind measures valgrind). Slow: about a minute per target; targets run two at a time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ATOM, BENCH, PYTHON, free_port, machine_line, note, ratio, save_results, section, table

ORDER = BENCH / "data" / "order.json"
PATH = "/ws/simple/createOrder"
TARGETS = {
    "aiohttp": ("(a) aiohttp bare", PATH),
    "aiohttp-echo": ("(a0) aiohttp bare, echo (JSON checked, answered unchanged)", PATH + "Echo"),
    "atom-echo": ("(e) atom low_latency, echo", PATH + "Echo"),
    "atom-ll": ("(b) atom low_latency", PATH),
    "atom-general": ("(c) atom general", PATH),
}


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> None:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"POST {path} answered {r.status}: {data[:200]!r}")


def _connect(port: int, atom: bool, proc: subprocess.Popen[bytes], deadline: float) -> http.client.HTTPConnection:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server ended with {proc.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.connect()
            if atom:  # ready once the processes are deployed
                conn.request("GET", "/_admin/status")
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    conn.close()
                    raise OSError("starting")
            return conn
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("the server did not start within 300 s under valgrind") from None
            time.sleep(0.5)


def count(key: str, requests: int, work: Path) -> dict[str, Any]:
    """Instructions per request of one target."""
    port = free_port()
    out = work / f"callgrind-{key}.out"
    env = dict(os.environ, ATOM_LOG_LEVEL="warning", ATOM_DATA_DIR=str(work / f"data-{key}"),
               BENCH_MODE="general" if key == "atom-general" else "low_latency")
    if key.startswith("aiohttp"):
        cmd = [PYTHON, str(BENCH / "baseline_aiohttp.py"), "--port", str(port)]
    else:
        # the directory watcher's scans (every second) would be counted as request work under valgrind
        config = work / "atom.yaml"
        config.write_text("watch: {enabled: false}\n")
        cmd = [ATOM, "serve", str(BENCH / "processes"), "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port)]
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    body = ORDER.read_bytes()
    path = TARGETS[key][1]
    try:
        conn = _connect(port, not key.startswith("aiohttp"), proc, time.time() + 300)
        for _ in range(100):
            _post(conn, path, body)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        for _ in range(requests):
            _post(conn, path, body)
        dump = subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
        conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # the dump after --zero holds the counts since: its file is the newest callgrind-<key>.out.<pid>.<n>
    dumps = sorted(work.glob(f"callgrind-{key}.out.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump ({dump.stdout.decode()[-200:]})")
    total = _total(dumps[0])
    return {"instructions_per_request": total / requests, "requests": requests}


def _total(path: Path) -> int:
    text = path.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no totals in {path.name}")
    return int(m.group(1))


def in_process(n: int) -> dict[str, float]:
    """Instructions of the order mapping alone: by hand, and by the benchmark process's map."""
    script = BENCH / "_instructions_map.py"
    got: dict[str, float] = {}
    for what in ("hand", "map"):
        runs = []
        for reps in (0, n):
            r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", PYTHON,
                                str(script), what, str(reps)], capture_output=True, text=True, check=True)
            m = re.search(r"Collected : (\d+)", r.stderr)
            if not m:
                raise RuntimeError(f"callgrind gave no count: {r.stderr[-300:]}")
            runs.append(int(m.group(1)))
        got[what] = (runs[1] - runs[0]) / n
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description="instructions per request (callgrind)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(TARGETS))
    args = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        note("valgrind is not installed (bench/install.sh installs it): instruction counts skipped")
        return 0
    keys = [k for k in TARGETS if not args.only or k in args.only.split(",")]
    print(f"machine: {machine_line()}")
    with section("instructions per request (callgrind; sequential keep-alive POSTs, after 100 warm-up requests)"), \
            tempfile.TemporaryDirectory(prefix="atom-ir-") as tmp, ThreadPoolExecutor(2) as pool:
        futures = {k: pool.submit(count, k, args.requests, Path(tmp)) for k in keys}
        mapping = in_process(500)
        results: dict[str, dict[str, Any]] = {}
        for k, f in futures.items():
            try:
                results[k] = f.result()
            except Exception as exc:  # one broken target must not hide the others
                note(f"{TARGETS[k][0]}: FAILED: {exc}")
    rows = [[TARGETS[k][0], r["instructions_per_request"] / 1000] for k, r in results.items()]
    rows += [["order mapping by hand (orjson parse, map, dump), in-process", mapping["hand"] / 1000],
             ["order mapping by the Atom's map (Document in, Document out), in-process", mapping["map"] / 1000]]
    print(table(["what", "thousand instructions"], rows))

    def ir(k: str) -> float | None:
        return results[k]["instructions_per_request"] if k in results else None

    ratios = [
        ("b/a  aiohttp / atom low_latency (instructions)", ratio(ir("aiohttp"), ir("atom-ll"))),
        ("c/a  aiohttp / atom general (instructions)", ratio(ir("aiohttp"), ir("atom-general"))),
        ("e/a  aiohttp / atom echo (instructions)", ratio(ir("aiohttp"), ir("atom-echo"))),
        ("map  hand / Atom map (instructions)", ratio(mapping["hand"], mapping["map"])),
        # aiohttp's own cost of an echo plus the Atom's map, with nothing else of the Atom: the best
        # b/a one process could reach (a JSON parse, about 10K, is counted in both parts)
        ("b/a ceiling: aiohttp / (aiohttp echo + Atom map)",
         ratio(ir("aiohttp"), ir("aiohttp-echo") + mapping["map"] if ir("aiohttp-echo") else None)),
    ]
    print()
    print(table(["ratio (higher is better for the Atom)", "value"], [[n, r] for n, r in ratios]))
    save_results("instructions", {"requests": args.requests, "targets": results, "mapping": mapping,
                                  "ratios": dict(ratios)})
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"instructions: done in {time.perf_counter() - t0:.0f} s")
    sys.exit(rc)
