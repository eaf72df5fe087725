"""The mail connector against a real aiosmtpd server on 127.0.0.1 (plain, STARTTLS with login, TLS)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from atom.connector import OperationContext
from atom.document import Document
from atom.spec import CheckContext, Spec
from atom.yamlio import Where
from connectors.mail import MailConnector
from tests.services import free_port

CTX = OperationContext(None)
PASSWORD = "mail-Pa55-word"


def operation(node: dict[str, Any]) -> dict[str, Any]:
    ctx = CheckContext()
    where = Where("<test>", node)
    values = MailConnector.operations["send"].check(node, where, ctx)
    values = MailConnector.check_operation("send", values, where, ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return values


def connection(cfg: dict[str, Any]) -> MailConnector:
    ctx = CheckContext()
    where = Where("<test>", cfg)
    values = Spec(list(MailConnector.connection_spec.fields)).check(cfg, where, ctx)
    values = MailConnector.check_connection(values, where, ctx)
    assert not ctx.problems, [str(p) for p in ctx.problems]
    return MailConnector("mailer", values)


def problems(cfg: dict[str, Any] | None = None, op: dict[str, Any] | None = None) -> list[str]:
    ctx = CheckContext()
    if cfg is not None:
        values = Spec(list(MailConnector.connection_spec.fields)).check(cfg, Where("<test>", cfg), ctx)
        MailConnector.check_connection(values, Where("<test>", cfg), ctx)
    if op is not None:
        values = MailConnector.operations["send"].check(op, Where("<test>", op), ctx)
        MailConnector.check_operation("send", values, Where("<test>", op), ctx)
    return [p.message for p in ctx.problems]


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


class Inbox:
    """aiosmtpd handler keeping what arrives; refuses the addresses in `refuse`."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], bytes]] = []
        self.refuse: set[str] = set()
        self.logins: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append(data.login.decode())
        return AuthResult(success=data.login == b"atom" and data.password == PASSWORD.encode(), handled=False)

    def message(self, i: int = -1) -> EmailMessage:
        msg = email.message_from_bytes(self.envelopes[i][2], policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


def start(inbox: Inbox, **kwargs: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def plain() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller, port = start(inbox)
    yield inbox, port
    controller.stop()


@pytest.fixture
async def mailer(plain: tuple[Inbox, int]) -> Any:
    conn = connection({"host": "127.0.0.1", "port": plain[1], "from": "Atom <atom@example.com>", "timeout": "5s"})
    await conn.start()
    yield conn
    await conn.stop()


# ------------------------------------------------------------------------------------------- sending

async def test_one_mail_per_document(plain: tuple[Inbox, int], mailer: MailConnector) -> None:
    inbox, _ = plain
    op = operation({"to": "{{ doc.json.email }}, Sales Team <sales@example.com>", "cc": ["audit@example.com"],
                    "bcc": "hidden@example.com", "subject": "Order {{ doc.json.id }}",
                    "headers": {"X-Order": "{{ doc.json.id }}"}})
    docs = [Document.from_json({"id": i, "email": f"c{i}@example.com"}) for i in (1, 2)]
    out = await mailer.send(op, docs, CTX)
    assert [d.error for d in out] == [None, None]
    assert len(inbox.envelopes) == 2
    sender, rcpts, _ = inbox.envelopes[0]
    assert sender == "atom@example.com"
    assert rcpts == ["c1@example.com", "sales@example.com", "audit@example.com", "hidden@example.com"]
    msg = inbox.message(0)
    assert msg["Subject"] == "Order 1" and msg["X-Order"] == "1"
    assert msg["To"] == "c1@example.com, Sales Team <sales@example.com>" and msg["Cc"] == "audit@example.com"
    assert msg["Bcc"] is None  # blind copies stay in the envelope
    assert msg.get_content().strip() == '{"id":1,"email":"c1@example.com"}'  # the document text is the body
    assert out[0].props["message_id"] == msg["Message-ID"] and msg["Message-ID"].endswith("@example.com>")
    assert out[1].props["message_id"] != out[0].props["message_id"]
    assert docs[0].props == {}  # inputs are not changed


async def test_the_document_as_attachment(plain: tuple[Inbox, int], mailer: MailConnector) -> None:
    inbox, _ = plain
    pdf = bytes(range(256)) * 40 + b"\r\n.\r\n\x00end"
    op = operation({"to": "a@example.com", "subject": "Invoice", "body": "<p>Invoice {{ doc.props.n }}</p>",
                    "html": True, "attach": "document", "attachment_name": "invoice-{{ doc.props.n }}.pdf"})
    [out] = await mailer.send(op, [Document(pdf, {"n": "7"})], CTX)
    assert out.error is None
    msg = inbox.message()
    body = msg.get_body(("html",))
    assert body is not None and body.get_content().strip() == "<p>Invoice 7</p>"
    [part] = list(msg.iter_attachments())
    assert part.get_filename() == "invoice-7.pdf" and part.get_content_type() == "application/pdf"
    assert part.get_content() == pdf


async def test_batch_sends_one_mail_with_every_document(plain: tuple[Inbox, int], mailer: MailConnector) -> None:
    inbox, _ = plain
    docs = [Document(b"a,b\n1,2\n", {"file_name": "one.csv"}), Document(b'{"x": 1}', {"content_type": "application/json"}),
            Document(b"\x89PNG\r\n\x1a\n", {"file_name": "pic.png"})]
    op = operation({"to": "ops@example.com", "batch": True, "subject": "{{ docs | length }} files"})
    out = await mailer.send(op, docs, CTX)
    assert len(inbox.envelopes) == 1 and [d.error for d in out] == [None, None, None]
    assert len({d.props["message_id"] for d in out}) == 1
    msg = inbox.message()
    assert msg["Subject"] == "3 files"
    parts = list(msg.iter_attachments())
    assert [(p.get_filename(), p.get_content_type()) for p in parts] == [
        ("one.csv", "text/csv"), ("document.json", "application/json"), ("pic.png", "image/png")]
    assert [p.get_payload(decode=True) for p in parts] == [d.data for d in docs]


async def test_refused_recipients(plain: tuple[Inbox, int], mailer: MailConnector) -> None:
    inbox, port = plain
    inbox.refuse = {"nobody@example.com"}
    [partial] = await mailer.send(operation({"to": "nobody@example.com, ok@example.com"}), [Document(b"hi")], CTX)
    assert partial.error is None and partial.props["refused_recipients"] == "nobody@example.com"
    assert inbox.envelopes[-1][1] == ["ok@example.com"]
    [failed] = await mailer.send(operation({"to": "nobody@example.com"}), [Document(b"hi")], CTX)
    assert failed.error == (f"connection 'mailer' (smtp 127.0.0.1:{port}): send to 'nobody@example.com': "
                            "recipients refused: nobody@example.com (550 5.1.1 no such mailbox)")
    assert (failed.error_kind, failed.error_status) == ("rejected", None)
    assert len(inbox.envelopes) == 1


async def test_bad_documents_fail_alone(plain: tuple[Inbox, int], mailer: MailConnector) -> None:
    inbox, _ = plain
    op = operation({"to": "{{ doc.props.to }}", "subject": "{{ doc.props.subject }}"})
    docs = [Document(b"1", {"to": "a@example.com", "subject": "fine"}),
            Document(b"2", {"to": "a@example.com", "subject": "evil\r\nBcc: victim@example.com"}),
            Document(b"3", {"to": "not-an-address", "subject": "x"}),
            Document(b"4", {"to": "", "subject": "x"})]
    out = await mailer.send(op, docs, CTX)
    assert out[0].error is None
    assert out[1].error is not None and "invalid header" in out[1].error
    assert out[2].error is not None and "'not-an-address' is not an e-mail address" in out[2].error
    assert out[3].error is not None and "no recipients" in out[3].error
    assert [d.error_kind for d in out] == [None, "invalid", "invalid", "invalid"]
    assert [e[1] for e in inbox.envelopes] == [["a@example.com"]]


# ------------------------------------------------------------------------------------------- TLS and login

async def test_starttls_with_login(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    controller, port = start(inbox, tls_context=server_ctx, require_starttls=True,
                             authenticator=inbox.authenticate, auth_required=True, auth_exclude_mechanism=["LOGIN"])
    try:
        base = {"host": "127.0.0.1", "port": port, "from": "atom@example.com", "starttls": True,
                "ca_file": str(cert), "username": "atom", "retry": {"attempts": 3, "backoff": "10ms"}}
        good = connection({**base, "password": PASSWORD})
        await good.start()
        [out] = await good.send(operation({"to": "a@example.com", "attach": "document"}),
                                [Document(b"payload", {"file_name": "p.bin"})], CTX)
        assert out.error is None
        assert [p.get_content() for p in inbox.message().iter_attachments()] == [b"payload"]

        bad = connection({**base, "password": "Wr0ng-mail-pass"})
        await bad.start()
        [out] = await bad.send(operation({"to": "a@example.com"}), [Document(b"x")], CTX)
        assert out.error is not None
        assert out.error.startswith(f"connection 'mailer' (smtp 127.0.0.1:{port}): send to 'a@example.com': "
                                    "login refused: 535")
        assert "Wr0ng-mail-pass" not in out.error and out.error_kind == "auth"
        assert inbox.logins == ["atom", "atom"]  # the wrong password was tried once, not retried

        untrusted = connection({k: v for k, v in base.items() if k != "ca_file"} | {"password": PASSWORD})
        await untrusted.start()
        [out] = await untrusted.send(operation({"to": "a@example.com"}), [Document(b"x")], CTX)
        assert out.error is not None and "TLS certificate not trusted" in out.error
        assert out.error_kind == "unreachable"
        assert len(inbox.envelopes) == 1
    finally:
        controller.stop()


async def test_implicit_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    controller, port = start(inbox, ssl_context=server_ctx)
    try:
        conn = connection({"host": "127.0.0.1", "port": port, "from": "atom@example.com", "ssl": True,
                           "ca_file": str(cert)})
        await conn.start()
        [out] = await conn.send(operation({"to": "a@example.com", "subject": "over TLS"}), [Document(b"x")], CTX)
        assert out.error is None and inbox.message()["Subject"] == "over TLS"
    finally:
        controller.stop()


async def test_server_down_fails_after_retries() -> None:
    port = free_port()
    conn = connection({"host": "127.0.0.1", "port": port, "from": "atom@example.com", "username": "atom",
                       "password": PASSWORD, "retry": {"attempts": 2, "backoff": "10ms"}})
    [out] = await conn.send(operation({"to": "a@example.com, b@example.com"}), [Document(b"x")], CTX)
    assert out.error is not None
    assert out.error.startswith(f"connection 'mailer' (smtp 127.0.0.1:{port}): send to 'a@example.com, "
                                "b@example.com': network error")
    assert "after 2 attempts" in out.error and PASSWORD not in out.error
    assert (out.error_kind, out.error_status) == ("unreachable", None)


# ------------------------------------------------------------------------------------------- load-time checks

def test_connection_checks() -> None:
    assert problems({"host": "h", "from": "a@b.c", "ssl": True, "starttls": True})[0].startswith(
        "'ssl' and 'starttls' exclude each other")
    assert problems({"host": "h", "from": "a@b.c", "password": "p"}) == ["'password' needs 'username'"]
    assert problems({"host": "h", "from": "nobody"}) == ["'from': 'nobody' is not one e-mail address"]
    assert problems({"host": "h"}) == ["missing required field 'from'"]
    assert connection({"host": "h", "from": "a@b.c", "starttls": True}).port == 587
    assert connection({"host": "h", "from": "a@b.c", "ssl": True}).port == 465
    assert connection({"host": "h", "from": "a@b.c"}).port == 25
    assert MailConnector.connection_spec.by_name["password"].secret


def test_operation_checks() -> None:
    assert problems(op={"subject": "x"}) == ["a mail needs recipients: set 'to', 'cc' or 'bcc'"]
    assert problems(op={"to": "a@b.c", "attachment_name": "x.pdf"}) == [
        "'attachment_name' is only used with 'attach: document' or 'batch: true'"]
    for f in MailConnector.operations["send"].fields:
        assert f.description and f.example is not None, f.name


def test_the_docs_describe_every_field() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "connectors" / "mail.md").read_text()
    for spec in [MailConnector.connection_spec, *MailConnector.operations.values()]:
        for f in spec.fields:
            assert f"| `{f.name}` |" in doc, f.name
