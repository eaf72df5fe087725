"""The `database` connector: SQLite (aiosqlite), PostgreSQL (asyncpg), MySQL and MariaDB (aiomysql). See
`connector.py`."""

from __future__ import annotations

from .connector import DatabaseConnector

__all__ = ["DatabaseConnector"]
