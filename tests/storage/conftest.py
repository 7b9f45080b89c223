"""The backend fixture of the storage contract: each backend the suite runs against, with a
probe that inspects the backend's own tables (the only place tests look at them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aipersona.core.storage import Keyring, SessionRules, Storage
from aipersona.core.storage.postgres import PostgresStorage
from aipersona.core.storage.shared import SHARED_TABLES
from aipersona.core.storage.sqlite import SQLiteStorage
from tests import postgres

RULES = SessionRules(idle_seconds=60, update_every=2, history_messages=4, history_token_budget=500)
# the master key of the encrypted variants (a test value, never a real key)
TEST_KEYRING = Keyring(bytes(range(32)))


@dataclass
class Backend:
    """A store under test, plus a way to open more connections to the same data and to
    count rows per table (for "nothing forgotten by export, nothing left by delete")."""

    name: str
    storage: Storage
    connect: Callable[[SessionRules, Keyring | None], Awaitable[Storage]]
    tables: Callable[[], Awaitable[set[str]]]
    rows_of: Callable[[int], Awaitable[dict[str, int]]]
    # every text value stored in the backend's tables (what is at rest, for marker scans)
    raw_texts: Callable[[], Awaitable[list[str]]]
    keyring: Keyring | None = None
    opened: list[Storage] = field(default_factory=list)

    async def another(self, rules: SessionRules = RULES) -> Storage:
        """One more store on the same data, opened with ``self.keyring``."""
        store = await self.connect(rules, self.keyring)
        self.opened.append(store)
        return store


# which column ties a table's rows to a persona (tables of everyone together have none)
PERSONA_KEY = {"personas": "id"}
NOBODYS = {"schema_migrations", *SHARED_TABLES}


async def sqlite_backend(tmp_path: Path, keyring: Keyring | None = None) -> Backend:
    path = tmp_path / "contract.db"

    async def connect(rules: SessionRules, keyring: Keyring | None) -> Storage:
        store = await SQLiteStorage.open(str(path), rules, keyring=keyring)
        await store.migrate()
        return store

    def _tables() -> set[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            names = {r[0] for r in rows if not r[0].startswith("sqlite_")}
        conn.close()
        return names

    def _rows(persona_id: int) -> dict[str, int]:
        out = {}
        with sqlite3.connect(path) as conn:
            for table in _tables() - NOBODYS:
                key = PERSONA_KEY.get(table, "persona_id")
                sql = f"SELECT COUNT(*) FROM {table} WHERE {key} = ?"
                out[table] = conn.execute(sql, (persona_id,)).fetchone()[0]
        conn.close()
        return out

    async def tables() -> set[str]:
        return await asyncio.to_thread(_tables)

    async def rows_of(persona_id: int) -> dict[str, int]:
        return await asyncio.to_thread(_rows, persona_id)

    def _raw_texts() -> list[str]:
        out: list[str] = []
        with sqlite3.connect(path) as conn:
            for table in _tables():
                for row in conn.execute(f"SELECT * FROM {table}"):
                    out += [v for v in row if isinstance(v, str)]
        conn.close()
        return out

    async def raw_texts() -> list[str]:
        return await asyncio.to_thread(_raw_texts)

    name = "sqlite" if keyring is None else "sqlite-encrypted"
    store = await connect(RULES, keyring)
    return Backend(name, store, connect, tables, rows_of, raw_texts, keyring)


@contextlib.asynccontextmanager
async def postgres_backend(
    tmp_path: Path, keyring: Keyring | None = None
) -> AsyncIterator[Backend]:
    import asyncpg

    async with postgres.fresh_schema() as schema:
        db = postgres.database_section(schema)

        async def connect(rules: SessionRules, keyring: Keyring | None) -> Storage:
            store = await PostgresStorage.open(
                db["url"], rules, password_env=db["password_env"], schema=schema, keyring=keyring
            )
            await store.migrate()
            return store

        async def probe() -> Any:
            return await asyncpg.connect(
                db["url"],
                password=os.environ.get(db["password_env"]),
                server_settings={"search_path": schema},
            )

        async def tables() -> set[str]:
            conn = await probe()
            try:
                rows = await conn.fetch(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema()"
                )
                return {r[0] for r in rows}
            finally:
                await conn.close()

        async def rows_of(persona_id: int) -> dict[str, int]:
            conn = await probe()
            try:
                out = {}
                for table in await tables() - NOBODYS:
                    key = PERSONA_KEY.get(table, "persona_id")
                    sql = f"SELECT COUNT(*) FROM {table} WHERE {key} = $1"
                    out[table] = int(await conn.fetchval(sql, persona_id))
                return out
            finally:
                await conn.close()

        async def raw_texts() -> list[str]:
            conn = await probe()
            try:
                out: list[str] = []
                for table in await tables():
                    for row in await conn.fetch(f"SELECT * FROM {table}"):
                        out += [v for v in row.values() if isinstance(v, str)]
                return out
            finally:
                await conn.close()

        name = "postgres" if keyring is None else "postgres-encrypted"
        store = await connect(RULES, keyring)
        yield Backend(name, store, connect, tables, rows_of, raw_texts, keyring)


@contextlib.asynccontextmanager
async def sqlite_backend_cm(
    tmp_path: Path, keyring: Keyring | None = None
) -> AsyncIterator[Backend]:
    yield await sqlite_backend(tmp_path, keyring)


BACKENDS = {
    "sqlite": (sqlite_backend_cm, None),
    "sqlite-encrypted": (sqlite_backend_cm, TEST_KEYRING),
    "postgres": (postgres_backend, None),
    "postgres-encrypted": (postgres_backend, TEST_KEYRING),
}


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    make, keyring = BACKENDS[request.param]
    async with make(tmp_path, keyring) as made:
        try:
            yield made
        finally:
            for store in [made.storage, *made.opened]:
                await store.close()
