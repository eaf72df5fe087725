"""The `sftp` connector: files on an SSH server over SFTP (asyncssh, natively async).

Uploads go to a temp name (`.<name>.<8 hex>.part`) and are renamed onto the final name — with the
OpenSSH `posix-rename` extension when the server has it, which replaces an existing file atomically.
The server's host key is checked against a known_hosts file; `known_hosts: none` turns the check off
(with a warning at start) and must be written explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from collections.abc import Awaitable, Mapping
from typing import IO, Any, TypeVar

import asyncssh

from atom.errors import AUTH, REJECTED, TIMEOUT, UNREACHABLE, ConnectorError
from atom.resilience import NETWORK_FIELDS
from atom.spec import CheckContext, Field, Int, Spec, Str
from atom.yamlio import Where

from .._files import CHUNK, FileEntry, FileStore, RemoteFileConnector, TargetExists

__all__ = ["SftpConnector"]

log = logging.getLogger("atom.connectors.sftp")
T = TypeVar("T")

_DIR = asyncssh.FILEXFER_TYPE_DIRECTORY
_FILE = asyncssh.FILEXFER_TYPE_REGULAR
_LINK = asyncssh.FILEXFER_TYPE_SYMLINK
_UNKNOWN = asyncssh.FILEXFER_TYPE_UNKNOWN
#: asyncssh disconnects that a new attempt will not cure
_FINAL = (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable, asyncssh.IllegalUserName,
          asyncssh.ProtocolNotSupported, asyncssh.KeyExchangeFailed)


class SftpStore(FileStore):
    """One SSH connection with its SFTP channel."""

    def __init__(self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, base: str,
                 timeout: float) -> None:
        self.conn = conn
        self.sftp = sftp
        self.base = base
        self.timeout = timeout
        self._dirs: set[str] = {""}

    def _p(self, rel: str) -> str:
        if not rel:
            return self.base or "."
        return posixpath.join(self.base, rel) if self.base else rel

    async def _t(self, aw: Awaitable[T]) -> T:
        """Bound a metadata request by the connection timeout (transfers rely on keepalives)."""
        return await asyncio.wait_for(aw, self.timeout)

    async def scan(self, directory: str, recursive: bool) -> list[FileEntry]:
        out: list[FileEntry] = []
        pending = [directory]
        while pending:
            rel_dir = pending.pop()
            for item in await self._t(self.sftp.readdir(self._p(rel_dir))):
                name = str(item.filename)
                if name in (".", "..") or "/" in name or "\\" in name:  # no names that are paths
                    continue
                rel = f"{rel_dir}/{name}" if rel_dir else name
                attrs = item.attrs
                if attrs.type == _LINK:  # follow links to learn what they point to
                    try:
                        attrs = await self._t(self.sftp.stat(self._p(rel)))
                    except asyncssh.SFTPError:
                        continue  # dangling
                if attrs.type == _DIR:
                    if recursive:
                        pending.append(rel)
                elif attrs.type in (_FILE, _UNKNOWN):  # some servers do not say; try it as a file
                    mtime = float(attrs.mtime) if attrs.mtime is not None else None
                    out.append(FileEntry(rel, int(attrs.size or 0), mtime, sized=attrs.size is not None))
        return out

    async def read(self, path: str) -> bytes:
        async with self.sftp.open(self._p(path), "rb") as f:
            data = await f.read()
        return data.encode() if isinstance(data, str) else bytes(data)

    async def download(self, path: str, out: IO[bytes]) -> None:
        async with self.sftp.open(self._p(path), "rb") as f:
            while True:
                chunk = await f.read(CHUNK)
                if not chunk:
                    return
                await asyncio.to_thread(out.write, chunk.encode() if isinstance(chunk, str) else chunk)

    async def exists(self, path: str) -> bool:
        return await self._t(self.sftp.exists(self._p(path)))

    async def makedirs(self, directory: str) -> None:
        if directory not in self._dirs:
            await self._t(self.sftp.makedirs(self._p(directory), exist_ok=True))
            self._dirs.add(directory)

    async def upload(self, path: str, data: bytes) -> None:
        async with self.sftp.open(self._p(path), "wb") as f:
            await f.write(data)

    async def append(self, path: str, data: bytes) -> None:
        async with self.sftp.open(self._p(path), "ab") as f:
            await f.write(data)

    async def rename(self, src: str, dst: str, overwrite: bool) -> None:
        a, b = self._p(src), self._p(dst)
        if overwrite:
            try:
                await self._t(self.sftp.posix_rename(a, b))
                return
            except asyncssh.SFTPOpUnsupported:
                pass  # no posix-rename: replace in two steps
            if await self._t(self.sftp.exists(b)):
                await self._t(self.sftp.remove(b))
            await self._t(self.sftp.rename(a, b))
            return
        try:
            await self._t(self.sftp.rename(a, b))  # the standard rename never overwrites
        except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
            if await self._t(self.sftp.exists(b)):
                raise TargetExists(dst) from None
            raise

    async def delete(self, path: str) -> None:
        await self._t(self.sftp.remove(self._p(path)))

    async def close(self) -> None:
        try:
            self.sftp.exit()
            self.conn.close()
            await asyncio.wait_for(self.conn.wait_closed(), 5.0)
        except Exception:
            pass


class SftpConnector(RemoteFileConnector):
    """Files on an SSH server over SFTP; password or key authentication, host keys checked."""

    type = "sftp"
    summary = ("SFTP files: read them (get), upload documents with a temp name then rename, list, move "
               "or delete them (send).")
    connection_spec = Spec([
        Field("host", Str(), required=True, description="server host name or address", example="sftp.example.com"),
        Field("port", Int(minimum=1, maximum=65535), default=22, description="SSH port", example=2222),
        Field("username", Str(), required=True, description="login name", example="partner"),
        Field("password", Str(), secret=True, description="login password (or use private_key)",
              example="${SFTP_PASSWORD}"),
        Field("private_key", Str(), secret=True,
              description="private key for public key authentication: a file path, or the PEM / OpenSSH "
                          "text itself", example="${SFTP_KEY_FILE}"),
        Field("passphrase", Str(), secret=True, description="passphrase of an encrypted private_key",
              example="${SFTP_KEY_PASSPHRASE}"),
        Field("known_hosts", Str(),
              description="known_hosts file holding the server's host key (default: ~/.ssh/known_hosts); "
                          "`none` disables host key checking — only for tests, it logs a warning",
              example="/etc/atom/known_hosts"),
        Field("directory", Str(), default="",
              description="base directory on the server (absolute, or relative to the login directory); "
                          "every name in an operation is relative to it", example="upload"),
        Field("pool_size", Int(minimum=0), default=2,
              description="SSH connections kept open between calls (0: connect for every call)", example=2),
        *NETWORK_FIELDS,
    ])

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.host: str = config.get("host", "")
        self.port: int = int(config.get("port", 22))
        self.connect_timeout: float = float(config.get("connect_timeout", 10.0))
        self._key: asyncssh.SSHKey | None = None
        self._known_hosts: Any = ()
        self._loaded = False

    @classmethod
    def check_connection(cls, config: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        if "passphrase" in config and "private_key" not in config:
            ctx.error(where.key("passphrase"), "'passphrase' is only used with 'private_key'")
        return config

    @property
    def peer(self) -> str:
        return f"sftp {self.host}:{self.port}"

    async def start(self) -> None:
        await self._load()
        await super().start()

    async def _load(self) -> None:
        """Read the private key and the known hosts once (files are read in a worker thread)."""
        if self._loaded:
            return
        key = self.config.get("private_key")
        passphrase = self.config.get("passphrase")
        if key:
            try:
                if "-----BEGIN" in key:
                    self._key = asyncssh.import_private_key(key, passphrase)
                else:
                    self._key = await asyncio.to_thread(asyncssh.read_private_key, key, passphrase)
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError) as exc:
                what = "the inline private_key" if "-----BEGIN" in key else f"private_key '{key}'"
                reason = getattr(exc, "strerror", None) or str(exc)
                raise ConnectorError(self.scrub(f"connection '{self.name}' ({self.peer}): cannot load {what}: "
                                                f"{reason}")) from None
        hosts = self.config.get("known_hosts")
        if hosts is not None and str(hosts).lower() == "none":
            log.warning("connection '%s' (%s): host key checking is disabled (known_hosts: none); the "
                        "server's identity is not verified", self.name, self.peer)
            self._known_hosts = None
        else:
            path = os.path.expanduser(str(hosts) if hosts else "~/.ssh/known_hosts")
            try:
                self._known_hosts = await asyncio.to_thread(asyncssh.read_known_hosts, path)
            except OSError as exc:
                if hosts:  # named explicitly: it must be there
                    raise ConnectorError(f"connection '{self.name}' ({self.peer}): cannot read known_hosts "
                                         f"'{hosts}': {exc.strerror or exc}") from None
                self._known_hosts = asyncssh.import_known_hosts("")  # nothing trusted
        self._loaded = True

    async def open_store(self) -> FileStore:
        await self._load()
        password = self.config.get("password")
        if self._key is not None:
            client_keys: Any = [self._key]
        elif password:
            client_keys = None  # password only
        else:
            client_keys = ()  # the default keys of ~/.ssh
        conn = await asyncssh.connect(
            self.host, self.port, username=str(self.config.get("username", "")), password=password,
            client_keys=client_keys, known_hosts=self._known_hosts, config=None, agent_path=None,
            gss_host=None, connect_timeout=self.connect_timeout, login_timeout=self.timeout,
            keepalive_interval=max(5.0, self.timeout / 3), keepalive_count_max=3,
        )
        try:
            sftp = await asyncio.wait_for(conn.start_sftp_client(), self.timeout)
        except BaseException:
            conn.close()
            raise
        return SftpStore(conn, sftp, str(self.config.get("directory", "")), self.timeout)

    def translate(self, exc: Exception) -> ConnectorError:
        """Classify an asyncssh / socket failure. Kinds: a refused login or permission `auth`, an
        untrusted host key and SSH or network failures `unreachable`, timeouts `timeout`, any other
        SFTP refusal (no such file, file exists, ...) `rejected`."""
        if isinstance(exc, asyncssh.PermissionDenied):
            return ConnectorError(f"login refused: {exc.reason}", status=401, kind=AUTH)
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return ConnectorError(f"host key not trusted ({exc.reason}); add the server's key to known_hosts",
                                  kind=UNREACHABLE)
        if isinstance(exc, _FINAL):
            return ConnectorError(f"SSH error: {exc.reason}",
                                  kind=AUTH if isinstance(exc, asyncssh.IllegalUserName) else UNREACHABLE)
        if isinstance(exc, (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)):
            return ConnectorError(f"no such file or directory ({exc.reason})", status=404, kind=REJECTED)
        if isinstance(exc, asyncssh.SFTPPermissionDenied):
            return ConnectorError(f"permission denied ({exc.reason})", status=403, kind=AUTH)
        if isinstance(exc, asyncssh.SFTPFileAlreadyExists):
            return ConnectorError("the target file exists", status=409, kind=REJECTED)
        if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)):
            return ConnectorError(f"connection lost: {exc.reason}", retryable=True, kind=UNREACHABLE)
        if isinstance(exc, asyncssh.SFTPError):
            return ConnectorError(f"refused by the server: {exc.reason}", status=400, kind=REJECTED)
        if isinstance(exc, (asyncssh.DisconnectError, asyncssh.ChannelOpenError)):
            return ConnectorError(f"SSH connection failed: {exc.reason}", retryable=True, kind=UNREACHABLE)
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return ConnectorError(f"no answer within {self.timeout:g}s", retryable=True, kind=TIMEOUT)
        if isinstance(exc, OSError):
            return ConnectorError(f"network error: {exc.strerror or exc}", retryable=True, kind=UNREACHABLE)
        err = super().translate(exc)
        if isinstance(exc, TargetExists):
            err.kind = REJECTED
        return err
