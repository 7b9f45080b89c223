"""The backend fixture of the storage contract: each backend the suite runs against, with a
probe that inspects the backend's own tables (the only place tests look at them)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aipersona.core.storage import SessionRules, Storage
from aipersona.core.storage.sqlite import SQLiteStorage

RULES = SessionRules(idle_seconds=60, update_every=2, history_messages=4, history_token_budget=500)


@dataclass
class Backend:
    """A store under test, plus a way to open more connections to the same data and to
    count rows per table (for "nothing forgotten by export, nothing left by delete")."""

    name: str
    storage: Storage
    connect: Callable[[SessionRules], Awaitable[Storage]]
    tables: Callable[[], Awaitable[set[str]]]
    rows_of: Callable[[int], Awaitable[dict[str, int]]]
    opened: list[Storage] = field(default_factory=list)

    async def another(self, rules: SessionRules = RULES) -> Storage:
        store = await self.connect(rules)
        self.opened.append(store)
        return store


# which column ties a table's rows to a persona
PERSONA_KEY = {"personas": "id"}


async def sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "contract.db"

    async def connect(rules: SessionRules) -> Storage:
        store = await SQLiteStorage.open(str(path), rules)
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
            for table in _tables() - {"schema_migrations"}:
                key = PERSONA_KEY.get(table, "persona_id")
                sql = f"SELECT COUNT(*) FROM {table} WHERE {key} = ?"
                out[table] = conn.execute(sql, (persona_id,)).fetchone()[0]
        conn.close()
        return out

    async def tables() -> set[str]:
        return await asyncio.to_thread(_tables)

    async def rows_of(persona_id: int) -> dict[str, int]:
        return await asyncio.to_thread(_rows, persona_id)

    return Backend("sqlite", await connect(RULES), connect, tables, rows_of)


BACKENDS = {"sqlite": sqlite_backend}


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = await BACKENDS[request.param](tmp_path)
    try:
        yield made
    finally:
        for store in [made.storage, *made.opened]:
            await store.close()
