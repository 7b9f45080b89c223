"""What both backends share for the operators' views: the people-list query in either SQL
dialect (each page one range of one index, keyset-paginated), the skip scan of platforms,
and rows turned into the value types of ``insights``. Pure: builds SQL text, runs none."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..insights import (
    BadQuery,
    IdentityRow,
    LinkedIdentity,
    LogEntry,
    OverviewData,
    PersonaQuery,
    SessionRow,
    UpdateLog,
    UpdateRow,
    decode_cursor,
    encode_cursor,
    fold_ascii,
    prefix_bounds,
)
from .crypto import Sealer
from .shared import history_entry, utc_day

# the platforms people are known on: a skip scan of the identities' primary key (one index
# probe per platform), the same SQL in both dialects
PLATFORMS_SQL = (
    "WITH RECURSIVE p(name) AS (SELECT MIN(platform) FROM identities UNION ALL"
    " SELECT (SELECT MIN(platform) FROM identities WHERE platform > p.name) FROM p"
    " WHERE p.name IS NOT NULL) SELECT name FROM p WHERE name IS NOT NULL"
)

UPDATE_COLUMNS = (
    "id, persona_id, status, outcome, session_ids, attempts, error, created_at, finished_at,"
    " edits_applied, edits_refused, prompt_tokens, completion_tokens, seconds"
)
SESSION_COLUMNS = (
    "s.id, s.platform, s.chat_id, s.started_at, s.last_message_at, s.ended_at, s.end_reason,"
    " s.update_id, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id)"
)
# the versions persona updates wrote (``update_id`` in a list of ids)
LOG_VERSION_COLUMNS = (
    "id, field, version, op, old_value, new_value, source, session_ids, evidence, created_at,"
    " update_id, persona_id"
)
# the number of people: every persona ever created less every one removed (a few hundred
# counter rows, through daily_stats_name), the same SQL in both dialects
USERS_SQL = (
    "SELECT COALESCE(SUM(CASE name WHEN 'new_users' THEN value ELSE -value END), 0)"
    " FROM daily_stats WHERE name IN ('new_users', 'users_removed')"
)
LATEST_SESSIONS = 10
TOKEN_DAYS = 30


@dataclass(frozen=True)
class Dialect:
    """How a backend writes the parts of the people-list query that differ."""

    dollar: bool  # $1 placeholders (PostgreSQL) instead of ? (SQLite)
    name_key: str  # the display name, ASCII-folded, in code point order (an index key)
    user_key: str  # the user id in code point order (an index key)


SQLITE = Dialect(False, "lower(display_name)", "platform_user_id")
POSTGRES = Dialect(True, 'lower(display_name COLLATE "C")', 'platform_user_id COLLATE "C"')


def people_sql(query: PersonaQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page of a search (``query.mode`` other than
    ``newest``): rows of (persona id, platform, user id, display name, *sort key), one more
    than a page, so the caller knows whether another page follows. BadQuery for a cursor
    that is not this search's."""
    params: list[Any] = []

    def mark(value: Any) -> str:
        params.append(value)
        return f"${len(params)}" if dialect.dollar else "?"

    conds: list[str] = []
    if query.platform:
        conds.append(f"platform = {mark(query.platform)}")
    mode = query.mode
    if mode == "platform":
        keys = ["platform_user_id"]
    elif mode == "user_id":
        keys = [dialect.user_key] if query.platform else [dialect.user_key, "platform"]
        conds += _prefix(dialect.user_key, query.text, mark)
    elif mode == "name":
        keys = [dialect.name_key, "platform_user_id"]
        if not query.platform:
            keys.insert(1, "platform")
        conds += _prefix(dialect.name_key, fold_ascii(query.text), mark)
    else:
        raise BadQuery(f"no single-range query for mode {mode}")
    after = decode_cursor(query.after, mode, (str,) * len(keys))
    if after is not None:
        marks = ", ".join(mark(v) for v in after)
        conds.append(f"({', '.join(keys)}) > ({marks})")
    sql = (
        f"SELECT persona_id, platform, platform_user_id, display_name, {', '.join(keys)}"
        " FROM identities"
        + (f" WHERE {' AND '.join(conds)}" if conds else "")
        + f" ORDER BY {', '.join(keys)} LIMIT {mark(query.limit + 1)}"
    )
    return sql, params


def _prefix(key: str, text: str, mark: Callable[[Any], str]) -> list[str]:
    low, high = prefix_bounds(text)
    conds = [f"{key} >= {mark(low)}"]
    if high is not None:
        conds.append(f"{key} < {mark(high)}")
    return conds


def people_page(
    query: PersonaQuery, rows: Sequence[Sequence[Any]]
) -> tuple[list[IdentityRow], str]:
    """The rows of a ``people_sql`` page and the cursor of the next one."""
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    out = [IdentityRow(int(r[0]), r[1], r[2], r[3]) for r in rows]
    after = encode_cursor(query.mode, list(rows[-1][4:])) if more and rows else ""
    return out, after


def newest_after(query: PersonaQuery) -> int | None:
    """The persona id the ``newest`` page starts below (None: from the newest)."""
    key = decode_cursor(query.after, "newest", (int,))
    return None if key is None else int(key[0])


def newest_page(
    query: PersonaQuery, ids: list[int], identities: Sequence[Sequence[Any]]
) -> tuple[list[IdentityRow], str]:
    """The ``newest`` page: ``ids`` (one more than a page, newest first) and the identities
    of those people as (persona id, platform, user id, display name)."""
    more = len(ids) > query.limit
    ids = ids[: query.limit]
    by_id: dict[int, list[IdentityRow]] = {i: [] for i in ids}
    for r in identities:
        if int(r[0]) in by_id:
            by_id[int(r[0])].append(IdentityRow(int(r[0]), r[1], r[2], r[3]))
    rows = [row for i in ids for row in by_id[i]]
    return rows, encode_cursor("newest", [ids[-1]]) if more and ids else ""


def day_range(since: float, now: float, *, max_days: int = 366) -> list[str]:
    """Every UTC day from ``since``'s to ``now``'s, oldest first."""
    days: list[str] = []
    t = min(since, now)
    last = utc_day(now)
    while len(days) < max_days:
        day = utc_day(t)
        days.append(day)
        if day >= last:
            break
        t += 86_400
    return days


def overview_data(
    users: int, open_sessions: int, pending: int, days: list[str], rows: Sequence[Sequence[Any]]
) -> OverviewData:
    """From the totals and the ``(day, counter, value)`` rows of ``daily_stats``."""
    counts: dict[str, dict[str, int]] = {day: {} for day in days}
    for day, name, value in rows:
        if day in counts:
            counts[day][name] = int(value)
    return OverviewData(int(users), int(open_sessions), int(pending), days, counts)


def update_row(row: Sequence[Any], open_text: Callable[[str | None], str | None]) -> UpdateRow:
    """An ``UPDATE_COLUMNS`` row, its notes opened with the person's sealer."""
    return UpdateRow(
        id=int(row[0]),
        persona_id=int(row[1]),
        status=row[2],
        outcome=row[3],
        session_ids=json.loads(row[4]),
        attempts=int(row[5]),
        notes=open_text(row[6]) or "",
        created_at=row[7],
        finished_at=row[8],
        edits_applied=int(row[9]),
        edits_refused=int(row[10]),
        prompt_tokens=None if row[11] is None else int(row[11]),
        completion_tokens=None if row[12] is None else int(row[12]),
        seconds=row[13],
    )


def session_row(row: Sequence[Any]) -> SessionRow:
    """A ``SESSION_COLUMNS`` row."""
    return SessionRow(
        int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7], int(row[8])
    )


def linked_identity(row: Sequence[Any]) -> LinkedIdentity:
    return LinkedIdentity(row[0], row[1], row[2], row[3])


def who(row: Sequence[Any] | None) -> str:
    """``platform:user id (display name)`` of a person's first identity."""
    if row is None:
        return "(no identity)"
    label = f"{row[0]}:{row[1]}"
    return f"{label} ({row[2]})" if row[2] else label


def update_log(
    rows: Sequence[Sequence[Any]],
    limit: int,
    seals: dict[int, Sealer],
    names: dict[int, str],
    versions: Sequence[Sequence[Any]],
) -> UpdateLog:
    """A page of the optimizer log from ``UPDATE_COLUMNS`` rows (one more than ``limit``,
    newest first), each person's sealer and name, and the ``LOG_VERSION_COLUMNS`` rows of
    the versions those updates wrote."""
    entries = [
        LogEntry(update_row(r, seals[int(r[1])].open_opt), names[int(r[1])]) for r in rows[:limit]
    ]
    by_id = {e.update.id: e for e in entries}
    for v in versions:
        entry = by_id.get(int(v[10]))
        if entry is not None and int(v[11]) == entry.update.persona_id:
            entry.changes.append(history_entry(v, seals[int(v[11])].open_opt))
    more = len(rows) > limit and entries
    return UpdateLog(entries, entries[-1].update.id if more else None)
