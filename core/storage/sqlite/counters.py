"""The counters per UTC day (``daily_stats``) on SQLite, added to inside the transaction of
the write they count. One process writes at a time, so every count goes to shard 0."""

from __future__ import annotations

import sqlite3

from ..shared import counter_rows


def add_counts(conn: sqlite3.Connection, day: str, counts: dict[str, int]) -> None:
    """Add ``counts`` to the day's counters (``insights.COUNTERS``)."""
    conn.executemany(
        "INSERT INTO daily_stats (day, name, shard, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (day, name, shard) DO UPDATE SET value = value + excluded.value",
        counter_rows(day, 0, counts),
    )
