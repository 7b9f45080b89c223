"""The Historical Session Manager's SQL: messages, sessions, bounded history, and the queue
of persona updates (scheduling, claims with a lease, completion, failures).

A session is one conversation of one person in one chat. It ends after ``idle_seconds`` of
silence (noticed when the next message arrives, or by the idle sweep) or explicitly. Every
``update_every`` finished sessions a ``persona_updates`` row is written in the same
transaction that ends the session, so a scheduled update survives a crash or restart.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from dataclasses import dataclass
from typing import Any

from ...insights import update_outcome
from ...types import Identity, PendingUpdate, Transcript, TurnStart, Usage
from ..base import SessionRules, Tokens
from ..crypto import PLAIN, Keyring, Sealer
from ..shared import finish_counts, trim_history, usage_counts, utc_day
from . import persona_queries
from .counters import add_counts


@dataclass
class StoredMessage:
    session_id: int
    message_id: int
    ended_sessions: list[int]


def add_message(
    conn: sqlite3.Connection,
    rules: SessionRules,
    persona_id: int,
    platform: str,
    chat_id: str,
    role: str,
    content: str,
    now: float,
    seal: Sealer = PLAIN,
) -> StoredMessage:
    """Store a message in the open session (starting one, and ending an idle one)."""
    ended: list[int] = []
    row = conn.execute(
        "SELECT id, last_message_at FROM sessions WHERE persona_id = ? AND platform = ?"
        " AND chat_id = ? AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
        (persona_id, platform, chat_id),
    ).fetchone()
    session_id = None
    if row is not None:
        if role == "user" and now - row[1] > rules.idle_seconds:
            _end(conn, row[0], row[1], "idle")
            ended.append(int(row[0]))
        else:
            session_id = int(row[0])
    if session_id is None:
        cur = conn.execute(
            "INSERT INTO sessions (persona_id, platform, chat_id, started_at, last_message_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (persona_id, platform, chat_id, now, now),
        )
        session_id = int(cur.lastrowid or 0)
    else:
        conn.execute("UPDATE sessions SET last_message_at = ? WHERE id = ?", (now, session_id))
    cur = conn.execute(
        "INSERT INTO messages (session_id, persona_id, role, content, platform, chat_id,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (session_id, persona_id, role, seal.seal(content), platform, chat_id, now),
    )
    if ended:
        _schedule(conn, rules, persona_id, now)
    return StoredMessage(session_id, int(cur.lastrowid or 0), ended)


def begin_turn(
    conn: sqlite3.Connection,
    rules: SessionRules,
    persona_id: int,
    identity: Identity,
    chat_id: str,
    text: str,
    now: float,
    keyring: Keyring | None = None,
) -> TurnStart | None:
    """One write transaction: check the identity still maps to the persona (refreshing its
    display name), store the user message, read the persona and the bounded history, and
    note a first contact (the privacy notice is then due, once)."""
    if persona_queries.touch_identity(conn, identity) != persona_id:
        return None
    seal = persona_queries.sealer(conn, keyring, persona_id, create=True)
    stored = add_message(
        conn, rules, persona_id, identity.platform, chat_id, "user", text, now, seal
    )
    first = conn.execute(
        "UPDATE personas SET noticed_at = ? WHERE id = ? AND noticed_at IS NULL",
        (now, persona_id),
    ).rowcount
    add_counts(conn, utc_day(now), {"messages": 1})
    return TurnStart(
        persona_id,
        stored.session_id,
        stored.message_id,
        stored.ended_sessions,
        persona_queries.read_persona(conn, persona_id, seal),
        history_before(conn, rules, stored.session_id, stored.message_id, seal),
        first_contact=bool(first),
    )


def history_before(
    conn: sqlite3.Connection,
    rules: SessionRules,
    session_id: int,
    before_id: int,
    seal: Sealer = PLAIN,
) -> list[dict[str, str]]:
    """The session's latest messages before ``before_id``, within the rules' bounds."""
    if rules.history_messages <= 0 or rules.history_token_budget <= 0:
        return []
    rows = conn.execute(
        "SELECT role, content FROM messages WHERE session_id = ? AND id < ?"
        " AND role IN ('user', 'assistant') ORDER BY id DESC LIMIT ?",
        (session_id, before_id, rules.history_messages),
    ).fetchall()
    return trim_history(((role, seal.open(text)) for role, text in rows), rules)


def end_open_session(
    conn: sqlite3.Connection,
    rules: SessionRules,
    persona_id: int,
    platform: str,
    chat_id: str,
    reason: str,
    now: float,
) -> int | None:
    rows = conn.execute(
        "SELECT id FROM sessions WHERE persona_id = ? AND platform = ? AND chat_id = ?"
        " AND ended_at IS NULL ORDER BY id",
        (persona_id, platform, chat_id),
    ).fetchall()
    for row in rows:
        _end(conn, row[0], now, reason)
    if rows:
        _schedule(conn, rules, persona_id, now)
    return int(rows[-1][0]) if rows else None


def sweep_idle(
    conn: sqlite3.Connection, rules: SessionRules, now: float, batch: int
) -> list[tuple[int, int]]:
    """End up to ``batch`` idle sessions (each exactly once: the UPDATE only ends a session
    that is still open, and the scheduling counts only ended, unscheduled sessions)."""
    rows = conn.execute(
        "SELECT id, persona_id, last_message_at FROM sessions"
        " WHERE ended_at IS NULL AND last_message_at < ? LIMIT ?",
        (now - rules.idle_seconds, batch),
    ).fetchall()
    ended = [(int(pid), int(sid)) for sid, pid, last in rows if _end(conn, sid, last, "idle")]
    for pid in sorted({pid for pid, _ in ended}):
        _schedule(conn, rules, pid, now)
    return ended


def _end(conn: sqlite3.Connection, session_id: int, at: float, reason: str) -> bool:
    cur = conn.execute(
        "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
        (at, reason, session_id),
    )
    return (cur.rowcount or 0) > 0


def _schedule(conn: sqlite3.Connection, rules: SessionRules, persona_id: int, now: float) -> None:
    """If k finished sessions wait, queue one optimizer run over them (same transaction)."""
    waiting = [
        int(r[0])
        for r in conn.execute(
            "SELECT s.id FROM sessions s WHERE s.persona_id = ? AND s.ended_at IS NOT NULL"
            " AND s.update_id IS NULL AND EXISTS (SELECT 1 FROM messages m"
            " WHERE m.session_id = s.id AND m.role = 'user') ORDER BY s.id",
            (persona_id,),
        ).fetchall()
    ]
    if len(waiting) < rules.update_every:
        return
    cur = conn.execute(
        "INSERT INTO persona_updates (persona_id, status, session_ids, created_at)"
        " VALUES (?, 'pending', ?, ?)",
        (persona_id, json.dumps(waiting), now),
    )
    conn.executemany(
        "UPDATE sessions SET update_id = ? WHERE id = ?", [(cur.lastrowid, s) for s in waiting]
    )


def transcripts(
    conn: sqlite3.Connection,
    persona_id: int,
    session_ids: list[int],
    keyring: Keyring | None = None,
) -> list[Transcript]:
    """The user and assistant messages of the person's sessions ``session_ids``, in order."""
    seal = persona_queries.sealer(conn, keyring, persona_id)
    out = []
    for sid in session_ids:
        row = conn.execute(
            "SELECT started_at, platform FROM sessions WHERE id = ? AND persona_id = ?",
            (sid, persona_id),
        ).fetchone()
        if row is None:
            continue
        msgs = conn.execute(
            "SELECT role, content FROM messages WHERE session_id = ?"
            " AND role IN ('user', 'assistant') ORDER BY id",
            (sid,),
        ).fetchall()
        texts = [{"role": r, "content": seal.open(c)} for r, c in msgs]
        out.append(Transcript(sid, row[0], row[1], texts))
    return out


# -- the persona update queue ----------------------------------------------------------------


def pending_updates(conn: sqlite3.Connection, persona_id: int | None) -> list[PendingUpdate]:
    sql = (
        "SELECT id, persona_id, session_ids, attempts, claimed_by FROM persona_updates"
        " WHERE status = 'pending'"
    )
    params: tuple[int, ...] = ()
    if persona_id is not None:
        sql += " AND persona_id = ?"
        params = (persona_id,)
    rows = conn.execute(sql + " ORDER BY id", params).fetchall()
    return [PendingUpdate(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]


def _owner_is_dead(owner: str) -> bool:
    """A claim made by a process of this host that no longer runs (killed): free to take.
    Owners are ``host/pid/token`` (``shared.new_owner``); other hosts' claims are trusted
    until their lease ends."""
    host, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_update(
    conn: sqlite3.Connection, update_id: int, owner: str, now: float, lease_seconds: float
) -> PendingUpdate | None:
    row = conn.execute(
        "SELECT persona_id, session_ids, attempts, status, claimed_by, claimed_until"
        " FROM persona_updates WHERE id = ?",
        (update_id,),
    ).fetchone()
    if row is None or row[3] != "pending":
        return None
    holder, until = row[4], row[5]
    if holder and holder != owner and until is not None and until > now:
        if not _owner_is_dead(holder):
            return None
    conn.execute(
        "UPDATE persona_updates SET claimed_by = ?, claimed_until = ? WHERE id = ?",
        (owner, now + lease_seconds, update_id),
    )
    return PendingUpdate(update_id, row[0], json.loads(row[1]), row[2], owner)


def release_updates(conn: sqlite3.Connection, owner: str) -> None:
    conn.execute(
        "UPDATE persona_updates SET claimed_by = NULL, claimed_until = NULL"
        " WHERE claimed_by = ? AND status = 'pending'",
        (owner,),
    )


def _update_sealer(conn: sqlite3.Connection, update_id: int, keyring: Keyring | None) -> Sealer:
    """The sealer of the update's person: its notes may quote proposed values."""
    if keyring is None:
        return PLAIN
    row = conn.execute(
        "SELECT persona_id FROM persona_updates WHERE id = ?", (update_id,)
    ).fetchone()
    return PLAIN if row is None else persona_queries.sealer(conn, keyring, row[0], create=True)


def finish_update(
    conn: sqlite3.Connection,
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
    note = "; ".join(notes)[:2000] or None
    if note is not None:
        note = _update_sealer(conn, update_id, keyring).seal(note)
    outcome = update_outcome(applied, len(notes))
    cur = conn.execute(
        "UPDATE persona_updates SET status = 'done', attempts = attempts + 1, error = ?,"
        " finished_at = ?, claimed_by = NULL, claimed_until = NULL, outcome = ?,"
        " edits_applied = ?, edits_refused = ?, prompt_tokens = ?, completion_tokens = ?,"
        " seconds = ? WHERE id = ?",
        (
            note,
            now,
            outcome,
            applied,
            len(notes),
            None if tokens is None else tokens.prompt,
            None if tokens is None else tokens.completion,
            seconds,
            update_id,
        ),
    )
    if cur.rowcount:
        add_counts(conn, utc_day(now), finish_counts(outcome, applied, len(notes)))


def fail_update(
    conn: sqlite3.Connection,
    update_id: int,
    error: str,
    max_attempts: int,
    now: float,
    keyring: Keyring | None = None,
) -> bool:
    row = conn.execute(
        "SELECT attempts FROM persona_updates WHERE id = ? AND status = 'pending'", (update_id,)
    ).fetchone()
    if row is None:
        return True  # finished, failed or deleted meanwhile: nothing left to retry
    attempts = int(row[0]) + 1
    final = attempts >= max_attempts
    conn.execute(
        "UPDATE persona_updates SET attempts = ?, status = ?, error = ?, finished_at = ?,"
        " claimed_by = NULL, claimed_until = NULL, outcome = ? WHERE id = ?",
        (
            attempts,
            "failed" if final else "pending",
            _update_sealer(conn, update_id, keyring).seal(error[:2000]),
            now if final else None,
            "failed" if final else None,
            update_id,
        ),
    )
    add_counts(conn, utc_day(now), {"update_attempts_failed": 1, "updates_failed": int(final)})
    return final


# -- token usage and message retention --------------------------------------------------------


def add_usage(
    conn: sqlite3.Connection,
    persona_id: int,
    platform: str,
    chat_id: str,
    day: str,
    role: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    conn.execute(
        "INSERT INTO token_usage (persona_id, platform, chat_id, day, role, calls,"
        " prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
        " ON CONFLICT DO UPDATE SET calls = calls + 1,"
        " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = completion_tokens + excluded.completion_tokens",
        (persona_id, platform, chat_id, day, role, prompt_tokens, completion_tokens),
    )
    add_counts(conn, day, usage_counts(role, prompt_tokens, completion_tokens))


def usage(
    conn: sqlite3.Connection, persona_id: int, platform: str, chat_id: str, day: str
) -> Usage:
    """Tokens of the person today and this month, and of the chat today (everyone in it)."""
    person = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN day = ? THEN prompt_tokens + completion_tokens END), 0),"
        " COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM token_usage"
        " WHERE persona_id = ? AND day >= ?",
        (day, persona_id, day[:8] + "01"),
    ).fetchone()
    chat = conn.execute(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM token_usage"
        " WHERE platform = ? AND chat_id = ? AND day = ?",
        (platform, chat_id, day),
    ).fetchone()
    return Usage(int(person[0]), int(person[1]), int(chat[0]))


def usage_rows(conn: sqlite3.Connection, since_day: str) -> list[dict[str, Any]]:
    """Usage rows from ``since_day`` on, with each person's first identity (for reports)."""
    cur = conn.execute(
        "SELECT u.day, u.persona_id, (SELECT i.platform || ':' || i.platform_user_id FROM"
        " identities i WHERE i.persona_id = u.persona_id ORDER BY i.linked_at LIMIT 1) AS who,"
        " u.platform, u.chat_id, u.role, u.calls, u.prompt_tokens, u.completion_tokens"
        " FROM token_usage u WHERE u.day >= ? ORDER BY u.day, u.persona_id",
        (since_day,),
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def purge_messages(
    conn: sqlite3.Connection, learned_before: float, now: float, batch: int
) -> tuple[int, int]:
    """Delete the message texts of up to ``batch`` persona updates that finished (done or
    failed) at or before ``learned_before``; return (updates, messages). Sessions not
    learned from yet, the current one included, are kept."""
    ids = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM persona_updates WHERE status <> 'pending' AND purged_at IS NULL"
            " AND finished_at <= ? ORDER BY finished_at LIMIT ?",
            (learned_before, batch),
        )
    ]
    if not ids:
        return 0, 0
    marks = ", ".join("?" * len(ids))
    cur = conn.execute(
        "DELETE FROM messages WHERE session_id IN (SELECT id FROM sessions"
        f" WHERE update_id IN ({marks}))",
        ids,
    )
    conn.execute(f"UPDATE persona_updates SET purged_at = ? WHERE id IN ({marks})", (now, *ids))
    return len(ids), cur.rowcount or 0
