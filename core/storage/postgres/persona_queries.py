"""Identities, persona values, version history, export and deletion on PostgreSQL. Each
function runs on one asyncpg connection, inside the transaction the backend opened for it.
(The same operations as ``sqlite/persona_queries.py``, in PostgreSQL's dialect.)"""

from __future__ import annotations

import json
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

Conn = Any  # an asyncpg connection


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def sealer(
    conn: Conn, keyring: Keyring | None, persona_id: int, *, create: bool = False
) -> Sealer:
    """The person's sealer (``create``: make their data key if they have none yet)."""
    if keyring is None:
        return PLAIN
    wrapped = await conn.fetchval(
        "SELECT wrapped FROM persona_keys WHERE persona_id = $1", persona_id
    )
    if wrapped is not None:
        return keyring.sealer(keyring.unwrap(wrapped, persona_id), persona_id)
    if not create:
        return Sealer(None, persona_id)
    key, wrapped = keyring.new_data_key(persona_id)
    await conn.execute(
        "INSERT INTO persona_keys (persona_id, wrapped, master_id, created_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        persona_id,
        wrapped,
        keyring.master_id,
        time.time(),
    )
    stored = await conn.fetchval(
        "SELECT wrapped FROM persona_keys WHERE persona_id = $1", persona_id
    )
    if stored != wrapped:  # another worker made one first: use theirs
        key = keyring.unwrap(stored, persona_id)
    return keyring.sealer(key, persona_id)


async def convert(
    conn: Conn, persona_id: int, old: Sealer, new: Sealer, *, plain_only: bool
) -> int:
    """Open the person's texts with ``old`` and seal them with ``new`` (``plain_only``: only
    the texts not sealed yet); return how many texts changed."""
    changed = 0
    for table, key, columns in SEALED:
        rows = await conn.fetch(
            f"SELECT {key}, {', '.join(columns)} FROM {table} WHERE persona_id = $1", persona_id
        )
        sets = ", ".join(f"{c} = ${i + 1}" for i, c in enumerate(columns))
        n = len(columns)
        for row in rows:
            before = list(row)[1:]
            texts = [v if skip_text(v, plain_only) else new.seal(old.open(v)) for v in before]
            if texts != before:
                changed += sum(a != b for a, b in zip(texts, before, strict=True))
                await conn.execute(
                    f"UPDATE {table} SET {sets} WHERE persona_id = ${n + 1} AND {key} = ${n + 2}",
                    *texts,
                    persona_id,
                    row[0],
                )
    return changed


async def _reseal(conn: Conn, keyring: Keyring | None, source: int, target: int) -> None:
    """Before a link moves ``source``'s rows to ``target``: seal them under target's key."""
    if keyring is None or not await conn.fetchval(
        "SELECT 1 FROM persona_keys WHERE persona_id = $1", source
    ):
        return
    old = await sealer(conn, keyring, source)
    new = await sealer(conn, keyring, target, create=True)
    await convert(conn, source, old, new, plain_only=False)


async def seal_plaintext(conn: Conn, persona_id: int, keyring: Keyring) -> int:
    """Encrypt the person's texts written before encryption was on."""
    if not await conn.fetchval("SELECT 1 FROM personas WHERE id = $1 FOR UPDATE", persona_id):
        return 0
    new = await sealer(conn, keyring, persona_id, create=True)
    return await convert(conn, persona_id, PLAIN, new, plain_only=True)


async def rewrap_keys(conn: Conn, old: Keyring, new: Keyring) -> int:
    """Wrap every data key under the ``new`` master key (one transaction)."""
    await conn.execute("LOCK TABLE persona_keys IN SHARE ROW EXCLUSIVE MODE")
    rows = await conn.fetch("SELECT persona_id, wrapped FROM persona_keys")
    await conn.executemany(
        "UPDATE persona_keys SET wrapped = $1, master_id = $2 WHERE persona_id = $3",
        [(new.wrap(old.unwrap(r[1], r[0]), r[0]), new.master_id, r[0]) for r in rows],
    )
    return len(rows)


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
    await add_counts(conn, utc_day(now), int(persona_id), {"new_users": 1})
    return int(persona_id)


async def identities(conn: Conn, persona_id: int) -> list[Identity]:
    rows = await conn.fetch(
        "SELECT platform, platform_user_id, display_name FROM identities"
        " WHERE persona_id = $1 ORDER BY linked_at, platform, platform_user_id",
        persona_id,
    )
    return [Identity(r[0], r[1], r[2]) for r in rows]


async def link(
    conn: Conn, primary: Identity, other: Identity, now: float, keyring: Keyring | None = None
) -> int:
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
    await _reseal(conn, keyring, source, target)
    await conn.execute(
        "INSERT INTO persona_fields (persona_id, field, value, version, updated_at, source)"
        " SELECT $1, field, value, version, updated_at, source FROM persona_fields"
        " WHERE persona_id = $2 ON CONFLICT DO NOTHING",
        target,
        source,
    )
    for table in ("persona_versions", "sessions", "messages", "persona_updates", "identities"):
        await conn.execute(
            f"UPDATE {table} SET persona_id = $1 WHERE persona_id = $2", target, source
        )
    await conn.execute(
        "INSERT INTO token_usage SELECT $1, platform, chat_id, day, role, calls, prompt_tokens,"
        " completion_tokens FROM token_usage WHERE persona_id = $2 ON CONFLICT"
        " (persona_id, platform, chat_id, day, role) DO UPDATE SET"
        " calls = token_usage.calls + excluded.calls,"
        " prompt_tokens = token_usage.prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = token_usage.completion_tokens + excluded.completion_tokens",
        target,
        source,
    )
    await conn.execute("DELETE FROM personas WHERE id = $1", source)
    await add_counts(conn, utc_day(now), source, {"users_removed": 1})
    return target


async def persona_times(conn: Conn, persona_id: int) -> tuple[float, float]:
    """When the persona was created and last changed (PersonaNotFound if it does not exist)."""
    row = await conn.fetchrow(
        "SELECT created_at, updated_at FROM personas WHERE id = $1", persona_id
    )
    if row is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return float(row[0]), float(row[1])


async def read_persona(conn: Conn, persona_id: int, seal: Sealer = PLAIN) -> Persona:
    learning = await conn.fetchval("SELECT learning FROM personas WHERE id = $1", persona_id)
    rows = await conn.fetch(
        "SELECT field, value, version, source FROM persona_fields WHERE persona_id = $1",
        persona_id,
    )
    return persona_from_rows(
        persona_id, rows, seal.open, bool(learning) if learning is not None else True
    )


async def load_persona(
    conn: Conn, persona_id: int, seal: Sealer = PLAIN, *, lock: bool = False
) -> Persona:
    """``read_persona`` of a persona that must exist; ``lock`` holds its row until the
    transaction ends (writers of one persona queue instead of interleaving)."""
    sql = "SELECT 1 FROM personas WHERE id = $1" + (" FOR UPDATE" if lock else "")
    if await conn.fetchval(sql, persona_id) is None:
        raise PersonaNotFound(f"persona {persona_id} does not exist")
    return await read_persona(conn, persona_id, seal)


async def _write_changes(
    conn: Conn,
    persona: Persona,
    changes: list[Change],
    now: float,
    seal: Sealer,
    update_id: int | None = None,
) -> None:
    """Write ``changes`` as new versions (of the persona update ``update_id``, if one made
    them) and update ``persona`` to match."""
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
            " new_value, source, session_ids, evidence, created_at, update_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
        )
        if ch.new_value is None:
            await conn.execute(
                "DELETE FROM persona_fields WHERE persona_id = $1 AND field = $2",
                persona.id,
                ch.field,
            )
            persona.values.pop(ch.field, None)
            persona.versions.pop(ch.field, None)
            persona.sources.pop(ch.field, None)
        else:
            await conn.execute(
                "INSERT INTO persona_fields (persona_id, field, value, version, updated_at,"
                " source) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (persona_id, field) DO"
                " UPDATE SET value = excluded.value, version = excluded.version,"
                " updated_at = excluded.updated_at, source = excluded.source",
                persona.id,
                ch.field,
                seal.seal(dumps(ch.new_value)),
                ch.version,
                now,
                ch.source,
            )
            persona.values[ch.field] = ch.new_value
            persona.versions[ch.field] = ch.version
            persona.sources[ch.field] = ch.source
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
    keyring: Keyring | None = None,
    update_id: int | None = None,
) -> EditResult:
    seal = await sealer(conn, keyring, persona_id, create=True)
    persona = await load_persona(conn, persona_id, seal, lock=True)
    allowed, refused = screen(persona, edits, source)
    changes, rejected = plan_changes(
        allowed, schema, persona.values, source=source, session_ids=session_ids
    )
    await _write_changes(conn, persona, changes, now, seal, update_id)
    return EditResult(changes, refused + rejected, persona)


async def rollback(
    conn: Conn, persona_id: int, version_id: int, now: float, keyring: Keyring | None = None
) -> EditResult:
    seal = await sealer(conn, keyring, persona_id, create=True)
    row = await conn.fetchrow(
        "SELECT field, new_value FROM persona_versions WHERE id = $1 AND persona_id = $2",
        version_id,
        persona_id,
    )
    if row is None:
        raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
    persona = await load_persona(conn, persona_id, seal, lock=True)
    text = seal.open_opt(row[1])
    name, target = row[0], None if text is None else json.loads(text)
    old = persona.values.get(name)
    if old == target:
        return EditResult([], [], persona)
    change = Change(
        name, "rollback", old, target, f"rollback to history entry {version_id}", "rollback"
    )
    await _write_changes(conn, persona, [change], now, seal)
    return EditResult([change], [], persona)


async def undo(
    conn: Conn,
    persona_id: int,
    version_id: int | None,
    now: float,
    keyring: Keyring | None = None,
) -> EditResult:
    seal = await sealer(conn, keyring, persona_id, create=True)
    persona = await load_persona(conn, persona_id, seal, lock=True)
    found = await history(conn, persona_id, None, 1, seal, version_id=version_id)
    if not found:
        if version_id is None:
            return EditResult([], [], persona)
        raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
    change = undo_change(persona, found[0])
    if change is None:
        return EditResult([], [], persona)
    await _write_changes(conn, persona, [change], now, seal)
    return EditResult([change], [], persona)


async def set_learning(conn: Conn, persona_id: int, on: bool, now: float) -> bool:
    changed = await conn.fetchval(
        "UPDATE personas SET learning = $1, updated_at = $2 WHERE id = $3 AND learning <> $1"
        " RETURNING id",
        int(on),
        now,
        persona_id,
    )
    return changed is not None


async def history(
    conn: Conn,
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
        " created_at FROM persona_versions WHERE persona_id = $1"
    )
    args: list[Any] = [persona_id]
    if field:
        args.append(field)
        sql += f" AND field = ${len(args)}"
    if version_id is not None:
        args.append(version_id)
        sql += f" AND id = ${len(args)}"
    if before is not None:
        args.append(before)
        sql += f" AND id < ${len(args)}"
    sql += f" ORDER BY id DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
    rows = await conn.fetch(sql, *args, limit, offset)
    return [history_entry(r, seal.open_opt) for r in rows]


async def _rows(conn: Conn, sql: str, persona_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql, persona_id)]


async def export(
    conn: Conn, persona_id: int, now: float, keyring: Keyring | None = None
) -> dict[str, Any]:
    row = await persona_times(conn, persona_id)
    seal = await sealer(conn, keyring, persona_id)
    since = await conn.fetchval(
        "SELECT created_at FROM persona_keys WHERE persona_id = $1", persona_id
    )
    messages = await _rows(
        conn,
        "SELECT id, session_id, role, content, platform, chat_id, created_at FROM messages"
        " WHERE persona_id = $1 ORDER BY id",
        persona_id,
    )
    for m in messages:
        m["content"] = seal.open(m["content"])
    return export_document(
        persona=await read_persona(conn, persona_id, seal),
        created_at=row[0],
        updated_at=row[1],
        now=now,
        identities=await _rows(
            conn,
            "SELECT platform, platform_user_id, display_name, linked_at FROM identities"
            " WHERE persona_id = $1 ORDER BY linked_at, platform, platform_user_id",
            persona_id,
        ),
        history=await history(conn, persona_id, None, 2**62, seal),
        sessions=await _rows(
            conn,
            "SELECT id, platform, chat_id, started_at, last_message_at, ended_at, end_reason,"
            " update_id FROM sessions WHERE persona_id = $1 ORDER BY id",
            persona_id,
        ),
        messages=messages,
        updates=await _rows(
            conn,
            f"SELECT {UPDATE_EXPORT_COLUMNS} FROM persona_updates WHERE persona_id = $1"
            " ORDER BY id",
            persona_id,
        ),
        usage=await _rows(
            conn,
            "SELECT platform, chat_id, day, role, calls, prompt_tokens, completion_tokens"
            " FROM token_usage WHERE persona_id = $1 ORDER BY day, platform, chat_id, role",
            persona_id,
        ),
        encrypted_since=None if since is None else float(since),
        open_text=seal.open_opt,
    )


async def delete(conn: Conn, persona_id: int) -> bool:
    status = await conn.execute("DELETE FROM personas WHERE id = $1", persona_id)
    if status == "DELETE 0":
        return False
    await add_counts(conn, utc_day(time.time()), persona_id, {"users_removed": 1})
    return True
