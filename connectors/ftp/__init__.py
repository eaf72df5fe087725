"""The `ftp` connector: files on an FTP or FTPS (explicit TLS) server.

Built on the standard library's `ftplib`, run in worker threads so the event loop is never blocked.
Uploads go to a temp name (`.<name>.<8 hex>.part`) and are renamed (RNFR/RNTO) onto the final name,
so a reader polling the directory never picks up a partial file. Network failures are retried with
back-off (a broken session is replaced); a refused login is not retried.
"""

from __future__ import annotations

import asyncio
import calendar
import ftplib
import io
import logging
import posixpath
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar

from atom.errors import AUTH, REJECTED, TIMEOUT, UNREACHABLE, ConnectorError
from atom.resilience import NETWORK_FIELDS
from atom.spec import Bool, CheckContext, Field, Int, Spec, Str
from atom.yamlio import Where

from .._files import CHUNK, FileEntry, FileStore, RemoteFileConnector, TargetExists

__all__ = ["FtpConnector"]

log = logging.getLogger("atom.connectors.ftp")
T = TypeVar("T")


class _FtpTls(ftplib.FTP_TLS):
    """FTP_TLS that resumes the control connection's TLS session on data connections, as many servers
    (vsftpd, FileZilla Server, ProFTPD with TLSOptions) require."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = getattr(self.sock, "session", None)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def _code(exc: BaseException) -> str:
    return str(exc)[:3]


def _parse_mdtm(value: str) -> float | None:
    """`20240131120000` or `20240131120000.123` (UTC) -> epoch seconds."""
    try:
        head, _, frac = value.strip().partition(".")
        t = time.strptime(head[:14], "%Y%m%d%H%M%S")
        return calendar.timegm(t) + (float("0." + frac) if frac.isdigit() else 0.0)
    except ValueError:
        return None


class FtpStore(FileStore):
    """One logged-in ftplib session. Blocking calls run in a worker thread, one at a time."""

    def __init__(self, ftp: ftplib.FTP, base: str) -> None:
        self.ftp = ftp
        self.base = base
        self._dirs: set[str] = {""}
        self._mlsd = True
        self._binary = True  # ftplib switches to TYPE A for listings; SIZE needs TYPE I

    def _size(self, path: str) -> int | None:
        if not self._binary:
            self.ftp.voidcmd("TYPE I")
            self._binary = True
        return self.ftp.size(path)

    def _p(self, rel: str) -> str:
        if not rel:
            return self.base or "."
        return posixpath.join(self.base, rel) if self.base else rel

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # ---- listing
    async def scan(self, directory: str, recursive: bool) -> list[FileEntry]:
        return await self._run(self._scan, directory, recursive)

    def _scan(self, directory: str, recursive: bool) -> list[FileEntry]:
        out: list[FileEntry] = []
        pending = [directory]
        while pending:
            rel_dir = pending.pop()
            for name, kind, size, mtime in self._entries(rel_dir):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if kind == "dir":
                    if recursive:
                        pending.append(rel)
                elif kind == "file":
                    out.append(FileEntry(rel, size or 0, mtime, sized=size is not None))
        return out

    def _entries(self, rel_dir: str) -> list[tuple[str, str, int | None, float | None]]:
        """(name, kind, size or None when not given, mtime) of each entry of `rel_dir`."""
        path = self._p(rel_dir)
        if self._mlsd:
            try:
                out = []
                self._binary = False
                for name, facts in self.ftp.mlsd(path, facts=["type", "size", "modify"]):
                    kind = facts.get("type", "").lower()
                    if kind in ("cdir", "pdir") or name in (".", "..") or "/" in name or "\\" in name:
                        continue
                    size = int(facts["size"]) if facts.get("size", "").isdigit() else None
                    mtime = _parse_mdtm(facts["modify"]) if "modify" in facts else None
                    out.append((name, "dir" if kind == "dir" else "file" if kind == "file" else kind,
                                size, mtime))
                return out
            except ftplib.error_perm as exc:
                if _code(exc) not in ("500", "501", "502", "504"):
                    raise
                self._mlsd = False  # no MLSD: names from NLST, sizes and times from SIZE and MDTM
        entries: list[tuple[str, str, int | None, float | None]] = []
        try:
            self._binary = False
            names = self.ftp.nlst(path)
        except ftplib.error_perm as exc:
            if "no files" in str(exc).lower():
                return []
            raise
        for raw in names:
            name = posixpath.basename(raw.rstrip("/"))
            if name in (".", ".."):
                continue
            full = posixpath.join(path, name)
            try:
                got = self._size(full)
            except ftplib.error_perm:
                entries.append((name, "dir", 0, None))  # not a plain file
                continue
            mtime = None
            try:
                mtime = _parse_mdtm(self.ftp.voidcmd(f"MDTM {full}")[4:])
            except ftplib.error_perm:
                pass
            entries.append((name, "file", got, mtime))
        return entries

    # ---- files
    async def read(self, path: str) -> bytes:
        def fetch() -> bytes:
            chunks: list[bytes] = []
            self.ftp.retrbinary(f"RETR {self._p(path)}", chunks.append)
            return b"".join(chunks)

        return await self._run(fetch)

    async def download(self, path: str, out: IO[bytes]) -> None:
        await self._run(self.ftp.retrbinary, f"RETR {self._p(path)}", out.write, CHUNK)

    def _exists(self, path: str) -> bool:
        try:
            self._size(self._p(path))
            return True
        except ftplib.error_perm as exc:
            if _code(exc) == "550":
                return False
            raise

    async def exists(self, path: str) -> bool:
        return await self._run(self._exists, path)

    async def makedirs(self, directory: str) -> None:
        if directory in self._dirs:
            return

        def make() -> None:
            parts = directory.split("/")
            for i in range(1, len(parts) + 1):
                rel = "/".join(parts[:i])
                if rel in self._dirs:
                    continue
                try:
                    self.ftp.mkd(self._p(rel))
                except ftplib.error_perm:
                    pass  # exists already (or not allowed: the upload then says so)
                self._dirs.add(rel)

        await self._run(make)

    async def upload(self, path: str, data: bytes) -> None:
        await self._run(self.ftp.storbinary, f"STOR {self._p(path)}", io.BytesIO(data))

    async def append(self, path: str, data: bytes) -> None:
        await self._run(self.ftp.storbinary, f"APPE {self._p(path)}", io.BytesIO(data))

    async def rename(self, src: str, dst: str, overwrite: bool) -> None:
        def move() -> None:
            if not overwrite and self._exists(dst):
                raise TargetExists(dst)
            try:
                self.ftp.rename(self._p(src), self._p(dst))
            except ftplib.error_perm:
                # Some servers refuse RNTO onto an existing name: replace it in two steps.
                if not overwrite or not self._exists(dst):
                    raise
                self.ftp.delete(self._p(dst))
                self.ftp.rename(self._p(src), self._p(dst))

        await self._run(move)

    async def delete(self, path: str) -> None:
        await self._run(self.ftp.delete, self._p(path))

    async def close(self) -> None:
        def bye() -> None:
            try:
                self.ftp.quit()
            except Exception:
                self.ftp.close()

        try:
            await asyncio.to_thread(bye)
        except Exception:
            pass


class FtpConnector(RemoteFileConnector):
    """Files on an FTP server; FTPS (explicit, `AUTH TLS`) with `tls: true`."""

    type = "ftp"
    summary = ("FTP / FTPS files: read them (get), upload documents with a temp name then rename, list, "
               "move or delete them (send).")
    connection_spec = Spec([
        Field("host", Str(), required=True, description="server host name or address", example="ftp.example.com"),
        Field("port", Int(minimum=1, maximum=65535), default=21, description="control port", example=2121),
        Field("username", Str(), default="anonymous", description="login name", example="partner"),
        Field("password", Str(), default="", secret=True, description="login password",
              example="${FTP_PASSWORD}"),
        Field("passive", Bool(), default=True,
              description="passive mode (the client opens data connections; works through NAT and "
                          "firewalls)", example=True),
        Field("tls", Bool(), default=False,
              description="explicit FTPS: AUTH TLS on the control connection, protected data connections",
              example=True),
        Field("tls_verify", Bool(), default=True,
              description="verify the server certificate and host name (turn off only for tests)",
              example=True),
        Field("ca_file", Str(), description="PEM file of the CA certificates to trust (default: the system's)",
              example="/etc/atom/partner-ca.pem"),
        Field("directory", Str(), default="",
              description="base directory on the server (absolute, or relative to the login directory); "
                          "every name in an operation is relative to it", example="/outgoing"),
        Field("pool_size", Int(minimum=0), default=2,
              description="logged-in sessions kept open between calls (0: log in for every call)",
              example=2),
        *NETWORK_FIELDS,
    ])

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.host: str = config.get("host", "")
        self.port: int = int(config.get("port", 21))
        self.connect_timeout: float = float(config.get("connect_timeout", 10.0))
        self._ssl: ssl.SSLContext | None = None

    @classmethod
    def check_connection(cls, config: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        if "ca_file" in config and not config.get("tls"):
            ctx.error(where.key("ca_file"), "'ca_file' is only used with 'tls: true'")
        return config

    @property
    def peer(self) -> str:
        return f"{'ftps' if self.config.get('tls') else 'ftp'} {self.host}:{self.port}"

    async def start(self) -> None:
        if self.config.get("tls"):
            self._ssl = await asyncio.to_thread(self._tls_context)
        await super().start()

    def _tls_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.config.get("ca_file"))
        except (OSError, ssl.SSLError) as exc:
            raise ConnectorError(f"connection '{self.name}' ({self.peer}): cannot load ca_file "
                                 f"'{self.config.get('ca_file')}': {exc}") from None
        if not self.config.get("tls_verify", True):
            log.warning("connection '%s': TLS certificate verification is off", self.name)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def open_store(self) -> FileStore:
        return FtpStore(await asyncio.to_thread(self._login), str(self.config.get("directory", "")))

    def _login(self) -> ftplib.FTP:
        tls = bool(self.config.get("tls"))
        if tls and self._ssl is None:
            self._ssl = self._tls_context()
        ftp: ftplib.FTP = _FtpTls(context=self._ssl) if tls else ftplib.FTP()
        try:
            ftp.connect(self.host, self.port, timeout=self.connect_timeout)
            ftp.timeout = self.timeout  # data connections and every later reply
            if ftp.sock is not None:
                ftp.sock.settimeout(self.timeout)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
            ftp.login(str(self.config.get("username", "anonymous")), str(self.config.get("password", "")))
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(bool(self.config.get("passive", True)))
            ftp.voidcmd("TYPE I")
        except BaseException:
            ftp.close()
            raise
        return ftp

    def translate(self, exc: Exception) -> ConnectorError:
        """Classify an ftplib / socket failure. Kinds: a refused login is `auth`, any other permanent
        (5xx) refusal `rejected`, timeouts `timeout`, network and TLS failures `unreachable`."""
        if isinstance(exc, ftplib.error_perm):
            code, text = _code(exc), str(exc)
            if code == "530":
                return ConnectorError(f"login refused: {text}", status=401, kind=AUTH)
            if code in ("550", "553", "450"):
                return ConnectorError(f"refused by the server: {text}", status=404 if code == "550" else 403,
                                      kind=REJECTED)
            return ConnectorError(f"refused by the server: {text}", status=400, kind=REJECTED)
        if isinstance(exc, ftplib.error_temp):
            return ConnectorError(f"temporary failure: {exc}", retryable=True)
        if isinstance(exc, (ftplib.error_reply, ftplib.error_proto)):
            return ConnectorError(f"unexpected answer: {exc}", retryable=True)
        if isinstance(exc, EOFError):
            return ConnectorError("the server closed the connection", retryable=True, kind=UNREACHABLE)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ConnectorError(f"TLS certificate not trusted: {exc.verify_message or exc}", kind=UNREACHABLE)
        if isinstance(exc, ssl.SSLError):
            return ConnectorError(f"TLS error: {exc}", retryable=True, kind=UNREACHABLE)
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return ConnectorError(f"no answer within {self.timeout:g}s", retryable=True, kind=TIMEOUT)
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError)):
            return ConnectorError(f"network error: {exc.strerror or exc}", retryable=True, kind=UNREACHABLE)
        err = super().translate(exc)
        if isinstance(exc, (TargetExists, FileNotFoundError)):
            err.kind = REJECTED
        elif isinstance(exc, PermissionError):
            err.kind = AUTH
        return err
