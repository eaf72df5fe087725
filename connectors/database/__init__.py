"""The `database` connector: SQLite (aiosqlite) and PostgreSQL (asyncpg). See `connector.py`."""

from __future__ import annotations

from .connector import DatabaseConnector

__all__ = ["DatabaseConnector"]
