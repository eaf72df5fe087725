"""What the file connectors (disk, ftp, sftp) share: the operation specs, safe relative names, and the
get / write / list / move / delete logic written once against a small `FileStore` interface.

A connector type only says how to open a `FileStore` (one session with the peer), how to name its
peer in messages, and how to translate its library's exceptions into `ConnectorError`s. Everything
else — patterns, `if_exists`, temp-name-then-rename, after-read actions, retries and the session
pool — lives here.

Paths handed to a store are POSIX, relative to the connection's `directory`, already checked by
`safe_path` (no absolute names, no `..`, no backslashes, no control characters).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime as _dt
import logging
import os
import posixpath
import re
import secrets
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar

from atom.connector import Connector, OperationContext
from atom.document import Document, dump_json
from atom.errors import AUTH, INVALID, REJECTED, TIMEOUT, ConnectorError, DocumentError
from atom.resilience import call_with_retry
from atom.spec import Bool, CheckContext, Duration, Enum, Field, Int, Size, Spec, Str, Template
from atom.yamlio import Where

if TYPE_CHECKING:
    from atom.engine import Execution

T = TypeVar("T")
log = logging.getLogger("atom.connectors.files")

#: Temp files of an upload in progress: `.<name>.<8 hex>.part`, in the target's directory.
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.part$")


# ------------------------------------------------------------------------------------------- names


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file found by a listing. `path` is relative to the connection directory (POSIX)."""

    path: str
    size: int
    mtime: float | None = None  # seconds since the epoch, UTC; None when the peer does not say
    sized: bool = True  # False when the peer did not give the size (`size` is then 0)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


class TargetExists(Exception):
    """Raised by `FileStore.rename(..., overwrite=False)` when the target name is taken."""


class PathRefused(ConnectorError):
    """A rendered file or directory name that would leave the connection directory."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False, status=400, kind=INVALID)


_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def safe_path(value: str, what: str = "file name", *, allow_empty: bool = False) -> str:
    """Normalise a rendered relative name (`a//b/./c.txt` -> `a/b/c.txt`).

    Raises PathRefused for absolute names, `..` parts, backslashes, control characters, and an empty
    result unless `allow_empty` (an empty directory means the connection directory itself).
    """
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise PathRefused(f"{what} {value!r} is refused: it contains control characters")
    if "\\" in value:
        raise PathRefused(f"{what} '{value}' is refused: backslashes are not allowed, use '/'")
    if value.startswith("/") or _DRIVE_RE.match(value):
        raise PathRefused(f"{what} '{value}' is refused: absolute paths are not allowed; names are "
                          "relative to the connection directory")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused(f"{what} '{value}' is refused: '..' would leave the connection directory")
    out = "/".join(parts)
    if not out and not allow_empty:
        raise PathRefused(f"{what} is empty")
    return out


def join(*parts: str) -> str:
    """Join relative POSIX parts, skipping empty ones."""
    return "/".join(p for p in parts if p)


def temp_name(path: str) -> str:
    """The temp name an upload of `path` is written under before its rename."""
    head, tail = posixpath.split(path)
    return join(head, f".{tail}.{secrets.token_hex(4)}.part")


def unique_candidates(path: str, limit: int = 1000) -> list[str]:
    """`a.csv`, `a-1.csv`, `a-2.csv`, ... (`limit` names in all)."""
    head, tail = posixpath.split(path)
    stem, ext = posixpath.splitext(tail)
    if not stem:  # '.profile' has no extension
        stem, ext = ext, ""
    return [path] + [join(head, f"{stem}-{i}{ext}") for i in range(1, limit)]


def iso_time(mtime: float | None) -> str:
    if mtime is None:
        return ""
    return _dt.datetime.fromtimestamp(mtime, _dt.UTC).isoformat(timespec="seconds")


def render(template: Any, scope: Mapping[str, Any]) -> str:
    """Render a Template field; a default that the spec filled in is a plain string."""
    return template if isinstance(template, str) else str(template.render(scope))


def below(path: str, directory: str) -> str:
    """`path` relative to `directory` (both relative to the connection directory)."""
    if directory and path.startswith(directory + "/"):
        return path[len(directory) + 1:]
    return path


def file_props(entry: FileEntry) -> dict[str, str]:
    props = {"file_name": entry.name, "file_path": entry.path, "file_size": str(entry.size)}
    if entry.mtime is not None:
        props["file_mtime"] = iso_time(entry.mtime)
    return props


# ------------------------------------------------------------------------------------------- file-backed documents

#: files of at least this many bytes are not read into memory by default
STREAM_THRESHOLD = 8 * 1024 * 1024
#: a download to a spool file holds at most this many bytes in memory at a time
CHUNK = 256 * 1024

Signature = tuple[int, int, int]


def signature(path: str) -> Signature:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def unlink(path: str) -> None:
    """Remove a file; one already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Path(str):
    """The path of a file as the documents backed by it hold it: one object for a document and all
    its copies, so that its finalizer runs once none of them is left."""


class FileDocument(Document):
    """A document that reads its file when consumed, and fails with a located message (instead of
    reading something else) when the file is gone or was changed since `get` picked it up."""

    __slots__ = ("_file", "_loaded", "_sig", "_where")
    _file: str
    _loaded: bool
    _sig: Signature
    _where: str

    @classmethod
    def backed_by(cls, path: str, props: dict[str, str], sig: Signature, where: str) -> FileDocument:
        doc = cls.from_file(path, props)
        assert isinstance(doc, FileDocument)
        doc._file, doc._sig, doc._where, doc._loaded = path, sig, where, False
        return doc

    def _copy_to(self, new: Document) -> None:
        assert isinstance(new, FileDocument)
        new._file, new._sig, new._where, new._loaded = self._file, self._sig, self._where, self._loaded

    def _verify(self) -> None:
        try:
            now = signature(self._file)
        except FileNotFoundError:
            raise DocumentError(f"{self._where}: the file is gone: it was removed after get picked it "
                                "up") from None
        except OSError as exc:
            raise DocumentError(f"{self._where}: {exc.strerror or exc}") from None
        if now != self._sig:
            raise DocumentError(f"{self._where}: the file was changed after get picked it up (it is "
                                "read as the process consumes it); not read")

    @property
    def data(self) -> bytes:
        if self._loaded:
            return super().data
        self._verify()
        try:
            data = super().data
        except OSError as exc:
            raise DocumentError(f"{self._where}: {exc.strerror or exc}") from None
        self._loaded = True
        return data

    def open(self) -> IO[bytes]:
        if self._loaded:
            return super().open()
        self._verify()
        try:
            return super().open()
        except OSError as exc:
            raise DocumentError(f"{self._where}: {exc.strerror or exc}") from None


class Lease:
    """A file behind file-backed documents: settled (`settle`) once the execution that read it has
    ended *and* no document refers to it any more, whichever comes last."""

    def __init__(self) -> None:
        self.outcome: str | None = None  # the execution's final status once ended ("" without one)
        self.released = False
        self.settled = False
        self._lock = threading.RLock()  # a finalizer may run in a thread holding it

    def hold(self, path: str, props: dict[str, str], where: str) -> FileDocument:
        """The document reading the file `path`; releasing its last copy settles the lease. Should
        this fail, the lease is settled as for an execution that did not finish."""
        held = _Path(path)
        weakref.finalize(held, self.release)
        try:
            doc = FileDocument.backed_by(held, props, signature(held), where)
            if getattr(doc, "_path", held) is not held:  # copies would not keep the file: read it now
                _ = doc.data
        except BaseException:
            self.end("INPROCESS")
            raise
        return doc

    def follow(self, ctx: OperationContext, watchers: set[asyncio.Task[None]]) -> None:
        """Record the end of the execution of `ctx` (at once without one); the waiting task is kept
        in `watchers` while it runs."""
        ex = ctx.execution
        if ex is None:
            self.end("")
            return
        task = asyncio.ensure_future(self.until_ended(ex))
        watchers.add(task)
        task.add_done_callback(watchers.discard)

    async def until_ended(self, ex: Execution) -> None:
        """Wait for `ex` to end, then record its status (also when cancelled: a status still
        INPROCESS counts as an execution that did not finish)."""
        try:
            await ex.done.wait()
        finally:
            self.end(ex.status)

    def end(self, status: str) -> None:
        with self._lock:
            if self.outcome is not None:
                return
            self.outcome = status
            go = self.released and not self.settled
            self.settled = self.settled or go
        if go:
            self._settle()

    def release(self) -> None:
        with self._lock:
            self.released = True
            go = self.outcome is not None and not self.settled
            self.settled = self.settled or go
        if go:
            self._settle()

    def settle(self) -> None:
        """What is done with the file once settled."""

    def _settle(self) -> None:
        try:
            self.settle()
        except Exception:  # runs from a finalizer: report, never raise
            log.exception("settling the file behind a document failed")


class Spool(Lease):
    """A private local copy of a remote file, deleted once settled."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def settle(self) -> None:
        unlink(self.path)


def spool_dir(ctx: OperationContext) -> str | None:
    """Where downloads of large files are spooled: `spool/` in the Atom's data directory (beside the
    execution store) when the execution has one, else None (the system's temp directory)."""
    engine = getattr(ctx.execution, "engine", None)
    store = getattr(getattr(engine, "recorder", None), "path", None)
    if store is None:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(store))), "spool")


#: spool directories this process has swept of files left by processes that are gone
_SWEPT: set[str] = set()


def _sweep_spool(directory: str) -> None:
    """Delete the spool files of processes that no longer run (an Atom that was killed while it held
    them): their names carry the pid of the process that made them."""
    if directory in _SWEPT:
        return
    _SWEPT.add(directory)
    me = os.getpid()
    for name in os.listdir(directory):
        m = _SPOOL_NAME.fullmatch(name)
        if m is None or int(m.group(1)) == me:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):  # another user's file in a shared temp directory
                unlink(os.path.join(directory, name))
        except OSError:
            pass  # alive, under another user


_SPOOL_NAME = re.compile(r"atom-spool-(\d+)-.*\.part")


def new_spool_file(directory: str | None) -> tuple[int, str]:
    """Create an empty private file (mode 0600) in `directory` (None: the temp directory); returns
    its open descriptor and path. The first time in a directory, files left there by processes that
    are gone are deleted."""
    d = directory if directory is not None else tempfile.gettempdir()
    if directory is not None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    _sweep_spool(d)
    return tempfile.mkstemp(prefix=f"atom-spool-{os.getpid()}-", suffix=".part", dir=d)


# ------------------------------------------------------------------------------------------- specs

DIRECTORY = Field("directory", Template(), default="",
                  description="subdirectory of the connection directory (template; empty: the "
                              "connection directory itself)", example="inbox/{{ process.region }}")
LIST_FIELDS = [
    Field("pattern", Str(), default="*",
          description="glob the file name must match (`*`, `?`, `[abc]`, case-sensitive); a pattern with "
                      "a `/` is matched against the path below `directory`", example="*.csv"),
    Field("recursive", Bool(), default=False, description="also look in subdirectories", example=True),
    Field("max_files", Int(minimum=0), default=0,
          description="at most this many files per call, after sorting (0: no limit)", example=100),
    Field("sort", Enum("name", "mtime"), default="name",
          description="order of the files: by path, or oldest modification time first", example="mtime"),
    Field("min_age", Duration(), default=0.0,
          description="skip files modified less than this long ago (still being written by someone "
                      "else)", example="30s"),
]
GET_SPEC = Spec([
    DIRECTORY,
    *LIST_FIELDS,
    Field("after", Enum("keep", "delete", "move"), default="keep",
          description="what to do with each file once read: keep it, delete it, or move it to `move_to`",
          example="move"),
    Field("move_to", Template(),
          description="with `after: move`: directory (relative to the connection directory) the files go "
                      "to, keeping their path below `directory`; a taken name gets a `-1`, `-2` suffix",
          example="archive/{{ now('%Y-%m-%d') }}"),
], summary="Read files: one document per file, with properties file_name, file_path, file_size, "
           "file_mtime. No matching file gives no documents.")

REMOTE_GET_SPEC = GET_SPEC.extend(
    Field("stream_threshold", Size(), default=STREAM_THRESHOLD,
          description="files of this size or larger are not read into memory: they are downloaded in "
                      "pieces to a private spool file of the Atom, which the document reads as the process "
                      "consumes it (a streamed split holds 1 MB at a time), deleted once the execution has "
                      "ended; 0 reads every file into memory",
          example="64MiB"),
    summary=GET_SPEC.summary + " Files of `stream_threshold` bytes or more are spooled to a local file "
                               "and read as they are consumed.")

SEND_SPEC = Spec([
    Field("action", Enum("write", "list", "move", "delete"), default="write",
          description="write: store each document as a file; list: one JSON document per matching file "
                      "(no content); move: move or rename the file each document names; delete: delete it",
          example="move"),
    Field("file_name", Template(),
          description="write: name of the file (default: the document's `file_name` property, else a new "
                      "uuid); move, delete: the file to act on (default: the document's `file_path` "
                      "property). May contain `/`; relative to `directory`",
          example="order-{{ doc.json.id }}.json"),
    DIRECTORY,
    Field("if_exists", Enum("overwrite", "fail", "append", "unique"), default="overwrite",
          description="when the target name is taken: replace the file (atomically), fail the document, "
                      "append to the file (write only), or add a `-1`, `-2` suffix", example="unique"),
    *LIST_FIELDS,
    Field("move_to", Template(),
          description="move: target directory, relative to the connection directory (default: the "
                      "file's own directory)", example="done"),
    Field("new_name", Template(),
          description="move: new file name (default: the same name)",
          example="{{ doc.props.file_name }}.done"),
    Field("if_missing", Enum("fail", "ignore"), default="fail",
          description="move, delete: when the file does not exist, fail the document or pass it on",
          example="ignore"),
], summary="Write documents as files (temp name, then rename), or list, move or delete files.")

_APPLIES = {
    "write": {"action", "file_name", "directory", "if_exists"},
    "list": {"action", "directory", "pattern", "recursive", "max_files", "sort", "min_age"},
    "move": {"action", "file_name", "directory", "move_to", "new_name", "if_exists", "if_missing"},
    "delete": {"action", "file_name", "directory", "if_missing"},
}


def check_file_operation(action: str, op: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
    """Load-time checks shared by the file connectors: fields that belong together."""
    # the keys written in the file (defaults are filled in by now); none known: nothing to compare
    given = {str(k) for k in where.node} if isinstance(where.node, Mapping) else set()
    if action == "get":
        if op.get("after") == "move" and "move_to" not in op:
            ctx.error(where.key("after"), "'after: move' needs 'move_to' (the directory files go to)")
        if "move_to" in given and op.get("after") != "move":
            ctx.error(where.key("move_to"), "'move_to' is only used with 'after: move'")
    elif action == "send":
        sub = op.get("action", "write")
        for name in sorted(given - _APPLIES.get(sub, set())):
            if name in SEND_SPEC.by_name:
                ctx.error(where.key(name), f"field '{name}' does not apply to action '{sub}'")
        if sub == "move":
            if "move_to" not in op and "new_name" not in op:
                ctx.error(where.location, "action 'move' needs 'move_to', 'new_name' or both")
            if op.get("if_exists") == "append":
                ctx.error(where.key("if_exists"), "'if_exists: append' does not apply to action 'move'")
    return op


# ------------------------------------------------------------------------------------------- stores


class FileStore(abc.ABC):
    """One open session with a file store. Used by one coroutine at a time.

    Library exceptions may escape any method; the connector's `translate` turns them into
    ConnectorErrors (and decides whether they are worth a retry).
    """

    @abc.abstractmethod
    async def scan(self, directory: str, recursive: bool) -> list[FileEntry]:
        """Files (not directories) in `directory`; a missing directory is an error."""

    @abc.abstractmethod
    async def read(self, path: str) -> bytes: ...

    async def download(self, path: str, out: IO[bytes]) -> None:
        """Write the content of `path` to `out`, holding at most `CHUNK` bytes or so at a time."""
        out.write(await self.read(path))

    @abc.abstractmethod
    async def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    async def makedirs(self, directory: str) -> None:
        """Create `directory` and its parents if missing (`""` is the connection directory)."""

    @abc.abstractmethod
    async def upload(self, path: str, data: bytes) -> None:
        """Create or truncate `path` with `data` (used for temp names only)."""

    @abc.abstractmethod
    async def append(self, path: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def rename(self, src: str, dst: str, overwrite: bool) -> None:
        """Rename a file. With `overwrite=False` raise TargetExists when `dst` is taken."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the session; never raises."""


# ------------------------------------------------------------------------------------------- connector


class FileConnector(Connector):
    """Base of the disk, ftp and sftp connectors: `get` reads files, `send` writes, lists, moves or
    deletes them.

    Contract: `get` with no input documents runs once; with input documents it runs once per
    document (templates see that document) and the files found replace it. No matching file gives
    no documents. A file that cannot be read, or whose after-read action fails, comes back as a
    failed document (its properties set, its content when it was read). In `send`, a document that
    fails is returned with its error set; the others go on.
    """

    operations: ClassVar[dict[str, Spec]] = {"get": GET_SPEC, "send": SEND_SPEC}
    #: network stores retry transient failures through atom.resilience; local disk does not
    retrying: ClassVar[bool] = True
    #: sessions idle longer than this are closed instead of reused
    idle_seconds: ClassVar[float] = 60.0

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.pool_size: int = int(config.get("pool_size", 2))
        self._idle: list[tuple[float, FileStore]] = []
        self._stopped = False
        self._secrets = [str(config[k]) for k in ("password", "passphrase", "private_key")
                         if config.get(k)]
        self._watchers: set[asyncio.Task[None]] = set()  # tasks waiting for executions to end

    @classmethod
    def check_operation(cls, action: str, op: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        return check_file_operation(action, op, where, ctx)

    # ---- what a store type provides
    @property
    @abc.abstractmethod
    def peer(self) -> str:
        """How messages name the peer: `ftp 127.0.0.1:21`, `disk ./data`."""

    @abc.abstractmethod
    async def open_store(self) -> FileStore:
        """Open one session (connect and log in)."""

    def translate(self, exc: Exception) -> ConnectorError:
        """Turn an exception of the store's library into a ConnectorError (message without location)."""
        if isinstance(exc, ConnectorError):
            return exc
        if isinstance(exc, TargetExists):
            return ConnectorError("the target file exists", status=409, kind=REJECTED)
        if isinstance(exc, FileExistsError):
            return ConnectorError("the file exists", status=409, kind=REJECTED)
        if isinstance(exc, FileNotFoundError):
            return ConnectorError("no such file or directory", status=404, kind=REJECTED)
        if isinstance(exc, PermissionError):
            return ConnectorError("permission denied", status=403, kind=AUTH)
        if isinstance(exc, IsADirectoryError):
            return ConnectorError("is a directory", status=400, kind=REJECTED)
        if isinstance(exc, NotADirectoryError):
            return ConnectorError("not a directory", status=400, kind=REJECTED)
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return ConnectorError(f"timed out after {self.timeout:g}s", retryable=self.retrying, kind=TIMEOUT)
        if isinstance(exc, OSError):
            return ConnectorError(f"{exc.strerror or exc}", retryable=self.retrying)
        return ConnectorError(f"{type(exc).__name__}: {exc}")

    # ---- lifecycle and pool
    async def start(self) -> None:
        self._stopped = False
        await super().start()

    async def stop(self) -> None:
        self._stopped = True
        idle, self._idle = self._idle, []
        for _, store in idle:
            await store.close()
        await super().stop()

    async def acquire(self) -> FileStore:
        now = time.monotonic()
        while self._idle:
            since, store = self._idle.pop()
            if now - since < self.idle_seconds:
                return store
            await store.close()
        return await self.open_store()

    async def release(self, store: FileStore) -> None:
        if not self._stopped and len(self._idle) < self.pool_size:
            self._idle.append((time.monotonic(), store))
        else:
            await store.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "peer": self.peer}

    # ---- messages
    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if len(s) >= 4:  # shorter ones would mangle every message (and are no secret anyway)
                text = text.replace(s, "***")
        return text

    def where(self, what: str, target: str) -> str:
        return f"connection '{self.name}' ({self.peer}): {what} '{target or '.'}'"

    def located(self, action: str, exc: Exception) -> str:
        """The message of a failure, naming the connection and peer if it does not yet."""
        text = str(exc)
        if text.startswith(f"connection '{self.name}' ("):
            return text
        return self.scrub(f"connection '{self.name}' ({self.peer}): {action}: {text}")

    def error(self, what: str, target: str, exc: ConnectorError) -> ConnectorError:
        detail = str(exc).removeprefix(f"connection '{self.name}': ")
        return ConnectorError(self.scrub(f"{self.where(what, target)}: {detail}"), retryable=False,
                              status=exc.status, kind=exc.kind)

    # ---- get
    async def get(self, op: Mapping[str, Any], docs: list[Document],
                  ctx: OperationContext) -> list[Document]:
        out: list[Document] = []
        async with _Session(self, ctx) as session:
            if not docs:
                try:
                    return await self._get_files(session, op, None, ctx)
                except DocumentError as exc:
                    raise ConnectorError(self.located("get", exc)) from None
            for doc in docs:
                try:
                    out.extend(await self._get_files(session, op, doc, ctx))
                except DocumentError as exc:
                    out.append(doc.fail(self.located("get", exc)))
        return out

    async def _get_files(self, session: _Session, op: Mapping[str, Any], doc: Document | None,
                         ctx: OperationContext) -> list[Document]:
        scope = ctx.scope(doc)
        directory = self._render_dir(op, "directory", scope, "get")
        move_to = self._render_dir(op, "move_to", scope, "get") if op.get("after") == "move" else None
        if move_to is not None and move_to == directory:
            raise self.error("get", directory,
                             ConnectorError("'move_to' is the directory files are read from"))
        entries = await self._list(session, op, directory, "get", skip=move_to)
        trace = doc.trace if doc is not None else ()  # a try_catch around the shape still catches
        out: list[Document] = []
        for entry in entries:
            props = file_props(entry)
            try:
                streamed = await self.stream(session, op, entry, props, directory, move_to, ctx)
                got = streamed if streamed is not None else await self.fetch(session, op, entry, props, ctx)
            except ConnectorError as exc:
                failed = Document(b"", props).fail(str(exc))
                failed.trace = trace
                out.append(failed)
                continue
            if streamed is not None:  # backed by the file; the after-read action is the stream's affair
                streamed.trace = trace
                out.append(streamed)
                continue
            got.trace = trace
            out.append(got)
            after = op.get("after", "keep")
            try:
                if after == "delete":
                    await session.call("delete", entry.path, _delete, entry.path)
                elif after == "move" and move_to is not None:
                    dst = join(move_to, below(entry.path, directory))
                    final = await session.call("move", entry.path, self._move, entry.path, dst, "unique")
                    ctx.log("debug", f"connection '{self.name}': moved '{entry.path}' to '{final}'")
            except ConnectorError as exc:
                got.fail(f"{exc} (the file was read; it stays where it is)")
        return out

    async def stream(self, session: _Session, op: Mapping[str, Any], entry: FileEntry, props: dict[str, str],
                     directory: str, move_to: str | None, ctx: OperationContext) -> Document | None:
        """A document of `entry` (properties `props`) that reads the file only as it is consumed, with the
        after-read action of `op` taken care of; None to read the file into memory and act at once (the
        default). A ConnectorError fails that file's document, as a failed read does."""
        return None

    async def fetch(self, session: _Session, op: Mapping[str, Any], entry: FileEntry, props: dict[str, str],
                    ctx: OperationContext) -> Document:
        """The document of `entry` (properties `props`), read into memory (the default); the after-read
        action follows. A ConnectorError fails that file's document."""
        return Document(await session.call("read", entry.path, _read, entry.path), props)

    async def _list(self, session: _Session, op: Mapping[str, Any], directory: str, what: str,
                    skip: str | None = None) -> list[FileEntry]:
        recursive = bool(op.get("recursive", False))
        entries = await session.call(what, directory, _scan, directory, recursive)
        pattern: str = op.get("pattern", "*")
        by_path = "/" in pattern
        min_age = float(op.get("min_age") or 0.0)
        cutoff = time.time() - min_age if min_age > 0 else None
        picked = []
        for e in entries:
            if TEMP_RE.match(e.name):
                continue
            if skip and (e.path == skip or e.path.startswith(skip + "/")):
                continue
            if not fnmatchcase(below(e.path, directory) if by_path else e.name, pattern):
                continue
            if cutoff is not None and e.mtime is not None and e.mtime > cutoff:
                continue
            picked.append(e)
        if op.get("sort") == "mtime":
            picked.sort(key=lambda e: (e.mtime or 0.0, e.path))
        else:
            picked.sort(key=lambda e: e.path)
        limit = int(op.get("max_files", 0) or 0)
        return picked[:limit] if limit else picked

    # ---- send
    async def send(self, op: Mapping[str, Any], docs: list[Document],
                   ctx: OperationContext) -> list[Document]:
        action = op.get("action", "write")
        out: list[Document] = []
        async with _Session(self, ctx) as session:
            for doc in docs:
                try:
                    if action == "list":
                        out.extend(await self._send_list(session, op, doc, ctx))
                    elif action == "move":
                        out.append(await self._send_move(session, op, doc, ctx))
                    elif action == "delete":
                        out.append(await self._send_delete(session, op, doc, ctx))
                    else:
                        out.append(await self._send_write(session, op, doc, ctx))
                except DocumentError as exc:
                    out.append(doc.fail(self.located(action, exc)))
        return out

    async def _send_write(self, session: _Session, op: Mapping[str, Any], doc: Document,
                          ctx: OperationContext) -> Document:
        scope = ctx.scope(doc)
        directory = self._render_dir(op, "directory", scope, "write")
        tmpl = op.get("file_name")
        raw = render(tmpl, scope) if tmpl is not None else (doc.props.get("file_name") or str(uuid.uuid4()))
        path = join(directory, self._safe(raw, "file name", "write"))
        mode = op.get("if_exists", "overwrite")
        final = await session.call("write", path, self._write, path, doc.data, mode)
        new = doc.copy()
        new.props.update(file_name=posixpath.basename(final), file_path=final, file_size=str(len(doc.data)))
        return new

    async def _write(self, store: FileStore, path: str, data: bytes, mode: str) -> str:
        """Write `data` under `path` (temp name, then rename). Returns the final path."""
        await store.makedirs(posixpath.dirname(path))
        if mode == "append":
            await store.append(path, data)
            return path
        if mode == "fail" and await store.exists(path):
            raise TargetExists(path)
        tmp = temp_name(path)
        await store.upload(tmp, data)
        try:
            return await self._rename(store, tmp, path, mode)
        except BaseException:
            try:
                await asyncio.shield(store.delete(tmp))
            except Exception:  # the rename error is the one worth reporting
                pass
            raise

    async def _rename(self, store: FileStore, src: str, dst: str, mode: str) -> str:
        if mode == "overwrite":
            await store.rename(src, dst, True)
            return dst
        if mode == "fail":
            await store.rename(src, dst, False)
            return dst
        for candidate in unique_candidates(dst):
            try:
                await store.rename(src, candidate, False)
                return candidate
            except TargetExists:
                continue
        raise ConnectorError(f"no free name found for '{dst}' (tried {dst} and 999 suffixed names)")

    async def _move(self, store: FileStore, src: str, dst: str, mode: str) -> str:
        await store.makedirs(posixpath.dirname(dst))
        return await self._rename(store, src, dst, mode)

    async def _send_list(self, session: _Session, op: Mapping[str, Any], doc: Document,
                         ctx: OperationContext) -> list[Document]:
        directory = self._render_dir(op, "directory", ctx.scope(doc), "list")
        entries = await self._list(session, op, directory, "list")
        out = []
        for e in entries:
            props = file_props(e)
            meta: dict[str, Any] = {**props, "file_size": e.size}
            new = Document(dump_json(meta), props)
            new.trace = doc.trace
            out.append(new)
        return out

    def _source(self, op: Mapping[str, Any], doc: Document, scope: dict[str, Any], what: str) -> str:
        directory = self._render_dir(op, "directory", scope, what)
        tmpl = op.get("file_name")
        raw = render(tmpl, scope) if tmpl is not None else doc.props.get("file_path", "")
        if not raw:
            raise self.error(what, directory, ConnectorError(
                "no file named: set 'file_name' or give the document a 'file_path' property"))
        return join(directory, self._safe(raw, "file name", what))

    async def _send_move(self, session: _Session, op: Mapping[str, Any], doc: Document,
                         ctx: OperationContext) -> Document:
        scope = ctx.scope(doc)
        src = self._source(op, doc, scope, "move")
        target_dir = (self._render_dir(op, "move_to", scope, "move") if op.get("move_to") is not None
                      else posixpath.dirname(src))
        name = op.get("new_name")
        target_name = self._safe(render(name, scope), "new name", "move") if name is not None \
            else posixpath.basename(src)
        dst = join(target_dir, target_name)
        if op.get("if_missing") == "ignore" and not await session.call("move", src, _exists, src):
            return doc
        mode = op.get("if_exists", "overwrite")
        final = await session.call("move", src, self._move, src, dst, mode)
        new = doc.copy()
        new.props.update(file_name=posixpath.basename(final), file_path=final)
        return new

    async def _send_delete(self, session: _Session, op: Mapping[str, Any], doc: Document,
                           ctx: OperationContext) -> Document:
        src = self._source(op, doc, ctx.scope(doc), "delete")
        if op.get("if_missing") == "ignore" and not await session.call("delete", src, _exists, src):
            return doc
        await session.call("delete", src, _delete, src)
        return doc

    # ---- names and templates
    def _safe(self, value: str, what: str, action: str) -> str:
        try:
            return safe_path(value, what)
        except PathRefused as exc:
            raise self.error(action, value, exc) from None

    def _render_dir(self, op: Mapping[str, Any], field: str, scope: dict[str, Any], action: str) -> str:
        tmpl = op.get(field)
        if tmpl is None:
            return ""
        value = render(tmpl, scope)
        try:
            return safe_path(value, field.replace("_", " "), allow_empty=True)
        except PathRefused as exc:
            raise self.error(action, value, exc) from None


class RemoteFileConnector(FileConnector):
    """A file connector whose files are on another host (ftp, sftp). `get` downloads a file of
    `stream_threshold` bytes or more (or of a size the listing does not give) in pieces to a private
    spool file, and hands on a document backed by that file; the spool file is deleted once the
    execution has ended and no document refers to it. The after-read action follows the download."""

    operations: ClassVar[dict[str, Spec]] = {"get": REMOTE_GET_SPEC, "send": SEND_SPEC}

    async def fetch(self, session: _Session, op: Mapping[str, Any], entry: FileEntry, props: dict[str, str],
                    ctx: OperationContext) -> Document:
        threshold = int(op.get("stream_threshold") or 0)
        if threshold <= 0 or (entry.sized and entry.size < threshold):
            return await super().fetch(session, op, entry, props, ctx)
        path = await session.call("read", entry.path, _spool, entry.path, spool_dir(ctx))
        try:
            size = os.path.getsize(path)
            if not entry.sized:
                props["file_size"] = str(size)
            if size < threshold:  # its size was not known: small after all
                data = await asyncio.to_thread(_read_local, path)
                unlink(path)
                return Document(data, props)
        except BaseException:
            unlink(path)
            raise
        spool = Spool(path)
        doc = spool.hold(path, props, self.where("read", entry.path))
        spool.follow(ctx, self._watchers)
        ctx.log("debug", f"connection '{self.name}': '{entry.path}' ({size} bytes) was spooled to a local "
                         "file; it is read as a stream")
        return doc


def _read_local(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def _spool(store: FileStore, path: str, directory: str | None) -> str:
    """Download `path` to a new spool file; returns the spool file's path (none is left on failure)."""
    fd, local = await asyncio.to_thread(new_spool_file, directory)
    try:
        with open(fd, "wb") as out:
            await store.download(path, out)
    except BaseException:
        unlink(local)
        raise
    return local


async def _scan(store: FileStore, directory: str, recursive: bool) -> list[FileEntry]:
    return await store.scan(directory, recursive)


async def _read(store: FileStore, path: str) -> bytes:
    return await store.read(path)


async def _exists(store: FileStore, path: str) -> bool:
    return await store.exists(path)


async def _delete(store: FileStore, path: str) -> None:
    await store.delete(path)


class _Session:
    """Holds one store for the span of a get or send call; reconnects after a transient failure and
    returns the store to the connector's pool at the end."""

    def __init__(self, conn: FileConnector, ctx: OperationContext) -> None:
        self.conn = conn
        self.ctx = ctx
        self.store: FileStore | None = None

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        store, self.store = self.store, None
        if store is not None:
            if exc[0] is None:
                await self.conn.release(store)
            else:
                await store.close()

    async def call(self, what: str, target: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(store, *args)`; failures raise a ConnectorError naming the connection, the peer,
        `what` and `target`."""
        conn = self.conn

        async def attempt() -> T:
            try:
                if self.store is None:
                    self.store = await conn.acquire()
                return await fn(self.store, *args)
            except Exception as exc:
                err = conn.translate(exc)
                if err.retryable and self.store is not None:
                    store, self.store = self.store, None
                    await store.close()
                raise err from None

        try:
            if not conn.retrying:
                return await attempt()
            return await call_with_retry(attempt, policy=conn.retry, breaker=conn.breaker,
                                         connection=conn.name, log=self._log)
        except ConnectorError as exc:
            raise conn.error(what, target, exc) from None

    def _log(self, level: str, message: str) -> None:
        self.ctx.log(level, self.conn.scrub(message))
