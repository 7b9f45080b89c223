"""Sessions, messages, bounded history and the persona-update queue on PostgreSQL, safe with
many workers on one database:

- ending a session is ``UPDATE ... WHERE ended_at IS NULL RETURNING``: exactly one worker
  ends it, and only that worker schedules from it;
- scheduling (k ended sessions -> one update) holds a transaction-level advisory lock on the
  person, so two workers cannot count the same sessions twice;
- the idle sweep takes sessions with ``FOR UPDATE SKIP LOCKED``: workers sweeping at once
  share the work and never end a session twice;
- a claim names its worker; a worker holds a session-level advisory lock for as long as its
  process lives, so a claim of a killed worker is free at once (and any claim is free when
  its lease runs out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...types import Identity, PendingUpdate, Transcript, TurnStart
from ..base import SessionRules
from ..shared import trim_history
from . import persona_queries

Conn = Any

# Advisory locks are database-wide, so their first key is a namespace derived from the schema
# in use (two bots, or two test runs, in one database never share a lock) and the kind:
PERSON_LOCK = "hashtext(current_schema() || '/person')"  # one person's turn (session level)
WORKER_LOCK = "hashtext(current_schema() || '/worker')"  # a worker's presence (session level)
SCHEDULE_LOCK = "hashtext(current_schema() || '/schedule')"  # scheduling (transaction level)
MIGRATION_LOCK = "hashtext(current_schema() || '/migrate')"  # migrations (transaction level)


def lock_key(value: int) -> int:
    """An int4 advisory-lock key for an id."""
    return value % 2_147_483_647


@dataclass
class StoredMessage:
    session_id: int
    message_id: int
    ended_sessions: list[int]


async def _end(conn: Conn, session_id: int, at: float, reason: str) -> bool:
    ended = await conn.fetchval(
        "UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL"
        " RETURNING id",
        at,
        reason,
        session_id,
    )
    return ended is not None


async def _schedule(conn: Conn, rules: SessionRules, persona_id: int, now: float) -> None:
    """If k finished sessions wait, queue one optimizer run over them (same transaction)."""
    await conn.execute(f"SELECT pg_advisory_xact_lock({SCHEDULE_LOCK}, $1)", lock_key(persona_id))
    waiting = [
        int(r[0])
        for r in await conn.fetch(
            "SELECT s.id FROM sessions s WHERE s.persona_id = $1 AND s.ended_at IS NOT NULL"
            " AND s.update_id IS NULL AND EXISTS (SELECT 1 FROM messages m"
            " WHERE m.session_id = s.id AND m.role = 'user') ORDER BY s.id",
            persona_id,
        )
    ]
    if len(waiting) < rules.update_every:
        return
    update_id = await conn.fetchval(
        "INSERT INTO persona_updates (persona_id, status, session_ids, created_at)"
        " VALUES ($1, 'pending', $2, $3) RETURNING id",
        persona_id,
        json.dumps(waiting),
        now,
    )
    await conn.execute(
        "UPDATE sessions SET update_id = $1 WHERE id = ANY($2::bigint[])", update_id, waiting
    )


async def add_message(
    conn: Conn,
    rules: SessionRules,
    persona_id: int,
    platform: str,
    chat_id: str,
    role: str,
    content: str,
    now: float,
) -> StoredMessage:
    ended: list[int] = []
    row = await conn.fetchrow(
        "SELECT id, last_message_at FROM sessions WHERE persona_id = $1 AND platform = $2"
        " AND chat_id = $3 AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
        persona_id,
        platform,
        chat_id,
    )
    session_id = None
    if row is not None:
        if role == "user" and now - row[1] > rules.idle_seconds:
            if await _end(conn, row[0], row[1], "idle"):
                ended.append(int(row[0]))
        else:
            session_id = int(row[0])
    if session_id is None:
        session_id = await conn.fetchval(
            "INSERT INTO sessions (persona_id, platform, chat_id, started_at, last_message_at)"
            " VALUES ($1, $2, $3, $4, $4) RETURNING id",
            persona_id,
            platform,
            chat_id,
            now,
        )
    else:
        await conn.execute(
            "UPDATE sessions SET last_message_at = $1 WHERE id = $2", now, session_id
        )
    message_id = await conn.fetchval(
        "INSERT INTO messages (session_id, persona_id, role, content, platform, chat_id,"
        " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        session_id,
        persona_id,
        role,
        content,
        platform,
        chat_id,
        now,
    )
    if ended:
        await _schedule(conn, rules, persona_id, now)
    return StoredMessage(int(session_id), int(message_id), ended)


async def begin_turn(
    conn: Conn,
    rules: SessionRules,
    persona_id: int,
    identity: Identity,
    chat_id: str,
    text: str,
    now: float,
) -> TurnStart | None:
    if await persona_queries.touch_identity(conn, identity) != persona_id:
        return None
    stored = await add_message(
        conn, rules, persona_id, identity.platform, chat_id, "user", text, now
    )
    return TurnStart(
        persona_id,
        stored.session_id,
        stored.message_id,
        stored.ended_sessions,
        await persona_queries.read_persona(conn, persona_id),
        await history_before(conn, rules, stored.session_id, stored.message_id),
    )


async def history_before(
    conn: Conn, rules: SessionRules, session_id: int, before_id: int
) -> list[dict[str, str]]:
    if rules.history_messages <= 0 or rules.history_token_budget <= 0:
        return []
    rows = await conn.fetch(
        "SELECT role, content FROM messages WHERE session_id = $1 AND id < $2"
        " AND role IN ('user', 'assistant') ORDER BY id DESC LIMIT $3",
        session_id,
        before_id,
        rules.history_messages,
    )
    return trim_history(((r[0], r[1]) for r in rows), rules)


async def end_open_session(
    conn: Conn,
    rules: SessionRules,
    persona_id: int,
    platform: str,
    chat_id: str,
    reason: str,
    now: float,
) -> int | None:
    rows = await conn.fetch(
        "UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE persona_id = $3"
        " AND platform = $4 AND chat_id = $5 AND ended_at IS NULL RETURNING id",
        now,
        reason,
        persona_id,
        platform,
        chat_id,
    )
    if not rows:
        return None
    await _schedule(conn, rules, persona_id, now)
    return max(int(r[0]) for r in rows)


async def sweep_idle(
    conn: Conn, rules: SessionRules, now: float, batch: int
) -> list[tuple[int, int]]:
    rows = await conn.fetch(
        "WITH idle AS (SELECT id FROM sessions WHERE ended_at IS NULL"
        " AND last_message_at < $1 ORDER BY last_message_at LIMIT $2"
        " FOR UPDATE SKIP LOCKED)"
        " UPDATE sessions s SET ended_at = s.last_message_at, end_reason = 'idle'"
        " FROM idle WHERE s.id = idle.id AND s.ended_at IS NULL"
        " RETURNING s.persona_id, s.id",
        now - rules.idle_seconds,
        batch,
    )
    ended = [(int(r[0]), int(r[1])) for r in rows]
    for persona_id in sorted({pid for pid, _ in ended}):
        await _schedule(conn, rules, persona_id, now)
    return ended


async def transcripts(conn: Conn, session_ids: list[int]) -> list[Transcript]:
    heads = {
        int(r[0]): r
        for r in await conn.fetch(
            "SELECT id, started_at, platform FROM sessions WHERE id = ANY($1::bigint[])",
            session_ids,
        )
    }
    bodies: dict[int, list[dict[str, str]]] = {sid: [] for sid in heads}
    for sid, role, content in await conn.fetch(
        "SELECT session_id, role, content FROM messages WHERE session_id = ANY($1::bigint[])"
        " AND role IN ('user', 'assistant') ORDER BY id",
        session_ids,
    ):
        bodies[int(sid)].append({"role": role, "content": content})
    return [
        Transcript(sid, heads[sid][1], heads[sid][2], bodies[sid])
        for sid in session_ids
        if sid in heads
    ]


# -- the persona update queue ----------------------------------------------------------------


async def pending_updates(conn: Conn, persona_id: int | None) -> list[PendingUpdate]:
    sql = (
        "SELECT id, persona_id, session_ids, attempts, claimed_by FROM persona_updates"
        " WHERE status = 'pending'"
    )
    args: tuple[int, ...] = ()
    if persona_id is not None:
        sql += " AND persona_id = $1"
        args = (persona_id,)
    rows = await conn.fetch(sql + " ORDER BY id", *args)
    return [PendingUpdate(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]


def worker_key(owner: str) -> int | None:
    """The presence-lock key in an owner (``host/pid/token#key``)."""
    _, _, tag = owner.rpartition("#")
    return int(tag) if tag.isdigit() else None


async def _holder_is_gone(conn: Conn, holder: str) -> bool:
    """True if the worker named ``holder`` no longer holds its presence lock (its process
    or its connection died)."""
    key = worker_key(holder)
    if key is None:
        return False
    free = await conn.fetchval(f"SELECT pg_try_advisory_xact_lock({WORKER_LOCK}, $1)", key)
    return bool(free)


async def claim_update(
    conn: Conn, update_id: int, owner: str, now: float, lease_seconds: float
) -> PendingUpdate | None:
    row = await conn.fetchrow(
        "SELECT persona_id, session_ids, attempts, status, claimed_by, claimed_until"
        " FROM persona_updates WHERE id = $1 FOR UPDATE",
        update_id,
    )
    if row is None or row[3] != "pending":
        return None
    holder, until = row[4], row[5]
    if holder and holder != owner and until is not None and until > now:
        if not await _holder_is_gone(conn, holder):
            return None
    await conn.execute(
        "UPDATE persona_updates SET claimed_by = $1, claimed_until = $2 WHERE id = $3",
        owner,
        now + lease_seconds,
        update_id,
    )
    return PendingUpdate(update_id, row[0], json.loads(row[1]), row[2], owner)


async def release_updates(conn: Conn, owner: str) -> None:
    await conn.execute(
        "UPDATE persona_updates SET claimed_by = NULL, claimed_until = NULL"
        " WHERE claimed_by = $1 AND status = 'pending'",
        owner,
    )


async def finish_update(
    conn: Conn, update_id: int, notes: tuple[str, ...] | list[str], now: float
) -> None:
    note = "; ".join(notes)[:2000] or None
    await conn.execute(
        "UPDATE persona_updates SET status = 'done', attempts = attempts + 1, error = $1,"
        " finished_at = $2, claimed_by = NULL, claimed_until = NULL WHERE id = $3",
        note,
        now,
        update_id,
    )


async def fail_update(
    conn: Conn, update_id: int, error: str, max_attempts: int, now: float
) -> bool:
    attempts = await conn.fetchval(
        "SELECT attempts FROM persona_updates WHERE id = $1 AND status = 'pending' FOR UPDATE",
        update_id,
    )
    if attempts is None:
        return True
    attempts = int(attempts) + 1
    final = attempts >= max_attempts
    await conn.execute(
        "UPDATE persona_updates SET attempts = $1, status = $2, error = $3, finished_at = $4,"
        " claimed_by = NULL, claimed_until = NULL WHERE id = $5",
        attempts,
        "failed" if final else "pending",
        error[:2000].replace("\x00", ""),
        now if final else None,
        update_id,
    )
    return final
