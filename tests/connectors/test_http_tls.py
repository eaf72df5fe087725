"""HTTPS with a private CA made in the test: server verification, mutual TLS, verify: false."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atom.document import Document
from atom.errors import ConnectorError
from tests.connectors.test_http import Recorder, Starter, connection, operation, running, upstream


@pytest.fixture
async def started() -> AsyncIterator[Starter]:
    async with running() as start:
        yield start


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: Any, *,
           ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                        critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: Any = None, password: bytes | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        enc = (serialization.BestAvailableEncryption(password) if password
               else serialization.NoEncryption())
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, as PEM files."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("Atom Test CA", ca_key, _name("Atom Test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue("127.0.0.1", server_key, ca_cert.subject, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue("atom-client", client_key, ca_cert.subject, ca_key)
    return Pki(_write(d / "ca.pem", ca_cert), _write(d / "server.pem", server_cert),
               _write(d / "server.key", key=server_key), _write(d / "client.pem", client_cert),
               _write(d / "client.key", key=client_key),
               _write(d / "client-enc.key", key=client_key, password=b"kp-secret"))


def server_ssl(pki: Pki, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca)
    return ctx


async def hello(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    who = dict(x[0] for x in peer["subject"])["commonName"] if peer else "anonymous"
    return web.Response(text=f"hello {who}")


async def test_https_with_a_private_ca(aiohttp_server: Any, started: Any, pki: Pki) -> None:
    url = await upstream(aiohttp_server, {"GET /hi": hello}, ssl=server_ssl(pki))
    assert url.startswith("https://127.0.0.1:")
    conn = await started(connection({"url": url, "tls": {"ca_file": str(pki.ca)}}))
    [doc] = await conn.get(operation("get", {"path": "/hi"}), [], Recorder())
    assert doc.error is None and doc.text == "hello anonymous"


async def test_unknown_ca_is_a_tls_error_without_retry(aiohttp_server: Any, started: Any,
                                                       pki: Pki) -> None:
    url = await upstream(aiohttp_server, {"GET /hi": hello}, ssl=server_ssl(pki))
    conn = await started(connection({"url": url, "retry": {"attempts": 3, "backoff": "10ms"}}, name="tlsbad"))
    ctx = Recorder()
    [doc] = await conn.get(operation("get", {"path": "/hi"}), [], ctx)
    assert doc.error is not None
    assert doc.error.startswith(f"connection 'tlsbad': GET {url}/hi: TLS error: ")
    assert "certificate verify failed" in doc.error
    assert (doc.error_kind, doc.error_status) == ("unreachable", None)
    assert ctx.lines == []  # not retried


async def test_verify_false_works_and_warns(aiohttp_server: Any, started: Any, pki: Pki,
                                            caplog: pytest.LogCaptureFixture) -> None:
    url = await upstream(aiohttp_server, {"GET /hi": hello}, ssl=server_ssl(pki))
    with caplog.at_level(logging.WARNING, logger="atom.connectors.http"):
        conn = await started(connection({"url": url, "tls": {"verify": False}}, name="noverify"))
    assert "connection 'noverify': TLS certificate verification is off (tls.verify: false)" in caplog.text
    [doc] = await conn.get(operation("get", {"path": "/hi"}), [], Recorder())
    assert doc.text == "hello anonymous"


async def test_mutual_tls(aiohttp_server: Any, started: Any, pki: Pki) -> None:
    url = await upstream(aiohttp_server, {"POST /hi": hello}, ssl=server_ssl(pki, require_client_cert=True))
    op = operation("send", {"path": "/hi"})
    with_cert = await started(connection({"url": url, "tls": {
        "ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}}))
    [doc] = await with_cert.send(op, [Document(b"x")], Recorder())
    assert doc.error is None and doc.text == "hello atom-client"

    encrypted = await started(connection({"url": url, "tls": {
        "ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key_encrypted),
        "key_password": "kp-secret"}}, name="enc"))
    [doc] = await encrypted.send(op, [Document(b"x")], Recorder())
    assert doc.text == "hello atom-client"
    assert "kp-secret" not in repr(encrypted.describe())

    without = await started(connection({"url": url, "tls": {"ca_file": str(pki.ca)},
                                        "retry": {"attempts": 1}}, name="nocert"))
    [doc] = await without.send(op, [Document(b"x")], Recorder())
    assert doc.error is not None and doc.error.startswith(f"connection 'nocert': POST {url}/hi: ")


async def test_missing_tls_files_fail_at_start(tmp_path: Path, pki: Pki) -> None:
    conn = connection({"url": "https://127.0.0.1:9", "tls": {"ca_file": str(tmp_path / "nope.pem")}})
    with pytest.raises(ConnectorError, match=r"^connection 'api': cannot load tls.ca_file '.*nope.pem'"):
        await conn.start()
    conn = connection({"url": "https://127.0.0.1:9", "tls": {"cert_file": str(pki.client_cert),
                                                            "key_file": str(pki.client_key_encrypted),
                                                            "key_password": "wrong-pw"}})
    with pytest.raises(ConnectorError, match=r"^connection 'api': cannot load tls.cert_file") as info:
        await conn.start()
    assert "wrong-pw" not in str(info.value)
