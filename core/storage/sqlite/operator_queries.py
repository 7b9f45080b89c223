"""The operators' views on SQLite: the overview's totals and counters per day, the people
list, one person in full, the optimizer log. Read-only; each function runs on a connection's
worker thread like the others. Texts are opened with each person's sealer."""

from __future__ import annotations

import sqlite3
from typing import Any

from ...insights import (
    OverviewData,
    PersonaDetail,
    PersonaPage,
    PersonaQuery,
    UpdateLog,
)
from ..crypto import Keyring, Sealer
from ..operator_sql import (
    LATEST_SESSIONS,
    LOG_VERSION_COLUMNS,
    PLATFORMS_SQL,
    SESSION_COLUMNS,
    SQLITE,
    TOKEN_DAYS,
    UPDATE_COLUMNS,
    USERS_SQL,
    linked_identity,
    newest_after,
    newest_page,
    overview_data,
    people_page,
    people_sql,
    session_row,
    update_log,
    update_row,
    who,
)
from ..shared import utc_day
from .persona_queries import history, persona_times, read_persona, sealer

IDENTITY_COLUMNS = "persona_id, platform, platform_user_id, display_name"


def overview(conn: sqlite3.Connection, days: list[str]) -> OverviewData:
    users = conn.execute(USERS_SQL).fetchone()[0]
    open_sessions = open_session_count(conn)
    pending = conn.execute(
        "SELECT COUNT(*) FROM persona_updates WHERE status = 'pending'"
    ).fetchone()[0]
    rows = conn.execute(
        "SELECT day, name, SUM(value) FROM daily_stats WHERE day >= ? AND day <= ?"
        " GROUP BY day, name",
        (days[0], days[-1]),
    ).fetchall()
    return overview_data(users, open_sessions, pending, days, rows)


def open_session_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL").fetchone()[0])


def search(conn: sqlite3.Connection, query: PersonaQuery) -> PersonaPage:
    if query.mode != "newest":
        sql, params = people_sql(query, SQLITE)
        rows, after = people_page(query, conn.execute(sql, params).fetchall())
        return PersonaPage(rows, after)
    below = newest_after(query)
    sql = "SELECT id FROM personas" + ("" if below is None else " WHERE id < ?")
    args: tuple[Any, ...] = () if below is None else (below,)
    ids = [
        int(r[0]) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, query.limit + 1))
    ]
    marks = ", ".join("?" * len(ids[: query.limit]))
    identities = conn.execute(
        f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE persona_id IN ({marks})"
        " ORDER BY linked_at, rowid",
        ids[: query.limit],
    ).fetchall()
    rows, after = newest_page(query, ids, identities)
    return PersonaPage(rows, after)


def platforms(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(PLATFORMS_SQL)]


def detail(
    conn: sqlite3.Connection,
    persona_id: int,
    keyring: Keyring | None,
    history_limit: int,
    history_before: int | None,
    now: float,
) -> PersonaDetail:
    row = persona_times(conn, persona_id)
    seal = sealer(conn, keyring, persona_id)
    entries = history(conn, persona_id, None, history_limit + 1, seal, before=history_before)
    identities = conn.execute(
        "SELECT platform, platform_user_id, display_name, linked_at FROM identities"
        " WHERE persona_id = ? ORDER BY linked_at, rowid",
        (persona_id,),
    ).fetchall()
    pending = conn.execute(
        f"SELECT {UPDATE_COLUMNS} FROM persona_updates WHERE persona_id = ?"
        " AND status = 'pending' ORDER BY id",
        (persona_id,),
    ).fetchall()
    sessions = conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.persona_id = ?"
        " ORDER BY s.id DESC LIMIT ?",
        (persona_id, LATEST_SESSIONS),
    ).fetchall()
    tokens = conn.execute(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM token_usage"
        " WHERE persona_id = ? AND day >= ?",
        (persona_id, utc_day(now - (TOKEN_DAYS - 1) * 86_400)),
    ).fetchone()[0]
    return PersonaDetail(
        persona=read_persona(conn, persona_id, seal),
        created_at=row[0],
        updated_at=row[1],
        identities=[linked_identity(r) for r in identities],
        history=entries[:history_limit],
        more_history=len(entries) > history_limit,
        pending=[update_row(r, seal.open_opt) for r in pending],
        sessions=[session_row(r) for r in sessions],
        tokens_30_days=int(tokens),
    )


def optimizer_log(
    conn: sqlite3.Connection,
    keyring: Keyring | None,
    outcome: str | None,
    persona_id: int | None,
    before: int | None,
    limit: int,
) -> UpdateLog:
    conds: list[str] = []
    params: list[Any] = []
    if outcome == "pending":
        conds.append("status = 'pending'")
    elif outcome is not None:
        conds.append("outcome = ?")
        params.append(outcome)
    if persona_id is not None:
        conds.append("persona_id = ?")
        params.append(persona_id)
    if before is not None:
        conds.append("id < ?")
        params.append(before)
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    rows = conn.execute(
        f"SELECT {UPDATE_COLUMNS} FROM persona_updates{where} ORDER BY id DESC LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    rows = rows[: limit + 1]
    seals: dict[int, Sealer] = {}
    names: dict[int, str] = {}
    for r in rows[:limit]:
        pid = int(r[1])
        if pid not in seals:
            seals[pid] = sealer(conn, keyring, pid)
            names[pid] = who(
                conn.execute(
                    "SELECT platform, platform_user_id, display_name FROM identities"
                    " WHERE persona_id = ? ORDER BY linked_at, rowid LIMIT 1",
                    (pid,),
                ).fetchone()
            )
    ids = [int(r[0]) for r in rows[:limit]]
    versions = conn.execute(
        f"SELECT {LOG_VERSION_COLUMNS} FROM persona_versions"
        f" WHERE update_id IN ({', '.join('?' * len(ids))}) ORDER BY id",
        ids,
    ).fetchall()
    return update_log(rows, limit, seals, names, versions)
