"""Hot deployment: poll the component directory and call back when its files change.

The watcher compares a snapshot (path, modification time in ns, size) of the component files
(`loader.component_files`) every `interval` seconds. A change is reported once the directory has
stayed unchanged for a short settle time, so a file caught half-written is not loaded. Polling needs
no dependency and works on every file system (network shares and container volumes included).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from .loader import component_files

log = logging.getLogger("atom.watch")

Snapshot = tuple[tuple[str, int, int], ...]


def snapshot(directory: str | os.PathLike[str]) -> Snapshot:
    """(path, mtime_ns, size) of every component file; empty when the directory is missing."""
    out = []
    root = Path(directory)
    if not root.is_dir():
        return ()
    for p in component_files(root):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


class DirectoryWatcher:
    """Calls `on_change()` (awaited, never concurrently) after the directory's files changed."""

    def __init__(self, directory: str | os.PathLike[str], interval: float,
                 on_change: Callable[[], Awaitable[object]], settle: float | None = None) -> None:
        self.directory = directory
        self.interval = max(0.05, interval)
        self.settle = min(0.2, self.interval / 2) if settle is None else settle
        self.on_change = on_change
        self._last: Snapshot = ()
        self._task: asyncio.Task[None] | None = None

    async def start(self, snap: Snapshot | None = None) -> None:
        """Start polling; `snap` is the state already deployed (default: the directory now)."""
        self._last = await asyncio.to_thread(snapshot, self.directory) if snap is None else snap
        self._task = asyncio.ensure_future(self._loop())

    def reset(self, snap: Snapshot) -> None:
        self._last = snap

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                snap = await asyncio.to_thread(snapshot, self.directory)
                if snap == self._last:
                    continue
                while True:  # wait until the files stop changing
                    await asyncio.sleep(self.settle)
                    again = await asyncio.to_thread(snapshot, self.directory)
                    if again == snap:
                        break
                    snap = again
                self._last = snap
                await self.on_change()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching %s failed", self.directory)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
