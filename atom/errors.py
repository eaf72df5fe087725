"""Error types. Errors are data: they carry a location or the document they belong to."""

from __future__ import annotations

from dataclasses import dataclass


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
    """A failure that belongs to one document: it takes the catch path or fails the execution."""


class ExecutionAbort(AtomError):
    """Ends the whole execution with status ERROR (exception shape with scope: execution)."""


class StopExecution(AtomError):
    """Ends the whole execution normally (stop shape with continue: false)."""


class ConnectorError(DocumentError):
    """A connector operation failed for a document.

    `retryable` says whether the failure is transient (network, 429, 5xx).
    """

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
