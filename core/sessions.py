"""The Historical Session Manager: messages, sessions, bounded history, update scheduling.

A session is one conversation of one person in one chat. It ends after ``idle_minutes`` of
silence (checked when the next message arrives and by a periodic sweep) or explicitly. Every
``update_every`` finished sessions a ``persona_updates`` row is written in the same
transaction that ends the session, so a scheduled update survives a crash or restart.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from .db import Database

SWEEP_BATCH = 100
CHARS_PER_TOKEN = 4  # rough; good enough to bound prompt size without a tokenizer


@dataclass
class StoredMessage:
    session_id: int
    message_id: int
    ended_sessions: list[int]


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 4


class SessionManager:
    def __init__(self, db: Database, *, idle_seconds: float, update_every: int) -> None:
        self.db = db
        self.idle_seconds = idle_seconds
        self.update_every = update_every

    async def add_message(
        self,
        persona_id: int,
        platform: str,
        chat_id: str,
        role: str,
        content: str,
        *,
        now: float | None = None,
    ) -> StoredMessage:
        """Store a message in the open session (starting one, and ending an idle one)."""
        now = time.time() if now is None else now
        return await self.db.transaction(
            self.add_message_in, persona_id, platform, chat_id, role, content, now
        )

    def add_message_in(
        self,
        conn: sqlite3.Connection,
        persona_id: int,
        platform: str,
        chat_id: str,
        role: str,
        content: str,
        now: float,
    ) -> StoredMessage:
        """``add_message`` inside an open write transaction (runs on the DB thread)."""
        ended: list[int] = []
        row = conn.execute(
            "SELECT id, last_message_at FROM sessions WHERE persona_id = ? AND platform = ?"
            " AND chat_id = ? AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
            (persona_id, platform, chat_id),
        ).fetchone()
        session_id = None
        if row is not None:
            if role == "user" and now - row[1] > self.idle_seconds:
                self._end(conn, row[0], row[1], "idle")
                ended.append(int(row[0]))
            else:
                session_id = int(row[0])
        if session_id is None:
            cur = conn.execute(
                "INSERT INTO sessions (persona_id, platform, chat_id, started_at,"
                " last_message_at) VALUES (?, ?, ?, ?, ?)",
                (persona_id, platform, chat_id, now, now),
            )
            session_id = int(cur.lastrowid or 0)
        else:
            conn.execute("UPDATE sessions SET last_message_at = ? WHERE id = ?", (now, session_id))
        cur = conn.execute(
            "INSERT INTO messages (session_id, persona_id, role, content, platform,"
            " chat_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, persona_id, role, content, platform, chat_id, now),
        )
        message_id = int(cur.lastrowid or 0)
        if ended:
            self._schedule(conn, persona_id, now)
        return StoredMessage(session_id, message_id, ended)

    async def end_open_session(
        self, persona_id: int, platform: str, chat_id: str, reason: str = "explicit"
    ) -> int | None:
        """End the person's open session in that chat; return its id (None if none)."""

        def end(conn: sqlite3.Connection) -> int | None:
            rows = conn.execute(
                "SELECT id FROM sessions WHERE persona_id = ? AND platform = ? AND chat_id = ?"
                " AND ended_at IS NULL",
                (persona_id, platform, chat_id),
            ).fetchall()
            now = time.time()
            for row in rows:
                self._end(conn, row[0], now, reason)
            if rows:
                self._schedule(conn, persona_id, now)
            return int(rows[-1][0]) if rows else None

        return await self.db.transaction(end)

    async def sweep_idle(
        self, now: float | None = None, *, batch: int = SWEEP_BATCH, more: bool = True
    ) -> list[tuple[int, int]]:
        """End every session idle for longer than the timeout; return (persona, session).

        Works in transactions of at most ``batch`` sessions so a large backlog (say, after a
        long downtime) never holds the write lock for long: messages interleave. With
        ``more=False`` only one batch is done (the caller loops).
        """
        now = time.time() if now is None else now

        def sweep(conn: sqlite3.Connection) -> list[tuple[int, int]]:
            rows = conn.execute(
                "SELECT id, persona_id, last_message_at FROM sessions"
                " WHERE ended_at IS NULL AND last_message_at < ? LIMIT ?",
                (now - self.idle_seconds, batch),
            ).fetchall()
            for sid, _pid, last in rows:
                self._end(conn, sid, last, "idle")
            for pid in {r[1] for r in rows}:
                self._schedule(conn, pid, now)
            return [(int(r[1]), int(r[0])) for r in rows]

        ended: list[tuple[int, int]] = []
        while True:
            done = await self.db.transaction(sweep)
            ended += done
            if len(done) < batch or not more:
                return ended

    def _end(self, conn: sqlite3.Connection, session_id: int, at: float, reason: str) -> None:
        conn.execute(
            "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
            (at, reason, session_id),
        )

    def _schedule(self, conn: sqlite3.Connection, persona_id: int, now: float) -> None:
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
        if len(waiting) < self.update_every:
            return
        cur = conn.execute(
            "INSERT INTO persona_updates (persona_id, status, session_ids, created_at)"
            " VALUES (?, 'pending', ?, ?)",
            (persona_id, json.dumps(waiting), now),
        )
        update_id = cur.lastrowid
        conn.executemany(
            "UPDATE sessions SET update_id = ? WHERE id = ?", [(update_id, s) for s in waiting]
        )

    async def pending_updates(self, persona_id: int | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, persona_id, session_ids, attempts FROM persona_updates"
            " WHERE status = 'pending'"
        )
        params: tuple = ()
        if persona_id is not None:
            sql += " AND persona_id = ?"
            params = (persona_id,)
        rows = await self.db.fetchall(sql + " ORDER BY id", params)
        return [
            {
                "id": r[0],
                "persona_id": r[1],
                "session_ids": json.loads(r[2]),
                "attempts": r[3],
            }
            for r in rows
        ]

    async def transcripts(self, session_ids: list[int]) -> list[dict[str, Any]]:
        """The sessions' messages (user and assistant), in order, for the optimizer."""
        out = []
        for sid in session_ids:
            row = await self.db.fetchone(
                "SELECT started_at, platform FROM sessions WHERE id = ?", (sid,)
            )
            if row is None:
                continue
            msgs = await self.db.fetchall(
                "SELECT role, content FROM messages WHERE session_id = ?"
                " AND role IN ('user', 'assistant') ORDER BY id",
                (sid,),
            )
            out.append(
                {
                    "session_id": sid,
                    "started_at": row[0],
                    "platform": row[1],
                    "messages": [{"role": m[0], "content": m[1]} for m in msgs],
                }
            )
        return out

    @staticmethod
    def history_in(
        conn: sqlite3.Connection,
        session_id: int,
        max_messages: int,
        token_budget: int,
        before_id: int,
    ) -> list[dict[str, str]]:
        """``history`` on the DB thread (inside or outside a transaction)."""
        if max_messages <= 0 or token_budget <= 0:
            return []
        rows = conn.execute(
            "SELECT role, content FROM messages WHERE session_id = ? AND id < ?"
            " AND role IN ('user', 'assistant') ORDER BY id DESC LIMIT ?",
            (session_id, before_id, max_messages),
        ).fetchall()
        picked: list[dict[str, str]] = []
        used = 0
        for role, content in rows:
            cost = estimate_tokens(content)
            if used + cost > token_budget:
                break
            used += cost
            picked.append({"role": role, "content": content})
        picked.reverse()
        # never open the history with an assistant turn cut from its question
        while picked and picked[0]["role"] != "user":
            picked.pop(0)
        return picked
