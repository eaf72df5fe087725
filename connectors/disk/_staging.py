"""Large files a disk `get` hands on unread: file-backed documents, and the staging directory behind them.

A file of `stream_threshold` bytes or more becomes a document that reads the file as it is consumed
(a streamed split reads it 1 MB at a time). The file it reads must stay as it was for as long as any
document may read it, so it is first given a private name under `<directory>/.atom-staging/<owner>/`:

- `after: delete` and `after: move` rename the file there (one atomic rename: it leaves the inbound
  directory at once, as a read-then-delete makes it do);
- `after: keep` makes a hard link there (the file stays where it is; one removed or replaced by
  someone else is still read whole, as it was).

Beside each staged file a manifest `<n>.json` says where it came from and where it goes. The staged
file is settled once the execution that read it has ended *and* no document refers to it any more
(the documents' path is one object, shared by every copy, whose finalizer reports the last release):
a finished execution (any status but ABORTED) deletes it, moves it to its `move_to` name, or drops
the link; an execution that did not finish puts the file back where it was, to be read again.

Each connector instance owns one directory, locked (`flock`) for as long as the instance has files
staged. A directory whose lock is free belongs to an Atom that stopped before settling its files:
`recover` puts them back where they came from (delete, move) or drops the links (keep).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
import secrets
import stat
import threading
from typing import TYPE_CHECKING

from atom.errors import ConnectorError

from .._files import FileDocument, Lease, PathRefused, Signature, TargetExists, safe_path, signature, unique_candidates

if TYPE_CHECKING:
    from . import DiskStore

__all__ = ["STAGING", "FileDocument", "Signature", "Stage", "Ticket", "fsync_dir", "place", "signature"]

try:
    import fcntl
except ImportError:  # no flock: files staged by an Atom that stopped are put back by hand
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("atom.connectors.disk")

#: the staging directory, in the connection directory (never listed by get or list)
STAGING = ".atom-staging"
_LOCK = "lock"
_NEW = ".new-"
#: execution statuses after which a staged file goes back where it came from
UNFINISHED = frozenset({"INPROCESS", "ABORTED"})
#: errors of os.link / os.rename meaning "not possible here", not "the file is missing"
_CANNOT = {errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS,
           errno.EACCES, errno.EROFS}

def fsync_dir(path: str) -> None:
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


def place(store: DiskStore, src: str, dst: str) -> str:
    """Rename `src` to `dst`, or to `dst` with a `-1`, `-2` ... suffix when taken; never overwrites.
    Returns the name used."""
    os.makedirs(store._abs(posixpath.dirname(dst), itself=True), exist_ok=True)
    for candidate in unique_candidates(dst):
        try:
            store._rename(src, candidate, False)
            return candidate
        except TargetExists:
            continue
    raise ConnectorError(f"no free name found for '{dst}' (tried {dst} and 999 suffixed names)")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Ticket(Lease):
    """One staged file: settled once its execution has ended and no document refers to it."""

    def __init__(self, stage: Stage, n: int, path: str, after: str, dst: str | None, data: str) -> None:
        super().__init__()
        self.stage = stage
        self.n = n
        self.path = path  # where it came from (relative to the connection directory)
        self.after = after
        self.dst = dst  # after: move: where it goes
        self.data = data  # the staged name (relative)

    @property
    def manifest(self) -> str:
        return f"{posixpath.dirname(self.data)}/{self.n}.json"

    def document(self, props: dict[str, str], where: str) -> FileDocument:
        """The document reading the staged file; releasing its last copy settles the ticket. Should
        this fail, the file goes back where it came from."""
        return self.hold(self.stage.store._abs(self.data), props, where)

    def _settle(self) -> None:
        try:
            self.stage.settle(self)
        except Exception:  # runs from a finalizer: report, never raise
            log.exception("settling the staged file '%s' (from '%s') failed", self.data, self.path)


class Stage:
    """The staging directory of one connector instance (made on first use)."""

    def __init__(self, store: DiskStore, label: str) -> None:
        self.store = store
        self.label = label  # `connection 'x' (disk ./data)`
        self.name = ""
        self._fd: int | None = None
        self._seq = 0
        self._pending: set[Ticket] = set()
        self._closing = False
        self._busy = 0
        self._lock = threading.RLock()  # a finalizer may run in a thread holding it

    @property
    def rel(self) -> str:
        return f"{STAGING}/{self.name}"

    def _open(self) -> None:
        """Make and lock the owner directory (under a temp name first, so it is never seen unlocked)."""
        root = self.store._abs(STAGING, itself=True)
        os.makedirs(root, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = os.path.join(root, _NEW + name)
        os.mkdir(tmp)
        fd = os.open(os.path.join(tmp, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, os.path.join(root, name))
        except BaseException:
            os.close(fd)
            raise
        fsync_dir(root)
        self.name, self._fd = name, fd

    def _remove(self) -> None:
        """Drop the owner directory and its lock; one still holding a file (a settling that failed)
        keeps its lock file, to be recovered. Called with `_lock` held."""
        if self._fd is None:
            return
        owner = self.store._abs(self.rel, itself=True)
        try:
            if not any(n != _LOCK for n in os.listdir(owner)):
                _unlink(os.path.join(owner, _LOCK))
                os.rmdir(owner)
        except OSError as exc:
            log.warning("%s: cannot remove the staging directory '%s': %s", self.label, self.rel,
                        exc.strerror or exc)
        finally:
            os.close(self._fd)
            self.name, self._fd = "", None

    def take(self, path: str, after: str, dst: str | None) -> Ticket | None:
        """Stage the file `path` (blocking). None when it cannot be staged here (not a regular file, no
        hard links, another file system, a staging directory that cannot be written)."""
        src = self.store._abs(path)
        if not stat.S_ISREG(os.lstat(src).st_mode):
            return None
        with self._lock:
            self._busy += 1  # first: a settling run by the garbage collector meanwhile must not remove it
            try:
                if self._fd is None:
                    try:
                        self._open()
                    except OSError as exc:
                        log.debug("%s: no staging directory (%s)", self.label, exc.strerror or exc)
                        return None
                self._seq += 1
                ticket = Ticket(self, self._seq, path, after, dst,
                                f"{self.rel}/{self._seq}-{posixpath.basename(path)}")
                self._pending.add(ticket)
            finally:
                self._busy -= 1
        try:
            manifest = self.store._abs(ticket.manifest)
            try:
                with open(manifest, "w", encoding="utf-8") as f:
                    json.dump({"path": path, "after": after, "move_to": dst,
                               "data": posixpath.basename(ticket.data)}, f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:  # a full disk, say: the file is not touched, read it as a small one
                log.debug("%s: cannot stage '%s' (%s)", self.label, path, exc.strerror or exc)
                _unlink(manifest)
                self._forget(ticket)
                return None
            data = self.store._abs(ticket.data)
            try:
                if after == "keep":
                    os.link(src, data, follow_symlinks=False)
                else:
                    os.rename(src, data)
            except OSError as exc:
                _unlink(manifest)
                if exc.errno in _CANNOT:
                    self._forget(ticket)
                    return None
                raise
            fsync_dir(os.path.dirname(data))
            if after != "keep":
                fsync_dir(os.path.dirname(src))
        except BaseException:
            self._forget(ticket)
            raise
        return ticket

    def _forget(self, ticket: Ticket) -> None:
        with self._lock:
            self._pending.discard(ticket)
            if self._closing and not self._pending and not self._busy:
                self._remove()

    def settle(self, ticket: Ticket) -> None:
        """Carry out the after-read action of a ticket whose execution has ended and whose documents
        are all gone; put the file back when the execution did not finish."""
        try:
            data = self.store._abs(ticket.data)
            finished = ticket.outcome not in UNFINISHED
            if ticket.after == "keep" or (finished and ticket.after == "delete"):
                _unlink(data)
            elif finished and ticket.dst is not None:
                try:
                    final = place(self.store, ticket.data, ticket.dst)
                except (OSError, ConnectorError) as exc:
                    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    final = place(self.store, ticket.data, ticket.path)
                    log.error("%s: moving '%s' to '%s' failed (%s); it was put back as '%s'", self.label,
                              ticket.path, ticket.dst, detail, final)
                else:
                    log.debug("%s: moved '%s' to '%s'", self.label, ticket.path, final)
            elif os.path.lexists(data):
                final = place(self.store, ticket.data, ticket.path)
                log.warning("%s: the execution that read '%s' did not finish (%s); the file was put back as "
                            "'%s'", self.label, ticket.path, ticket.outcome or "unknown", final)
            _unlink(self.store._abs(ticket.manifest))
        finally:
            self._forget(ticket)

    def close(self) -> None:
        """The connector stops: drop the owner directory now, or once its last staged file is settled."""
        with self._lock:
            self._closing = True
            if not self._pending and not self._busy:
                self._remove()

    def recover(self) -> list[str]:
        """Settle the files of owner directories whose lock is free (their Atom stopped): put staged
        files back where they came from, drop links. Returns what was done, one line each."""
        if fcntl is None:
            return []
        try:
            root = self.store._abs(STAGING, itself=True)
            entries = list(os.scandir(root))
        except (OSError, ConnectorError):
            return []
        done: list[str] = []
        for entry in entries:
            if entry.name == self.name or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(os.path.join(entry.path, _LOCK), os.O_RDWR)
            except OSError:  # gone: an owner removed its empty directory, or another Atom recovered it
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its owner is alive
                if not entry.name.startswith(_NEW):
                    done += self._recover_owner(entry.name)
                if not any(n != _LOCK for n in os.listdir(entry.path)):
                    _unlink(os.path.join(entry.path, _LOCK))
                    os.rmdir(entry.path)
            except FileNotFoundError:  # recovered by another Atom meanwhile
                continue
            except OSError as exc:
                done.append(f"{self.label}: recovering the staging directory '{STAGING}/{entry.name}' "
                            f"failed: {exc.strerror or exc}")
            finally:
                os.close(fd)
        return done

    def _recover_owner(self, owner: str) -> list[str]:
        done = []
        folder = f"{STAGING}/{owner}"
        for name in sorted(os.listdir(self.store._abs(folder, itself=True))):
            if not name.endswith(".json"):
                continue
            manifest = f"{folder}/{name}"
            try:
                with open(self.store._abs(manifest), encoding="utf-8") as f:
                    info = json.load(f)
                path = safe_path(str(info["path"]))
                data = f"{folder}/{safe_path(str(info['data']))}"
            except (OSError, ValueError, KeyError, TypeError, PathRefused) as exc:
                done.append(f"{self.label}: staged file manifest '{manifest}' is unreadable ({exc}); left as is")
                continue
            if os.path.lexists(self.store._abs(data)):
                if info.get("after") == "keep":
                    _unlink(self.store._abs(data))
                else:
                    final = place(self.store, data, path)
                    done.append(f"{self.label}: '{path}' was staged by an Atom that stopped before its "
                                f"execution ended; it was put back as '{final}'")
            _unlink(self.store._abs(manifest))
        return done
