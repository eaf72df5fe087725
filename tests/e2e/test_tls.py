"""HTTPS on server.https_port (certificate and key from the configuration), with and without client
certificates (server.tls.client_ca), against `atom serve` as a subprocess."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

ECHO = """
process: echo
start:
  listen: {object: Echo, input: json, output: json}
shapes:
  - {id: r, return: {}}
"""


def _cert(name: str, key: Any, issuer_name: str, issuer_key: Any, *, ca: bool = False,
          ip: str | None = None) -> Any:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: Any = None, key: Any = None) -> str:
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("atom", srv_key, "test-ca", ca_key, ip="127.0.0.1")
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("client", cli_key, "test-ca", ca_key)
    return {"ca": _write(tmp_path / "ca.pem", ca), "cert": _write(tmp_path / "srv.pem", srv),
            "key": _write(tmp_path / "srv.key", key=srv_key), "client_cert": _write(tmp_path / "cli.pem", cli),
            "client_key": _write(tmp_path / "cli.key", key=cli_key)}


def _post(url: str, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b'{"tls": true}', method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return r.status, r.read()


def test_https_and_mutual_tls(start_atom: Any, pki: dict[str, str]) -> None:
    https_port = free_port()
    srv = start_atom({"echo.yaml": ECHO}, env={"ATOM_SERVER_HTTPS_PORT": str(https_port),
                                                "ATOM_SERVER_TLS_CERT": pki["cert"],
                                                "ATOM_SERVER_TLS_KEY": pki["key"]}, name="tls")
    url = f"https://127.0.0.1:{https_port}/ws/simple/executeEcho"
    ctx = ssl.create_default_context(cafile=pki["ca"])
    assert _post(url, ctx) == (200, b'{"tls": true}')
    # plain HTTP keeps working beside it
    assert srv.request("POST", "/ws/simple/executeEcho", b"{}").status == 200
    assert srv.terminate() == 0

    https_port = free_port()
    srv = start_atom({"echo.yaml": ECHO}, env={"ATOM_SERVER_HTTPS_PORT": str(https_port),
                                                "ATOM_SERVER_TLS_CERT": pki["cert"],
                                                "ATOM_SERVER_TLS_KEY": pki["key"],
                                                "ATOM_SERVER_TLS_CLIENT_CA": pki["ca"]}, name="mtls")
    url = f"https://127.0.0.1:{https_port}/ws/simple/executeEcho"
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _post(url, ssl.create_default_context(cafile=pki["ca"]))
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.load_cert_chain(pki["client_cert"], pki["client_key"])
    assert _post(url, ctx) == (200, b'{"tls": true}')
    assert srv.terminate() == 0
