"""Identities, persona values, version history, export and deletion: SQL on a sqlite3
connection. Each function runs on the connection's worker thread, inside the transaction
(or read) the backend opened for it. Values, versions, evidence and messages pass through a
person's ``Sealer`` (encryption at rest; a no-op when it is off)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ...edits import Change, Edit, plan_changes
from ...errors import PersonaNotFound
from ...schema import PersonaSchema
from ...types import EditResult, HistoryEntry, Identity, Persona
from ..crypto import PLAIN, Keyring, Sealer
from ..shared import (
    SEALED,
    UPDATE_EXPORT_COLUMNS,
    export_document,
    history_entry,
    persona_from_rows,
    screen,
    skip_text,
    undo_change,
    utc_day,
)
from .counters import add_counts


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- the person's data key -------------------------------------------------------------------


def sealer(
    conn: sqlite3.Connection, keyring: Keyring | None, persona_id: int, *, create: bool = False
) -> Sealer:
    """The person's sealer (``create``: make their data key if they have none yet)."""
    if keyring is None:
        return PLAIN
    row = conn.execute(
        "SELECT wrapped FROM persona_keys WHERE persona_id = ?", (persona_id,)
    ).fetchone()
    if row is not None:
        return keyring.sealer(keyring.unwrap(row[0], persona_id), persona_id)
    if not create:
        return Sealer(None, persona_id)  # nothing of theirs is sealed yet
    key, wrapped = keyring.new_data_key(persona_id)
    conn.execute(
        "INSERT INTO persona_keys (persona_id, wrapped, master_id, created_at) VALUES (?, ?, ?, ?)",
        (persona_id, wrapped, keyring.master_id, time.time()),
    )
    return keyring.sealer(key, persona_id)


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
    add_counts(conn, utc_day(now), {"new_users": 1})
    return persona_id


def identities(conn: sqlite3.Connection, persona_id: int) -> list[Identity]:
    rows = conn.execute(
        "SELECT platform, platform_user_id, display_name FROM identities"
        " WHERE persona_id = ? ORDER BY linked_at, rowid",
        (persona_id,),
    ).fetchall()
    return [Identity(r[0], r[1], r[2]) for r in rows]


def convert(
    conn: sqlite3.Connection, persona_id: int, old: Sealer, new: Sealer, *, plain_only: bool
) -> int:
    """Open the person's texts with ``old`` and seal them with ``new`` (``plain_only``: only
    the texts not sealed yet); return how many texts changed."""
    changed = 0
    for table, key, columns in SEALED:
        sql = f"SELECT {key}, {', '.join(columns)} FROM {table} WHERE persona_id = ?"
        sets = ", ".join(f"{c} = ?" for c in columns)
        for row in conn.execute(sql, (persona_id,)).fetchall():
            texts = [v if skip_text(v, plain_only) else new.seal(old.open(v)) for v in row[1:]]
            if texts != list(row[1:]):
                changed += sum(a != b for a, b in zip(texts, row[1:], strict=True))
                conn.execute(
                    f"UPDATE {table} SET {sets} WHERE persona_id = ? AND {key} = ?",
                    (*texts, persona_id, row[0]),
                )
    return changed


def _reseal(conn: sqlite3.Connection, keyring: Keyring | None, source: int, target: int) -> None:
    """Before a link moves ``source``'s rows to ``target``: seal them under target's key."""
    if (
        keyring is None
        or conn.execute("SELECT 1 FROM persona_keys WHERE persona_id = ?", (source,)).fetchone()
        is None
    ):
        return
    old, new = sealer(conn, keyring, source), sealer(conn, keyring, target, create=True)
    convert(conn, source, old, new, plain_only=False)


def seal_plaintext(conn: sqlite3.Connection, persona_id: int, keyring: Keyring) -> int:
    """Encrypt the person's texts written before encryption was on."""
    if conn.execute("SELECT 1 FROM personas WHERE id = ?", (persona_id,)).fetchone() is None:
        return 0
    new = sealer(conn, keyring, persona_id, create=True)
    return convert(conn, persona_id, PLAIN, new, plain_only=True)


def rewrap_keys(conn: sqlite3.Connection, old: Keyring, new: Keyring) -> int:
    """Wrap every data key under the ``new`` master key instead of ``old`` (one
    transaction: a store is never half rotated)."""
    rows = conn.execute("SELECT persona_id, wrapped FROM persona_keys").fetchall()
    for persona_id, wrapped in rows:
        key = old.unwrap(wrapped, persona_id)
        conn.execute(
            "UPDATE persona_keys SET wrapped = ?, master_id = ? WHERE persona_id = ?",
            (new.wrap(key, persona_id), new.master_id, persona_id),
        )
    return len(rows)


def link(
    conn: sqlite3.Connection,
    primary: Identity,
    other: Identity,
    now: float,
    keyring: Keyring | None = None,
) -> int:
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
    _reseal(conn, keyring, source, target)
    conn.execute(
        "INSERT OR IGNORE INTO persona_fields (persona_id, field, value, version, updated_at,"
        " source) SELECT ?, field, value, version, updated_at, source FROM persona_fields"
        " WHERE persona_id = ?",
        (target, source),
    )
    for table in ("persona_versions", "sessions", "messages", "persona_updates", "identities"):
        conn.execute(f"UPDATE {table} SET persona_id = ? WHERE persona_id = ?", (target, source))
    conn.execute(
        "INSERT INTO token_usage SELECT ?, platform, chat_id, day, role, calls, prompt_tokens,"
        " completion_tokens FROM token_usage WHERE persona_id = ? ON CONFLICT DO UPDATE SET"
        " calls = calls + excluded.calls, prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = completion_tokens + excluded.completion_tokens",
        (target, source),
    )
    conn.execute("DELETE FROM personas WHERE id = ?", (source,))
    add_counts(conn, utc_day(now), {"users_removed": 1})
    return target


# -- personas --------------------------------------------------------------------------------


def persona_times(conn: sqlite3.Connection, persona_id: int) -> tuple[float, float]:
    """When the persona was created and last changed (PersonaNotFound if it does not exist)."""
    row = conn.execute(
        "SELECT created_at, updated_at FROM personas WHERE id = ?", (persona_id,)
    ).fetchone()
    if row is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return float(row[0]), float(row[1])


def read_persona(conn: sqlite3.Connection, persona_id: int, seal: Sealer = PLAIN) -> Persona:
    """The persona's values, versions, sources and learning switch (empty if it has none,
    or does not exist)."""
    row = conn.execute("SELECT learning FROM personas WHERE id = ?", (persona_id,)).fetchone()
    rows = conn.execute(
        "SELECT field, value, version, source FROM persona_fields WHERE persona_id = ?",
        (persona_id,),
    )
    return persona_from_rows(persona_id, rows, seal.open, bool(row[0]) if row else True)


def load_persona(conn: sqlite3.Connection, persona_id: int, seal: Sealer = PLAIN) -> Persona:
    """``read_persona`` of a persona that must exist (PersonaNotFound otherwise)."""
    if conn.execute("SELECT 1 FROM personas WHERE id = ?", (persona_id,)).fetchone() is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return read_persona(conn, persona_id, seal)


def _write_changes(
    conn: sqlite3.Connection,
    persona: Persona,
    changes: list[Change],
    now: float,
    seal: Sealer,
    update_id: int | None = None,
) -> None:
    """Write ``changes`` as new versions (of the persona update ``update_id``, if one made
    them) and update ``persona`` to match."""
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
            " new_value, source, session_ids, evidence, created_at, update_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                persona.id,
                ch.field,
                ch.version,
                ch.op,
                None if ch.old_value is None else seal.seal(dumps(ch.old_value)),
                None if ch.new_value is None else seal.seal(dumps(ch.new_value)),
                ch.source,
                dumps(ch.session_ids),
                seal.seal(ch.evidence) if ch.evidence else "",
                now,
                update_id,
            ),
        )
        if ch.new_value is None:
            conn.execute(
                "DELETE FROM persona_fields WHERE persona_id = ? AND field = ?",
                (persona.id, ch.field),
            )
            persona.values.pop(ch.field, None)
            persona.versions.pop(ch.field, None)
            persona.sources.pop(ch.field, None)
        else:
            conn.execute(
                "INSERT INTO persona_fields (persona_id, field, value, version, updated_at,"
                " source) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (persona_id, field) DO UPDATE"
                " SET value = excluded.value, version = excluded.version,"
                " updated_at = excluded.updated_at, source = excluded.source",
                (persona.id, ch.field, seal.seal(dumps(ch.new_value)), ch.version, now, ch.source),
            )
            persona.values[ch.field] = ch.new_value
            persona.versions[ch.field] = ch.version
            persona.sources[ch.field] = ch.source
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
    keyring: Keyring | None = None,
    update_id: int | None = None,
) -> EditResult:
    seal = sealer(conn, keyring, persona_id, create=True)
    persona = load_persona(conn, persona_id, seal)
    allowed, refused = screen(persona, edits, source)
    changes, rejected = plan_changes(
        allowed, schema, persona.values, source=source, session_ids=session_ids
    )
    _write_changes(conn, persona, changes, now, seal, update_id)
    return EditResult(changes, refused + rejected, persona)


def rollback(
    conn: sqlite3.Connection,
    persona_id: int,
    version_id: int,
    now: float,
    keyring: Keyring | None = None,
) -> EditResult:
    """Return one field to its value right after history entry ``version_id``."""
    seal = sealer(conn, keyring, persona_id, create=True)
    row = conn.execute(
        "SELECT field, new_value FROM persona_versions WHERE id = ? AND persona_id = ?",
        (version_id, persona_id),
    ).fetchone()
    if row is None:
        raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
    persona = load_persona(conn, persona_id, seal)
    name, text = row[0], seal.open_opt(row[1])
    target = None if text is None else json.loads(text)
    old = persona.values.get(name)
    if old == target:
        return EditResult([], [], persona)
    change = Change(
        name, "rollback", old, target, f"rollback to history entry {version_id}", "rollback"
    )
    _write_changes(conn, persona, [change], now, seal)
    return EditResult([change], [], persona)


def undo(
    conn: sqlite3.Connection,
    persona_id: int,
    version_id: int | None,
    now: float,
    keyring: Keyring | None = None,
) -> EditResult:
    """Revert one version (the newest when ``version_id`` is None): its field goes back to
    the value before it, as a new version by the user."""
    seal = sealer(conn, keyring, persona_id, create=True)
    persona = load_persona(conn, persona_id, seal)
    found = history(conn, persona_id, None, 1, seal, version_id=version_id)
    if not found:
        if version_id is None:
            return EditResult([], [], persona)  # nothing to undo
        raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
    change = undo_change(persona, found[0])
    if change is None:
        return EditResult([], [], persona)
    _write_changes(conn, persona, [change], now, seal)
    return EditResult([change], [], persona)


def set_learning(conn: sqlite3.Connection, persona_id: int, on: bool, now: float) -> bool:
    """Switch the person's learning; True if it changed."""
    cur = conn.execute(
        "UPDATE personas SET learning = ?, updated_at = ? WHERE id = ? AND learning <> ?",
        (int(on), now, persona_id, int(on)),
    )
    return (cur.rowcount or 0) > 0


def history(
    conn: sqlite3.Connection,
    persona_id: int,
    field: str | None,
    limit: int,
    seal: Sealer = PLAIN,
    *,
    version_id: int | None = None,
    offset: int = 0,
    before: int | None = None,
) -> list[HistoryEntry]:
    """Versions newest first (``before``: only ids below it, the next page's start)."""
    sql = (
        "SELECT id, field, version, op, old_value, new_value, source, session_ids, evidence,"
        " created_at FROM persona_versions WHERE persona_id = ?"
    )
    params: tuple[Any, ...] = (persona_id,)
    if field:
        sql += " AND field = ?"
        params += (field,)
    if version_id is not None:
        sql += " AND id = ?"
        params += (version_id,)
    if before is not None:
        sql += " AND id < ?"
        params += (before,)
    sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
    rows = conn.execute(sql, (*params, limit, offset)).fetchall()
    return [history_entry(r, seal.open_opt) for r in rows]


def _rows(conn: sqlite3.Connection, sql: str, persona_id: int) -> list[dict[str, Any]]:
    cur = conn.execute(sql, (persona_id,))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def export(
    conn: sqlite3.Connection, persona_id: int, now: float, keyring: Keyring | None = None
) -> dict[str, Any]:
    """Every row of every table that belongs to the persona (see ``shared.EXPORTED_TABLES``)."""
    row = persona_times(conn, persona_id)
    seal = sealer(conn, keyring, persona_id)
    key = conn.execute(
        "SELECT created_at FROM persona_keys WHERE persona_id = ?", (persona_id,)
    ).fetchone()
    messages = _rows(
        conn,
        "SELECT id, session_id, role, content, platform, chat_id, created_at FROM messages"
        " WHERE persona_id = ? ORDER BY id",
        persona_id,
    )
    for m in messages:
        m["content"] = seal.open(m["content"])
    return export_document(
        persona=read_persona(conn, persona_id, seal),
        created_at=row[0],
        updated_at=row[1],
        now=now,
        identities=_rows(
            conn,
            "SELECT platform, platform_user_id, display_name, linked_at FROM identities"
            " WHERE persona_id = ? ORDER BY linked_at, rowid",
            persona_id,
        ),
        history=history(conn, persona_id, None, 2**62, seal),
        sessions=_rows(
            conn,
            "SELECT id, platform, chat_id, started_at, last_message_at, ended_at, end_reason,"
            " update_id FROM sessions WHERE persona_id = ? ORDER BY id",
            persona_id,
        ),
        messages=messages,
        updates=_rows(
            conn,
            f"SELECT {UPDATE_EXPORT_COLUMNS} FROM persona_updates WHERE persona_id = ? ORDER BY id",
            persona_id,
        ),
        usage=_rows(
            conn,
            "SELECT platform, chat_id, day, role, calls, prompt_tokens, completion_tokens"
            " FROM token_usage WHERE persona_id = ? ORDER BY day, platform, chat_id, role",
            persona_id,
        ),
        encrypted_since=None if key is None else float(key[0]),
        open_text=seal.open_opt,
    )


def delete(conn: sqlite3.Connection, persona_id: int) -> bool:
    """Delete the persona; every table's rows go with it (ON DELETE CASCADE), its data key
    included."""
    cur = conn.execute("DELETE FROM personas WHERE id = ?", (persona_id,))
    if not cur.rowcount:
        return False
    add_counts(conn, utc_day(time.time()), {"users_removed": 1})
    return True
