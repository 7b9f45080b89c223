"""SQLite migrations (``migrations/sqlite/``): each applied in its own transaction (a failing
one is rolled back) and recorded in ``schema_migrations``."""

from __future__ import annotations

import sqlite3
import time

from ...errors import MigrationError
from .. import migration_files
from ..crypto import Keyring, check_master
from ..migration_files import Migration, check_applied


def bundled_migrations() -> list[Migration]:
    """The SQLite migrations shipped in ``aipersona.migrations/sqlite``, in order."""
    return migration_files.bundled_migrations("sqlite")


def _is_comment_only(text: str) -> bool:
    return all(ln.strip().startswith("--") or not ln.strip() for ln in text.splitlines())


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (sqlite3.complete_statement decides)."""
    statements, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip() and not _is_comment_only(buf):
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not _is_comment_only(buf):
        raise MigrationError(f"incomplete SQL statement at end of migration: {buf.strip()[:80]}")
    return statements


def check_schema(
    conn: sqlite3.Connection, path: str, migrations: list[Migration] | None = None
) -> None:
    """Refuse a database of another program, or one migrated by a newer aipersona.

    Reads only, so a refused file is left exactly as it was.
    """
    tables = {
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith("sqlite_")
    }
    applied: dict[int, str] | None = None
    if "schema_migrations" in tables:
        try:
            rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
            applied = {int(r[0]): str(r[1]) for r in rows}
        except sqlite3.Error:
            applied = None
    check_applied(path, tables, applied, migrations or bundled_migrations())


def applied_versions(conn: sqlite3.Connection) -> dict[int, str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    return {
        int(r[0]): str(r[1]) for r in conn.execute("SELECT version, name FROM schema_migrations")
    }


def apply_migration(conn: sqlite3.Connection, migration: Migration) -> bool:
    """Inside a write transaction: apply one migration unless another process did; True if
    applied here."""
    if migration.version in applied_versions(conn):
        return False
    try:
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, time.time()),
        )
    except sqlite3.Error as exc:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} failed and was rolled back: {exc}"
        ) from exc
    return True


def check_keys(conn: sqlite3.Connection, where: str, keyring: Keyring | None) -> None:
    """Refuse to open an encrypted database without its key, or with another key (reads
    only: nothing changes)."""
    try:
        row = conn.execute("SELECT master_id FROM persona_keys LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return  # before migration 0003: nothing encrypted
    check_master(where, None if row is None else row[0], keyring)
