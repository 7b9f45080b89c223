"""SQLite migrations: ``NNNN_name.sql`` files shipped in ``aipersona.migrations``, each applied
in its own transaction (a failing one is rolled back) and recorded in ``schema_migrations``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

from ...errors import DatabaseTooNew, MigrationError, NotAnAipersonaDatabase

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The ``NNNN_name.sql`` files shipped in ``aipersona.migrations``, in order."""
    out = []
    for entry in resources.files("aipersona.migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers: {versions}")
    return out


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
    known = {m.version: m.name for m in migrations or bundled_migrations()}
    tables = {
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith("sqlite_")
    }
    if not tables:
        return  # new and empty
    if "schema_migrations" not in tables:
        raise NotAnAipersonaDatabase(
            f"{path} is not an aipersona database (an SQLite database of another program: "
            "it has no schema_migrations table)"
        )
    try:
        rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    except sqlite3.Error:
        raise NotAnAipersonaDatabase(
            f"{path} is not an aipersona database (its schema_migrations table is not aipersona's)"
        ) from None
    applied = {int(r[0]): str(r[1]) for r in rows}
    newest = max(applied, default=0)
    if newest > max(known, default=0):
        raise DatabaseTooNew(
            f"{path} is at schema version {newest}, newer than this aipersona (which knows "
            f"up to {max(known, default=0)}); upgrade aipersona to use it"
        )
    for version, name in applied.items():
        if known.get(version) != name:
            raise NotAnAipersonaDatabase(
                f"{path} is not an aipersona database (migration {version} is {name!r}, "
                "not aipersona's)"
            )


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
