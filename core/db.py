"""SQLite through aiosqlite: connection set-up, write transactions and migrations.

One connection per process. aiosqlite runs every statement on one worker thread, so a
transaction must not interleave with another coroutine's: all writes go through
``Database.write()``, which serializes them with an asyncio lock and uses
``BEGIN IMMEDIATE`` so that several processes on one file queue on SQLite's busy timeout
instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
LOCK_RETRIES = 8
# WAL checkpoints run on their own connection and thread, off the message path (an automatic
# checkpoint inside a commit stalls that commit, and every statement queued behind it, for
# milliseconds). The connection's own auto-checkpoint stays on as a safety net, at a size
# the background checkpointer keeps the WAL well under.
CHECKPOINT_SECONDS = 0.5
AUTOCHECKPOINT_PAGES = 20_000

T = TypeVar("T")


class _Busy(Exception):
    """BEGIN IMMEDIATE found the database locked by another process (after busy_timeout)."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """On the worker thread: BEGIN IMMEDIATE, ``fn(conn, *args)``, COMMIT (or ROLLBACK)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _Busy(str(exc)) from exc
        raise
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class StorageError(RuntimeError):
    """The database cannot be used; the message is one line, fit for the user."""


class NotAnAipersonaDatabase(StorageError):
    """The file is not SQLite, is damaged, or belongs to another program."""


class DatabaseTooNew(StorageError):
    """The database was migrated by a newer aipersona than this one."""


class MigrationError(StorageError):
    """A migration failed and was rolled back."""


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


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (sqlite3.complete_statement decides)."""
    statements, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip() and not all(
                ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
            ):
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise MigrationError(f"incomplete SQL statement at end of migration: {buf.strip()[:80]}")
    return statements


class _Checkpointer(threading.Thread):
    """PASSIVE WAL checkpoints every CHECKPOINT_SECONDS on its own connection and thread.

    A passive checkpoint never waits for a lock and never blocks writers or readers. The
    connection is opened, used and closed only on this thread.
    """

    def __init__(self, path: str) -> None:
        super().__init__(name="aipersona-wal-checkpoint", daemon=True)
        self.path = path
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("background WAL checkpointer not started: %s", exc)
            return
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            while not self.stop.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.debug("background WAL checkpoint skipped: %s", exc)
        finally:
            conn.close()


SQLITE_HEADER = b"SQLite format 3\x00"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def prepare_path(path: str) -> None:
    """Check a database path before SQLite opens it; raise StorageError with one clear line.

    An existing file must start with the SQLite header (random bytes or a text file are
    refused without being touched). A new file is created here, readable by its owner only
    (it holds personal data); a missing parent directory is created, as users expect.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise StorageError(f"cannot use database {p}: it is a directory")
    if p.exists():
        try:
            with p.open("rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StorageError(f"cannot read database {p}: {_reason(exc)}") from None
        if head and head != SQLITE_HEADER:
            raise NotAnAipersonaDatabase(
                f"{p} is not an aipersona database (it is not an SQLite file); "
                "point [database] path at a new or an aipersona file"
            )
        return
    parent = p.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise StorageError(
                    f"cannot create database {p}: {ancestor} is a file, not a directory"
                )
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return  # another process created it meanwhile: SQLite will open it
    except OSError as exc:
        raise StorageError(f"cannot create database {p}: {_reason(exc)}") from None
    os.close(fd)


class Database:
    """An open aiosqlite connection with the project's pragmas."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()
        self._checkpointer: _Checkpointer | None = None

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout_ms: int = 10_000) -> Database:
        """Open (creating if new) an aipersona database.

        Nothing is written to a file that is not an aipersona database or that a newer
        aipersona migrated: those are refused (StorageError) after reading only. On any
        failure the connection and its worker thread are closed before the error propagates.
        """
        path = str(path)
        on_disk = path != ":memory:" and not path.startswith("file:")
        if on_disk:
            await asyncio.to_thread(prepare_path, path)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from None
        db = cls(conn, path)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await db.check_schema()  # reads only: refuse before any pragma writes
            # deleted rows are overwritten with zeros, so deleted text does not linger in
            # free space of the database file (the WAL is checkpointed after deletions)
            await conn.execute("PRAGMA secure_delete = ON")
            if path != ":memory:":
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                raise NotAnAipersonaDatabase(
                    f"{path} is not an aipersona database (damaged, or not an SQLite file)"
                ) from None
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open database {path}: {exc}") from None
            raise
        if on_disk:
            db._checkpointer = _Checkpointer(path)
            db._checkpointer.start()
        return db

    async def check_schema(self) -> None:
        """Refuse a database of another program, or one migrated by a newer aipersona."""
        tables = {r[0] for r in await self.fetchall("SELECT name FROM sqlite_master")}
        tables = {t for t in tables if not t.startswith("sqlite_")}
        if not tables:
            return  # new and empty
        if "schema_migrations" not in tables:
            raise NotAnAipersonaDatabase(
                f"{self.path} is not an aipersona database (an SQLite database of another "
                "program: it has no schema_migrations table)"
            )
        try:
            rows = await self.fetchall("SELECT version, name FROM schema_migrations")
        except sqlite3.Error:
            raise NotAnAipersonaDatabase(
                f"{self.path} is not an aipersona database (its schema_migrations table is "
                "not aipersona's)"
            ) from None
        known = {m.version: m.name for m in bundled_migrations()}
        applied = {int(r[0]): str(r[1]) for r in rows}
        newest = max(applied, default=0)
        if newest > max(known, default=0):
            raise DatabaseTooNew(
                f"{self.path} is at schema version {newest}, newer than this aipersona "
                f"(which knows up to {max(known, default=0)}); upgrade aipersona to use it"
            )
        for version, name in applied.items():
            if known.get(version) != name:
                raise NotAnAipersonaDatabase(
                    f"{self.path} is not an aipersona database (migration {version} is "
                    f"{name!r}, not aipersona's)"
                )

    async def checkpoint_truncate(self, attempts: int = 20) -> bool:
        """Copy the WAL into the database file and truncate it to zero bytes.

        Called after deletions: without it the deleted text would stay readable in old WAL
        frames. Readers in other processes can hold it up; it is retried briefly and
        reported (False) if it still cannot finish.
        """
        if self.path == ":memory:":
            return True
        for _ in range(attempts):
            async with self._write_lock:
                row = await self.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
            if row is not None and row[0] == 0:
                return True
            await asyncio.sleep(0.05)
        log.warning("WAL checkpoint after a deletion could not finish (readers busy)")
        return False

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        await self.conn.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A serialized ``BEGIN IMMEDIATE`` transaction: commit on success, else roll back."""
        async with self._write_lock:
            await self._begin()
            try:
                yield self.conn
            except BaseException:
                await self.conn.rollback()
                raise
            else:
                await self.conn.commit()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(sqlite3_connection, *args)`` on the connection's worker thread.

        One thread round trip for any number of statements: the per-message path uses this
        instead of one ``await`` per statement (each costs a thread hop and a loop wake-up).
        ``fn`` must not block for long; it runs between other coroutines' statements.
        """
        return await self.conn._execute(fn, self.conn._conn, *args)

    async def transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """Like ``write()`` but the whole transaction is ``fn(conn, *args)`` in one round trip.

        Serialized with ``write()`` by the same lock; ``BEGIN IMMEDIATE`` is retried with
        backoff when another process holds the write lock beyond ``busy_timeout``.
        """
        async with self._write_lock:
            delay = 0.05
            for attempt in range(LOCK_RETRIES):
                try:
                    return await self.run(_in_transaction, fn, args)
                except _Busy:
                    if attempt == LOCK_RETRIES - 1:
                        raise sqlite3.OperationalError("database is locked") from None
                    log.warning("database busy, retrying (%d/%d)", attempt + 1, LOCK_RETRIES)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def _begin(self) -> None:
        delay = 0.05
        for attempt in range(LOCK_RETRIES):
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if attempt == LOCK_RETRIES - 1:
                    raise
                log.warning("database busy, retrying (%d/%d)", attempt + 1, LOCK_RETRIES)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def fetchone(self, sql: str, params: tuple = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: tuple = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # -- migrations -----------------------------------------------------------------------

    async def applied_migrations(self) -> dict[int, str]:
        await self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        rows = await self.fetchall("SELECT version, name FROM schema_migrations")
        return {row["version"]: row["name"] for row in rows}

    async def migrate(self, migrations: list[Migration] | None = None) -> list[Migration]:
        """Apply the migrations not yet applied, each in its own transaction."""
        migrations = bundled_migrations() if migrations is None else migrations
        done = await self.applied_migrations()
        newest_known = max((m.version for m in migrations), default=0)
        if done and max(done) > newest_known:  # migrated by a newer process meanwhile
            raise DatabaseTooNew(
                f"{self.path} is at schema version {max(done)}, newer than this aipersona "
                f"(which knows up to {newest_known}); upgrade aipersona to use it"
            )
        applied = []
        for mig in migrations:
            if mig.version in done:
                continue
            async with self._write_lock:
                await self._begin()
                try:
                    for statement in split_statements(mig.sql):
                        await self.conn.execute(statement)
                    await self.conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (?, ?, ?)",
                        (mig.version, mig.name, time.time()),
                    )
                except Exception as exc:
                    await self.conn.rollback()
                    raise MigrationError(
                        f"migration {mig.version:04d}_{mig.name} failed and was rolled back: {exc}"
                    ) from exc
                await self.conn.commit()
            log.info("applied migration %04d_%s", mig.version, mig.name)
            applied.append(mig)
        return applied
