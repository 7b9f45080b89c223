"""Persona storage: identities, current field values, version history, export and deletion."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from .db import Database
from .edits import Change, Edit, Rejected, resolve
from .schema import FieldValidationError, PersonaSchema, nest


class PersonaNotFound(LookupError):
    """No persona for that identity or id."""


@dataclass
class Identity:
    platform: str
    user_id: str
    display_name: str | None = None

    def __post_init__(self) -> None:
        self.platform = str(self.platform).strip().lower()
        self.user_id = str(self.user_id).strip()
        if not self.platform or not self.user_id:
            raise ValueError("an identity needs a platform and a user id")


@dataclass
class Persona:
    """The learned profile of one person: flat ``Category.Field`` -> value, with versions."""

    id: int
    values: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def nested(self) -> dict[str, dict[str, Any]]:
        return nest(self.values)

    def is_empty(self) -> bool:
        return not self.values


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


ID_CACHE_MAX = 100_000

# where each table's rows go in an export (tests/…::test_export_covers_every_table checks
# that every table of the schema is listed here)
EXPORTED_TABLES = {
    "personas": "created_at/updated_at",
    "identities": "identities",
    "persona_fields": "persona + field_versions",
    "persona_versions": "history",
    "sessions": "sessions",
    "messages": "messages",
    "persona_updates": "persona_updates",
}


class PersonaStore:
    """All persona reads and writes. Writes run inside ``Database.write()`` transactions.

    ``(platform, user_id) -> persona_id`` is cached in memory (bounded) because every message
    needs it. The cache is a hint: the per-message transaction re-checks the mapping (see
    ``identity_in``), so a link or deletion by another process is noticed, not trusted.
    """

    def __init__(self, db: Database, schema: PersonaSchema) -> None:
        self.db = db
        self.schema = schema
        self._ids: dict[tuple[str, str], int] = {}

    # -- identities -----------------------------------------------------------------------

    def _remember(self, ident: Identity, persona_id: int) -> None:
        if len(self._ids) >= ID_CACHE_MAX:
            self._ids.clear()
        self._ids[(ident.platform, ident.user_id)] = persona_id

    def forget_cached(self, ident: Identity | None = None) -> None:
        """Drop one cached identity (or all of them)."""
        if ident is None:
            self._ids.clear()
        else:
            self._ids.pop((ident.platform, ident.user_id), None)

    @staticmethod
    def identity_in(conn: sqlite3.Connection, ident: Identity) -> int | None:
        """The persona id of an identity, on the DB thread."""
        row = conn.execute(
            "SELECT persona_id FROM identities WHERE platform = ? AND platform_user_id = ?",
            (ident.platform, ident.user_id),
        ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def touch_identity_in(conn: sqlite3.Connection, ident: Identity) -> int | None:
        """``identity_in`` inside a write transaction, also storing a changed display name
        (operators search by it; a user renamed on the platform is found by the new name)."""
        row = conn.execute(
            "SELECT persona_id, display_name FROM identities"
            " WHERE platform = ? AND platform_user_id = ?",
            (ident.platform, ident.user_id),
        ).fetchone()
        if row is None:
            return None
        if ident.display_name and ident.display_name != row[1]:
            conn.execute(
                "UPDATE identities SET display_name = ? WHERE platform = ? AND"
                " platform_user_id = ?",
                (ident.display_name, ident.platform, ident.user_id),
            )
        return int(row[0])

    async def find(self, ident: Identity) -> int | None:
        found = self._ids.get((ident.platform, ident.user_id))
        if found is not None:
            return found
        found = await self.db.run(self.identity_in, ident)
        if found is not None:
            self._remember(ident, found)
        return found

    async def resolve(self, ident: Identity) -> int:
        """The persona id of an identity, creating an empty persona the first time."""
        found = await self.find(ident)
        if found is not None:
            return found
        async with self.db.write() as conn:
            persona_id = await self.resolve_in(conn, ident)
        self._remember(ident, persona_id)
        return persona_id

    async def resolve_in(self, conn: aiosqlite.Connection, ident: Identity) -> int:
        """Like ``resolve`` inside an open write transaction."""
        async with conn.execute(
            "SELECT persona_id FROM identities WHERE platform = ? AND platform_user_id = ?",
            (ident.platform, ident.user_id),
        ) as cur:
            row = await cur.fetchone()
        if row is not None:
            return int(row[0])
        now = time.time()
        cur = await conn.execute(
            "INSERT INTO personas (created_at, updated_at) VALUES (?, ?)", (now, now)
        )
        persona_id = int(cur.lastrowid or 0)
        await conn.execute(
            "INSERT INTO identities (platform, platform_user_id, persona_id, display_name,"
            " linked_at) VALUES (?, ?, ?, ?, ?)",
            (ident.platform, ident.user_id, persona_id, ident.display_name, now),
        )
        return persona_id

    async def identities(self, persona_id: int) -> list[Identity]:
        rows = await self.db.fetchall(
            "SELECT platform, platform_user_id, display_name FROM identities"
            " WHERE persona_id = ? ORDER BY linked_at",
            (persona_id,),
        )
        return [Identity(r[0], r[1], r[2]) for r in rows]

    async def link(self, primary: Identity, other: Identity) -> int:
        """Make ``other`` share the persona of ``primary``.

        If ``other`` already had a persona of its own, its fields are merged into the primary
        one where the primary has no value, its history and messages move along, and the old
        persona is removed.
        """
        try:
            return await self._link(primary, other)
        finally:
            self.forget_cached()

    async def _link(self, primary: Identity, other: Identity) -> int:
        async with self.db.write() as conn:
            target = await self.resolve_in(conn, primary)
            async with conn.execute(
                "SELECT persona_id FROM identities WHERE platform = ? AND platform_user_id = ?",
                (other.platform, other.user_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                await conn.execute(
                    "INSERT INTO identities (platform, platform_user_id, persona_id,"
                    " display_name, linked_at) VALUES (?, ?, ?, ?, ?)",
                    (other.platform, other.user_id, target, other.display_name, time.time()),
                )
                return target
            source = int(row[0])
            if source == target:
                return target
            await conn.execute(
                "INSERT OR IGNORE INTO persona_fields (persona_id, field, value, version,"
                " updated_at) SELECT ?, field, value, version, updated_at FROM persona_fields"
                " WHERE persona_id = ?",
                (target, source),
            )
            for table in ("persona_versions", "sessions", "messages", "persona_updates"):
                await conn.execute(
                    f"UPDATE {table} SET persona_id = ? WHERE persona_id = ?", (target, source)
                )
            await conn.execute(
                "UPDATE identities SET persona_id = ? WHERE persona_id = ?", (target, source)
            )
            await conn.execute("DELETE FROM personas WHERE id = ?", (source,))
            return target

    # -- reading --------------------------------------------------------------------------

    async def load(self, persona_id: int) -> Persona:
        return await self.db.run(self.load_sync, persona_id)

    @staticmethod
    def load_sync(conn: sqlite3.Connection, persona_id: int) -> Persona:
        """``load`` on the DB thread (inside or outside a transaction)."""
        persona = Persona(persona_id)
        for name, value, version in conn.execute(
            "SELECT field, value, version FROM persona_fields WHERE persona_id = ?",
            (persona_id,),
        ):
            persona.values[name] = json.loads(value)
            persona.versions[name] = int(version)
        return persona

    async def history(
        self, persona_id: int, *, field_name: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, field, version, op, old_value, new_value, source, session_ids,"
            " evidence, created_at FROM persona_versions WHERE persona_id = ?"
        )
        params: tuple = (persona_id,)
        if field_name:
            sql += " AND field = ?"
            try:
                field_name = self.schema.get(field_name).name
            except FieldValidationError:
                pass  # a field no longer in the schema still has its history
            params += (field_name,)
        sql += " ORDER BY id DESC LIMIT ?"
        params += (limit,)
        rows = await self.db.fetchall(sql, params)
        return [
            {
                "id": r["id"],
                "field": r["field"],
                "version": r["version"],
                "op": r["op"],
                "old_value": _loads(r["old_value"]),
                "new_value": _loads(r["new_value"]),
                "source": r["source"],
                "session_ids": json.loads(r["session_ids"]),
                "evidence": r["evidence"],
                "created_at": r["created_at"],
            }
            for r in rows
        ]

    async def export(self, persona_id: int) -> dict[str, Any]:
        """Everything stored about a person: every row of every table that belongs to the
        persona (``EXPORTED_TABLES`` says where each table goes; a test checks that no
        table is left out)."""
        persona = await self.load(persona_id)
        row = await self.db.fetchone(
            "SELECT created_at, updated_at FROM personas WHERE id = ?", (persona_id,)
        )
        if row is None:
            raise PersonaNotFound(f"persona {persona_id} does not exist")
        identities = await self.db.fetchall(
            "SELECT platform, platform_user_id, display_name, linked_at FROM identities"
            " WHERE persona_id = ? ORDER BY linked_at",
            (persona_id,),
        )
        sessions = await self.db.fetchall(
            "SELECT id, platform, chat_id, started_at, last_message_at, ended_at, end_reason,"
            " update_id FROM sessions WHERE persona_id = ? ORDER BY id",
            (persona_id,),
        )
        messages = await self.db.fetchall(
            "SELECT id, session_id, role, content, platform, chat_id, created_at FROM messages"
            " WHERE persona_id = ? ORDER BY id",
            (persona_id,),
        )
        updates = await self.db.fetchall(
            "SELECT id, status, session_ids, attempts, error, created_at, finished_at"
            " FROM persona_updates WHERE persona_id = ? ORDER BY id",
            (persona_id,),
        )
        return {
            "format": "aipersona.export/2",
            "exported_at": time.time(),
            "persona_id": persona_id,
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
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
            "history": list(reversed(await self.history(persona_id, limit=1_000_000))),
            "sessions": [dict(r) for r in sessions],
            "messages": [dict(r) for r in messages],
            "persona_updates": [
                {**dict(r), "session_ids": json.loads(r["session_ids"]), "notes": r["error"]}
                for r in updates
            ],
        }

    # -- writing --------------------------------------------------------------------------

    async def apply(
        self,
        persona_id: int,
        edits: list[Edit],
        *,
        source: str,
        session_ids: list[int] | None = None,
        conn: aiosqlite.Connection | None = None,
    ) -> tuple[list[Change], list[Rejected]]:
        """Validate and apply edits in one transaction. Invalid edits are rejected, not fatal."""
        if conn is None:
            async with self.db.write() as c:
                return await self.apply(
                    persona_id, edits, source=source, session_ids=session_ids, conn=c
                )
        persona = await self._load_in(conn, persona_id)
        current = dict(persona.values)
        changes: list[Change] = []
        rejected: list[Rejected] = []
        for edit in edits:
            try:
                spec, new = resolve(edit, self.schema, current)
            except FieldValidationError as exc:
                rejected.append(Rejected(edit, str(exc)))
                continue
            old = current.get(spec.name)
            if new == old:
                continue
            current[spec.name] = new
            if new is None:
                current.pop(spec.name, None)
            changes.append(
                Change(spec.name, edit.op, old, new, edit.evidence, source, session_ids or [])
            )
        await self._write_changes(conn, persona_id, persona, changes)
        return changes, rejected

    async def _load_in(self, conn: aiosqlite.Connection, persona_id: int) -> Persona:
        """``load`` inside an open write transaction (same connection, same thread)."""
        async with conn.execute("SELECT 1 FROM personas WHERE id = ?", (persona_id,)) as cur:
            if await cur.fetchone() is None:
                raise PersonaNotFound(f"persona {persona_id} does not exist")
        return await self.db.run(self.load_sync, persona_id)

    async def _write_changes(
        self,
        conn: aiosqlite.Connection,
        persona_id: int,
        persona: Persona,
        changes: list[Change],
    ) -> None:
        if not changes:
            return
        now = time.time()
        versions = dict(persona.versions)
        for ch in changes:
            if ch.version == 0:
                # versions count per field and never go back, even across deletes
                async with conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM persona_versions"
                    " WHERE persona_id = ? AND field = ?",
                    (persona_id, ch.field),
                ) as cur:
                    row = await cur.fetchone()
                ch.version = max(versions.get(ch.field, 0), int(row[0]) if row else 0) + 1
            versions[ch.field] = ch.version
            await conn.execute(
                "INSERT INTO persona_versions (persona_id, field, version, op, old_value,"
                " new_value, source, session_ids, evidence, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    persona_id,
                    ch.field,
                    ch.version,
                    ch.op,
                    None if ch.old_value is None else dumps(ch.old_value),
                    None if ch.new_value is None else dumps(ch.new_value),
                    ch.source,
                    dumps(ch.session_ids),
                    ch.evidence,
                    now,
                ),
            )
            if ch.new_value is None:
                await conn.execute(
                    "DELETE FROM persona_fields WHERE persona_id = ? AND field = ?",
                    (persona_id, ch.field),
                )
            else:
                await conn.execute(
                    "INSERT INTO persona_fields (persona_id, field, value, version, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (persona_id, field) DO UPDATE SET"
                    " value = excluded.value, version = excluded.version,"
                    " updated_at = excluded.updated_at",
                    (persona_id, ch.field, dumps(ch.new_value), ch.version, now),
                )
        await conn.execute("UPDATE personas SET updated_at = ? WHERE id = ?", (now, persona_id))

    async def rollback(self, persona_id: int, version_id: int) -> list[Change]:
        """Return one field to the value it had right after history row ``version_id``.

        The rollback is itself a new version (source ``rollback``), so it can be undone.
        """
        async with self.db.write() as conn:
            async with conn.execute(
                "SELECT field, new_value FROM persona_versions WHERE id = ? AND persona_id = ?",
                (version_id, persona_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
            persona = await self._load_in(conn, persona_id)
            name, target = row[0], _loads(row[1])
            old = persona.values.get(name)
            if old == target:
                return []
            change = Change(
                name,
                "rollback",
                old,
                target,
                f"rollback to history entry {version_id}",
                "rollback",
            )
            await self._write_changes(conn, persona_id, persona, [change])
            return [change]

    async def delete(self, persona_id: int) -> bool:
        """Delete the persona and everything about it (identities, history, messages).

        With ``secure_delete`` on (see ``Database.open``) the rows are overwritten with zeros
        in the database file; the WAL, which still holds the old pages, is then checkpointed
        and truncated, so the deleted text is in none of the database's files.
        """
        try:
            async with self.db.write() as conn:
                cur = await conn.execute("DELETE FROM personas WHERE id = ?", (persona_id,))
                deleted = (cur.rowcount or 0) > 0
        finally:
            self.forget_cached()
        if deleted:
            await self.db.checkpoint_truncate()
        return deleted
