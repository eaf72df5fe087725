"""The sftp connector against a real asyncssh SFTP server on 127.0.0.1 (password and key login)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import tempfile
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncssh
import pytest

from atom.connector import OperationContext
from atom.document import Document
from atom.spec import CheckContext, Spec
from atom.yamlio import Where
from connectors._files import FileDocument
from connectors.sftp import SftpConnector
from tests.services import free_port

CTX = OperationContext(None)
PASSWORD = "sftp-Pa55-word"


def operation(action: str, node: dict[str, Any]) -> dict[str, Any]:
    ctx = CheckContext()
    where = Where("<test>", node)
    values = SftpConnector.operations[action].check(node, where, ctx)
    values = SftpConnector.check_operation(action, values, where, ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return values


def connection(cfg: dict[str, Any], name: str = "partner") -> SftpConnector:
    ctx = CheckContext()
    where = Where("<test>", cfg)
    values = Spec(list(SftpConnector.connection_spec.fields)).check(cfg, where, ctx)
    values = SftpConnector.check_connection(values, where, ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return SftpConnector(name, values)


class Server:
    """An asyncssh SFTP server chrooted to `home`, recording logins and file requests."""

    def __init__(self, home: Path, client_key: asyncssh.SSHKey) -> None:
        self.home = home
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = client_key
        self.requests: list[tuple[str, ...]] = []
        self.logins: list[str] = []
        self.port = 0
        self._acceptor: asyncssh.SSHAcceptor | None = None

    async def start(self) -> None:
        server = self

        class Auth(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                server.logins.append(username)
                return username == "partner" and password == PASSWORD

        class Recording(asyncssh.SFTPServer):
            def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
                super().__init__(chan, chroot=str(server.home).encode())

            def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
                mode = "write" if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND) else "read"
                server.requests.append(("open", mode, path.decode()))
                return super().open(path, pflags, attrs)

            def rename(self, oldpath: bytes, newpath: bytes) -> None:
                server.requests.append(("rename", oldpath.decode(), newpath.decode()))
                super().rename(oldpath, newpath)

            def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
                server.requests.append(("posix_rename", oldpath.decode(), newpath.decode()))
                super().posix_rename(oldpath, newpath)

            def remove(self, path: bytes) -> None:
                server.requests.append(("remove", path.decode()))
                super().remove(path)

        keys = asyncssh.import_authorized_keys(self.client_key.export_public_key().decode())
        self._acceptor = await asyncssh.create_server(
            Auth, "127.0.0.1", 0, server_host_keys=[self.host_key], authorized_client_keys=keys,
            sftp_factory=Recording, gss_host=None)
        self.port = self._acceptor.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()

    def known_hosts(self, tmp: Path) -> str:
        path = tmp / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.port} {self.host_key.export_public_key().decode()}")
        return str(path)

    def writes(self) -> list[tuple[str, ...]]:
        return [r for r in self.requests if r[0] != "open" or r[1] == "write"]


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
async def server(tmp_path: Path, client_key: asyncssh.SSHKey) -> Any:
    home = tmp_path / "home"
    home.mkdir()
    s = Server(home, client_key)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def sftp(server: Server, tmp_path: Path) -> Any:
    conn = connection({"host": "127.0.0.1", "port": server.port, "username": "partner", "password": PASSWORD,
                       "known_hosts": server.known_hosts(tmp_path), "timeout": "5s",
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

async def test_get_with_pattern_then_delete(server: Server, sftp: SftpConnector) -> None:
    put(server, "out/a.csv", "alpha")
    put(server, "out/b.txt", "beta")
    put(server, "out/sub/c.csv", "gamma")
    docs = await sftp.get(operation("get", {"directory": "out", "pattern": "*.csv", "after": "delete"}), [], CTX)
    assert [(d.data, d.props["file_path"], d.props["file_size"]) for d in docs] == [(b"alpha", "out/a.csv", "5")]
    assert docs[0].props["file_mtime"].endswith("+00:00")
    assert listing(server) == ["out/b.txt", "out/sub/c.csv"]


async def test_get_recursive_then_move(server: Server, sftp: SftpConnector) -> None:
    put(server, "in/a.csv", "a")
    put(server, "in/x/b.csv", "b")
    op = operation("get", {"directory": "in", "recursive": True, "after": "move", "move_to": "done"})
    docs = await sftp.get(op, [], CTX)
    assert [d.props["file_path"] for d in docs] == ["in/a.csv", "in/x/b.csv"]
    assert listing(server) == ["done/a.csv", "done/x/b.csv"]


async def test_login_with_a_key_file_and_passphrase(server: Server, client_key: asyncssh.SSHKey,
                                                    tmp_path: Path) -> None:
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(client_key.export_private_key("pkcs8-pem", "key-pass"))
    put(server, "k.txt", "by key")
    conn = connection({"host": "127.0.0.1", "port": server.port, "username": "partner",
                       "private_key": str(key_file), "passphrase": "key-pass",
                       "known_hosts": server.known_hosts(tmp_path)})
    await conn.start()
    docs = await conn.get(operation("get", {}), [], CTX)
    await conn.stop()
    assert [d.data for d in docs] == [b"by key"]
    assert server.logins == []  # no password was tried


async def test_login_with_an_inline_key(server: Server, client_key: asyncssh.SSHKey, tmp_path: Path) -> None:
    conn = connection({"host": "127.0.0.1", "port": server.port, "username": "partner",
                       "private_key": client_key.export_private_key("openssh").decode(),
                       "known_hosts": server.known_hosts(tmp_path)})
    await conn.start()
    [out] = await conn.send(operation("send", {"file_name": "k.txt"}), [Document(b"inline")], CTX)
    await conn.stop()
    assert out.error is None and (server.home / "k.txt").read_bytes() == b"inline"


# ------------------------------------------------------------------------------------------- send

async def test_put_uses_a_temp_name_then_posix_rename(server: Server, sftp: SftpConnector) -> None:
    put(server, "in/order.json", "old")
    [out] = await sftp.send(operation("send", {"directory": "in", "file_name": "order.json"}),
                            [Document(b"new")], CTX)
    assert out.error is None and out.props["file_path"] == "in/order.json"
    [(op1, mode, temp), (op2, src, dst)] = server.writes()
    assert (op1, mode) == ("open", "write") and temp.startswith("in/.order.json.") and temp.endswith(".part")
    assert (op2, src, dst) == ("posix_rename", temp, "in/order.json")  # the final name is never written to
    assert listing(server) == ["in/order.json"]
    assert (server.home / "in/order.json").read_text() == "new"


async def test_put_without_posix_rename_replaces_in_two_steps(server: Server, sftp: SftpConnector,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async def unsupported(self: Any, old: Any, new: Any) -> None:
        raise asyncssh.SFTPOpUnsupported("POSIX rename not supported")

    monkeypatch.setattr(asyncssh.SFTPClient, "posix_rename", unsupported)
    put(server, "a.txt", "old")
    [out] = await sftp.send(operation("send", {"file_name": "a.txt"}), [Document(b"new")], CTX)
    assert out.error is None
    assert [r[0] for r in server.writes()] == ["open", "remove", "rename"]
    assert (server.home / "a.txt").read_text() == "new" and listing(server) == ["a.txt"]


@pytest.mark.parametrize(("mode", "files", "final"), [
    ("append", {"a.txt": "onetwo"}, "a.txt"),
    ("unique", {"a.txt": "one", "a-1.txt": "two"}, "a-1.txt"),
])
async def test_put_if_exists(server: Server, sftp: SftpConnector, mode: str, files: dict[str, str],
                             final: str) -> None:
    put(server, "a.txt", "one")
    [out] = await sftp.send(operation("send", {"file_name": "a.txt", "if_exists": mode}), [Document(b"two")], CTX)
    assert out.error is None and out.props["file_path"] == final
    assert {p: (server.home / p).read_text() for p in listing(server)} == files


async def test_put_if_exists_fail(server: Server, sftp: SftpConnector) -> None:
    put(server, "a.txt", "one")
    [out] = await sftp.send(operation("send", {"file_name": "a.txt", "if_exists": "fail"}), [Document(b"x")], CTX)
    assert out.error is not None
    assert out.error == f"connection 'partner' (sftp 127.0.0.1:{server.port}): write 'a.txt': the target file exists"
    assert out.error_kind == "rejected"
    assert (server.home / "a.txt").read_text() == "one" and listing(server) == ["a.txt"]


async def test_put_refuses_traversal(server: Server, sftp: SftpConnector) -> None:
    out = await sftp.send(operation("send", {"directory": "{{ doc.props.d }}"}),
                          [Document(b"x", {"d": "../..", "file_name": "x"}), Document(b"y", {"d": "ok"})], CTX)
    assert out[0].error is not None and "'..' would leave the connection directory" in out[0].error
    assert out[1].error is None
    assert listing(server) == [f"ok/{out[1].props['file_name']}"]


async def test_list_move_delete(server: Server, sftp: SftpConnector) -> None:
    put(server, "a.csv", "a")
    docs = await sftp.send(operation("send", {"action": "list", "pattern": "*.csv"}), [Document(b"")], CTX)
    [moved] = await sftp.send(operation("send", {"action": "move", "new_name": "a.done"}), docs, CTX)
    assert moved.props["file_path"] == "a.done" and listing(server) == ["a.done"]
    [gone] = await sftp.send(operation("send", {"action": "delete"}), [moved], CTX)
    assert gone.error is None and listing(server) == []


# ------------------------------------------------------------------------------------------- failures

async def test_server_down_fails_after_retries(tmp_path: Path) -> None:
    port = free_port()
    conn = connection({"host": "127.0.0.1", "port": port, "username": "partner", "password": PASSWORD,
                       "known_hosts": "none", "retry": {"attempts": 2, "backoff": "10ms"}})
    await conn.start()
    with pytest.raises(Exception) as info:
        await conn.get(operation("get", {}), [], CTX)
    msg = str(info.value)
    assert msg.startswith(f"connection 'partner' (sftp 127.0.0.1:{port}): get '.': network error")
    assert "after 2 attempts" in msg and PASSWORD not in msg
    assert getattr(info.value, "kind", None) == "unreachable"


async def test_wrong_password_fails_at_once(server: Server, tmp_path: Path) -> None:
    conn = connection({"host": "127.0.0.1", "port": server.port, "username": "partner", "password": "Wr0ng-pass",
                       "known_hosts": server.known_hosts(tmp_path), "retry": {"attempts": 3, "backoff": "10ms"}})
    await conn.start()
    [out] = await conn.send(operation("send", {"file_name": "a.txt"}), [Document(b"x")], CTX)
    assert out.error is not None and "write 'a.txt': login refused" in out.error
    assert (out.error_kind, out.error_status) == ("auth", None)
    assert "Wr0ng-pass" not in out.error
    assert server.logins == ["partner"]  # one try, no retry
    assert listing(server) == []


async def test_unknown_host_key_is_refused(server: Server, tmp_path: Path) -> None:
    other = tmp_path / "other_hosts"
    other.write_text(f"[127.0.0.1]:{server.port} "
                     f"{asyncssh.generate_private_key('ssh-ed25519').export_public_key().decode()}")
    conn = connection({"host": "127.0.0.1", "port": server.port, "username": "partner", "password": PASSWORD,
                       "known_hosts": str(other), "retry": {"attempts": 3, "backoff": "10ms"}})
    await conn.start()
    with pytest.raises(Exception, match="host key not trusted") as info:
        await conn.get(operation("get", {}), [], CTX)
    assert getattr(info.value, "kind", None) == "unreachable"
    assert server.logins == []


async def test_known_hosts_none_warns(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    put(server, "a.txt", "a")
    conn = connection({"host": "127.0.0.1", "port": server.port, "username": "partner", "password": PASSWORD,
                       "known_hosts": "none"})
    with caplog.at_level(logging.WARNING, "atom.connectors.sftp"):
        await conn.start()
    assert "host key checking is disabled" in caplog.text
    assert [d.data for d in await conn.get(operation("get", {}), [], CTX)] == [b"a"]
    await conn.stop()


async def test_bad_key_fails_at_start_without_leaking_it(tmp_path: Path) -> None:
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-TOPSECRET\n-----END OPENSSH PRIVATE KEY-----\n"
    conn = connection({"host": "127.0.0.1", "username": "u", "private_key": pem, "known_hosts": "none"})
    with pytest.raises(Exception, match="cannot load the inline private_key") as info:
        await conn.start()
    assert "TOPSECRET" not in str(info.value)


def test_passphrase_needs_a_key() -> None:
    ctx = CheckContext()
    cfg = {"host": "h", "username": "u", "passphrase": "p"}
    values = Spec(list(SftpConnector.connection_spec.fields)).check(cfg, Where("<test>", cfg), ctx)
    SftpConnector.check_connection(values, Where("<test>", cfg), ctx)
    assert [p.message for p in ctx.problems] == ["'passphrase' is only used with 'private_key'"]
    assert all(SftpConnector.connection_spec.by_name[f].secret for f in ("password", "private_key", "passphrase"))


def test_the_docs_describe_every_field() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "connectors" / "sftp.md").read_text()
    for spec in [SftpConnector.connection_spec, *SftpConnector.operations.values()]:
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


async def test_a_large_file_is_spooled_in_the_data_directory(server: Server, sftp: SftpConnector,
                                                             tmp_path: Path) -> None:
    """With an execution store, spool files go to `spool/` beside it, and stay until the execution
    has ended and the documents are released."""
    data = records(server, "in/big.xml", 20_000)
    put(server, "in/small.xml", "<Root/>")
    ex = SimpleNamespace(engine=SimpleNamespace(recorder=SimpleNamespace(path=tmp_path / "data" / "atom.db")),
                         done=asyncio.Event(), status="INPROCESS", scope=CTX.scope, log=lambda *a: None)
    ctx = OperationContext(ex)  # type: ignore[arg-type]
    docs = await sftp.get(operation("get", {"directory": "in", "stream_threshold": "1MiB"}), [], ctx)
    big, small = docs
    assert type(small) is Document and small.data == b"<Root/>"
    assert isinstance(big, FileDocument) and big.props["file_size"] == str(len(data))
    assert hashlib.sha256(big.data).hexdigest() == hashlib.sha256(data).hexdigest()
    spool = tmp_path / "data" / "spool"
    assert len(list(spool.iterdir())) == 1
    del docs, big, small
    gc.collect()
    assert len(list(spool.iterdir())) == 1  # the execution still runs
    ex.status = "COMPLETE"
    ex.done.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert list(spool.iterdir()) == []
    assert listing(server) == ["in/big.xml", "in/small.xml"]


async def test_a_large_file_is_split_as_it_is_read(server: Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """About 20 MB fetched and split by lines through the engine: memory stays far below the file's
    size, every line comes out, and the spool file is gone once the execution has ended."""
    from atom.engine import Engine
    from atom.loader import load_directory

    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    n = 20_000
    size = len(records(server, "in/big.txt", n))
    comps = tmp_path / "components"
    comps.mkdir()
    (comps / "remote.yaml").write_text(
        f"connection: remote\ntype: sftp\nhost: 127.0.0.1\nport: {server.port}\nusername: partner\n"
        f"password: {PASSWORD}\nknown_hosts: {server.known_hosts(tmp_path)}\n")
    (comps / "p.yaml").write_text("process: p\nstart:\n  connector:\n    connection: remote\n    operation: "
                                  "{directory: in, after: delete, stream_threshold: 1MiB}\n"
                                  "shapes:\n  - {id: sp, split: {lines: true}}\n")
    eng = Engine(load_directory(comps))
    tracemalloc.start()
    try:
        ex = await eng.execute("p")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await eng.stop()
    assert ex.status == "COMPLETE", ex.message
    assert ex.shape_stats["sp"].docs_out == n + 2
    assert peak < size // 3, peak  # the SFTP server's buffers, in this process, count too
    assert listing(server) == []
    gc.collect()
    assert list(spool.iterdir()) == []
