"""``PostgresStorage``: the storage contract on PostgreSQL, for several worker processes on
several machines sharing one database.

Each method is one transaction on a pooled connection. A worker holds one more connection
for as long as it runs: its presence lock (see ``session_queries``), which is how another
worker knows a claim's holder is gone. A person's turn holds a session-level advisory lock on
a pooled connection, so one person's messages are answered one at a time across workers
while everyone else proceeds in parallel; the turn's own queries run on that same connection
(bound to the task that took the lock), so a turn never waits for a second connection while
holding one: the pool bounds how many turns run at once, and cannot deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from ...edits import Edit
from ...errors import StorageError
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
from ..crypto import Keyring, check_master, required
from ..migration_files import Migration, bundled_migrations
from ..operator_sql import day_range
from ..shared import (
    TABLES,
    IdentityCache,
    keyset_sql,
    new_owner,
    table_key,
    update_notes,
    upsert_sql,
    utc_day,
)
from . import migrations as mig
from . import operator_queries as oq
from . import persona_queries as pq
from . import session_queries as sq
from .counters import add_counts
from .pool import connect, create_pool, safe_url

T = TypeVar("T")
ID_CACHE_MAX = 100_000


class PostgresStorage:
    def __init__(
        self,
        pool: Any,
        presence: Any,
        key: int,
        url: str,
        rules: SessionRules,
        keyring: Keyring | None = None,
    ) -> None:
        self.pool = pool
        self.keyring = keyring
        # (task, connection) of the person lock the current task holds, if any
        self._bound: contextvars.ContextVar[tuple[asyncio.Task[Any] | None, Any] | None] = (
            contextvars.ContextVar(f"aipersona-pg-{id(self)}", default=None)
        )
        self._presence = presence
        self.rules = rules
        self.location = safe_url(url)
        self.worker_id = new_owner(str(key))
        self._ids = IdentityCache(ID_CACHE_MAX)

    @classmethod
    async def open(
        cls,
        url: str,
        rules: SessionRules | None = None,
        *,
        password_env: str = "PGPASSWORD",
        schema: str = "",
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 10.0,
        migrations: list[Migration] | None = None,
        keyring: Keyring | None = None,
        verify_key: bool = True,
    ) -> PostgresStorage:
        """Connect (refusing a foreign or a too-new database, or one encrypted under another
        key, without writing to it)."""
        pool = await create_pool(
            url,
            password_env=password_env,
            schema=schema,
            min_size=pool_min_size,
            max_size=pool_max_size,
            connect_timeout=connect_timeout,
        )
        presence = None
        try:
            async with pool.acquire() as conn:
                await mig.check_schema(
                    conn, safe_url(url), migrations or bundled_migrations("postgres")
                )
                if verify_key:  # off for raw row access (db copy), which opens no text
                    check_master(safe_url(url), await mig.master_id(conn), keyring)
            presence = await connect(
                url, password_env=password_env, schema=schema, connect_timeout=connect_timeout
            )
            key = await cls._take_presence(presence)
            return cls(pool, presence, key, url, rules or SessionRules(), keyring)
        except BaseException:
            if presence is not None:
                await presence.close()
            await pool.close()
            raise

    @staticmethod
    async def _take_presence(conn: Any) -> int:
        """A random presence key this worker holds until its connection closes."""
        for _ in range(20):
            key = random.randrange(1, 2_147_483_647)
            if await conn.fetchval(f"SELECT pg_try_advisory_lock({sq.WORKER_LOCK}, $1)", key):
                return key
        raise StorageError("could not take a worker presence lock")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._presence.close()
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """The connection of this task's person lock, else one from the pool."""
        bound = self._bound.get()
        if bound is not None and bound[0] is asyncio.current_task():
            yield bound[1]
            return
        async with self.pool.acquire() as conn:
            yield conn

    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self._connection() as conn:
            return await fn(conn, *args)

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self._connection() as conn, conn.transaction():
            return await fn(conn, *args)

    async def migrate(self, migrations: list[Migration] | None = None) -> list[str]:
        migrations = bundled_migrations("postgres") if migrations is None else migrations
        applied = []
        async with self.pool.acquire() as conn:
            for migration in migrations:
                if await mig.apply(conn, self.location, migration, migrations):
                    applied.append(migration.label)
        return applied

    async def schema_version(self) -> int:
        async with self.pool.acquire() as conn:
            versions = await mig.applied_versions(conn) or {}
        return max(versions, default=0)

    # -- identities -------------------------------------------------------------------------

    async def _lookup(self, identity: Identity) -> int | None:
        return await self._read(pq.persona_of, identity)

    async def _create(self, identity: Identity) -> int:
        return await self._write(pq.resolve, identity, time.time())

    async def find_persona(self, identity: Identity) -> int | None:
        return await self._ids.find(identity, self._lookup)

    async def resolve_persona(self, identity: Identity) -> int:
        return await self._ids.resolve(identity, self._lookup, self._create)

    async def identities(self, persona_id: int) -> list[Identity]:
        return await self._read(pq.identities, persona_id)

    async def link(self, primary: Identity, other: Identity) -> int:
        try:
            return await self._write(pq.link, primary, other, time.time(), self.keyring)
        finally:
            self._ids.clear()

    # -- personas ---------------------------------------------------------------------------

    async def load_persona(self, persona_id: int) -> Persona:
        async def load(conn: Any) -> Persona:
            seal = await pq.sealer(conn, self.keyring, persona_id)
            return await pq.load_persona(conn, persona_id, seal)

        return await self._read(load)

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
        async def apply(conn: Any) -> EditResult:
            now = time.time()
            update_id = None if outcome is None else outcome.update_id
            result = await pq.apply_edits(
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
                await sq.finish_update(
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
                    await sq.add_usage(
                        conn, persona_id, "", "", utc_day(now), "optimizer", t.prompt, t.completion
                    )
            return result

        return await self._write(apply)

    async def rollback(self, persona_id: int, version_id: int) -> EditResult:
        return await self._write(pq.rollback, persona_id, version_id, time.time(), self.keyring)

    async def undo(self, persona_id: int, version_id: int | None = None) -> EditResult:
        return await self._write(pq.undo, persona_id, version_id, time.time(), self.keyring)

    async def set_learning(self, persona_id: int, on: bool) -> bool:
        return await self._write(pq.set_learning, persona_id, on, time.time())

    async def history(
        self,
        persona_id: int,
        *,
        field: str | None = None,
        limit: int = 200,
        offset: int = 0,
        version_id: int | None = None,
    ) -> list[HistoryEntry]:
        async def read(conn: Any) -> list[HistoryEntry]:
            seal = await pq.sealer(conn, self.keyring, persona_id)
            return await pq.history(
                conn, persona_id, field, limit, seal, offset=offset, version_id=version_id
            )

        return await self._read(read)

    async def export(self, persona_id: int) -> dict[str, Any]:
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read"):
            # one consistent snapshot
            return await pq.export(conn, persona_id, time.time(), self.keyring)

    async def delete_persona(self, persona_id: int) -> bool:
        """Delete the persona and everything about it. PostgreSQL keeps the old row versions
        in its files until VACUUM reuses the space (and in WAL archives and backups): see
        the README's "Privacy and data control" section for what it can and cannot promise."""
        try:
            deleted = await self._write(pq.delete, persona_id)
        finally:
            self._ids.clear()
        return deleted

    # -- turns and sessions -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _person(self, persona_id: int) -> AsyncIterator[None]:
        key = sq.lock_key(persona_id)
        async with self.pool.acquire() as conn:
            await conn.execute(f"SELECT pg_advisory_lock({sq.PERSON_LOCK}, $1)", key)
            token = self._bound.set((asyncio.current_task(), conn))
            try:
                yield
            finally:
                self._bound.reset(token)
                await conn.execute(f"SELECT pg_advisory_unlock({sq.PERSON_LOCK}, $1)", key)

    def person_lock(self, persona_id: int) -> AbstractAsyncContextManager[None]:
        return self._person(persona_id)

    async def begin_turn(
        self, persona_id: int, identity: Identity, chat_id: str, text: str, now: float
    ) -> TurnStart | None:
        start = await self._write(
            sq.begin_turn, self.rules, persona_id, identity, chat_id, text, now, self.keyring
        )
        if start is None:
            self._ids.drop(identity)
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
        async def add(conn: Any) -> int:
            seal = await pq.sealer(conn, self.keyring, persona_id, create=True)
            stored = await sq.add_message(
                conn, self.rules, persona_id, platform, chat_id, "assistant", text, now, seal
            )
            if tokens is not None:
                await sq.add_usage(
                    conn,
                    persona_id,
                    platform,
                    chat_id,
                    utc_day(now),
                    "chat",
                    tokens.prompt,
                    tokens.completion,
                )
            return int(stored.message_id)

        return await self._write(add)

    async def end_open_session(
        self, persona_id: int, platform: str, chat_id: str, reason: str, now: float
    ) -> int | None:
        return await self._write(
            sq.end_open_session, self.rules, persona_id, platform, chat_id, reason, now
        )

    async def sweep_idle(self, now: float, *, batch: int = 100) -> list[tuple[int, int]]:
        return await self._write(sq.sweep_idle, self.rules, now, batch)

    async def transcripts(self, persona_id: int, session_ids: list[int]) -> list[Transcript]:
        return await self._read(sq.transcripts, persona_id, session_ids, self.keyring)

    # -- usage and retention ------------------------------------------------------------------

    async def usage(self, persona_id: int, platform: str, chat_id: str, now: float) -> Usage:
        return await self._read(sq.usage, persona_id, platform, chat_id, utc_day(now))

    async def usage_report(self, since: float) -> list[dict[str, Any]]:
        return await self._read(sq.usage_rows, utc_day(since))

    async def purge_messages(self, learned_before: float, *, batch: int = 500) -> int:
        """Delete the texts, in batches. PostgreSQL leaves the old row versions in the
        table files until VACUUM reclaims them (and in WAL segments, archives and backups):
        see the README's Privacy section for what it can and cannot promise."""
        total = 0
        while True:
            updates, messages = await self._write(
                sq.purge_messages, learned_before, time.time(), batch
            )
            total += messages
            if updates < batch:
                return total

    # -- encryption at rest -------------------------------------------------------------------

    async def rewrap_keys(self, new: Keyring) -> int:
        return await self._write(pq.rewrap_keys, required(self.keyring), new)

    async def seal_plaintext(self) -> int:
        keyring = required(self.keyring)
        async with self.pool.acquire() as conn:
            ids = [int(r[0]) for r in await conn.fetch("SELECT id FROM personas ORDER BY id")]
        total = 0
        for persona_id in ids:
            total += await self._write(pq.seal_plaintext, persona_id, keyring)
        return total

    # -- persona updates --------------------------------------------------------------------

    async def pending_updates(self, persona_id: int | None = None) -> list[PendingUpdate]:
        return await self._read(sq.pending_updates, persona_id)

    async def claim_update(
        self, update_id: int, owner: str, now: float, lease_seconds: float
    ) -> PendingUpdate | None:
        return await self._write(sq.claim_update, update_id, owner, now, lease_seconds)

    async def release_updates(self, owner: str) -> None:
        await self._write(sq.release_updates, owner)

    async def finish_update(
        self, update_id: int, notes: tuple[str, ...] = (), *, seconds: float | None = None
    ) -> None:
        async def finish(conn: Any) -> None:
            await sq.finish_update(
                conn, update_id, notes, time.time(), self.keyring, seconds=seconds
            )

        await self._write(finish)

    async def fail_update(self, update_id: int, error: str, max_attempts: int) -> bool:
        return await self._write(
            sq.fail_update, update_id, error, max_attempts, time.time(), self.keyring
        )

    # -- operators' views -------------------------------------------------------------------

    async def _report(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(conn, *args)`` in one read-only snapshot (repeatable read)."""
        async with (
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await fn(conn, *args)

    async def record_counts(self, persona_id: int, counts: dict[str, int], now: float) -> None:
        await self._write(add_counts, utc_day(now), persona_id, counts)

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
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
                " AND table_schema = current_schema() ORDER BY ordinal_position",
                table,
            )
        return [r[0] for r in rows]

    async def count_rows(self, table: str) -> int:
        table_key(table)
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(f"SELECT COUNT(*) FROM {table}"))

    async def read_rows(
        self, table: str, columns: list[str], after: tuple[Any, ...] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        sql = keyset_sql(table, columns, table_key(table), after=after is not None, dollar=True)
        async with self.pool.acquire() as conn:
            return [tuple(r) for r in await conn.fetch(sql, *(after or ()), limit)]

    async def write_rows(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        sql = upsert_sql(table, columns, table_key(table), dollar=True)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(sql, rows)

    async def after_bulk_write(self) -> None:
        """Move each id sequence past the largest copied id."""
        self._ids.clear()
        async with self.pool.acquire() as conn:
            for table, key in TABLES:
                if key == ("id",):
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" COALESCE((SELECT MAX(id) FROM {table}), 1),"
                        f" (SELECT MAX(id) FROM {table}) IS NOT NULL)"
                    )
