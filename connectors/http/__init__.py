"""The `http` connector type: an HTTP/HTTPS client (see docs/connectors/http.md)."""

from __future__ import annotations

from .connector import HttpConnector

__all__ = ["HttpConnector"]
