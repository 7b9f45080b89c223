"""What every backend does the same way, whatever its SQL: the tables and their order, the
bounded history, the export document, the update-claim owner, and row checksums for
``aipersona db copy``. Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ..edits import Rejected
from ..types import HistoryEntry, Identity, Persona
from .base import SessionRules

CHARS_PER_TOKEN = 4  # rough; good enough to bound prompt size without a tokenizer

# every table, parents before children (the order a copy writes them), with its primary key
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("personas", ("id",)),
    ("identities", ("platform", "platform_user_id")),
    ("persona_fields", ("persona_id", "field")),
    ("persona_versions", ("id",)),
    ("persona_updates", ("id",)),
    ("sessions", ("id",)),
    ("messages", ("id",)),
)

# where each table's rows go in an export (the storage contract tests check that every
# table of the schema is listed here, so a new table cannot be left out of exports)
EXPORTED_TABLES = {
    "personas": "created_at/updated_at",
    "identities": "identities",
    "persona_fields": "persona + field_versions",
    "persona_versions": "history",
    "sessions": "sessions",
    "messages": "messages",
    "persona_updates": "persona_updates",
}


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 4


def trim_history(
    newest_first: Iterable[tuple[str, str]], rules: SessionRules
) -> list[dict[str, str]]:
    """The history a prompt gets: the newest ``(role, content)`` messages that fit the token
    budget, in order, never opening with an assistant turn cut from its question."""
    picked: list[dict[str, str]] = []
    used = 0
    for role, content in newest_first:
        cost = estimate_tokens(content)
        if used + cost > rules.history_token_budget:
            break
        used += cost
        picked.append({"role": role, "content": content})
    picked.reverse()
    while picked and picked[0]["role"] != "user":
        picked.pop(0)
    return picked


def export_document(
    *,
    persona: Persona,
    created_at: float,
    updated_at: float,
    now: float,
    identities: list[dict[str, Any]],
    history: list[HistoryEntry],
    sessions: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    updates: list[dict[str, Any]],
) -> dict[str, Any]:
    """The export (format ``aipersona.export/2``) from the rows a backend read."""
    return {
        "format": "aipersona.export/2",
        "exported_at": now,
        "persona_id": persona.id,
        "created_at": created_at,
        "updated_at": updated_at,
        "identities": [
            {
                "platform": r["platform"],
                "user_id": r["platform_user_id"],
                "display_name": r["display_name"],
                "linked_at": r["linked_at"],
            }
            for r in identities
        ],
        "persona": persona.nested(),
        "field_versions": persona.versions,
        "history": [h.as_dict() for h in reversed(history)],
        "sessions": sessions,
        "messages": messages,
        "persona_updates": [
            {**u, "session_ids": json.loads(u["session_ids"]), "notes": u["error"]} for u in updates
        ],
    }


class IdentityCache:
    """``(platform, user id) -> persona id``, in memory and bounded, because every message
    needs it. A hint only: ``begin_turn`` re-checks the mapping in its transaction, so a
    link or a deletion by another process is noticed, not trusted."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._ids: dict[tuple[str, str], int] = {}

    async def find(
        self, ident: Identity, lookup: Callable[[Identity], Awaitable[int | None]]
    ) -> int | None:
        found = self._ids.get(ident.key)
        if found is None:
            found = await lookup(ident)
            if found is not None:
                self.put(ident, found)
        return found

    async def resolve(
        self,
        ident: Identity,
        lookup: Callable[[Identity], Awaitable[int | None]],
        create: Callable[[Identity], Awaitable[int]],
    ) -> int:
        found = await self.find(ident, lookup)
        if found is None:
            found = await create(ident)
            self.put(ident, found)
        return found

    def put(self, ident: Identity, persona_id: int) -> None:
        if len(self._ids) >= self.limit:
            self._ids.clear()
        self._ids[ident.key] = persona_id

    def drop(self, ident: Identity) -> None:
        self._ids.pop(ident.key, None)

    def clear(self) -> None:
        self._ids.clear()

    def __len__(self) -> int:
        return len(self._ids)


def update_notes(outcome_notes: Iterable[str], rejected: Iterable[Rejected]) -> tuple[str, ...]:
    """What a finished update stores: the optimizer's notes, then why edits were refused."""
    return (*outcome_notes, *(r.reason for r in rejected))


def new_owner(tag: str = "") -> str:
    """A claim owner: ``host/pid/token`` (+ ``#tag``, a backend's liveness handle)."""
    owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
    return f"{owner}#{tag}" if tag else owner


class RowDigest:
    """Row count and SHA-256 of rows fed in key order, page by page: the same for equal data
    in any backend (ints, floats, text and NULL read the same from SQLite and PostgreSQL)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def update(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self._hash.update(json.dumps(list(row), ensure_ascii=False, default=str).encode())
            self._hash.update(b"\n")
            self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def keyset_sql(
    table: str, columns: list[str], key: tuple[str, ...], *, after: bool, dollar: bool
) -> str:
    """``SELECT columns FROM table [WHERE (key) > (...)] ORDER BY key LIMIT ...`` with ``?``
    (SQLite) or ``$n`` (PostgreSQL) placeholders; names come from ``TABLES``, not users."""
    mark = (lambda i: f"${i}") if dollar else (lambda i: "?")
    n = len(key)
    sql = f"SELECT {', '.join(columns)} FROM {table}"
    if after:
        sql += f" WHERE ({', '.join(key)}) > ({', '.join(mark(i + 1) for i in range(n))})"
    return sql + f" ORDER BY {', '.join(key)} LIMIT {mark(n + 1 if after else 1)}"


def upsert_sql(table: str, columns: list[str], key: tuple[str, ...], *, dollar: bool) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of every other column (both dialects)."""
    marks = [f"${i + 1}" if dollar else "?" for i in range(len(columns))]
    others = [c for c in columns if c not in key]
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)})"
        f" ON CONFLICT ({', '.join(key)}) DO "
    )
    if not others:
        return sql + "NOTHING"
    return sql + "UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in others)


def table_key(table: str) -> tuple[str, ...]:
    for name, key in TABLES:
        if name == table:
            return key
    raise ValueError(f"not an aipersona table: {table}")
