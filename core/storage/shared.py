"""What every backend does the same way, whatever its SQL: the tables and their order, the
bounded history, the export document, the update-claim owner, and row checksums for
``aipersona db copy``. Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ..edits import Change, Edit, Rejected
from ..insights import COUNTERS
from ..types import HistoryEntry, Identity, Persona
from .base import SessionRules
from .crypto import PREFIX

CHARS_PER_TOKEN = 4  # rough; good enough to bound prompt size without a tokenizer

# every table, parents before children (the order a copy writes them), with its primary key
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("personas", ("id",)),
    ("persona_keys", ("persona_id",)),
    ("identities", ("platform", "platform_user_id")),
    ("persona_fields", ("persona_id", "field")),
    ("persona_versions", ("id",)),
    ("persona_updates", ("id",)),
    ("sessions", ("id",)),
    ("messages", ("id",)),
    ("token_usage", ("persona_id", "platform", "chat_id", "day", "role")),
    ("daily_stats", ("day", "name", "shard")),
)

# (table, key column, encrypted columns) of a person's rows: what encryption at rest seals
SEALED = (
    ("persona_fields", "field", ("value",)),
    ("persona_versions", "id", ("old_value", "new_value", "evidence")),
    ("messages", "id", ("content",)),
    ("persona_updates", "id", ("error",)),  # notes may quote a refused value
)


def skip_text(value: str | None, plain_only: bool) -> bool:
    """A text ``convert`` leaves as it is: none, or (``plain_only``) one already sealed."""
    return value is None or (plain_only and value.startswith(PREFIX))


# the columns of a person's persona updates in an export (``notes`` is ``error``, opened)
UPDATE_EXPORT_COLUMNS = (
    "id, status, session_ids, attempts, error, created_at, finished_at, outcome,"
    " edits_applied, edits_refused, prompt_tokens, completion_tokens, seconds"
)

# edits from these sources respect the learning switch and the values a user set
AUTOMATIC_SOURCES = ("optimizer", "tool")

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
    "token_usage": "token_usage",
    "persona_keys": "encryption (whether and since when; never the key)",
    # counts per day of everyone together, with no persona id: nobody's data
    "daily_stats": "not exported: counts per day of all users together",
}
# tables whose rows belong to no one person (no persona_id column)
SHARED_TABLES = ("daily_stats",)


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
    usage: list[dict[str, Any]],
    encrypted_since: float | None,
    open_text: Callable[[str | None], str | None] = lambda text: text,
) -> dict[str, Any]:
    """The export (format ``aipersona.export/2``) from the rows a backend read."""
    return {
        "format": "aipersona.export/2",
        "learning": persona.learning,
        "encryption": {"on": encrypted_since is not None, "since": encrypted_since},
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
            {
                **u,
                "error": open_text(u["error"]),
                "session_ids": json.loads(u["session_ids"]),
                "notes": open_text(u["error"]),
            }
            for u in updates
        ],
        "token_usage": usage,
    }


def screen(persona: Persona, edits: list[Edit], source: str) -> tuple[list[Edit], list[Rejected]]:
    """Edits from an automatic source (the optimizer, a persona tool) that may go ahead: none
    while the person's learning is off; none on a field whose value the user set."""
    if source not in AUTOMATIC_SOURCES:
        return edits, []
    if not persona.learning:
        return [], [Rejected(e, f"{e.field}: learning is off for this user") for e in edits]
    kept: list[Edit] = []
    refused: list[Rejected] = []
    for edit in edits:
        name = next((n for n in persona.values if n.casefold() == edit.field.casefold()), None)
        if name is not None and persona.set_by_user(name):
            refused.append(Rejected(edit, f"{name}: set by the user"))
        else:
            kept.append(edit)
    return kept, refused


def persona_from_rows(
    persona_id: int,
    rows: Iterable[Sequence[Any]],
    open_text: Callable[[str], str],
    learning: bool = True,
) -> Persona:
    """A persona from ``(field, sealed JSON value, version, source)`` rows."""
    persona = Persona(persona_id, learning=learning)
    for name, value, version, source in rows:
        persona.values[name] = json.loads(open_text(value))
        persona.versions[name] = int(version)
        persona.sources[name] = source or ""
    return persona


def history_entry(
    row: Sequence[Any], open_text: Callable[[str | None], str | None]
) -> HistoryEntry:
    """A version from ``(id, field, version, op, old, new, source, session_ids, evidence,
    created_at)`` with its texts opened."""
    old, new, evidence = (open_text(row[i]) for i in (4, 5, 8))
    return HistoryEntry(
        id=row[0],
        field=row[1],
        version=row[2],
        op=row[3],
        old_value=None if old is None else json.loads(old),
        new_value=None if new is None else json.loads(new),
        source=row[6],
        session_ids=json.loads(row[7]),
        evidence=evidence or "",
        created_at=row[9],
    )


def undo_change(persona: Persona, entry: HistoryEntry) -> Change | None:
    """The change that reverts ``entry`` (its field back to its old value), a version made by
    the user; None if the field already has that value."""
    current = persona.values.get(entry.field)
    if current == entry.old_value:
        return None
    op = "undo" if entry.old_value is not None else "delete"
    return Change(entry.field, op, current, entry.old_value, f"undo of #{entry.id}", "user")


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


def counter_rows(day: str, shard: int, counts: dict[str, int]) -> list[tuple[str, str, int, int]]:
    """``daily_stats`` rows to add: (day, counter, shard, amount), zeros left out.
    ValueError for a name that is not one of ``insights.COUNTERS``."""
    unknown = set(counts) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown counters: {sorted(unknown)}")
    return [(day, name, shard, int(n)) for name, n in counts.items() if n]


def finish_counts(outcome: str, applied: int, refused: int) -> dict[str, int]:
    """The counters a finished update adds to."""
    return {f"updates_{outcome}": 1, "edits_applied": applied, "edits_refused": refused}


def usage_counts(role: str, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The counters one model call adds to (``role``: chat or optimizer)."""
    return {
        f"{role}_calls": 1,
        f"{role}_prompt_tokens": prompt_tokens,
        f"{role}_completion_tokens": completion_tokens,
    }


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


def utc_day(now: float) -> str:
    """``YYYY-MM-DD`` of ``now`` in UTC (the day budgets and reports count by)."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))
