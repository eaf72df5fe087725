"""`atom serve` as a subprocess on a free 127.0.0.1 port with a temporary data directory, driven by a
real HTTP client. Only the processes started here are stopped or killed, by PID; every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port

READY_TIMEOUT = 30.0


class Response:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def http(method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = 30.0) -> Response:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, dict(exc.headers.items()), exc.read())


class AtomServer:
    """One `atom serve` subprocess."""

    def __init__(self, workdir: Path, components: Path, env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.components = components
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "ATOM_DATA_DIR": str(self.data_dir), "ATOM_LOG_LEVEL": "info",
                    "ATOM_SHUTDOWN_GRACE_PERIOD": "20s", **(env or {})}
        self.log_path = workdir / f"atom-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AtomServer:
        cmd = [sys.executable, "-c", "from atom.cli import main; main()", "serve", str(self.components),
               "--host", "127.0.0.1", "--port", str(self.port)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"atom serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if http("GET", self.url + "/_admin/status", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"atom serve not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 30.0) -> Response:
        return http(method, self.url + path, body, headers, timeout)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (bounded) for the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def write(self, name: str, text: str) -> None:
        tmp = self.components / f".{name}.tmp"
        tmp.write_text(textwrap.dedent(text), encoding="utf-8")
        tmp.replace(self.components / name)

    def wait_record(self, eid: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            r = self.request("GET", f"/api/v1/executions/{eid}")
            if r.status == 200 and r.json()["status"] in statuses:
                return dict(r.json())
            assert time.monotonic() < deadline, f"{eid}: {r.status} {r.body[:200]!r}"
            time.sleep(0.05)


def write_components(directory: Path, files: Mapping[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


@pytest.fixture
def start_atom(tmp_path: Path) -> Iterator[Any]:
    """`start_atom(files, env=...)` -> a running AtomServer; every one started is stopped at the end."""
    started: list[AtomServer] = []

    def start(files: Mapping[str, str], env: Mapping[str, str] | None = None, name: str = "a") -> AtomServer:
        work = tmp_path / name
        work.mkdir(exist_ok=True)
        comp = write_components(work / "processes", files)
        srv = AtomServer(work, comp, env)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        if srv.proc is not None and srv.proc.poll() is None:
            try:
                srv.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                srv.kill()
