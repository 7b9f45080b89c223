"""One SQLite connection per process, on aiosqlite's worker thread, in one transaction style.

Every storage operation is a plain function ``fn(conn, *args)`` over a ``sqlite3.Connection``
that runs on the connection's worker thread in **one** thread round trip: ``read`` runs it
outside a transaction, ``write`` inside ``BEGIN IMMEDIATE ... COMMIT`` (rolled back on any
exception). Writes are serialized by an asyncio lock; ``BEGIN IMMEDIATE`` makes several
processes on one file queue on SQLite's busy timeout (retried with backoff) instead of
failing half-way.

Why aiosqlite's private ``Connection._execute``: aiosqlite's public API costs one thread
round trip (a hop and a loop wake-up) per statement. The per-message path is two
transactions of 5-8 statements each; run statement by statement it measured about twice
the p50 of running each transaction as one function (BENCHMARKS.md, "Per-message
overhead"). aiosqlite has no public way to run a function on its thread, so the one call
is isolated in ``_on_worker_thread`` and checked when a database is opened: a future
aiosqlite without it fails with a clear StorageError at start-up, not in the middle of a
turn. That check is why the version pin could be lifted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ...errors import NotAnAipersonaDatabase, StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_RETRIES = 8
# WAL checkpoints run on their own connection and thread, off the message path (an automatic
# checkpoint inside a commit stalls that commit, and every statement queued behind it, for
# milliseconds). The connection's own auto-checkpoint stays on as a safety net, at a size
# the background checkpointer keeps the WAL well under.
CHECKPOINT_SECONDS = 0.5
AUTOCHECKPOINT_PAGES = 20_000
SQLITE_HEADER = b"SQLite format 3\x00"


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


def _in_snapshot(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """On the worker thread: ``fn(conn, *args)`` inside a read transaction, so all its
    statements see one snapshot of the database (WAL: writers go on meanwhile)."""
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _on_worker_thread(conn: aiosqlite.Connection) -> Callable[..., Any]:
    """aiosqlite's (private) "run this function on the connection's thread" entry point."""
    execute = getattr(conn, "_execute", None)
    if execute is None or not hasattr(conn, "_conn"):
        raise StorageError(
            "this aiosqlite version cannot run a function on its worker thread "
            "(Connection._execute is gone); install aiosqlite<1"
        )
    return execute


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


class Connection:
    """An open database: ``read``/``write`` run functions on the worker thread."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._run = _on_worker_thread(conn)
        self._write_lock = asyncio.Lock()
        self._checkpointer: _Checkpointer | None = None

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        busy_timeout_ms: int = 10_000,
        check: Callable[[sqlite3.Connection, str], None] | None = None,
        read_only: bool = False,
    ) -> Connection:
        """Open (creating if new) a database file.

        ``check(conn, path)`` runs before any pragma writes (refusing a foreign or a too-new
        database leaves its file as it was). On any failure the connection and its worker
        thread are closed before the error propagates. ``read_only``: a second connection
        to an open database for reads only (``PRAGMA query_only``), without a checkpointer.
        """
        on_disk = path != ":memory:" and not path.startswith("file:")
        if read_only:
            return await cls._open_reader(path, busy_timeout_ms)
        if on_disk:
            await asyncio.to_thread(prepare_path, path)
        try:
            raw = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from None
        try:
            db = cls(raw, path)
            await db.read(_set_pragma, f"busy_timeout = {int(busy_timeout_ms)}")
            if check is not None:
                await db.read(check, path)
            # deleted rows are overwritten with zeros, so deleted text does not linger in
            # free space of the database file (the WAL is checkpointed after deletions)
            await db.read(_set_pragma, "secure_delete = ON")
            if path != ":memory:":
                await db.read(_set_pragma, "journal_mode = WAL")
                await db.read(_set_pragma, f"wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
            await db.read(_set_pragma, "synchronous = NORMAL")
            await db.read(_set_pragma, "foreign_keys = ON")
        except BaseException as exc:
            await raw.close()
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

    @classmethod
    async def _open_reader(cls, path: str, busy_timeout_ms: int) -> Connection:
        try:
            raw = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from None
        db = cls(raw, path)
        try:
            for pragma in (f"busy_timeout = {int(busy_timeout_ms)}", "query_only = ON"):
                await db.read(_set_pragma, pragma)
        except BaseException:
            await raw.close()
            raise
        return db

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        await self._conn.close()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(sqlite3_connection, *args)`` on the worker thread, outside a transaction.

        ``fn`` must not block for long: it runs between other coroutines' statements.
        """
        result: T = await self._run(fn, self._conn._conn, *args)
        return result

    async def snapshot(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the worker thread in one read transaction (one consistent
        view for several statements)."""
        return await self.read(_in_snapshot, fn, args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` as one ``BEGIN IMMEDIATE`` transaction in one round trip.

        Serialized by a lock; ``BEGIN IMMEDIATE`` is retried with backoff when another
        process holds the write lock beyond ``busy_timeout``.
        """
        async with self._write_lock:
            delay = 0.05
            for attempt in range(LOCK_RETRIES):
                try:
                    return await self.read(_in_transaction, fn, args)
                except _Busy:
                    if attempt == LOCK_RETRIES - 1:
                        raise StorageError(f"database {self.path} is locked") from None
                    log.warning("database busy, retrying (%d/%d)", attempt + 1, LOCK_RETRIES)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

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
                busy = await self.read(_checkpoint_truncate)
            if not busy:
                return True
            await asyncio.sleep(0.05)
        log.warning("WAL checkpoint after a deletion could not finish (readers busy)")
        return False


def _set_pragma(conn: sqlite3.Connection, pragma: str) -> None:
    conn.execute(f"PRAGMA {pragma}").fetchall()


def _checkpoint_truncate(conn: sqlite3.Connection) -> bool:
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return bool(row and row[0])
