"""Helpers of the example tests: an example's own Python module, demo backends served by an event
loop in a background thread, and stopping `atom serve`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from tests.e2e.conftest import AtomServer
from tests.services import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example_module(path: Path, name: str) -> ModuleType:
    """Import a Python file that ships with an example (its demo backends) under `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def background_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a daemon thread, stopped and closed on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class BackgroundApp:
    """An aiohttp application on its own 127.0.0.1 port, served by `loop` (see background_loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, make_app: Callable[[], web.Application]) -> None:
        self.loop = loop
        self.make_app = make_app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runner: web.AppRunner | None = None

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    def start(self) -> None:
        async def go() -> web.AppRunner:
            runner = web.AppRunner(self.make_app(), shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self.runner = self._call(go())

    def stop(self) -> None:
        if self.runner is not None:
            self._call(self.runner.cleanup())
            self.runner = None


def stop_atom(atom: AtomServer) -> None:
    """Stop an `atom serve` subprocess: SIGTERM and a drain, else kill."""
    if atom.proc is not None:
        try:
            atom.terminate(timeout=15)
        except Exception:
            atom.kill()
