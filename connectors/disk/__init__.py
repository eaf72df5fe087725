"""The `disk` connector: read, write, list, move and delete files under a local directory.

Writes are atomic: the content goes to a temp file in the target's directory, is flushed to disk
(fsync), and is renamed over the final name with `os.replace`; readers never see a partial file.
Every blocking call runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from atom.errors import ConnectorError
from atom.spec import Field, Spec, Str

from .._files import FileConnector, FileEntry, FileStore, TargetExists

__all__ = ["DiskConnector"]

#: errors of os.link meaning "hard links are not available here", not "the name is taken"
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
            errno.EACCES}


class DiskStore(FileStore):
    """Files under `base` (an absolute, resolved directory)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def _abs(self, rel: str, *, itself: bool = False) -> str:
        """The absolute path of `rel`. Its directory (with `itself`: the path itself) must resolve
        inside the base: a symbolic link may not lead out of the connection directory."""
        path = os.path.join(self.base, *rel.split("/")) if rel else self.base
        if rel:
            real = os.path.realpath(path if itself else os.path.dirname(path))
            if real != self.base and not real.startswith(self.base + os.sep):
                raise ConnectorError(f"'{rel}' is refused: it resolves outside the connection directory",
                                     status=400)
        return path

    # ---- async API (each call one trip to a worker thread)
    async def scan(self, directory: str, recursive: bool) -> list[FileEntry]:
        return await asyncio.to_thread(self._scan, directory, recursive)

    async def read(self, path: str) -> bytes:
        return await asyncio.to_thread(self._read, path)

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(lambda: os.path.lexists(self._abs(path)))

    async def makedirs(self, directory: str) -> None:
        if directory:
            await asyncio.to_thread(lambda: os.makedirs(self._abs(directory), exist_ok=True))

    async def upload(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self._upload, path, data)

    async def append(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self._append, path, data)

    async def rename(self, src: str, dst: str, overwrite: bool) -> None:
        await asyncio.to_thread(self._rename, src, dst, overwrite)

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(lambda: os.unlink(self._abs(path)))

    async def close(self) -> None:
        return None

    # ---- blocking parts
    def _scan(self, directory: str, recursive: bool) -> list[FileEntry]:
        out: list[FileEntry] = []
        pending = [directory]
        while pending:
            rel_dir = pending.pop()
            with os.scandir(self._abs(rel_dir, itself=True)) as it:
                for entry in it:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                pending.append(rel)
                            continue
                        if not entry.is_file():
                            continue
                        st = entry.stat()
                    except FileNotFoundError:  # removed while listing
                        continue
                    out.append(FileEntry(rel, st.st_size, st.st_mtime))
        return out

    def _read(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as f:
            return f.read()

    def _upload(self, path: str, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(self._abs(path), flags, 0o666)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append(self, path: str, data: bytes) -> None:
        with open(self._abs(path), "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _rename(self, src: str, dst: str, overwrite: bool) -> None:
        a, b = self._abs(src), self._abs(dst)
        if overwrite:
            os.replace(a, b)
        else:
            try:
                os.link(a, b)  # fails atomically when the name is taken
            except FileExistsError:
                raise TargetExists(dst) from None
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                if os.path.lexists(b):
                    raise TargetExists(dst) from None
                os.rename(a, b)
            else:
                os.unlink(a)
        _fsync_dir(os.path.dirname(b))


def _fsync_dir(path: str) -> None:
    """Make a rename durable (POSIX); best effort elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskConnector(FileConnector):
    """Files in a local directory (created at start when missing)."""

    type = "disk"
    summary = ("Local files: read them (get), write documents as files atomically, list, move or delete "
               "them (send).")
    connection_spec = Spec([
        Field("directory", Str(), required=True,
              description="base directory; relative paths start at the Atom's working directory; created "
                          "at start when missing. Every name in an operation is relative to it",
              example="./data/orders"),
    ])
    retrying: ClassVar[bool] = False

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.directory: str = str(config.get("directory", "."))
        self.base = ""

    @property
    def peer(self) -> str:
        return f"disk {self.directory}"

    async def start(self) -> None:
        def prepare() -> str:
            os.makedirs(self.directory, exist_ok=True)
            return os.path.realpath(self.directory)

        try:
            self.base = await asyncio.to_thread(prepare)
        except OSError as exc:
            raise ConnectorError(f"connection '{self.name}' ({self.peer}): cannot create the directory: "
                                 f"{exc.strerror or exc}") from None
        await super().start()

    async def open_store(self) -> FileStore:
        if not self.base:
            self.base = await asyncio.to_thread(os.path.realpath, self.directory)
        return DiskStore(self.base)

    async def acquire(self) -> FileStore:
        return await self.open_store()

    async def release(self, store: FileStore) -> None:
        return None
