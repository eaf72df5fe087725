"""Large documents: a ~200 MB XML file of 1M records, split and mapped record by record.

    python bench/bench_large.py [--records 1000000] [--timeout 300] [--mem-limit-gb 10]

Generates `<Orders>` with N `<Order>` records (~200 bytes each) into a temporary directory (deleted
afterwards), then runs, each as a child process measured with wait4() (wall time, peak RSS =
ru_maxrss of that child alone):

- the Atom: `atom run bench/large/split-map.yaml --input orders.xml` (split by XPath, then a
  `message` shape maps each record to an order line);
- the streaming baseline: bench/large/baseline_stream.py, the same work with lxml iterparse.

The Atom also runs on a tenth of the records first, so the report shows how its memory grows with
the input. The children run under an address-space limit (`--mem-limit-gb`) and a time limit, so a
non-streaming engine fails cleanly instead of exhausting a shared machine; a failure is reported
as such, with the figures measured up to it.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ATOM, BENCH, PYTHON, at_size, machine_line, note, ratio, save_results, section, table, verdict

PROCESS = BENCH / "large" / "split-map.yaml"
BASELINE = BENCH / "large" / "baseline_stream.py"
RSS_TARGET_MB = 300


def generate(path: Path, records: int) -> int:
    """Write the <Orders> file; returns its size in bytes (~200 bytes per record)."""
    pad = "lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do eiusmod tempor"
    with open(path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<Orders>\n')
        buf = []
        for i in range(records):
            buf.append(f'<Order id="SO-{i:08d}"><Customer>C-{i % 9973:05d}</Customer><Sku>SKU-{i % 1000:04d}</Sku>'
                       f'<Qty>{i % 7 + 1}</Qty><Price>{(i % 500) / 10 + 1:.2f}</Price><Note>{pad}</Note></Order>\n')
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
        f.write("</Orders>\n")
    return path.stat().st_size


def run_child(name: str, cmd: list[str], *, timeout: float, mem_limit: int, cwd: Path) -> dict[str, Any]:
    """Run `cmd` and measure it alone: wall seconds, peak RSS (MB) and exit status."""
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))

    out_path = cwd / f"{name}.out"
    t0 = time.perf_counter()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                preexec_fn=limits)
        status = None
        deadline = t0 + timeout
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    proc.send_signal(signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:  # interrupted (bench/run's time limit): never leave the child behind
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    tail = out_path.read_text(errors="replace").strip().splitlines()[-3:]
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "exit": proc.returncode, "timed_out": timed_out,
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "last_lines": tail}


def main() -> int:
    ap = argparse.ArgumentParser(description="large-document split and map")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed to each child")
    ap.add_argument("--mem-limit-gb", type=float, default=10, help="address-space limit of each child")
    ap.add_argument("--skip-small", action="store_true", help="skip the 1/10 run of the Atom")
    args = ap.parse_args()
    mem_limit = int(args.mem_limit_gb * 1024 ** 3)
    print(f"machine: {machine_line()}")
    rows: list[list[Any]] = []
    results: dict[str, Any] = {"records": args.records, "mem_limit_gb": args.mem_limit_gb, "runs": {}}
    with section(f"large documents: {args.records:,} XML records, split + map"), \
            tempfile.TemporaryDirectory(prefix="atom-bench-large-") as tmp:
        work = Path(tmp)
        sizes = [args.records] if args.skip_small else [max(1, args.records // 10), args.records]
        for n in sizes:
            src = work / f"orders-{n}.xml"
            t0 = time.perf_counter()
            size = generate(src, n)
            print(f"   generated {n:,} records, {size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s", flush=True)
            runs = [("atom", [ATOM, "run", str(PROCESS), "--input", str(src)])]
            if n == args.records:
                runs.insert(0, ("baseline", [PYTHON, str(BASELINE), str(src)]))
            for who, cmd in runs:
                r = run_child(f"{who}-{n}", cmd, timeout=args.timeout, mem_limit=mem_limit, cwd=work)
                r.update(records=n, input_mb=size / 1e6)
                results["runs"][f"{who}-{n}"] = r
                ok = r["exit"] == 0 and not r["timed_out"]
                state = "ok" if ok else ("timed out" if r["timed_out"] else f"failed (exit {r['exit']})")
                print(f"   {who:8} {n:>9,} records: {r['wall_s']:7.1f} s, peak RSS {r['peak_rss_mb']:7.0f} MB, {state}",
                      flush=True)
                if not ok:
                    note(f"{who}: " + " | ".join(r["last_lines"]))
                label = "streaming baseline (lxml iterparse)" if who == "baseline" else "atom run split-map"
                rows.append([label, f"{n:,}", f"{size / 1e6:.0f}", r["wall_s"],
                             n / r["wall_s"] if ok else None, r["peak_rss_mb"], state])
            src.unlink()
    print()
    print(table(["run", "records", "input MB", "wall s", "records/s", "peak RSS MB", "result"], rows))
    big = results["runs"].get(f"atom-{args.records}", {})
    base = results["runs"].get(f"baseline-{args.records}", {})
    ok = big.get("exit") == 0 and not big.get("timed_out")
    t_ratio = ratio(big.get("wall_s"), base.get("wall_s")) if ok else None
    small = results["runs"].get(f"atom-{max(1, args.records // 10)}")
    growth = None
    if small and ok and big["records"] != small["records"]:
        growth = (big["peak_rss_mb"] - small["peak_rss_mb"]) / (big["records"] - small["records"]) * 1024 * 1024
    print()
    print(table(["measure", "value", "target", "verdict"], [
        ["atom peak RSS MB", big.get("peak_rss_mb"), f"< {RSS_TARGET_MB}",
         at_size(verdict(big.get("peak_rss_mb"), RSS_TARGET_MB, higher_is_better=False) if ok
                 else "MISSED (did not finish)", args.records, 1_000_000)],
        ["atom wall time / streaming baseline", t_ratio, "-", "-"],
        ["atom memory growth, bytes per record", growth, "~0 when streaming", "-"],
    ]))
    results.update(time_ratio=t_ratio, bytes_per_record=growth)
    save_results("large", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
