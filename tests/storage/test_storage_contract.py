"""The storage contract: every backend passes these scenarios (see ``core/storage/base.py``).

Only the domain API is used, except for the probe's row counts per table, which check that
an export forgets no table and a deletion leaves no row.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from aipersona.core import Edit, Identity, PersonaNotFound
from aipersona.core.schema import PersonaSchema
from aipersona.core.storage import SessionRules, Tokens, UpdateOutcome
from aipersona.core.storage.sqlite import EXPORTED_TABLES
from tests.storage.conftest import RULES, Backend

pytestmark = pytest.mark.timeout(60)

SCHEMA = PersonaSchema.build()
ALICE = Identity("cli", "alice", "Alice")
BOB = Identity("cli", "bob", "Bob")
T0 = 1_000_000.0


async def persona_with_sessions(backend: Backend, ident: Identity, sessions: int) -> int:
    """A persona with ``sessions`` ended sessions of one user and one assistant message."""
    store = backend.storage
    pid = await store.resolve_persona(ident)
    for i in range(sessions):
        now = T0 + i * 1000
        start = await store.begin_turn(pid, ident, "c", f"{ident.user_id} message {i}", now)
        assert start is not None
        await store.add_reply(pid, ident.platform, "c", f"reply {i}", now + 1)
        await store.end_open_session(pid, ident.platform, "c", "explicit", now + 2)
    return pid


# -- identities ------------------------------------------------------------------------------


async def test_identities_resolve_once_and_keep_their_display_name(backend: Backend) -> None:
    store = backend.storage
    assert await store.find_persona(ALICE) is None
    pid = await store.resolve_persona(ALICE)
    assert await store.resolve_persona(Identity("cli", "alice")) == pid
    assert await store.find_persona(ALICE) == pid
    assert await store.resolve_persona(BOB) != pid
    assert await store.identities(pid) == [ALICE]
    start = await store.begin_turn(pid, Identity("cli", "alice", "Alicia"), "c", "hi", T0)
    assert start is not None
    assert [i.display_name for i in await store.identities(pid)] == ["Alicia"]
    with pytest.raises(PersonaNotFound):
        await store.load_persona(pid + 1000)


async def test_link_attaches_and_merges(backend: Backend) -> None:
    store = backend.storage
    alice = await persona_with_sessions(backend, ALICE, 1)
    await store.apply_edits(alice, [Edit("Demographics.Age", "set", 30)], SCHEMA, source="user")
    tg = Identity("telegram", "42")
    assert await store.link(ALICE, tg) == alice
    assert await store.find_persona(tg) == alice
    # a second identity with a persona of its own is merged: missing fields, history,
    # sessions and messages move over; the primary's values win
    dc = Identity("discord", "7")
    other = await persona_with_sessions(backend, dc, 1)
    edits = [Edit("Demographics.Age", "set", 99), Edit("Demographics.Name", "set", "Al")]
    await store.apply_edits(other, edits, SCHEMA, source="user")
    assert await store.link(ALICE, dc) == alice
    persona = await store.load_persona(alice)
    assert persona.values == {"Demographics.Age": 30, "Demographics.Name": "Al"}
    data = await store.export(alice)
    assert {(i["platform"], i["user_id"]) for i in data["identities"]} == {
        ("cli", "alice"),
        ("telegram", "42"),
        ("discord", "7"),
    }
    assert len(data["messages"]) == 4 and len(data["sessions"]) == 2
    with pytest.raises(PersonaNotFound):
        await store.load_persona(other)
    assert await store.link(ALICE, tg) == alice  # linking again changes nothing


# -- turns and sessions ----------------------------------------------------------------------


async def test_begin_turn_stores_and_bounds_the_history(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    for i in range(4):
        start = await store.begin_turn(pid, ALICE, "c", f"q{i}", T0 + i)
        assert start is not None and start.persona_id == pid and start.ended_sessions == []
        await store.add_reply(pid, "cli", "c", f"a{i}", T0 + i)
    start = await store.begin_turn(pid, ALICE, "c", "q4", T0 + 5)
    assert start is not None
    assert [m["content"] for m in start.history] == ["q2", "a2", "q3", "a3"]  # rules: 4
    # another chat is another session with its own history
    other = await store.begin_turn(pid, ALICE, "other", "hello", T0 + 6)
    assert other is not None and other.session_id != start.session_id and other.history == []
    # a stale mapping is reported, not written
    assert await store.begin_turn(pid + 1000, ALICE, "c", "lost?", T0 + 7) is None


async def test_idle_session_ends_on_the_next_message_and_schedules(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    first = await store.begin_turn(pid, ALICE, "c", "one", T0)
    assert first is not None
    second = await store.begin_turn(pid, ALICE, "c", "two", T0 + RULES.idle_seconds + 1)
    assert second is not None and second.ended_sessions == [first.session_id]
    assert second.session_id != first.session_id and second.history == []
    assert await store.pending_updates() == []  # k = 2: one ended session waits
    sid = await store.end_open_session(pid, "cli", "c", "explicit", T0 + 100)
    assert sid == second.session_id
    assert await store.end_open_session(pid, "cli", "c", "explicit", T0 + 101) is None
    [update] = await store.pending_updates(pid)
    assert update.session_ids == [first.session_id, second.session_id] and update.attempts == 0
    transcripts = await store.transcripts(pid, update.session_ids)
    assert [[m["content"] for m in t.messages] for t in transcripts] == [["one"], ["two"]]


async def test_sweep_ends_each_idle_session_once_across_workers(backend: Backend) -> None:
    store = backend.storage
    pids = []
    for i in range(30):
        ident = Identity("cli", f"u{i}")
        pid = await store.resolve_persona(ident)
        pids.append(pid)
        assert await store.begin_turn(pid, ident, "c", "hi", T0) is not None
    workers = [store, await backend.another(), await backend.another()]
    late = T0 + RULES.idle_seconds + 10
    batches = await asyncio.gather(
        *(w.sweep_idle(late, batch=7) for w in workers for _ in range(3))
    )
    ended = [pair for batch in batches for pair in batch]
    ended += await store.sweep_idle(late, batch=100)
    assert sorted(pid for pid, _ in ended) == sorted(pids)  # every session once, none twice
    assert await store.sweep_idle(late) == []


# -- edits, versions, history, rollback -----------------------------------------------------


async def test_edits_are_validated_versioned_and_returned(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    result = await store.apply_edits(
        pid,
        [
            Edit("Demographics.Age", "set", 30, "I'm 30"),
            Edit("Nope.Field", "set", "x"),
            Edit("Demographics.Age", "set", "old"),
            Edit("Personality.Values_and_Interests", "append", ["chess", "go"]),
        ],
        SCHEMA,
        source="tool",
        session_ids=[7],
    )
    assert [(c.field, c.new_value, c.version) for c in result.changes] == [
        ("Demographics.Age", 30, 1),
        ("Personality.Values_and_Interests", ["chess", "go"], 1),
    ]
    assert len(result.rejected) == 2
    loaded = await store.load_persona(pid)
    assert loaded.values == result.persona.values and loaded.versions == result.persona.versions
    # delete, then set again: versions never go back
    await store.apply_edits(pid, [Edit("Demographics.Age", "delete")], SCHEMA, source="user")
    again = await store.apply_edits(
        pid, [Edit("Demographics.Age", "set", 31)], SCHEMA, source="user"
    )
    assert again.changes[0].version == 3
    same = await store.apply_edits(
        pid, [Edit("Demographics.Age", "set", 31)], SCHEMA, source="user"
    )
    assert same.changes == [] and same.rejected == []
    history = await store.history(pid)
    assert [(h.field, h.version, h.op) for h in history[:3]] == [
        ("Demographics.Age", 3, "set"),
        ("Demographics.Age", 2, "delete"),
        ("Personality.Values_and_Interests", 1, "append"),
    ]
    assert history[-1].evidence == "I'm 30" and history[-1].session_ids == [7]
    assert [h.version for h in await store.history(pid, field="Demographics.Age", limit=2)] == [
        3,
        2,
    ]


async def test_rollback_is_a_version_and_stays_within_the_persona(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    bob = await store.resolve_persona(BOB)
    for age in (30, 31):
        await store.apply_edits(pid, [Edit("Demographics.Age", "set", age)], SCHEMA, source="user")
    await store.apply_edits(bob, [Edit("Demographics.Age", "set", 50)], SCHEMA, source="user")
    first = (await store.history(pid, field="Demographics.Age"))[-1]
    result = await store.rollback(pid, first.id)
    assert [(c.old_value, c.new_value, c.version, c.source) for c in result.changes] == [
        (31, 30, 3, "rollback")
    ]
    assert (await store.rollback(pid, first.id)).changes == []  # already there
    bobs = (await store.history(bob))[0]
    with pytest.raises(PersonaNotFound):
        await store.rollback(pid, bobs.id)  # another person's version id
    assert (await store.load_persona(bob)).values == {"Demographics.Age": 50}


# -- the update queue ------------------------------------------------------------------------


async def test_claims_leases_and_outcomes(backend: Backend) -> None:
    store = backend.storage
    pid = await persona_with_sessions(backend, ALICE, 4)
    first, second = await store.pending_updates(pid)
    other = await backend.another()
    now = time.time()
    claimed = await store.claim_update(first.id, "host/1/a", now, 60)
    assert claimed is not None and claimed.session_ids == first.session_ids
    assert await other.claim_update(first.id, "host/1/b", now, 60) is None  # held
    assert await other.claim_update(first.id, "host/1/b", now + 61, 60) is not None  # expired
    await other.release_updates("host/1/b")
    assert await store.claim_update(first.id, "host/1/a", now, 60) is not None
    # a failed attempt counts and stays pending until the last attempt
    assert await store.fail_update(first.id, "boom", max_attempts=2) is False
    assert (await store.pending_updates(pid))[0].attempts == 1
    assert await store.fail_update(first.id, "boom again", max_attempts=2) is True
    assert [u.id for u in await store.pending_updates(pid)] == [second.id]
    assert await store.claim_update(first.id, "host/1/a", now, 60) is None  # failed for good
    # done together with its edits, notes and refusal reasons in one transaction
    assert await store.claim_update(second.id, "host/1/a", now, 60) is not None
    await store.apply_edits(
        pid,
        [Edit("Demographics.Age", "set", 30), Edit("Nope.Field", "set", 1)],
        SCHEMA,
        source="optimizer",
        session_ids=second.session_ids,
        outcome=UpdateOutcome(second.id, ("from the reply",)),
    )
    assert await store.pending_updates() == []
    rows = {u["id"]: u for u in (await store.export(pid))["persona_updates"]}
    assert (rows[first.id]["status"], rows[first.id]["attempts"]) == ("failed", 2)
    assert rows[first.id]["error"] == "boom again"
    assert rows[second.id]["status"] == "done" and rows[second.id]["attempts"] == 1
    assert "from the reply" in rows[second.id]["notes"]
    assert "unknown persona field" in rows[second.id]["notes"]


async def test_finish_without_edits(backend: Backend) -> None:
    store = backend.storage
    pid = await persona_with_sessions(backend, ALICE, 2)
    [update] = await store.pending_updates(pid)
    await store.finish_update(update.id, ("vetoed by a plugin",))
    [row] = (await store.export(pid))["persona_updates"]
    assert (row["status"], row["notes"]) == ("done", "vetoed by a plugin")


# -- export and deletion ---------------------------------------------------------------------


async def test_export_holds_every_row_of_every_table(backend: Backend) -> None:
    store = backend.storage
    pid = await persona_with_sessions(backend, ALICE, 3)
    await store.link(ALICE, Identity("telegram", "42"))
    await store.apply_edits(pid, [Edit("Demographics.Age", "set", 30)], SCHEMA, source="user")
    assert await store.begin_turn(pid, ALICE, "c", "still open", T0 + 9000) is not None
    await store.add_reply(pid, "cli", "c", "costly", T0 + 9001, Tokens(120, 30))
    await persona_with_sessions(backend, BOB, 2)  # someone else's rows are not exported
    assert await backend.tables() == {*EXPORTED_TABLES, "schema_migrations"}, "export it"
    rows = await backend.rows_of(pid)
    data = await store.export(pid)
    assert rows == {
        "personas": 1,
        "identities": len(data["identities"]),
        "persona_fields": len(data["field_versions"]),
        "persona_versions": len(data["history"]),
        "sessions": len(data["sessions"]),
        "messages": len(data["messages"]),
        "persona_updates": len(data["persona_updates"]),
        "token_usage": len(data["token_usage"]),
        "persona_keys": int(data["encryption"]["on"]),
    }
    assert data["encryption"]["on"] == (backend.keyring is not None)
    assert data["token_usage"][0]["prompt_tokens"] == 120
    assert rows["messages"] == 8 and rows["persona_updates"] == 1 and rows["identities"] == 2
    assert data["persona_id"] == pid and data["created_at"] <= data["updated_at"]


async def test_delete_leaves_nothing_and_nobody_else_loses_anything(backend: Backend) -> None:
    store = backend.storage
    pid = await persona_with_sessions(backend, ALICE, 3)
    bob = await persona_with_sessions(backend, BOB, 3)
    await store.apply_edits(pid, [Edit("Demographics.Age", "set", 30)], SCHEMA, source="user")
    before = await backend.rows_of(bob)
    assert await store.delete_persona(pid) is True
    assert set((await backend.rows_of(pid)).values()) == {0}
    assert await backend.rows_of(bob) == before
    assert await store.find_persona(ALICE) is None
    assert await store.delete_persona(pid) is False
    with pytest.raises(PersonaNotFound):
        await store.export(pid)


# -- concurrency and migrations --------------------------------------------------------------


async def test_two_writers_at_once_lose_nothing(backend: Backend) -> None:
    stores = [backend.storage, await backend.another()]
    idents = [Identity("cli", f"w{i}") for i in range(6)]

    async def chat(store_index: int, ident: Identity) -> None:
        store = stores[store_index]
        for n in range(10):
            pid = await store.resolve_persona(ident)
            start = await store.begin_turn(pid, ident, "c", f"{store_index}-{n}", T0 + n)
            assert start is not None
            await store.add_reply(pid, ident.platform, "c", f"re {store_index}-{n}", T0 + n)

    # both writers talk for the same people at the same time
    await asyncio.gather(*(chat(s, ident) for s in (0, 1) for ident in idents))
    for ident in idents:
        pid = await backend.storage.find_persona(ident)
        assert pid is not None
        data = await backend.storage.export(pid)
        user = sorted(m["content"] for m in data["messages"] if m["role"] == "user")
        assert user == sorted(f"{s}-{n}" for s in (0, 1) for n in range(10))
        assert len(data["messages"]) == 40


async def test_migrations_are_idempotent(backend: Backend) -> None:
    store = backend.storage
    version = await store.schema_version()
    assert version >= 2
    assert await store.migrate() == []
    again = await backend.another(SessionRules())
    assert await again.migrate() == [] and await again.schema_version() == version
