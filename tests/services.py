"""Helpers for tests that need a local service (PostgreSQL, MariaDB, ...).

A test that needs a service skips with a clear reason when it is unreachable, except under
ATOM_REQUIRE_SERVICES=1 (set by CI), where it fails instead.
"""

from __future__ import annotations

import os
import socket

import pytest


def require_service(name: str, host: str = "127.0.0.1", port: int = 0) -> None:
    """Skip (or fail under ATOM_REQUIRE_SERVICES=1) unless host:port accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc})"
    if os.environ.get("ATOM_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; ATOM_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
