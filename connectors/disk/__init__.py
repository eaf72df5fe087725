"""The `disk` connector: read, write, list, move and delete files under a local directory.

Writes are atomic: the content goes to a temp file in the target's directory, is flushed to disk
(fsync), and is renamed over the final name with `os.replace`; readers never see a partial file.
A `get` hands on files of `stream_threshold` bytes or more unread, as documents that read the file
under a private staged name (see `_staging`). Every blocking call runs in a worker thread so the event loop keeps
serving.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from atom.connector import OperationContext
from atom.document import Document
from atom.errors import ConnectorError
from atom.spec import Field, Size, Spec, Str

from .._files import (
    GET_SPEC,
    SEND_SPEC,
    STREAM_THRESHOLD,
    FileConnector,
    FileEntry,
    FileStore,
    TargetExists,
    _Session,
    below,
    join,
)
from ._staging import STAGING, FileDocument, Stage, Ticket, signature
from ._staging import fsync_dir as _fsync_dir

__all__ = ["DiskConnector"]

log = logging.getLogger("atom.connectors.disk")

GET_OPERATION = GET_SPEC.extend(
    Field("stream_threshold", Size(), default=STREAM_THRESHOLD,
          description="files of this size or larger are not read into memory: the document reads the "
                      "file as the process consumes it (a streamed split holds 1 MB at a time), from a "
                      "private staged name until the execution ends; 0 reads every file into memory",
          example="64MiB"),
    summary=GET_SPEC.summary + " Files of `stream_threshold` bytes or more are read as they are consumed.")

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
                    if not rel_dir and entry.name == STAGING:
                        continue
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
    operations: ClassVar[dict[str, Spec]] = {"get": GET_OPERATION, "send": SEND_SPEC}
    retrying: ClassVar[bool] = False

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.directory: str = str(config.get("directory", "."))
        self.base = ""
        self._stage: Stage | None = None

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
        await self._recover(None)

    async def stop(self) -> None:
        await super().stop()
        stage, self._stage = self._stage, None
        if stage is not None:  # files still staged keep it until they are settled
            await asyncio.to_thread(stage.close)

    async def open_store(self) -> FileStore:
        if not self.base:
            self.base = await asyncio.to_thread(os.path.realpath, self.directory)
        return DiskStore(self.base)

    async def acquire(self) -> FileStore:
        return await self.open_store()

    async def release(self, store: FileStore) -> None:
        return None

    # ---- large files
    def stage(self) -> Stage:
        if self._stage is None:
            if not self.base:
                self.base = os.path.realpath(self.directory)
            self._stage = Stage(DiskStore(self.base), f"connection '{self.name}' ({self.peer})")
        return self._stage

    async def _recover(self, ctx: OperationContext | None) -> None:
        """Put back the files staged by an Atom that stopped before settling them."""
        try:
            done = await asyncio.to_thread(self.stage().recover)
        except Exception:
            log.exception("connection '%s': recovering staged files failed", self.name)
            return
        for line in done:
            log.warning("%s", line)
            if ctx is not None:
                ctx.log("warning", line)

    async def get(self, op: Mapping[str, Any], docs: list[Document],
                  ctx: OperationContext) -> list[Document]:
        if int(op.get("stream_threshold") or 0) > 0:
            await self._recover(ctx)
        return await super().get(op, docs, ctx)

    async def stream(self, session: _Session, op: Mapping[str, Any], entry: FileEntry, props: dict[str, str],
                     directory: str, move_to: str | None, ctx: OperationContext) -> Document | None:
        threshold = int(op.get("stream_threshold") or 0)
        if threshold <= 0 or entry.size < threshold:
            return None
        after = str(op.get("after", "keep"))
        dst = join(move_to, below(entry.path, directory)) if after == "move" and move_to is not None else None
        if after == "move" and dst is None:
            return None
        where = self.where("read", entry.path)
        return await session.call("read", entry.path, self._staged, entry, after, dst, props, where, ctx)

    async def _staged(self, store: FileStore, entry: FileEntry, after: str, dst: str | None,
                      props: dict[str, str], where: str, ctx: OperationContext) -> Document | None:
        stage = self.stage()
        taking = asyncio.ensure_future(asyncio.to_thread(stage.take, entry.path, after, dst))
        try:
            ticket = await asyncio.shield(taking)
        except asyncio.CancelledError:  # the file may be staged all the same: then it goes back
            taking.add_done_callback(_abandon)
            raise
        if ticket is None:
            if after != "keep":
                return None  # read into memory, then deleted or moved at once
            # no hard link here: the document reads the file in place (one changed or removed since
            # fails the document when it is opened)
            path = stage.store._abs(entry.path)
            return FileDocument.backed_by(path, props, await asyncio.to_thread(signature, path), where)
        doc = ticket.document(props, where)
        ticket.follow(ctx, self._watchers)
        ctx.log("debug", f"connection '{self.name}': '{entry.path}' is read as a stream from '{ticket.data}'")
        return doc


def _abandon(taking: asyncio.Future[Ticket | None]) -> None:
    """Put back a file staged for a get that was cancelled meanwhile."""
    if taking.cancelled() or taking.exception() is not None:
        return
    ticket = taking.result()
    if ticket is not None:
        ticket.end("INPROCESS")
        ticket.release()
