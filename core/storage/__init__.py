"""Storage: the ``Storage`` contract and its backends. The only place with SQL.

``open_storage`` picks the backend from the ``[database]`` settings (SQLite by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import SessionRules, Storage, UpdateOutcome

if TYPE_CHECKING:
    from ..config import DatabaseSettings


async def open_storage(settings: DatabaseSettings, rules: SessionRules) -> Storage:
    """Open the configured store: PostgreSQL when ``[database] url`` is set, else the SQLite
    file at ``[database] path`` (its migrations are not applied: call ``migrate``)."""
    if settings.url:
        from .postgres import PostgresStorage

        return await PostgresStorage.open(
            settings.url,
            rules,
            password_env=settings.password_env,
            schema=settings.schema_name,
            pool_min_size=settings.pool_min_size,
            pool_max_size=settings.pool_max_size,
            connect_timeout=settings.connect_timeout_seconds,
        )
    from .sqlite import SQLiteStorage

    return await SQLiteStorage.open(settings.path, rules, busy_timeout_ms=settings.busy_timeout_ms)


__all__ = ["SessionRules", "Storage", "UpdateOutcome", "open_storage"]
