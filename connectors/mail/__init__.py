"""The `mail` connector: send documents as e-mail through an SMTP server.

Built on the standard library's `smtplib` and `email` packages, run in a worker thread so the event
loop is never blocked. One SMTP session serves a whole `send` call (all documents of the batch) and is
closed at its end. Network failures and 4xx answers are retried with back-off on a new session; a
refused login, a refused sender or refused recipients (5xx) are not.

Delivery is at least once: a connection lost after the server accepted a message but before it said
so is retried, and the message may then arrive twice.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import smtplib
import socket
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses, make_msgid
from typing import Any, ClassVar

from atom.connector import Connector, OperationContext
from atom.document import Document
from atom.errors import AUTH, REJECTED, TIMEOUT, UNREACHABLE, ConnectorError, DocumentError
from atom.resilience import NETWORK_FIELDS, call_with_retry
from atom.spec import Bool, CheckContext, Enum, Field, Int, ListOf, MapOf, OneOf, Spec, Str, Template
from atom.yamlio import Where

__all__ = ["MailConnector"]

log = logging.getLogger("atom.connectors.mail")

RECIPIENTS = OneOf(ListOf(Template()), Template())

SEND_SPEC = Spec([
    Field("to", RECIPIENTS,
          description="recipients: a template giving comma-separated addresses, or a list of templates",
          example="{{ doc.json.customer.email }}, orders@example.com"),
    Field("cc", RECIPIENTS, description="copy recipients (same forms as `to`)", example=["audit@example.com"]),
    Field("bcc", RECIPIENTS, description="blind copy recipients: in the envelope only, never in the headers",
          example="archive@example.com"),
    Field("from", Template(), description="sender (default: the connection's `from`)",
          example="Orders <orders@example.com>"),
    Field("reply_to", Template(), description="Reply-To header", example="support@example.com"),
    Field("subject", Template(), default="", description="subject line (template)",
          example="Order {{ doc.json.id }} received"),
    Field("body", Template(),
          description="message text (template). Default: the document's text, or nothing when the document "
                      "is attached", example="Hello {{ doc.json.customer.name }}, ..."),
    Field("html", Bool(), default=False, description="the body is HTML (text/html) instead of plain text",
          example=True),
    Field("attach", Enum("none", "document"), default="none",
          description="document: attach the document itself (its bytes, with `attachment_name` and "
                      "`content_type`)", example="document"),
    Field("attachment_name", Template(),
          description="file name of the attachment (default: the document's `file_name` property, else "
                      "`document` with an extension for its content type)",
          example="invoice-{{ doc.json.id }}.pdf"),
    Field("content_type", Template(),
          description="content type of the attachment (default: the document's `content_type` property, "
                      "else guessed from the attachment name, else application/octet-stream)",
          example="application/pdf"),
    Field("batch", Bool(), default=False,
          description="one mail for the whole batch, every document attached; templates see the first "
                      "document as `doc` and all of them as `docs`", example=True),
    Field("headers", MapOf(Template()), default=dict, description="extra headers (templates)",
          example={"X-Priority": "1"}),
], summary="Send each document (or the whole batch) as an e-mail. The outgoing document is the input with "
           "property message_id.")


def _render(tmpl: Any, scope: Mapping[str, Any]) -> str:
    return tmpl if isinstance(tmpl, str) else str(tmpl.render(scope))


def _addresses(value: Any, scope: Mapping[str, Any], field: str) -> list[tuple[str, str]]:
    """Render a recipients field into (display name, address) pairs; raises DocumentError if malformed."""
    if value is None:
        return []
    raw = [_render(v, scope) for v in value] if isinstance(value, list) else [_render(value, scope)]
    out = []
    for name, addr in getaddresses([r for r in raw if r.strip()]):
        if not addr:
            continue
        if "@" not in addr or any(ch in addr for ch in " \r\n<>,;"):
            raise DocumentError(f"'{field}': '{addr}' is not an e-mail address")
        out.append((name, addr))
    return out


class _Smtp:
    """One SMTP session, used from worker threads one call at a time."""

    def __init__(self, client: smtplib.SMTP) -> None:
        self.client = client

    def close(self) -> None:
        try:
            self.client.quit()
        except Exception:
            self.client.close()


class MailConnector(Connector):
    """Outgoing mail over SMTP: plain, STARTTLS or implicit TLS, with optional login."""

    type = "mail"
    summary = "E-mail through an SMTP server: each document (or the whole batch) becomes a message."
    connection_spec = Spec([
        Field("host", Str(), required=True, description="SMTP server host name or address",
              example="smtp.example.com"),
        Field("port", Int(minimum=1, maximum=65535),
              description="SMTP port (default: 465 with `ssl`, 587 with `starttls`, else 25)", example=587),
        Field("username", Str(), description="login name (no login when absent)", example="atom@example.com"),
        Field("password", Str(), secret=True, description="login password", example="${SMTP_PASSWORD}"),
        Field("starttls", Bool(), default=False,
              description="upgrade the connection with STARTTLS before login (port 587)", example=True),
        Field("ssl", Bool(), default=False, description="implicit TLS from the first byte (port 465)",
              example=False),
        Field("tls_verify", Bool(), default=True,
              description="verify the server certificate and host name (turn off only for tests)", example=True),
        Field("ca_file", Str(), description="PEM file of the CA certificates to trust (default: the system's)",
              example="/etc/atom/smtp-ca.pem"),
        Field("from", Str(), required=True, description="default sender address",
              example="Atom <atom@example.com>"),
        Field("helo_name", Str(), description="name given in EHLO (default: this machine's host name)",
              example="atom.example.com"),
        *NETWORK_FIELDS,
    ], summary="An SMTP server to send mail through.")
    operations: ClassVar[dict[str, Spec]] = {"send": SEND_SPEC}

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.host: str = config.get("host", "")
        self.use_ssl = bool(config.get("ssl"))
        self.starttls = bool(config.get("starttls"))
        default_port = 465 if self.use_ssl else 587 if self.starttls else 25
        self.port: int = int(config.get("port") or default_port)
        self.connect_timeout: float = float(config.get("connect_timeout", 10.0))
        self._ssl: ssl.SSLContext | None = None
        self._secret = str(config.get("password") or "")

    # ---- load-time checks
    @classmethod
    def check_connection(cls, config: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        if config.get("ssl") and config.get("starttls"):
            ctx.error(where.key("starttls"), "'ssl' and 'starttls' exclude each other: ssl is TLS from the "
                                             "start (port 465), starttls upgrades a plain connection (587)")
        if config.get("password") and not config.get("username"):
            ctx.error(where.key("password"), "'password' needs 'username'")
        if "ca_file" in config and not (config.get("ssl") or config.get("starttls")):
            ctx.error(where.key("ca_file"), "'ca_file' is only used with 'ssl' or 'starttls'")
        sender = config.get("from")
        if isinstance(sender, str) and "{{" not in sender:
            found = [a for _, a in getaddresses([sender]) if a]
            if len(found) != 1 or "@" not in found[0]:
                ctx.error(where.value("from"), f"'from': '{sender}' is not one e-mail address")
        return config

    @classmethod
    def check_operation(cls, action: str, op: dict[str, Any], where: Where, ctx: CheckContext) -> dict[str, Any]:
        if not any(op.get(k) for k in ("to", "cc", "bcc")):
            ctx.error(where.location, "a mail needs recipients: set 'to', 'cc' or 'bcc'")
        if "attachment_name" in op and not (op.get("attach") == "document" or op.get("batch")):
            ctx.error(where.key("attachment_name"), "'attachment_name' is only used with 'attach: document' "
                                                    "or 'batch: true'")
        return op

    # ---- lifecycle
    @property
    def peer(self) -> str:
        return f"smtp {self.host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "peer": self.peer}

    async def start(self) -> None:
        if not mimetypes.inited:  # reads the system's MIME tables once, off the event loop
            await asyncio.to_thread(mimetypes.init)
        if self.use_ssl or self.starttls:
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

    def _connect(self) -> _Smtp:
        if (self.use_ssl or self.starttls) and self._ssl is None:
            self._ssl = self._tls_context()
        helo = self.config.get("helo_name") or socket.gethostname()
        client: smtplib.SMTP
        if self.use_ssl:  # both constructors connect, and close the socket again when that fails
            client = smtplib.SMTP_SSL(self.host, self.port, local_hostname=helo, timeout=self.connect_timeout,
                                      context=self._ssl)
        else:
            client = smtplib.SMTP(self.host, self.port, local_hostname=helo, timeout=self.connect_timeout)
        try:
            client.timeout = self.timeout
            if client.sock is not None:
                client.sock.settimeout(self.timeout)
            client.ehlo()
            if self.starttls:
                client.starttls(context=self._ssl)
                client.ehlo()
            if self.config.get("username"):
                client.login(str(self.config["username"]), self._secret)
        except BaseException:
            client.close()
            raise
        return _Smtp(client)

    # ---- send
    async def send(self, op: Mapping[str, Any], docs: list[Document],
                   ctx: OperationContext) -> list[Document]:
        """Send one mail per document, or one for the batch (`batch: true`).

        Returns the input documents (copies) with property `message_id`; a document whose mail could
        not be built or sent is returned failed, and the others still go out.
        """
        groups = [docs] if op.get("batch") else [[d] for d in docs]
        out: list[Document] = []
        session: list[_Smtp] = []  # the open session, if any
        try:
            for group in groups:
                if not group:
                    continue
                try:
                    message, sender, rcpts = self._build(op, group, ctx)
                except DocumentError as exc:
                    out.extend(d.fail(f"connection '{self.name}' ({self.peer}): send: {exc}", exc.kind)
                               for d in group)
                    continue
                target = ", ".join(rcpts)
                try:
                    refused = await self._deliver(session, message, sender, rcpts, target, ctx)
                except ConnectorError as exc:
                    out.extend(d.fail(str(exc), exc.kind) for d in group)
                    continue
                for d in group:
                    new = d.copy()
                    new.props["message_id"] = str(message["Message-ID"])
                    if refused:
                        new.props["refused_recipients"] = ", ".join(sorted(refused))
                    out.append(new)
                if refused:
                    ctx.log("warning", f"connection '{self.name}' ({self.peer}): send to '{target}': "
                                       f"refused recipients {', '.join(sorted(refused))}")
        finally:
            if session:
                await asyncio.to_thread(session.pop().close)
        return out

    def _build(self, op: Mapping[str, Any], group: list[Document],
               ctx: OperationContext) -> tuple[EmailMessage, str, list[str]]:
        first = group[0]
        scope = dict(ctx.scope(first))
        scope["docs"] = group
        sender_raw = _render(op["from"], scope) if op.get("from") is not None else str(self.config.get("from", ""))
        senders = _addresses(sender_raw, scope, "from")
        if len(senders) != 1:
            raise DocumentError(f"'from': expected one address, got '{sender_raw}'")
        to = _addresses(op.get("to"), scope, "to")
        cc = _addresses(op.get("cc"), scope, "cc")
        bcc = _addresses(op.get("bcc"), scope, "bcc")
        if not (to or cc or bcc):
            raise DocumentError("no recipients: 'to', 'cc' and 'bcc' rendered empty")
        msg = EmailMessage()
        try:
            msg["From"] = formataddr(senders[0])
            if to:
                msg["To"] = ", ".join(formataddr(a) for a in to)
            if cc:
                msg["Cc"] = ", ".join(formataddr(a) for a in cc)
            if op.get("reply_to") is not None:
                msg["Reply-To"] = _render(op["reply_to"], scope)
            msg["Subject"] = _render(op.get("subject", ""), scope)
            msg["Date"] = formatdate(localtime=False)
            domain = senders[0][1].rpartition("@")[2] or "localhost"
            msg["Message-ID"] = make_msgid(domain=domain)
            for key, tmpl in (op.get("headers") or {}).items():
                msg[key] = _render(tmpl, scope)
        except ValueError as exc:  # CR/LF in a header value and the like
            raise DocumentError(f"invalid header: {exc}") from None
        attached = bool(op.get("batch")) or op.get("attach") == "document"
        if op.get("body") is not None:
            body = _render(op["body"], scope)
        else:
            body = "" if attached else first.text
        msg.set_content(body, subtype="html" if op.get("html") else "plain")
        if attached:
            for d in group:
                dscope = scope if d is first else {**scope, "doc": d}
                self._attach(msg, op, d, dscope)
        rcpts = [a for _, a in to + cc + bcc]
        return msg, senders[0][1], list(dict.fromkeys(rcpts))

    @staticmethod
    def _attach(msg: EmailMessage, op: Mapping[str, Any], doc: Document, scope: Mapping[str, Any]) -> None:
        ctype = (_render(op["content_type"], scope) if op.get("content_type") is not None
                 else doc.props.get("content_type", ""))
        if op.get("attachment_name") is not None:
            name = _render(op["attachment_name"], scope)
        else:
            name = doc.props.get("file_name", "")
        if not ctype:
            ctype = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
        ctype = ctype.split(";")[0].strip().lower()
        if "/" not in ctype:
            raise DocumentError(f"'content_type': '{ctype}' is not a content type")
        if not name:
            name = "document" + (mimetypes.guess_extension(ctype) or ".bin")
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(doc.data, maintype=maintype, subtype=subtype, filename=name)

    async def _deliver(self, session: list[_Smtp], message: EmailMessage, sender: str, rcpts: list[str],
                       target: str, ctx: OperationContext) -> dict[str, Any]:
        """Send one message over the open session (connecting first when needed), with retries.
        Returns the recipients the server refused when it accepted others."""

        def transmit(smtp: _Smtp) -> dict[str, Any]:
            return dict(smtp.client.send_message(message, from_addr=sender, to_addrs=rcpts))

        async def attempt() -> dict[str, Any]:
            try:
                if not session:
                    session.append(await asyncio.to_thread(self._connect))
                return await asyncio.to_thread(transmit, session[0])
            except Exception as exc:
                err = self.translate(exc)
                if err.retryable and session:
                    await asyncio.to_thread(session.pop().close)
                raise err from None

        def log_retry(level: str, message: str) -> None:
            ctx.log(level, self.scrub(message))

        try:
            return await call_with_retry(attempt, policy=self.retry, breaker=self.breaker, connection=self.name,
                                         log=log_retry)
        except ConnectorError as exc:
            detail = str(exc).removeprefix(f"connection '{self.name}': ")
            raise ConnectorError(self.scrub(f"connection '{self.name}' ({self.peer}): send to '{target}': "
                                            f"{detail}"), status=exc.status, kind=exc.kind) from None

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if len(self._secret) >= 4 else text

    def translate(self, exc: Exception) -> ConnectorError:
        """Classify an smtplib / socket failure: 4xx answers and network errors are worth a retry.
        Kinds: a refused login is `auth`, a permanent (5xx) refusal `rejected`, timeouts `timeout`,
        network and TLS failures `unreachable`, a 4xx "try later" `error`."""
        if isinstance(exc, ConnectorError):
            return exc
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return ConnectorError(f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}", status=401, kind=AUTH)
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            who = ", ".join(f"{addr} ({code} {_text(text)})" for addr, (code, text) in exc.recipients.items())
            return ConnectorError(f"recipients refused: {who}", status=400, kind=REJECTED)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return ConnectorError(f"not supported by the server: {exc}", status=400, kind=REJECTED)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return ConnectorError(f"the server closed the connection{': ' + str(exc) if str(exc) else ''}",
                                  retryable=True, kind=UNREACHABLE)
        if isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            what = "sender refused" if isinstance(exc, smtplib.SMTPSenderRefused) else "refused"
            if 400 <= code < 500:
                return ConnectorError(f"{what}, try later: {code} {_text(exc.smtp_error)}", retryable=True)
            return ConnectorError(f"{what}: {code} {_text(exc.smtp_error)}", status=400, kind=REJECTED)
        if isinstance(exc, smtplib.SMTPException):
            return ConnectorError(f"SMTP error: {exc}", retryable=True)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ConnectorError(f"TLS certificate not trusted: {exc.verify_message or exc}", kind=UNREACHABLE)
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return ConnectorError(f"no answer within {self.timeout:g}s", retryable=True, kind=TIMEOUT)
        if isinstance(exc, OSError):
            return ConnectorError(f"network error: {exc.strerror or exc}", retryable=True, kind=UNREACHABLE)
        return ConnectorError(f"{type(exc).__name__}: {exc}")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
