"""Identities, persona values, version history, export and deletion on PostgreSQL. Each
function runs on one asyncpg connection, inside the transaction the backend opened for it.
(The same operations as ``sqlite/persona_queries.py``, in PostgreSQL's dialect.)"""

from __future__ import annotations

import json
from typing import Any

from ...edits import Change, Edit, plan_changes
from ...errors import PersonaNotFound
from ...schema import PersonaSchema
from ...types import EditResult, HistoryEntry, Identity, Persona
from ..shared import export_document

Conn = Any  # an asyncpg connection


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters (a platform's display name might)."""
    return None if value is None else value.replace("\x00", "")


async def persona_of(conn: Conn, ident: Identity) -> int | None:
    value = await conn.fetchval(
        "SELECT persona_id FROM identities WHERE platform = $1 AND platform_user_id = $2",
        ident.platform,
        ident.user_id,
    )
    return None if value is None else int(value)


async def touch_identity(conn: Conn, ident: Identity) -> int | None:
    """``persona_of``, also storing a changed display name."""
    row = await conn.fetchrow(
        "SELECT persona_id, display_name FROM identities"
        " WHERE platform = $1 AND platform_user_id = $2",
        ident.platform,
        ident.user_id,
    )
    if row is None:
        return None
    name = text(ident.display_name)
    if name and name != row[1]:
        await conn.execute(
            "UPDATE identities SET display_name = $1 WHERE platform = $2 AND platform_user_id = $3",
            name,
            ident.platform,
            ident.user_id,
        )
    return int(row[0])


async def resolve(conn: Conn, ident: Identity, now: float) -> int:
    """The identity's persona id, creating an empty persona the first time (another worker
    creating it at the same moment is taken, not duplicated)."""
    found = await persona_of(conn, ident)
    if found is not None:
        return found
    persona_id = await conn.fetchval(
        "INSERT INTO personas (created_at, updated_at) VALUES ($1, $1) RETURNING id", now
    )
    inserted = await conn.fetchval(
        "INSERT INTO identities (platform, platform_user_id, persona_id, display_name,"
        " linked_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING persona_id",
        ident.platform,
        ident.user_id,
        persona_id,
        text(ident.display_name),
        now,
    )
    if inserted is None:  # lost the race: use the winner's persona, drop ours
        await conn.execute("DELETE FROM personas WHERE id = $1", persona_id)
        found = await persona_of(conn, ident)
        assert found is not None
        return found
    return int(persona_id)


async def identities(conn: Conn, persona_id: int) -> list[Identity]:
    rows = await conn.fetch(
        "SELECT platform, platform_user_id, display_name FROM identities"
        " WHERE persona_id = $1 ORDER BY linked_at, platform, platform_user_id",
        persona_id,
    )
    return [Identity(r[0], r[1], r[2]) for r in rows]


async def link(conn: Conn, primary: Identity, other: Identity, now: float) -> int:
    target = await resolve(conn, primary, now)
    source = await persona_of(conn, other)
    if source is None:
        await conn.execute(
            "INSERT INTO identities (platform, platform_user_id, persona_id, display_name,"
            " linked_at) VALUES ($1, $2, $3, $4, $5)",
            other.platform,
            other.user_id,
            target,
            text(other.display_name),
            now,
        )
        return target
    if source == target:
        return target
    await conn.execute(
        "INSERT INTO persona_fields (persona_id, field, value, version, updated_at)"
        " SELECT $1, field, value, version, updated_at FROM persona_fields WHERE persona_id = $2"
        " ON CONFLICT DO NOTHING",
        target,
        source,
    )
    for table in ("persona_versions", "sessions", "messages", "persona_updates", "identities"):
        await conn.execute(
            f"UPDATE {table} SET persona_id = $1 WHERE persona_id = $2", target, source
        )
    await conn.execute("DELETE FROM personas WHERE id = $1", source)
    return target


async def read_persona(conn: Conn, persona_id: int) -> Persona:
    persona = Persona(persona_id)
    for name, value, version in await conn.fetch(
        "SELECT field, value, version FROM persona_fields WHERE persona_id = $1", persona_id
    ):
        persona.values[name] = json.loads(value)
        persona.versions[name] = int(version)
    return persona


async def load_persona(conn: Conn, persona_id: int, *, lock: bool = False) -> Persona:
    """``read_persona`` of a persona that must exist; ``lock`` holds its row until the
    transaction ends (writers of one persona queue instead of interleaving)."""
    sql = "SELECT 1 FROM personas WHERE id = $1" + (" FOR UPDATE" if lock else "")
    if await conn.fetchval(sql, persona_id) is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return await read_persona(conn, persona_id)


async def _write_changes(conn: Conn, persona: Persona, changes: list[Change], now: float) -> None:
    for ch in changes:
        latest = await conn.fetchval(
            "SELECT COALESCE(MAX(version), 0) FROM persona_versions"
            " WHERE persona_id = $1 AND field = $2",
            persona.id,
            ch.field,
        )
        ch.version = max(persona.versions.get(ch.field, 0), int(latest)) + 1
        await conn.execute(
            "INSERT INTO persona_versions (persona_id, field, version, op, old_value,"
            " new_value, source, session_ids, evidence, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            persona.id,
            ch.field,
            ch.version,
            ch.op,
            None if ch.old_value is None else dumps(ch.old_value),
            None if ch.new_value is None else dumps(ch.new_value),
            ch.source,
            dumps(ch.session_ids),
            ch.evidence,
            now,
        )
        if ch.new_value is None:
            await conn.execute(
                "DELETE FROM persona_fields WHERE persona_id = $1 AND field = $2",
                persona.id,
                ch.field,
            )
            persona.values.pop(ch.field, None)
            persona.versions.pop(ch.field, None)
        else:
            await conn.execute(
                "INSERT INTO persona_fields (persona_id, field, value, version, updated_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (persona_id, field) DO UPDATE SET"
                " value = excluded.value, version = excluded.version,"
                " updated_at = excluded.updated_at",
                persona.id,
                ch.field,
                dumps(ch.new_value),
                ch.version,
                now,
            )
            persona.values[ch.field] = ch.new_value
            persona.versions[ch.field] = ch.version
    if changes:
        await conn.execute("UPDATE personas SET updated_at = $1 WHERE id = $2", now, persona.id)


async def apply_edits(
    conn: Conn,
    persona_id: int,
    edits: list[Edit],
    schema: PersonaSchema,
    source: str,
    session_ids: list[int],
    now: float,
) -> EditResult:
    persona = await load_persona(conn, persona_id, lock=True)
    changes, rejected = plan_changes(
        edits, schema, persona.values, source=source, session_ids=session_ids
    )
    await _write_changes(conn, persona, changes, now)
    return EditResult(changes, rejected, persona)


async def rollback(conn: Conn, persona_id: int, version_id: int, now: float) -> EditResult:
    row = await conn.fetchrow(
        "SELECT field, new_value FROM persona_versions WHERE id = $1 AND persona_id = $2",
        version_id,
        persona_id,
    )
    if row is None:
        raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
    persona = await load_persona(conn, persona_id, lock=True)
    name, target = row[0], _loads(row[1])
    old = persona.values.get(name)
    if old == target:
        return EditResult([], [], persona)
    change = Change(
        name, "rollback", old, target, f"rollback to history entry {version_id}", "rollback"
    )
    await _write_changes(conn, persona, [change], now)
    return EditResult([change], [], persona)


async def history(conn: Conn, persona_id: int, field: str | None, limit: int) -> list[HistoryEntry]:
    sql = (
        "SELECT id, field, version, op, old_value, new_value, source, session_ids, evidence,"
        " created_at FROM persona_versions WHERE persona_id = $1"
    )
    args: list[Any] = [persona_id]
    if field:
        sql += " AND field = $2"
        args.append(field)
    sql += f" ORDER BY id DESC LIMIT ${len(args) + 1}"
    rows = await conn.fetch(sql, *args, limit)
    return [
        HistoryEntry(
            id=r[0],
            field=r[1],
            version=r[2],
            op=r[3],
            old_value=_loads(r[4]),
            new_value=_loads(r[5]),
            source=r[6],
            session_ids=json.loads(r[7]),
            evidence=r[8],
            created_at=r[9],
        )
        for r in rows
    ]


async def _rows(conn: Conn, sql: str, persona_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql, persona_id)]


async def export(conn: Conn, persona_id: int, now: float) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT created_at, updated_at FROM personas WHERE id = $1", persona_id
    )
    if row is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return export_document(
        persona=await read_persona(conn, persona_id),
        created_at=row[0],
        updated_at=row[1],
        now=now,
        identities=await _rows(
            conn,
            "SELECT platform, platform_user_id, display_name, linked_at FROM identities"
            " WHERE persona_id = $1 ORDER BY linked_at, platform, platform_user_id",
            persona_id,
        ),
        history=await history(conn, persona_id, None, 2**62),
        sessions=await _rows(
            conn,
            "SELECT id, platform, chat_id, started_at, last_message_at, ended_at, end_reason,"
            " update_id FROM sessions WHERE persona_id = $1 ORDER BY id",
            persona_id,
        ),
        messages=await _rows(
            conn,
            "SELECT id, session_id, role, content, platform, chat_id, created_at FROM messages"
            " WHERE persona_id = $1 ORDER BY id",
            persona_id,
        ),
        updates=await _rows(
            conn,
            "SELECT id, status, session_ids, attempts, error, created_at, finished_at"
            " FROM persona_updates WHERE persona_id = $1 ORDER BY id",
            persona_id,
        ),
    )


async def delete(conn: Conn, persona_id: int) -> bool:
    status = await conn.execute("DELETE FROM personas WHERE id = $1", persona_id)
    return bool(status != "DELETE 0")
