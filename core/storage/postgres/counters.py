"""The counters per UTC day (``daily_stats``) on PostgreSQL, added to inside the transaction
of the write they count. Workers count at once, so each person's counts go to one of
``insights.STAT_SHARDS`` rows per counter: two transactions wait on one counter row only when
their people share a shard, and rows are always taken in name order (no deadlock)."""

from __future__ import annotations

from typing import Any

from ...insights import stat_shard
from ..shared import counter_rows


async def add_counts(conn: Any, day: str, persona_id: int, counts: dict[str, int]) -> None:
    """Add ``counts`` to the day's counters (``insights.COUNTERS``), in one statement."""
    rows = sorted(counter_rows(day, stat_shard(persona_id), counts))
    if not rows:
        return
    await conn.execute(
        "INSERT INTO daily_stats (day, name, shard, value)"
        " SELECT $1::text, n, $2::integer, v FROM unnest($3::text[], $4::bigint[]) AS t(n, v)"
        " ON CONFLICT (day, name, shard) DO UPDATE SET value = daily_stats.value + excluded.value",
        day,
        rows[0][2],
        [r[1] for r in rows],
        [r[3] for r in rows],
    )
