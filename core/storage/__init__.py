"""Storage: the ``Storage`` contract and its backends. The only place with SQL.

``open_storage`` picks the backend from the ``[database]`` settings (SQLite by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import SessionRules, Storage, Tokens, UpdateOutcome
from .crypto import Keyring, load_master_key

if TYPE_CHECKING:
    from ..config import DatabaseSettings, PrivacySettings


def keyring_for(privacy: PrivacySettings) -> Keyring | None:
    """The master key of ``[privacy] encryption_key_env`` (None: encryption is off).
    ConfigError if the variable is empty or not a 32-byte base64 key."""
    if not privacy.encryption_key_env:
        return None
    return Keyring(load_master_key(privacy.encryption_key_env))


async def open_storage(
    settings: DatabaseSettings,
    rules: SessionRules,
    keyring: Keyring | None = None,
    *,
    verify_key: bool = True,
) -> Storage:
    """Open the configured store: PostgreSQL when ``[database] url`` is set, else the SQLite
    file at ``[database] path`` (its migrations are not applied: call ``migrate``). With a
    ``keyring`` texts are encrypted at rest; a store encrypted under another key, or opened
    without one, is refused untouched (``verify_key=False``: not checked, for commands that
    never read a text: migrations, ``db copy``)."""
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
            keyring=keyring,
            verify_key=verify_key,
        )
    from .sqlite import SQLiteStorage

    return await SQLiteStorage.open(
        settings.path,
        rules,
        busy_timeout_ms=settings.busy_timeout_ms,
        keyring=keyring,
        verify_key=verify_key,
    )


__all__ = [
    "Keyring",
    "SessionRules",
    "Storage",
    "Tokens",
    "UpdateOutcome",
    "keyring_for",
    "open_storage",
]
