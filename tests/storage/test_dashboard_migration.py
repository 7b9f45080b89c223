"""Migration 0004 on a database written before it (SQLite): what earlier versions stored is
carried over into the dashboard's columns and counters. (The same SQL runs on PostgreSQL in
the contract tests, against empty tables.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aipersona.core.storage.shared import utc_day
from aipersona.core.storage.sqlite import SQLiteStorage, bundled_migrations

DAY1 = 1_700_000_000.0  # 2023-11-14
DAY2 = DAY1 + 86_400

LEGACY_ROWS = [
    "INSERT INTO personas (id, created_at, updated_at) VALUES (1, {d1}, {d2})",
    "INSERT INTO personas (id, created_at, updated_at) VALUES (2, {d2}, {d2})",
    "INSERT INTO identities VALUES ('cli', 'alice', 1, 'Alice', {d1})",
    "INSERT INTO identities VALUES ('cli', 'bob', 2, 'Bob', {d2})",
    "INSERT INTO sessions (id, persona_id, platform, chat_id, started_at, last_message_at)"
    " VALUES (1, 1, 'cli', 'c', {d1}, {d1})",
    "INSERT INTO messages (session_id, persona_id, role, content, platform, chat_id, created_at)"
    " VALUES (1, 1, 'user', 'hi', 'cli', 'c', {d1}), (1, 1, 'assistant', 'yo', 'cli', 'c', {d1}),"
    " (1, 1, 'user', 'more', 'cli', 'c', {d2})",
    # 1: done with two optimizer versions (same time), 2: done, refused (notes), 3: done with
    # nothing, 4: failed for good, 5: pending
    "INSERT INTO persona_updates (id, persona_id, status, session_ids, attempts, error,"
    " created_at, finished_at) VALUES (1, 1, 'done', '[1]', 1, NULL, {d1}, {d1}),"
    " (2, 1, 'done', '[1]', 1, 'Nope.Field: unknown', {d1}, {d2}),"
    " (3, 2, 'done', '[]', 1, NULL, {d2}, {d2}),"
    " (4, 2, 'failed', '[]', 3, 'HTTP 500', {d2}, {d2}),"
    " (5, 2, 'pending', '[]', 0, NULL, {d2}, NULL)",
    "INSERT INTO persona_versions (persona_id, field, version, op, old_value, new_value,"
    " source, session_ids, evidence, created_at) VALUES"
    " (1, 'Demographics.Age', 1, 'set', NULL, '30', 'optimizer', '[1]', 'I am 30', {d1}),"
    " (1, 'Demographics.Name', 1, 'set', NULL, '\"Al\"', 'optimizer', '[1]', '', {d1}),"
    " (1, 'Demographics.Age', 2, 'set', '30', '31', 'user', '[]', '', {d1})",
    "INSERT INTO token_usage VALUES (1, 'cli', 'c', '{day1}', 'chat', 2, 100, 10),"
    " (1, '', '', '{day1}', 'optimizer', 1, 500, 50), (2, 'cli', 'c', '{day2}', 'chat', 1, 7, 3)",
]


async def test_migration_0004_carries_the_old_rows_over(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    store = await SQLiteStorage.open(str(path))
    await store.migrate([m for m in bundled_migrations() if m.version <= 3])
    await store.close()
    values = {"d1": DAY1, "d2": DAY2, "day1": utc_day(DAY1), "day2": utc_day(DAY2)}
    with sqlite3.connect(path) as conn:
        for sql in LEGACY_ROWS:
            conn.execute(sql.format(**values))
    conn.close()

    store = await SQLiteStorage.open(str(path))
    try:
        assert await store.migrate() == ["0004_dashboard"]
        log = await store.optimizer_log()
        by_id = {e.update.id: e.update for e in log.entries}
        outcomes = {i: (u.outcome, u.edits_applied) for i, u in by_id.items()}
        assert outcomes == {
            1: ("applied", 2),
            2: ("rejected", 0),
            3: ("unchanged", 0),
            4: ("failed", 0),
            5: (None, 0),
        }
        first = next(e for e in log.entries if e.update.id == 1)
        assert [(c.field, c.new_value) for c in first.changes] == [
            ("Demographics.Age", 30),
            ("Demographics.Name", "Al"),
        ]
        data = await store.overview(DAY1, DAY2)
        day1, day2 = (data.counts[d] for d in data.days)
        assert (day1["messages"], day2["messages"]) == (1, 1)
        assert (day1["new_users"], day2["new_users"]) == (1, 1)
        assert (day1["chat_calls"], day1["chat_prompt_tokens"]) == (2, 100)
        assert (day1["optimizer_prompt_tokens"], day2["chat_completion_tokens"]) == (500, 3)
        assert day1["updates_applied"] == 1 and day1["edits_applied"] == 2
        assert (day2["updates_rejected"], day2["updates_unchanged"]) == (1, 1)
        assert day2["updates_failed"] == 1
        assert (data.users, data.pending_updates) == (2, 1)
    finally:
        await store.close()
