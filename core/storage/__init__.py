"""Storage: the ``Storage`` contract and its backends. The only place with SQL.

``open_storage`` picks the backend from the ``[database]`` settings (SQLite by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import SessionRules, Storage, UpdateOutcome

if TYPE_CHECKING:
    from ..config import DatabaseSettings


async def open_storage(settings: DatabaseSettings, rules: SessionRules) -> Storage:
    """Open the configured store (its migrations are not applied: call ``migrate``)."""
    from .sqlite import SQLiteStorage

    return await SQLiteStorage.open(settings.path, rules, busy_timeout_ms=settings.busy_timeout_ms)


__all__ = ["SessionRules", "Storage", "UpdateOutcome", "open_storage"]
