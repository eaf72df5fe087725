"""Error types. Errors are data: they carry a location or the document they belong to.

A run-time failure of a document has a **kind**, one word of a small closed vocabulary (`KINDS`),
so that a process can answer "the peer timed out" differently from "the peer refused the data"
without reading messages. Where the failure comes from an HTTP answer it also has that `status`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

#: the peer gave no answer in time (the connect timeout included), or a lock wait ran out
TIMEOUT = "timeout"
#: the peer could not be reached or the connection broke: refused, reset, closed, DNS, TLS handshake
UNREACHABLE = "unreachable"
#: the call was not made: the connection's circuit breaker is open (or opened during the retries)
UNAVAILABLE = "unavailable"
#: an HTTP peer answered a status outside `expect` that no other kind covers (5xx, 404, 429, 3xx...)
STATUS = "status"
#: the peer answered and refused this request or its data: a constraint violation, a SOAP fault,
#: HTTP 400, 409, 412, 413, 415 or 422, a refused mail recipient, a file server's "no such file"
REJECTED = "rejected"
#: the credentials were refused or could not be obtained: login refused, HTTP 401 or 403, permission
#: denied, an OAuth token request that gives no token
AUTH = "auth"
#: the document, or a value made from it, could not be used: not well-formed, a template or map rule
#: that fails on it, a value a connector cannot convert, an answer that cannot be read
INVALID = "invalid"
#: anything else: a configuration problem, a bug, a failure no other kind describes
ERROR = "error"

KINDS: tuple[str, ...] = (TIMEOUT, UNREACHABLE, UNAVAILABLE, STATUS, REJECTED, AUTH, INVALID, ERROR)

#: HTTP statuses that mean "the peer refused this request's data"
_REJECTED_STATUSES = frozenset({400, 409, 412, 413, 415, 422})


def status_kind(status: int) -> str:
    """The kind of an HTTP answer whose status was not expected: `auth` for 401 and 403, `rejected`
    for 400, 409, 412, 413, 415 and 422, else `status`."""
    if status in (401, 403):
        return AUTH
    if status in _REJECTED_STATUSES:
        return REJECTED
    return STATUS


def network_kind(exc: BaseException) -> str:
    """The kind of an exception raised by a socket, TLS or a network library: `timeout` for a
    timeout, `unreachable` for any other OS-level error (refused, reset, DNS, TLS), else `error`."""
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, (OSError, EOFError)):
        return UNREACHABLE
    return ERROR


def handled_kind() -> str | None:
    """The kind of the DocumentError being handled right now (inside its `except` block), if any."""
    exc = sys.exc_info()[1]
    return exc.kind if isinstance(exc, DocumentError) else None


def check_kind(kind: str) -> str:
    """`kind` itself if it is one of `KINDS`; raises ValueError otherwise."""
    if kind not in KINDS:
        raise ValueError(f"unknown error kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a component file (1-based line and column)."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True, slots=True)
class Problem:
    """One located lint: `file:line:col: error: message`."""

    location: Location
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class LoadError(Exception):
    """Raised when components fail to load; holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.location.file, p.location.line, p.location.col))
        super().__init__("\n".join(str(p) for p in self.problems))


class AtomError(Exception):
    """Base of run-time errors."""


class DocumentError(AtomError):
    """A failure that belongs to one document: it takes the catch path or fails the execution.

    `kind` (one of `KINDS`) says what went wrong. When the raiser does not name it, an error made
    while another DocumentError is being handled takes that one's kind (a wrapper keeps its cause's
    kind); otherwise the class's `default_kind`: `invalid` here, since most document errors are a
    document or a value that cannot be used.
    """

    default_kind: ClassVar[str] = INVALID

    def __init__(self, *args: object, kind: str | None = None) -> None:
        super().__init__(*args)
        self.kind: str = check_kind(kind) if kind is not None else (handled_kind() or self.default_kind)


class ExecutionAbort(AtomError):
    """Ends the whole execution with status ERROR (exception shape with scope: execution)."""


class StopExecution(AtomError):
    """Ends the whole execution normally (stop shape with continue: false)."""


class ConnectorError(DocumentError):
    """A connector operation failed for a document.

    `retryable` says whether the failure is transient (network, 429, 5xx). `status` is the HTTP
    status the peer answered; connectors of other protocols may set the nearest HTTP status of
    their peer's answer for the circuit breaker (a 4xx says the peer is up). Only connectors that
    speak HTTP put a status on the documents they fail (`Document.fail(..., status=...)`). `kind`
    defaults as for DocumentError, with `error` as the class default.
    """

    default_kind: ClassVar[str] = ERROR

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message, kind=kind)
        self.retryable = retryable
        self.status = status
