"""The operators' views on PostgreSQL: the overview's totals and counters per day, the people
list, one person in full, the optimizer log. Read-only; the backend runs each in one
repeatable-read transaction (one snapshot). Texts are opened with each person's sealer.
(The same queries as ``sqlite/operator_queries.py``, in PostgreSQL's dialect.)"""

from __future__ import annotations

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
    POSTGRES,
    SESSION_COLUMNS,
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

Conn = Any

IDENTITY_COLUMNS = "persona_id, platform, platform_user_id, display_name"


async def overview(conn: Conn, days: list[str]) -> OverviewData:
    users = await conn.fetchval(USERS_SQL)
    pending = await conn.fetchval("SELECT COUNT(*) FROM persona_updates WHERE status = 'pending'")
    rows = await conn.fetch(
        "SELECT day, name, SUM(value) FROM daily_stats WHERE day >= $1 AND day <= $2"
        " GROUP BY day, name",
        days[0],
        days[-1],
    )
    return overview_data(users, await open_session_count(conn), pending, days, rows)


async def open_session_count(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL"))


async def search(conn: Conn, query: PersonaQuery) -> PersonaPage:
    if query.mode != "newest":
        sql, params = people_sql(query, POSTGRES)
        rows, after = people_page(query, await conn.fetch(sql, *params))
        return PersonaPage(rows, after)
    below = newest_after(query)
    if below is None:
        found = await conn.fetch(
            "SELECT id FROM personas ORDER BY id DESC LIMIT $1", query.limit + 1
        )
    else:
        found = await conn.fetch(
            "SELECT id FROM personas WHERE id < $1 ORDER BY id DESC LIMIT $2",
            below,
            query.limit + 1,
        )
    ids = [int(r[0]) for r in found]
    identities = await conn.fetch(
        f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE persona_id = ANY($1::bigint[])"
        " ORDER BY linked_at, platform, platform_user_id",
        ids[: query.limit],
    )
    rows, after = newest_page(query, ids, identities)
    return PersonaPage(rows, after)


async def platforms(conn: Conn) -> list[str]:
    return [r[0] for r in await conn.fetch(PLATFORMS_SQL)]


async def detail(
    conn: Conn,
    persona_id: int,
    keyring: Keyring | None,
    history_limit: int,
    history_before: int | None,
    now: float,
) -> PersonaDetail:
    row = await persona_times(conn, persona_id)
    seal = await sealer(conn, keyring, persona_id)
    entries = await history(conn, persona_id, None, history_limit + 1, seal, before=history_before)
    identities = await conn.fetch(
        "SELECT platform, platform_user_id, display_name, linked_at FROM identities"
        " WHERE persona_id = $1 ORDER BY linked_at, platform, platform_user_id",
        persona_id,
    )
    pending = await conn.fetch(
        f"SELECT {UPDATE_COLUMNS} FROM persona_updates WHERE persona_id = $1"
        " AND status = 'pending' ORDER BY id",
        persona_id,
    )
    sessions = await conn.fetch(
        f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.persona_id = $1"
        " ORDER BY s.id DESC LIMIT $2",
        persona_id,
        LATEST_SESSIONS,
    )
    tokens = await conn.fetchval(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM token_usage"
        " WHERE persona_id = $1 AND day >= $2",
        persona_id,
        utc_day(now - (TOKEN_DAYS - 1) * 86_400),
    )
    return PersonaDetail(
        persona=await read_persona(conn, persona_id, seal),
        created_at=row[0],
        updated_at=row[1],
        identities=[linked_identity(r) for r in identities],
        history=entries[:history_limit],
        more_history=len(entries) > history_limit,
        pending=[update_row(r, seal.open_opt) for r in pending],
        sessions=[session_row(r) for r in sessions],
        tokens_30_days=int(tokens),
    )


async def optimizer_log(
    conn: Conn,
    keyring: Keyring | None,
    outcome: str | None,
    persona_id: int | None,
    before: int | None,
    limit: int,
) -> UpdateLog:
    conds: list[str] = []
    args: list[Any] = []
    if outcome == "pending":
        conds.append("status = 'pending'")
    elif outcome is not None:
        args.append(outcome)
        conds.append(f"outcome = ${len(args)}")
    if persona_id is not None:
        args.append(persona_id)
        conds.append(f"persona_id = ${len(args)}")
    if before is not None:
        args.append(before)
        conds.append(f"id < ${len(args)}")
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    rows = await conn.fetch(
        f"SELECT {UPDATE_COLUMNS} FROM persona_updates{where}"
        f" ORDER BY id DESC LIMIT ${len(args) + 1}",
        *args,
        limit + 1,
    )
    seals: dict[int, Sealer] = {}
    names: dict[int, str] = {}
    for r in rows[:limit]:
        pid = int(r[1])
        if pid not in seals:
            seals[pid] = await sealer(conn, keyring, pid)
            names[pid] = who(
                await conn.fetchrow(
                    "SELECT platform, platform_user_id, display_name FROM identities"
                    " WHERE persona_id = $1 ORDER BY linked_at, platform, platform_user_id"
                    " LIMIT 1",
                    pid,
                )
            )
    versions = await conn.fetch(
        f"SELECT {LOG_VERSION_COLUMNS} FROM persona_versions"
        " WHERE update_id = ANY($1::bigint[]) ORDER BY id",
        [int(r[0]) for r in rows[:limit]],
    )
    return update_log(rows, limit, seals, names, versions)
