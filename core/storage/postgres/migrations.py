"""PostgreSQL migrations (``migrations/postgres/``): each applied in its own transaction
(PostgreSQL's DDL is transactional, so a failing one is rolled back whole) under an advisory
lock, so workers starting at the same moment apply each migration once."""

from __future__ import annotations

import time
from typing import Any

from ...errors import MigrationError, StorageError
from ..migration_files import Migration, check_applied
from .session_queries import MIGRATION_LOCK

Conn = Any


async def tables(conn: Conn) -> set[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return {r[0] for r in rows}


async def applied_versions(conn: Conn) -> dict[int, str] | None:
    """The ``schema_migrations`` rows, or None if that table is not aipersona's."""
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations")
    except Exception:  # another program's table of that name
        return None
    return {int(r[0]): str(r[1]) for r in rows}


async def check_schema(conn: Conn, where: str, known: list[Migration]) -> None:
    """Refuse a database of another program or of a newer aipersona (reads only)."""
    found = await tables(conn)
    applied = await applied_versions(conn) if "schema_migrations" in found else {}
    check_applied(where, found, applied, known)


async def apply(conn: Conn, where: str, migration: Migration, known: list[Migration]) -> bool:
    """Apply one migration unless it already is; True if applied here."""
    try:
        async with conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK}, 0)")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            await check_schema(conn, where, known)  # a newer worker may have migrated
            done = await applied_versions(conn) or {}
            if migration.version in done:
                return False
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
    except StorageError:  # too new, not ours: said as it is
        raise
    except Exception as exc:
        raise MigrationError(
            f"migration {migration.label} failed and was rolled back: {exc}"
        ) from exc
    return True


async def master_id(conn: Conn) -> str | None:
    """The master key id the data keys are wrapped with (None: nothing encrypted yet)."""
    if "persona_keys" not in await tables(conn):
        return None  # before migration 0003
    value = await conn.fetchval("SELECT master_id FROM persona_keys LIMIT 1")
    return None if value is None else str(value)
