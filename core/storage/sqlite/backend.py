"""``SQLiteStorage``: the storage contract on one SQLite file (the embedded default).

Each method is one function run on the connection's worker thread, in one round trip; the
per-message path is two write transactions (``begin_turn``, ``add_reply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from ...edits import Edit
from ...insights import (
    OverviewData,
    PersonaDetail,
    PersonaPage,
    PersonaQuery,
    UpdateLog,
    check_log_filter,
)
from ...schema import PersonaSchema
from ...types import (
    EditResult,
    HistoryEntry,
    Identity,
    PendingUpdate,
    Persona,
    Transcript,
    TurnStart,
    Usage,
)
from ..base import SessionRules, Tokens, UpdateOutcome
from ..crypto import Keyring, required
from ..operator_sql import day_range
from ..shared import (
    IdentityCache,
    keyset_sql,
    new_owner,
    table_key,
    update_notes,
    upsert_sql,
    utc_day,
)
from . import operator_queries as oq
from . import persona_queries as pq
from . import session_queries as sq
from .connection import Connection
from .counters import add_counts
from .migrations import (
    Migration,
    applied_versions,
    apply_migration,
    bundled_migrations,
    check_keys,
    check_schema,
)
from .person_locks import PersonLocks

ID_CACHE_MAX = 100_000
T = TypeVar("T")


class SQLiteStorage:
    """The ``Storage`` contract on SQLite.

    ``(platform, user_id) -> persona id`` is cached in memory (bounded) because every message
    needs it. The cache is a hint: ``begin_turn`` re-checks the mapping in its transaction,
    so a link or a deletion by another process is noticed, not trusted.
    """

    def __init__(self, db: Connection, rules: SessionRules, keyring: Keyring | None = None) -> None:
        self.db = db
        self.rules = rules
        self.keyring = keyring
        self.location = db.path
        self.worker_id = new_owner()
        self._ids = IdentityCache(ID_CACHE_MAX)
        on_disk = db.path != ":memory:" and not db.path.startswith("file:")
        self._person_locks = PersonLocks(db.path) if on_disk else None
        self._busy_timeout_ms = 10_000
        # operators' reads get a connection (and a thread) of their own, opened when first
        # needed: a dashboard page never waits behind, or delays, the message path
        self._reader: Connection | None = None
        self._reader_opening = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: str,
        rules: SessionRules | None = None,
        *,
        busy_timeout_ms: int = 10_000,
        migrations: list[Migration] | None = None,
        keyring: Keyring | None = None,
        verify_key: bool = True,
    ) -> SQLiteStorage:
        """Open the file (refusing a foreign or a too-new database, or one encrypted under
        another key, untouched)."""
        known = migrations or bundled_migrations()

        def check(conn: Any, where: str) -> None:
            check_schema(conn, where, known)
            if verify_key:  # off for raw row access (db copy), which never opens a text
                check_keys(conn, where, keyring)

        db = await Connection.open(path, busy_timeout_ms=busy_timeout_ms, check=check)
        store = cls(db, rules or SessionRules(), keyring)
        store._busy_timeout_ms = busy_timeout_ms
        return store

    async def close(self) -> None:
        if self._person_locks is not None:
            self._person_locks.close()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        await self.db.close()

    async def migrate(self, migrations: list[Migration] | None = None) -> list[str]:
        migrations = bundled_migrations() if migrations is None else migrations
        await self.db.read(check_schema, self.location, migrations)
        applied = []
        for mig in migrations:
            if await self.db.write(apply_migration, mig):
                applied.append(f"{mig.version:04d}_{mig.name}")
        return applied

    async def schema_version(self) -> int:
        versions = await self.db.read(applied_versions)
        return max(versions, default=0)

    # -- identities -------------------------------------------------------------------------

    async def _lookup(self, identity: Identity) -> int | None:
        return await self.db.read(pq.persona_of, identity)

    async def _create(self, identity: Identity) -> int:
        return await self.db.write(pq.resolve, identity, time.time())

    async def find_persona(self, identity: Identity) -> int | None:
        return await self._ids.find(identity, self._lookup)

    async def resolve_persona(self, identity: Identity) -> int:
        return await self._ids.resolve(identity, self._lookup, self._create)

    async def identities(self, persona_id: int) -> list[Identity]:
        return await self.db.read(pq.identities, persona_id)

    async def link(self, primary: Identity, other: Identity) -> int:
        try:
            return await self.db.write(pq.link, primary, other, time.time(), self.keyring)
        finally:
            self._ids.clear()

    # -- personas ---------------------------------------------------------------------------

    async def load_persona(self, persona_id: int) -> Persona:
        def load(conn: Any) -> Persona:
            return pq.load_persona(conn, persona_id, pq.sealer(conn, self.keyring, persona_id))

        return await self.db.read(load)

    async def apply_edits(
        self,
        persona_id: int,
        edits: list[Edit],
        schema: PersonaSchema,
        *,
        source: str,
        session_ids: list[int] | None = None,
        outcome: UpdateOutcome | None = None,
    ) -> EditResult:
        def apply(conn: Any) -> EditResult:
            now = time.time()
            update_id = None if outcome is None else outcome.update_id
            result = pq.apply_edits(
                conn,
                persona_id,
                edits,
                schema,
                source,
                session_ids or [],
                now,
                self.keyring,
                update_id,
            )
            if outcome is not None:
                notes = update_notes(outcome.notes, result.rejected)
                sq.finish_update(
                    conn,
                    outcome.update_id,
                    notes,
                    now,
                    self.keyring,
                    applied=len(result.changes),
                    tokens=outcome.tokens,
                    seconds=outcome.seconds,
                )
                if outcome.tokens is not None:
                    t = outcome.tokens
                    sq.add_usage(
                        conn, persona_id, "", "", utc_day(now), "optimizer", t.prompt, t.completion
                    )
            return result

        return await self.db.write(apply)

    async def rollback(self, persona_id: int, version_id: int) -> EditResult:
        return await self.db.write(pq.rollback, persona_id, version_id, time.time(), self.keyring)

    async def undo(self, persona_id: int, version_id: int | None = None) -> EditResult:
        return await self.db.write(pq.undo, persona_id, version_id, time.time(), self.keyring)

    async def set_learning(self, persona_id: int, on: bool) -> bool:
        return await self.db.write(pq.set_learning, persona_id, on, time.time())

    async def history(
        self,
        persona_id: int,
        *,
        field: str | None = None,
        limit: int = 200,
        offset: int = 0,
        version_id: int | None = None,
    ) -> list[HistoryEntry]:
        def read(conn: Any) -> list[HistoryEntry]:
            seal = pq.sealer(conn, self.keyring, persona_id)
            return pq.history(
                conn, persona_id, field, limit, seal, offset=offset, version_id=version_id
            )

        return await self.db.read(read)

    async def export(self, persona_id: int) -> dict[str, Any]:
        return await self.db.read(pq.export, persona_id, time.time(), self.keyring)

    async def delete_persona(self, persona_id: int) -> bool:
        """Delete the persona and everything about it.

        With ``secure_delete`` on the rows are overwritten with zeros in the database file;
        the WAL, which still holds the old pages, is then checkpointed and truncated, so the
        deleted text is in none of the database's files.
        """
        try:
            deleted = await self.db.write(pq.delete, persona_id)
        finally:
            self._ids.clear()
        if deleted:
            await self.db.checkpoint_truncate()
        return deleted

    # -- turns and sessions -----------------------------------------------------------------

    def person_lock(self, persona_id: int) -> AbstractAsyncContextManager[None]:
        if self._person_locks is None:  # in memory: one process only
            return contextlib.nullcontext()
        return self._person_locks.hold(persona_id)

    async def begin_turn(
        self, persona_id: int, identity: Identity, chat_id: str, text: str, now: float
    ) -> TurnStart | None:
        start = await self.db.write(
            sq.begin_turn, self.rules, persona_id, identity, chat_id, text, now, self.keyring
        )
        if start is None:
            self._ids.drop(identity)  # stale: linked or deleted meanwhile
        return start

    async def add_reply(
        self,
        persona_id: int,
        platform: str,
        chat_id: str,
        text: str,
        now: float,
        tokens: Tokens | None = None,
    ) -> int:
        def add(conn: Any) -> int:
            seal = pq.sealer(conn, self.keyring, persona_id, create=True)
            stored = sq.add_message(
                conn, self.rules, persona_id, platform, chat_id, "assistant", text, now, seal
            )
            if tokens is not None:
                day = utc_day(now)
                sq.add_usage(
                    conn,
                    persona_id,
                    platform,
                    chat_id,
                    day,
                    "chat",
                    tokens.prompt,
                    tokens.completion,
                )
            return stored.message_id

        return await self.db.write(add)

    async def end_open_session(
        self, persona_id: int, platform: str, chat_id: str, reason: str, now: float
    ) -> int | None:
        return await self.db.write(
            sq.end_open_session, self.rules, persona_id, platform, chat_id, reason, now
        )

    async def sweep_idle(self, now: float, *, batch: int = 100) -> list[tuple[int, int]]:
        return await self.db.write(sq.sweep_idle, self.rules, now, batch)

    async def transcripts(self, persona_id: int, session_ids: list[int]) -> list[Transcript]:
        return await self.db.read(sq.transcripts, persona_id, session_ids, self.keyring)

    # -- usage and retention ------------------------------------------------------------------

    async def usage(self, persona_id: int, platform: str, chat_id: str, now: float) -> Usage:
        return await self.db.read(sq.usage, persona_id, platform, chat_id, utc_day(now))

    async def usage_report(self, since: float) -> list[dict[str, Any]]:
        return await self.db.read(sq.usage_rows, utc_day(since))

    async def purge_messages(self, learned_before: float, *, batch: int = 500) -> int:
        """Delete the texts (``secure_delete`` overwrites them with zeros), then checkpoint
        and truncate the WAL, which still holds them."""
        total = 0
        while True:
            updates, messages = await self.db.write(
                sq.purge_messages, learned_before, time.time(), batch
            )
            total += messages
            if updates < batch:
                break
        if total:
            await self.db.checkpoint_truncate()
        return total

    # -- encryption at rest -------------------------------------------------------------------

    async def rewrap_keys(self, new: Keyring) -> int:
        count = await self.db.write(pq.rewrap_keys, required(self.keyring), new)
        await self.db.checkpoint_truncate()  # no page with the old wrapping left in the WAL
        return count

    async def seal_plaintext(self) -> int:
        keyring = required(self.keyring)
        ids = await self.db.read(
            lambda conn: [r[0] for r in conn.execute("SELECT id FROM personas")]
        )
        total = 0
        for persona_id in ids:
            total += await self.db.write(pq.seal_plaintext, persona_id, keyring)
        await self.db.checkpoint_truncate()
        return total

    # -- persona updates --------------------------------------------------------------------

    async def pending_updates(self, persona_id: int | None = None) -> list[PendingUpdate]:
        return await self.db.read(sq.pending_updates, persona_id)

    async def claim_update(
        self, update_id: int, owner: str, now: float, lease_seconds: float
    ) -> PendingUpdate | None:
        return await self.db.write(sq.claim_update, update_id, owner, now, lease_seconds)

    async def release_updates(self, owner: str) -> None:
        await self.db.write(sq.release_updates, owner)

    async def finish_update(
        self, update_id: int, notes: tuple[str, ...] = (), *, seconds: float | None = None
    ) -> None:
        def finish(conn: Any) -> None:
            sq.finish_update(conn, update_id, notes, time.time(), self.keyring, seconds=seconds)

        await self.db.write(finish)

    async def fail_update(self, update_id: int, error: str, max_attempts: int) -> bool:
        return await self.db.write(
            sq.fail_update, update_id, error, max_attempts, time.time(), self.keyring
        )

    # -- operators' views -------------------------------------------------------------------

    async def _report(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in one snapshot on the operators' own connection (the main
        one for an in-memory database, which a second connection would not see)."""
        if self._person_locks is None:
            return await self.db.snapshot(fn, *args)
        async with self._reader_opening:
            if self._reader is None:
                self._reader = await Connection.open(
                    self.db.path, busy_timeout_ms=self._busy_timeout_ms, read_only=True
                )
        return await self._reader.snapshot(fn, *args)

    async def record_counts(self, persona_id: int, counts: dict[str, int], now: float) -> None:
        await self.db.write(add_counts, utc_day(now), counts)

    async def overview(self, since: float, now: float) -> OverviewData:
        return await self._report(oq.overview, day_range(since, now))

    async def search_personas(self, query: PersonaQuery) -> PersonaPage:
        return await self._report(oq.search, query)

    async def platforms(self) -> list[str]:
        return await self._report(oq.platforms)

    async def persona_detail(
        self, persona_id: int, *, history_limit: int = 50, history_before: int | None = None
    ) -> PersonaDetail:
        return await self._report(
            oq.detail, persona_id, self.keyring, history_limit, history_before, time.time()
        )

    async def optimizer_log(
        self,
        *,
        outcome: str | None = None,
        persona_id: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> UpdateLog:
        check_log_filter(outcome)
        return await self._report(
            oq.optimizer_log, self.keyring, outcome, persona_id, before, limit
        )

    async def open_sessions(self) -> int:
        return await self._report(oq.open_session_count)

    # -- bulk access (aipersona db copy) ----------------------------------------------------

    async def columns(self, table: str) -> list[str]:
        table_key(table)  # only aipersona's tables

        def read(conn: Any) -> list[str]:
            return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]

        return await self.db.read(read)

    async def count_rows(self, table: str) -> int:
        table_key(table)

        def count(conn: Any) -> int:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

        return await self.db.read(count)

    async def read_rows(
        self, table: str, columns: list[str], after: tuple[Any, ...] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        sql = keyset_sql(table, columns, table_key(table), after=after is not None, dollar=False)

        def read(conn: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql, (*(after or ()), limit))]

        return await self.db.read(read)

    async def write_rows(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        sql = upsert_sql(table, columns, table_key(table), dollar=False)

        def write(conn: Any) -> None:
            conn.executemany(sql, rows)

        await self.db.write(write)

    async def after_bulk_write(self) -> None:
        self._ids.clear()  # SQLite's integer keys continue from the largest id by themselves
