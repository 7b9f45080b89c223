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

from ...insights import update_outcome
from ...types import Identity, PendingUpdate, Transcript, TurnStart, Usage
from ..base import SessionRules, Tokens
from ..crypto import PLAIN, Keyring, Sealer
from ..shared import finish_counts, trim_history, usage_counts, utc_day
from . import persona_queries
from .counters import add_counts

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
    seal: Sealer = PLAIN,
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
        seal.seal(content),
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
    keyring: Keyring | None = None,
) -> TurnStart | None:
    if await persona_queries.touch_identity(conn, identity) != persona_id:
        return None
    seal = await persona_queries.sealer(conn, keyring, persona_id, create=True)
    stored = await add_message(
        conn, rules, persona_id, identity.platform, chat_id, "user", text, now, seal
    )
    first = await conn.fetchval(
        "UPDATE personas SET noticed_at = $1 WHERE id = $2 AND noticed_at IS NULL RETURNING id",
        now,
        persona_id,
    )
    await add_counts(conn, utc_day(now), persona_id, {"messages": 1})
    return TurnStart(
        persona_id,
        stored.session_id,
        stored.message_id,
        stored.ended_sessions,
        await persona_queries.read_persona(conn, persona_id, seal),
        await history_before(conn, rules, stored.session_id, stored.message_id, seal),
        first_contact=first is not None,
    )


async def history_before(
    conn: Conn, rules: SessionRules, session_id: int, before_id: int, seal: Sealer = PLAIN
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
    return trim_history(((r[0], seal.open(r[1])) for r in rows), rules)


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


async def transcripts(
    conn: Conn, persona_id: int, session_ids: list[int], keyring: Keyring | None = None
) -> list[Transcript]:
    seal = await persona_queries.sealer(conn, keyring, persona_id)
    heads = {
        int(r[0]): r
        for r in await conn.fetch(
            "SELECT id, started_at, platform FROM sessions WHERE id = ANY($1::bigint[])"
            " AND persona_id = $2",
            session_ids,
            persona_id,
        )
    }
    bodies: dict[int, list[dict[str, str]]] = {sid: [] for sid in heads}
    for sid, role, content in await conn.fetch(
        "SELECT session_id, role, content FROM messages WHERE session_id = ANY($1::bigint[])"
        " AND persona_id = $2 AND role IN ('user', 'assistant') ORDER BY id",
        list(heads),
        persona_id,
    ):
        bodies[int(sid)].append({"role": role, "content": seal.open(content)})
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


async def _update_sealer(conn: Conn, update_id: int, keyring: Keyring | None) -> Sealer:
    """The sealer of the update's person: its notes may quote proposed values."""
    if keyring is None:
        return PLAIN
    pid = await conn.fetchval("SELECT persona_id FROM persona_updates WHERE id = $1", update_id)
    return PLAIN if pid is None else await persona_queries.sealer(conn, keyring, pid, create=True)


async def finish_update(
    conn: Conn,
    update_id: int,
    notes: tuple[str, ...] | list[str],
    now: float,
    keyring: Keyring | None = None,
    *,
    applied: int = 0,
    tokens: Tokens | None = None,
    seconds: float | None = None,
) -> None:
    """Mark the update done with how it ended: ``applied`` changes, the refusal ``notes``,
    the optimizer call's tokens and latency; and count it for the day."""
    note = "; ".join(notes)[:2000].replace("\x00", "") or None
    if note is not None:
        note = (await _update_sealer(conn, update_id, keyring)).seal(note)
    outcome = update_outcome(applied, len(notes))
    persona_id = await conn.fetchval(
        "UPDATE persona_updates SET status = 'done', attempts = attempts + 1, error = $1,"
        " finished_at = $2, claimed_by = NULL, claimed_until = NULL, outcome = $3,"
        " edits_applied = $4, edits_refused = $5, prompt_tokens = $6, completion_tokens = $7,"
        " seconds = $8 WHERE id = $9 RETURNING persona_id",
        note,
        now,
        outcome,
        applied,
        len(notes),
        None if tokens is None else tokens.prompt,
        None if tokens is None else tokens.completion,
        seconds,
        update_id,
    )
    if persona_id is not None:
        counts = finish_counts(outcome, applied, len(notes))
        await add_counts(conn, utc_day(now), int(persona_id), counts)


async def fail_update(
    conn: Conn,
    update_id: int,
    error: str,
    max_attempts: int,
    now: float,
    keyring: Keyring | None = None,
) -> bool:
    row = await conn.fetchrow(
        "SELECT attempts, persona_id FROM persona_updates WHERE id = $1 AND status = 'pending'"
        " FOR UPDATE",
        update_id,
    )
    if row is None:
        return True
    attempts = int(row[0]) + 1
    final = attempts >= max_attempts
    await conn.execute(
        "UPDATE persona_updates SET attempts = $1, status = $2, error = $3, finished_at = $4,"
        " claimed_by = NULL, claimed_until = NULL, outcome = $5 WHERE id = $6",
        attempts,
        "failed" if final else "pending",
        (await _update_sealer(conn, update_id, keyring)).seal(error[:2000].replace("\x00", "")),
        now if final else None,
        "failed" if final else None,
        update_id,
    )
    counts = {"update_attempts_failed": 1, "updates_failed": int(final)}
    await add_counts(conn, utc_day(now), int(row[1]), counts)
    return final


# -- token usage and message retention --------------------------------------------------------


async def add_usage(
    conn: Conn,
    persona_id: int,
    platform: str,
    chat_id: str,
    day: str,
    role: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    await conn.execute(
        "INSERT INTO token_usage (persona_id, platform, chat_id, day, role, calls,"
        " prompt_tokens, completion_tokens) VALUES ($1, $2, $3, $4, $5, 1, $6, $7)"
        " ON CONFLICT (persona_id, platform, chat_id, day, role) DO UPDATE SET"
        " calls = token_usage.calls + 1,"
        " prompt_tokens = token_usage.prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = token_usage.completion_tokens + excluded.completion_tokens",
        persona_id,
        platform,
        chat_id,
        day,
        role,
        prompt_tokens,
        completion_tokens,
    )
    await add_counts(conn, day, persona_id, usage_counts(role, prompt_tokens, completion_tokens))


async def usage(conn: Conn, persona_id: int, platform: str, chat_id: str, day: str) -> Usage:
    person = await conn.fetchrow(
        "SELECT COALESCE(SUM(CASE WHEN day = $1 THEN prompt_tokens + completion_tokens END), 0),"
        " COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM token_usage"
        " WHERE persona_id = $2 AND day >= $3",
        day,
        persona_id,
        day[:8] + "01",
    )
    chat = await conn.fetchval(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM token_usage"
        " WHERE platform = $1 AND chat_id = $2 AND day = $3",
        platform,
        chat_id,
        day,
    )
    return Usage(int(person[0]), int(person[1]), int(chat))


async def usage_rows(conn: Conn, since_day: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT u.day, u.persona_id, (SELECT i.platform || ':' || i.platform_user_id FROM"
        " identities i WHERE i.persona_id = u.persona_id ORDER BY i.linked_at LIMIT 1) AS who,"
        " u.platform, u.chat_id, u.role, u.calls, u.prompt_tokens, u.completion_tokens"
        " FROM token_usage u WHERE u.day >= $1 ORDER BY u.day, u.persona_id",
        since_day,
    )
    return [dict(r) for r in rows]


async def purge_messages(
    conn: Conn, learned_before: float, now: float, batch: int
) -> tuple[int, int]:
    ids = [
        int(r[0])
        for r in await conn.fetch(
            "SELECT id FROM persona_updates WHERE status <> 'pending' AND purged_at IS NULL"
            " AND finished_at <= $1 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            learned_before,
            batch,
        )
    ]
    if not ids:
        return 0, 0
    status = await conn.execute(
        "DELETE FROM messages WHERE session_id IN (SELECT id FROM sessions"
        " WHERE update_id = ANY($1::bigint[]))",
        ids,
    )
    await conn.execute(
        "UPDATE persona_updates SET purged_at = $1 WHERE id = ANY($2::bigint[])", now, ids
    )
    return len(ids), int(status.rsplit(" ", 1)[-1])
