"""Identities, persona values, version history, export and deletion: SQL on a sqlite3
connection. Each function runs on the connection's worker thread, inside the transaction
(or read) the backend opened for it."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ...edits import Change, Edit, plan_changes
from ...errors import PersonaNotFound
from ...schema import PersonaSchema
from ...types import EditResult, HistoryEntry, Identity, Persona
from ..shared import export_document


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- identities ------------------------------------------------------------------------------


def persona_of(conn: sqlite3.Connection, ident: Identity) -> int | None:
    row = conn.execute(
        "SELECT persona_id FROM identities WHERE platform = ? AND platform_user_id = ?",
        ident.key,
    ).fetchone()
    return None if row is None else int(row[0])


def touch_identity(conn: sqlite3.Connection, ident: Identity) -> int | None:
    """``persona_of`` inside a write transaction, also storing a changed display name
    (operators search by it; a user renamed on the platform is found by the new name)."""
    row = conn.execute(
        "SELECT persona_id, display_name FROM identities"
        " WHERE platform = ? AND platform_user_id = ?",
        ident.key,
    ).fetchone()
    if row is None:
        return None
    if ident.display_name and ident.display_name != row[1]:
        conn.execute(
            "UPDATE identities SET display_name = ? WHERE platform = ? AND platform_user_id = ?",
            (ident.display_name, *ident.key),
        )
    return int(row[0])


def resolve(conn: sqlite3.Connection, ident: Identity, now: float) -> int:
    """The identity's persona id, creating an empty persona the first time."""
    found = persona_of(conn, ident)
    if found is not None:
        return found
    cur = conn.execute("INSERT INTO personas (created_at, updated_at) VALUES (?, ?)", (now, now))
    persona_id = int(cur.lastrowid or 0)
    conn.execute(
        "INSERT INTO identities (platform, platform_user_id, persona_id, display_name,"
        " linked_at) VALUES (?, ?, ?, ?, ?)",
        (*ident.key, persona_id, ident.display_name, now),
    )
    return persona_id


def identities(conn: sqlite3.Connection, persona_id: int) -> list[Identity]:
    rows = conn.execute(
        "SELECT platform, platform_user_id, display_name FROM identities"
        " WHERE persona_id = ? ORDER BY linked_at, rowid",
        (persona_id,),
    ).fetchall()
    return [Identity(r[0], r[1], r[2]) for r in rows]


def link(conn: sqlite3.Connection, primary: Identity, other: Identity, now: float) -> int:
    """Make ``other`` share ``primary``'s persona, merging ``other``'s own persona into it:
    fields the primary has no value for, then its history, sessions, messages and updates."""
    target = resolve(conn, primary, now)
    source = persona_of(conn, other)
    if source is None:
        conn.execute(
            "INSERT INTO identities (platform, platform_user_id, persona_id, display_name,"
            " linked_at) VALUES (?, ?, ?, ?, ?)",
            (*other.key, target, other.display_name, now),
        )
        return target
    if source == target:
        return target
    conn.execute(
        "INSERT OR IGNORE INTO persona_fields (persona_id, field, value, version, updated_at)"
        " SELECT ?, field, value, version, updated_at FROM persona_fields WHERE persona_id = ?",
        (target, source),
    )
    for table in ("persona_versions", "sessions", "messages", "persona_updates", "identities"):
        conn.execute(f"UPDATE {table} SET persona_id = ? WHERE persona_id = ?", (target, source))
    conn.execute("DELETE FROM personas WHERE id = ?", (source,))
    return target


# -- personas --------------------------------------------------------------------------------


def read_persona(conn: sqlite3.Connection, persona_id: int) -> Persona:
    """The persona's values and versions (empty if it has none, or does not exist)."""
    persona = Persona(persona_id)
    for name, value, version in conn.execute(
        "SELECT field, value, version FROM persona_fields WHERE persona_id = ?", (persona_id,)
    ):
        persona.values[name] = json.loads(value)
        persona.versions[name] = int(version)
    return persona


def load_persona(conn: sqlite3.Connection, persona_id: int) -> Persona:
    """``read_persona`` of a persona that must exist (PersonaNotFound otherwise)."""
    if conn.execute("SELECT 1 FROM personas WHERE id = ?", (persona_id,)).fetchone() is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return read_persona(conn, persona_id)


def _write_changes(
    conn: sqlite3.Connection, persona: Persona, changes: list[Change], now: float
) -> None:
    """Write ``changes`` as new versions and update ``persona`` to match."""
    for ch in changes:
        # versions count per field and never go back, even across deletes
        row = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM persona_versions"
            " WHERE persona_id = ? AND field = ?",
            (persona.id, ch.field),
        ).fetchone()
        ch.version = max(persona.versions.get(ch.field, 0), int(row[0])) + 1
        conn.execute(
            "INSERT INTO persona_versions (persona_id, field, version, op, old_value,"
            " new_value, source, session_ids, evidence, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
            ),
        )
        if ch.new_value is None:
            conn.execute(
                "DELETE FROM persona_fields WHERE persona_id = ? AND field = ?",
                (persona.id, ch.field),
            )
            persona.values.pop(ch.field, None)
            persona.versions.pop(ch.field, None)
        else:
            conn.execute(
                "INSERT INTO persona_fields (persona_id, field, value, version, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (persona_id, field) DO UPDATE SET"
                " value = excluded.value, version = excluded.version,"
                " updated_at = excluded.updated_at",
                (persona.id, ch.field, dumps(ch.new_value), ch.version, now),
            )
            persona.values[ch.field] = ch.new_value
            persona.versions[ch.field] = ch.version
    if changes:
        conn.execute("UPDATE personas SET updated_at = ? WHERE id = ?", (now, persona.id))


def apply_edits(
    conn: sqlite3.Connection,
    persona_id: int,
    edits: list[Edit],
    schema: PersonaSchema,
    source: str,
    session_ids: list[int],
    now: float,
) -> EditResult:
    persona = load_persona(conn, persona_id)
    changes, rejected = plan_changes(
        edits, schema, persona.values, source=source, session_ids=session_ids
    )
    _write_changes(conn, persona, changes, now)
    return EditResult(changes, rejected, persona)


def rollback(conn: sqlite3.Connection, persona_id: int, version_id: int, now: float) -> EditResult:
    """Return one field to its value right after history entry ``version_id``."""
    row = conn.execute(
        "SELECT field, new_value FROM persona_versions WHERE id = ? AND persona_id = ?",
        (version_id, persona_id),
    ).fetchone()
    if row is None:
        raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
    persona = load_persona(conn, persona_id)
    name, target = row[0], _loads(row[1])
    old = persona.values.get(name)
    if old == target:
        return EditResult([], [], persona)
    change = Change(
        name, "rollback", old, target, f"rollback to history entry {version_id}", "rollback"
    )
    _write_changes(conn, persona, [change], now)
    return EditResult([change], [], persona)


def history(
    conn: sqlite3.Connection, persona_id: int, field: str | None, limit: int
) -> list[HistoryEntry]:
    sql = (
        "SELECT id, field, version, op, old_value, new_value, source, session_ids, evidence,"
        " created_at FROM persona_versions WHERE persona_id = ?"
    )
    params: tuple[Any, ...] = (persona_id,)
    if field:
        sql += " AND field = ?"
        params += (field,)
    sql += " ORDER BY id DESC LIMIT ?"
    rows = conn.execute(sql, (*params, limit)).fetchall()
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


def _rows(conn: sqlite3.Connection, sql: str, persona_id: int) -> list[dict[str, Any]]:
    cur = conn.execute(sql, (persona_id,))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def export(conn: sqlite3.Connection, persona_id: int, now: float) -> dict[str, Any]:
    """Every row of every table that belongs to the persona (see ``shared.EXPORTED_TABLES``)."""
    row = conn.execute(
        "SELECT created_at, updated_at FROM personas WHERE id = ?", (persona_id,)
    ).fetchone()
    if row is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return export_document(
        persona=read_persona(conn, persona_id),
        created_at=row[0],
        updated_at=row[1],
        now=now,
        identities=_rows(
            conn,
            "SELECT platform, platform_user_id, display_name, linked_at FROM identities"
            " WHERE persona_id = ? ORDER BY linked_at, rowid",
            persona_id,
        ),
        history=history(conn, persona_id, None, 2**62),
        sessions=_rows(
            conn,
            "SELECT id, platform, chat_id, started_at, last_message_at, ended_at, end_reason,"
            " update_id FROM sessions WHERE persona_id = ? ORDER BY id",
            persona_id,
        ),
        messages=_rows(
            conn,
            "SELECT id, session_id, role, content, platform, chat_id, created_at FROM messages"
            " WHERE persona_id = ? ORDER BY id",
            persona_id,
        ),
        updates=_rows(
            conn,
            "SELECT id, status, session_ids, attempts, error, created_at, finished_at"
            " FROM persona_updates WHERE persona_id = ? ORDER BY id",
            persona_id,
        ),
    )


def delete(conn: sqlite3.Connection, persona_id: int) -> bool:
    """Delete the persona; every table's rows go with it (ON DELETE CASCADE)."""
    cur = conn.execute("DELETE FROM personas WHERE id = ?", (persona_id,))
    return (cur.rowcount or 0) > 0
