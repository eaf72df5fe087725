"""The ftp connector against a real pyftpdlib server on 127.0.0.1 (plain FTP and explicit FTPS)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import hashlib
import ipaddress
import tempfile
import threading
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # pyftpdlib still imports asyncore/asynchat (deprecated in 3.11)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from atom.connector import OperationContext
from atom.document import Document
from atom.spec import CheckContext, Spec
from atom.yamlio import Where
from connectors._files import FileDocument, FileEntry
from connectors.ftp import FtpConnector, FtpStore
from tests.services import free_port

CTX = OperationContext(None)
PASSWORD = "s3cret-Pa55"


def operation(action: str, node: dict[str, Any]) -> dict[str, Any]:
    ctx = CheckContext()
    where = Where("<test>", node)
    values = FtpConnector.operations[action].check(node, where, ctx)
    values = FtpConnector.check_operation(action, values, where, ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return values


def connection(name: str, cfg: dict[str, Any]) -> FtpConnector:
    ctx = CheckContext()
    where = Where("<test>", cfg)
    values = Spec(list(FtpConnector.connection_spec.fields)).check(cfg, where, ctx)
    values = FtpConnector.check_connection(values, where, ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return FtpConnector(name, values)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class Server:
    """A pyftpdlib server in a thread, recording the commands it receives."""

    def __init__(self, home: Path, handler_base: type[FTPHandler] = FTPHandler, *, user: str = "partner",
                 password: str = PASSWORD, **attrs: Any) -> None:
        self.home = home
        self.commands: list[str] = []
        commands = self.commands

        class Recorder(handler_base):  # type: ignore[valid-type,misc]
            auth_failed_timeout = 0

            def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
                commands.append(f"{cmd} {arg}".strip())
                super().pre_process_command(line, cmd, arg)

        for k, v in attrs.items():
            setattr(Recorder, k, v)
        auth = DummyAuthorizer()
        auth.add_user(user, password, str(home), perm="elradfmwMT")
        Recorder.authorizer = auth
        self.server = FTPServer(("127.0.0.1", 0), Recorder, ioloop=IOLoop())
        self.port: int = self.server.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.server.ioloop.loop(timeout=0.02, blocking=False)
        self.server.close_all()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def sent(self, *names: str) -> list[str]:
        return [c for c in self.commands if c.split(" ")[0] in names]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "home"
    home.mkdir()
    s = Server(home)
    yield s
    s.stop()


@pytest.fixture
async def ftp(server: Server) -> Any:
    conn = connection("partner", {"host": "127.0.0.1", "port": server.port, "username": "partner",
                                  "password": PASSWORD, "directory": "/", "timeout": "5s",
                                  "retry": {"attempts": 2, "backoff": "10ms"}})
    await conn.start()
    yield conn
    await conn.stop()


def put(server: Server, rel: str, data: str) -> None:
    p = server.home / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(data)


def listing(server: Server) -> list[str]:
    return sorted(str(p.relative_to(server.home)) for p in server.home.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------- get

async def test_get_with_pattern_then_delete(server: Server, ftp: FtpConnector) -> None:
    put(server, "out/a.csv", "alpha")
    put(server, "out/b.csv", "beta")
    put(server, "out/c.txt", "gamma")
    docs = await ftp.get(operation("get", {"directory": "out", "pattern": "*.csv", "after": "delete"}), [], CTX)
    assert [(d.data, d.props["file_path"], d.props["file_size"]) for d in docs] == [
        (b"alpha", "out/a.csv", "5"), (b"beta", "out/b.csv", "4")]
    assert all(d.error is None and d.props["file_mtime"].endswith("+00:00") for d in docs)
    assert listing(server) == ["out/c.txt"]


async def test_get_then_move(server: Server, ftp: FtpConnector) -> None:
    put(server, "out/a.csv", "alpha")
    put(server, "done/a.csv", "older")
    docs = await ftp.get(operation("get", {"directory": "out", "after": "move", "move_to": "done"}), [], CTX)
    assert [d.data for d in docs] == [b"alpha"]
    assert listing(server) == ["done/a-1.csv", "done/a.csv"]
    assert server.sent("RNFR", "RNTO") == ["RNFR /out/a.csv", "RNTO /done/a-1.csv"]


async def test_get_recursive_without_mlsd(tmp_path: Path) -> None:
    """Servers without MLSD are listed with NLST, SIZE and MDTM."""
    cmds = {k: v for k, v in FTPHandler.proto_cmds.items() if k not in ("MLSD", "MLST")}
    home = tmp_path / "home"
    home.mkdir()
    server = Server(home, proto_cmds=cmds)
    try:
        put(server, "a.csv", "a")
        put(server, "sub/b.csv", "bb")
        conn = connection("old", {"host": "127.0.0.1", "port": server.port, "username": "partner",
                                  "password": PASSWORD})
        docs = await conn.get(operation("get", {"recursive": True}), [], CTX)
        await conn.stop()
        assert [(d.props["file_path"], d.data) for d in docs] == [("a.csv", b"a"), ("sub/b.csv", b"bb")]
        assert docs[1].props["file_size"] == "2" and "file_mtime" in docs[1].props
        assert len(server.sent("MLSD", "OPTS")) == 1 and server.sent("NLST")
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------- send

async def test_put_uses_a_temp_name_then_renames(server: Server, ftp: FtpConnector) -> None:
    op = operation("send", {"file_name": "order-{{ doc.json.id }}.json", "directory": "in"})
    [out] = await ftp.send(op, [Document(b'{"id": 42}')], CTX)
    assert out.error is None and out.props["file_path"] == "in/order-42.json"
    stor = server.sent("STOR", "APPE", "RNFR", "RNTO")
    assert len(stor) == 3
    assert stor[0].startswith("STOR /in/.order-42.json.") and stor[0].endswith(".part")
    assert stor[1] == "RNFR " + stor[0][5:]
    assert stor[2] == "RNTO /in/order-42.json"  # the final name only ever appears complete
    assert listing(server) == ["in/order-42.json"]
    assert (server.home / "in/order-42.json").read_bytes() == b'{"id": 42}'


@pytest.mark.parametrize(("mode", "files", "final"), [
    ("overwrite", {"a.txt": "two"}, "a.txt"),
    ("append", {"a.txt": "onetwo"}, "a.txt"),
    ("unique", {"a.txt": "one", "a-1.txt": "two"}, "a-1.txt"),
])
async def test_put_if_exists(server: Server, ftp: FtpConnector, mode: str, files: dict[str, str],
                             final: str) -> None:
    put(server, "a.txt", "one")
    [out] = await ftp.send(operation("send", {"file_name": "a.txt", "if_exists": mode}), [Document(b"two")], CTX)
    assert out.error is None and out.props["file_path"] == final
    assert {p: (server.home / p).read_text() for p in listing(server)} == files


async def test_put_if_exists_fail(server: Server, ftp: FtpConnector) -> None:
    put(server, "a.txt", "one")
    [out] = await ftp.send(operation("send", {"file_name": "a.txt", "if_exists": "fail"}), [Document(b"x")], CTX)
    assert out.error is not None
    assert f"connection 'partner' (ftp 127.0.0.1:{server.port}): write 'a.txt'" in out.error
    assert "exists" in out.error and out.error_kind == "rejected"
    assert server.sent("STOR") == []
    assert (server.home / "a.txt").read_text() == "one"


async def test_put_refuses_traversal(server: Server, ftp: FtpConnector) -> None:
    docs = [Document(b"x", {"file_name": n}) for n in ("../../etc/x", "/abs.txt", "ok.txt")]
    out = await ftp.send(operation("send", {}), docs, CTX)
    assert [d.error is not None for d in out] == [True, True, False]
    assert "'..' would leave the connection directory" in (out[0].error or "")
    assert "absolute paths are not allowed" in (out[1].error or "")
    assert listing(server) == ["ok.txt"]


async def test_list_move_delete(server: Server, ftp: FtpConnector) -> None:
    put(server, "a.csv", "a")
    docs = await ftp.send(operation("send", {"action": "list"}), [Document(b"")], CTX)
    assert [d.props["file_path"] for d in docs] == ["a.csv"]
    [moved] = await ftp.send(operation("send", {"action": "move", "move_to": "x/y"}), docs, CTX)
    assert moved.error is None and listing(server) == ["x/y/a.csv"]
    [deleted] = await ftp.send(operation("send", {"action": "delete"}), [moved], CTX)
    assert deleted.error is None and listing(server) == []


async def test_sessions_are_reused(server: Server, ftp: FtpConnector) -> None:
    for i in range(3):
        await ftp.send(operation("send", {"file_name": f"{i}.txt"}), [Document(b"x")], CTX)
    await ftp.get(operation("get", {}), [], CTX)
    assert len(server.sent("USER")) == 1
    await ftp.stop()
    assert server.sent("QUIT") == ["QUIT"]  # the idle session is closed at stop


# ------------------------------------------------------------------------------------------- failures

async def test_server_down_fails_after_retries() -> None:
    port = free_port()
    conn = connection("partner", {"host": "127.0.0.1", "port": port, "password": PASSWORD,
                                  "retry": {"attempts": 3, "backoff": "10ms"}})
    with pytest.raises(Exception) as info:
        await conn.get(operation("get", {}), [], CTX)
    msg = str(info.value)
    assert f"connection 'partner' (ftp 127.0.0.1:{port}): get '.'" in msg
    assert "network error" in msg and "after 3 attempts" in msg
    assert getattr(info.value, "kind", None) == "unreachable"
    # two more failed attempts reach the breaker's threshold (5): the third is not even tried
    [out] = await conn.send(operation("send", {"file_name": "a.txt"}), [Document(b"x")], CTX)
    assert out.error is not None
    assert out.error.startswith(f"connection 'partner' (ftp 127.0.0.1:{port}): write 'a.txt': network error")
    assert "(after 2 attempts; then the circuit breaker is open" in out.error
    assert (out.error_kind, out.error_status) == ("unavailable", None)
    assert PASSWORD not in msg + out.error


async def test_wrong_password_fails_at_once(server: Server) -> None:
    conn = connection("partner", {"host": "127.0.0.1", "port": server.port, "username": "partner",
                                  "password": "wrong-Secret-1", "retry": {"attempts": 3, "backoff": "10ms"}})
    [out] = await conn.send(operation("send", {"file_name": "a.txt"}), [Document(b"x")], CTX)
    assert out.error is not None and "login refused: 530" in out.error
    assert (out.error_kind, out.error_status) == ("auth", None)
    assert "wrong-Secret-1" not in out.error
    assert len(server.sent("PASS")) == 1  # not retried
    await conn.stop()


def test_ca_file_needs_tls() -> None:
    ctx = CheckContext()
    cfg = {"host": "h", "ca_file": "ca.pem"}
    values = Spec(list(FtpConnector.connection_spec.fields)).check(cfg, Where("<test>", cfg), ctx)
    FtpConnector.check_connection(values, Where("<test>", cfg), ctx)
    assert [p.message for p in ctx.problems] == ["'ca_file' is only used with 'tls: true'"]


def test_password_is_secret_and_every_field_documented() -> None:
    fields = FtpConnector.connection_spec.by_name
    assert fields["password"].secret
    for spec in [FtpConnector.connection_spec, *FtpConnector.operations.values()]:
        for f in spec.fields:
            assert f.description, f.name


# ------------------------------------------------------------------------------------------- FTPS

async def test_ftps_with_a_trusted_certificate(tmp_path: Path) -> None:
    pytest.importorskip("OpenSSL", reason="pyftpdlib's FTPS server needs pyOpenSSL")
    from pyftpdlib.handlers import TLS_FTPHandler

    cert, key = self_signed(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    server = Server(home, TLS_FTPHandler, certfile=str(cert), keyfile=str(key),
                    tls_control_required=True, tls_data_required=True)
    try:
        conn = connection("secure", {"host": "127.0.0.1", "port": server.port, "username": "partner",
                                     "password": PASSWORD, "tls": True, "ca_file": str(cert)})
        await conn.start()
        [out] = await conn.send(operation("send", {"file_name": "s.txt"}), [Document(b"secret data")], CTX)
        assert out.error is None
        docs = await conn.get(operation("get", {}), [], CTX)
        assert [d.data for d in docs] == [b"secret data"]
        await conn.stop()
        assert server.sent("AUTH", "PROT") == ["AUTH TLS", "PROT P"]

        untrusted = connection("secure", {"host": "127.0.0.1", "port": server.port, "username": "partner",
                                          "password": PASSWORD, "tls": True})
        await untrusted.start()
        with pytest.raises(Exception, match="TLS certificate not trusted"):
            await untrusted.get(operation("get", {}), [], CTX)
        await untrusted.stop()
    finally:
        server.stop()


def test_the_docs_describe_every_field() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "connectors" / "ftp.md").read_text()
    for spec in [FtpConnector.connection_spec, *FtpConnector.operations.values()]:
        for f in spec.fields:
            assert f"| `{f.name}` |" in doc, f.name


# ------------------------------------------------------------------------------------------- large files

def records(server: Server, rel: str, n: int) -> bytes:
    """An XML file of `n` records of about 1 kB each on the server; returns its content."""
    rec = "<Record><Id>{}</Id><Text>" + "x" * 1000 + "</Text></Record>\n"
    data = ("<Root>\n" + "".join(rec.format(i) for i in range(n)) + "</Root>\n").encode()
    p = server.home / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return data


def sha256(f: Any) -> str:
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp directory, where spool files go without an execution store."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


async def test_a_large_file_is_spooled_and_read_as_a_file(server: Server, ftp: FtpConnector, spool: Path) -> None:
    data = records(server, "in/big.xml", 20_000)
    put(server, "in/small.xml", "<Root/>")
    docs = await ftp.get(operation("get", {"directory": "in", "stream_threshold": "1MiB", "after": "delete"}),
                         [], CTX)
    big, small = docs
    assert type(small) is Document and small.data == b"<Root/>"
    assert isinstance(big, FileDocument) and big.error is None
    assert big.props["file_size"] == str(len(data)) and big.props["file_path"] == "in/big.xml"
    [spooled] = list(spool.iterdir())
    assert spooled.name.startswith("atom-spool-") and spooled.stat().st_mode & 0o077 == 0
    with big.open() as f:
        assert sha256(f) == hashlib.sha256(data).hexdigest()
    assert listing(server) == []  # deleted once downloaded
    del docs, big, small, f  # (an open file names its path)
    gc.collect()
    assert list(spool.iterdir()) == []


async def test_a_file_of_unknown_size_is_spooled_and_kept_only_when_large(
        server: Server, ftp: FtpConnector, spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scan = FtpStore.scan

    async def no_sizes(self: FtpStore, directory: str, recursive: bool) -> list[FileEntry]:
        return [dataclasses.replace(e, size=0, sized=False) for e in await scan(self, directory, recursive)]

    monkeypatch.setattr(FtpStore, "scan", no_sizes)
    put(server, "in/a.txt", "a" * 5000)
    put(server, "in/b.txt", "b" * 50)
    docs = await ftp.get(operation("get", {"directory": "in", "stream_threshold": 1000}), [], CTX)
    assert [(type(d) is Document, d.props["file_size"], d.data) for d in docs] == [
        (False, "5000", b"a" * 5000), (True, "50", b"b" * 50)]
    assert len(list(spool.iterdir())) == 1
    del docs
    gc.collect()
    assert list(spool.iterdir()) == []


def test_a_large_file_is_split_as_it_is_read(server: Server, tmp_path: Path, spool: Path) -> None:
    """About 20 MB fetched and split by XPath through the engine: memory stays far below the file's
    size, every record comes out, and the spool file is gone once the execution has ended."""
    from atom.engine import Engine
    from atom.loader import load_directory

    n = 20_000
    size = len(records(server, "in/big.xml", n))
    comps = tmp_path / "components"
    comps.mkdir()
    (comps / "remote.yaml").write_text(f"connection: remote\ntype: ftp\nhost: 127.0.0.1\nport: {server.port}\n"
                                       f"username: partner\npassword: {PASSWORD}\ndirectory: /\n")
    (comps / "p.yaml").write_text("process: p\nstart:\n  connector:\n    connection: remote\n    operation: "
                                  "{directory: in, after: move, move_to: done, stream_threshold: 1MiB}\n"
                                  "shapes:\n  - {id: sp, split: {xpath: /Root/Record}}\n")
    dep = load_directory(comps)

    async def go() -> Any:
        eng = Engine(dep)
        try:
            return await eng.execute("p")
        finally:
            await eng.stop()

    tracemalloc.start()
    try:
        ex = asyncio.run(go())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ex.status == "COMPLETE", ex.message
    assert ex.shape_stats["sp"].docs_out == n
    assert peak < size // 4, peak
    assert listing(server) == ["done/big.xml"]
    gc.collect()
    assert list(spool.iterdir()) == []


def test_spool_files_of_a_process_that_is_gone_are_swept(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from connectors import _files

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    spool = tmp_path / "spool"
    spool.mkdir()
    left = spool / f"atom-spool-{dead_pid}-abc.part"
    left.write_bytes(b"left by a killed Atom")
    mine = spool / f"atom-spool-{os.getpid()}-def.part"
    mine.write_bytes(b"in use")
    other = spool / "unrelated.txt"
    other.write_bytes(b"x")
    fd, path = _files.new_spool_file(str(spool))
    os.close(fd)
    assert not left.exists() and mine.exists() and other.exists()
    assert Path(path).name.startswith(f"atom-spool-{os.getpid()}-")
