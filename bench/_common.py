"""Shared helpers of the benchmark scripts: child servers, readiness, wrk runs, tables, results.

Every server a benchmark starts binds 127.0.0.1 and is stopped by its own PID (SIGTERM, then
SIGKILL after a grace period); `stop_all()` runs at exit, so an interrupted run leaves nothing
behind. Nothing here ever signals a process it did not start.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
ATOM = str(VENV_BIN / "atom") if (VENV_BIN / "atom").exists() else "atom"
RESULTS = BENCH / "results"
NODE_RED = BENCH / ".node" / "node_modules" / "node-red" / "red.js"

_started: list[Server] = []


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A child process we started; stopped by its PID only. Output goes to `log` (a file)."""

    def __init__(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path | str | None = None, log: Path | None = None) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log
        full_env = {**os.environ, **(env or {})}
        out: Any = open(log, "wb") if log else subprocess.DEVNULL
        self._out = out
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env=full_env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        _started.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> list[int]:
        """The process and its descendants (the workers of `atom serve --workers N`)."""
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in task.read_text().split()]
        return out

    def peak_rss_mb(self) -> float | None:
        """VmHWM (peak resident set) of the process plus its descendants', read while they still run."""
        total = None
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total = (total or 0.0) + int(line.split()[1]) / 1024
            except OSError:
                continue
        return total

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process and its descendants (all threads) have used so far."""
        total = None
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total = (total or 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def tail(self, n: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        if self._out is not subprocess.DEVNULL:
            self._out.close()
        if self in _started:
            _started.remove(self)
        return self.proc.returncode


def stop_all() -> None:
    for s in list(_started):
        s.stop(grace=5)


atexit.register(stop_all)


def _on_signal(signum: int, frame: Any) -> None:
    stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)


def http(method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body) for any status, raises OSError when unreachable."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def wait_ready(server: Server, url: str, *, method: str = "GET", body: bytes | None = None,
               headers: Mapping[str, str] | None = None, timeout: float = 60.0,
               interval: float = 0.02) -> float:
    """Poll `url` until it answers 200; returns seconds since the server was started.

    Raises RuntimeError (with the end of the server's log) if it exits or times out."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            status, _, _ = http(method, url, body, headers, timeout=2)
            if status == 200:
                return time.perf_counter() - server.started_at
        except OSError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{server.name} not ready at {url} after {timeout:.0f} s:\n{server.tail()}")


# ------------------------------------------------------------------------------------------ wrk
def run_wrk(url: str, *, duration: float, connections: int, threads: int = 1, body: Path | None = None,
            headers: Mapping[str, str] | None = None, delay_ms: int = 0, timeout_s: int = 10) -> dict[str, Any]:
    """Run wrk against `url` with bench/post.lua; returns its summary plus `rps` and latencies in ms."""
    env = {**os.environ, "BENCH_BODY": str(body or BENCH / "data" / "order.json"),
           "BENCH_HEADERS": ";".join(f"{k}: {v}" for k, v in (headers or {}).items()),
           "BENCH_DELAY_MS": str(delay_ms)}
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", f"--timeout={timeout_s}s",
           "--latency", "-s", str(BENCH / "post.lua"), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + timeout_s + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    res: dict[str, Any] = json.loads(line[len("BENCH_JSON "):])
    secs = res["duration_us"] / 1e6
    res["rps"] = res["requests"] / secs if secs else 0.0
    res["ms"] = {k: v / 1000 for k, v in res["latency_us"].items()}
    res["error_count"] = sum(res["errors"].values())
    res["connections"] = connections
    res["delay_ms"] = delay_ms
    return res


def paced_wrk(url: str, rate: float, *, duration: float, body: Path | None = None,
              headers: Mapping[str, str] | None = None, connections: int | None = None) -> dict[str, Any]:
    """Run wrk at about `rate` requests/s: each connection pauses between requests (wrk `delay()`).

    By default the mean pause is 20 ms (exponentially distributed, see post.lua) and a short
    calibration run scales the number of connections to the rate wanted (many clients, each
    sending now and then). With `connections`, that many clients send at the rate together and the
    calibration scales their pause instead. The achieved rate is in `rps`."""
    if connections is None:
        pause = 20
        conns = max(1, round(rate * pause / 1000))
        cal = run_wrk(url, duration=3, connections=conns, body=body, headers=headers, delay_ms=pause)
        if cal["rps"]:  # below saturation the rate grows in proportion to the connections
            conns = max(1, round(conns * rate / cal["rps"]))
    else:
        conns = connections
        pause = max(1, round(conns * 1000 / rate))
        cal = run_wrk(url, duration=3, connections=conns, body=body, headers=headers, delay_ms=pause)
        if cal["rps"]:  # the time between two requests of a client is its pause plus the answer time
            pause = max(1, round(pause * cal["rps"] / rate))
    res = run_wrk(url, duration=duration, connections=conns, body=body, headers=headers, delay_ms=pause)
    res["target_rps"] = rate
    return res


# ------------------------------------------------------------------------------------------ output
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable on a terminal too)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def verdict(value: float | None, target: float, *, higher_is_better: bool = True) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def at_size(v: str, size: int, target_size: int) -> str:
    """A verdict, or a note that the run was smaller than the size the target is set for."""
    return v if size >= target_size else f"n/a (size {size:,} < {target_size:,})"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def save_results(part: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<part>.json with the machine description; returns the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{part}.json"
    payload = {"part": part, "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "machine": machine(), **data}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def _cmd_version(cmd: Sequence[str]) -> str | None:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else None


def machine() -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions of everything measured."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    versions: dict[str, Any] = {"python": platform.python_version()}
    for mod in ("aiohttp", "orjson", "jinja2", "lxml", "aiosqlite"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version(mod)
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["atom-engine"] = version("atom-engine")
    wrk = _cmd_version(["wrk", "-v"])
    versions["wrk"] = wrk.split()[1] if wrk and len(wrk.split()) > 1 else wrk
    versions["node"] = _cmd_version(["node", "-v"])
    pkg = NODE_RED.parent / "package.json"
    if pkg.exists():
        versions["node-red"] = json.loads(pkg.read_text())["version"]
    rev = _cmd_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
            "os": f"{platform.system()} {platform.release()}", "git": rev,
            "load_avg": os.getloadavg(), "versions": versions}


def machine_line() -> str:
    m = machine()
    v = m["versions"]
    return (f"{m['cpu']} x{m['cores']} cores, {m['memory_gb']} GB, {m['os']}; Python {v['python']}, "
            f"aiohttp {v.get('aiohttp')}, wrk {v.get('wrk')}, node {v.get('node')}, node-red {v.get('node-red')}; "
            f"load average at start {m['load_avg'][0]:.2f} (the machine is shared: other work may run too)")


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"\n== {title}", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)


def atom_available() -> bool:
    """True when `atom serve` exists in this checkout."""
    try:
        out = subprocess.run([ATOM, "serve", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def note(msg: str) -> None:
    print(f"   note: {msg}", flush=True)
