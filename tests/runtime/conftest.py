"""Build an Atom through the runtime factory, on a real aiohttp test server on 127.0.0.1 port 0, with
a temporary data directory and a temporary component directory written by the test."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from atom.config import load_config
from atom.runtime import Runtime


@dataclass
class Atom:
    client: TestClient[Any, Any]
    runtime: Runtime
    components: Path
    data_dir: Path

    def write(self, name: str, text: str) -> None:
        """Write a component file atomically (write + rename, as editors do)."""
        tmp = self.components / f".{name}.tmp"
        tmp.write_text(textwrap.dedent(text), encoding="utf-8")
        tmp.replace(self.components / name)

    async def record(self, eid: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/executions/{eid}")
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    async def wait_status(self, eid: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll the record until its status is one of `statuses` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            rec = await self.record(eid)
            if rec["status"] in statuses:
                return rec
            assert time.monotonic() < deadline, f"execution {eid} still {rec['status']}"
            await asyncio.sleep(0.02)


MakeAtom = Callable[..., Awaitable[Atom]]


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond()` (bounded) until it is true."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
def make_atom(tmp_path: Path, aiohttp_client: Any) -> MakeAtom:
    """`await make_atom({"file.yaml": text}, config="yaml text", env={...})` -> Atom."""
    counter = [0]

    async def make(files: dict[str, str] | None = None, config: str = "", env: dict[str, str] | None = None,
                   watch: bool = False, server_kwargs: dict[str, Any] | None = None) -> Atom:
        counter[0] += 1
        base = tmp_path / f"atom{counter[0]}"
        comp = base / "processes"
        comp.mkdir(parents=True)
        for name, text in (files or {}).items():
            (comp / name).write_text(textwrap.dedent(text), encoding="utf-8")
        cfg_file = base / "atom.yaml"
        cfg_file.write_text(textwrap.dedent(config), encoding="utf-8")
        full_env = {"ATOM_COMPONENTS": str(comp), "ATOM_DATA_DIR": str(base / "data"),
                    "ATOM_WATCH_ENABLED": "true" if watch else "false", "ATOM_WATCH_INTERVAL": "0.1",
                    "ATOM_SHUTDOWN_GRACE_PERIOD": "5s", **(env or {})}
        cfg = load_config(str(cfg_file), env=full_env)
        rt = Runtime(cfg)
        client = await aiohttp_client(rt.app, server_kwargs=server_kwargs or {})
        return Atom(client, rt, comp, base / "data")

    return make


ECHO_JSON = """
process: echo
start:
  listen: {operation: execute, object: Echo, input: json, output: json}
shapes:
  - {id: r, return: {}}
"""

SLOW_PEER = """
connection: slowpeer
type: test
delay: {delay}
"""

SLOW = """
process: slow
mode: {mode}
allow_simultaneous: {simultaneous}
start:
  listen: {{object: Slow, input: data, output: data{extra}}}
shapes:
  - {{id: k, connector: {{connection: slowpeer, action: send, operation: {{reply: "done {{{{ doc.text }}}}"}}}}}}
  - {{id: r, return: {{}}}}
"""


def slow_files(delay: str = "300ms", mode: str = "general", simultaneous: bool = True,
               extra: str = "") -> dict[str, str]:
    """A listener POST /ws/simple/executeSlow that answers `done <body>` after `delay`."""
    return {"slowpeer.yaml": SLOW_PEER.format(delay=delay),
            "slow.yaml": SLOW.format(mode=mode, simultaneous=str(simultaneous).lower(), extra=extra)}
