"""The storage contract of issue 11 (users in control): undo, values the user set, the learning
switch, paged history, token usage, retention and encryption at rest. Every scenario runs on
each backend, plain and encrypted (``conftest.BACKENDS``)."""

from __future__ import annotations

import time

import pytest

from aipersona.core import Edit, Identity, PersonaNotFound, StorageError
from aipersona.core.schema import PersonaSchema
from aipersona.core.storage import Keyring, Tokens, UpdateOutcome
from tests.storage.conftest import Backend
from tests.storage.test_storage_contract import ALICE, BOB, T0, persona_with_sessions

pytestmark = pytest.mark.timeout(60)

SCHEMA = PersonaSchema.build()
AGE = "Demographics.Age"
JOB = "Demographics.Career_Information"
DAY = 86_400.0


async def test_undo_reverts_the_newest_or_a_given_version_and_is_itself_undoable(
    backend: Backend,
) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    await store.apply_edits(pid, [Edit(AGE, "set", 30)], SCHEMA, source="optimizer")
    await store.apply_edits(pid, [Edit(AGE, "set", 31)], SCHEMA, source="optimizer")
    await store.apply_edits(pid, [Edit(JOB, "set", "nurse")], SCHEMA, source="tool")

    undone = await store.undo(pid)  # the newest: the job
    assert [(c.field, c.op, c.old_value, c.new_value, c.source) for c in undone.changes] == [
        (JOB, "delete", "nurse", None, "user")
    ]
    assert JOB not in undone.persona.values
    redone = await store.undo(pid)  # the undo is a version too: undoing it restores the job
    assert redone.persona.values[JOB] == "nurse"

    [age31] = [h for h in await store.history(pid, field=AGE) if h.new_value == 31]
    back = await store.undo(pid, age31.id)
    assert back.persona.values[AGE] == 30 and back.persona.set_by_user(AGE)
    assert (await store.undo(pid, age31.id)).changes == []  # already at 30: nothing to do

    bob = await store.resolve_persona(BOB)
    assert (await store.undo(bob)).changes == []  # nothing to undo
    with pytest.raises(PersonaNotFound):
        await store.undo(bob, age31.id)  # alice's version is not bob's
    with pytest.raises(PersonaNotFound):
        await store.undo(pid, 10**9)
    assert (await store.load_persona(bob)).values == {}


async def test_a_value_the_user_set_is_kept_from_the_optimizer_until_they_forget_it(
    backend: Backend,
) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    await store.apply_edits(pid, [Edit(AGE, "set", 30)], SCHEMA, source="user")
    proposal = await store.apply_edits(pid, [Edit(AGE, "set", 99)], SCHEMA, source="optimizer")
    assert proposal.changes == [] and [r.reason for r in proposal.rejected] == [
        f"{AGE}: set by the user"
    ]
    by_tool = await store.apply_edits(pid, [Edit(AGE, "delete")], SCHEMA, source="tool")
    assert by_tool.changes == [] and by_tool.persona.values[AGE] == 30
    persona = await store.load_persona(pid)
    assert persona.values[AGE] == 30 and persona.sources[AGE] == "user"

    # a proposal rejected inside an update is stored with that update's notes
    pid_sessions = await persona_with_sessions(backend, ALICE, 2)
    [update] = await store.pending_updates(pid_sessions)
    await store.claim_update(update.id, store.worker_id, T0, 60)
    outcome = UpdateOutcome(update.id, (), Tokens(50, 10))
    await store.apply_edits(
        pid, [Edit(AGE, "set", 41)], SCHEMA, source="optimizer", outcome=outcome
    )
    data = await store.export(pid)
    assert "set by the user" in data["persona_updates"][-1]["notes"]

    await store.apply_edits(pid, [Edit(AGE, "delete")], SCHEMA, source="user")  # forgotten
    learned = await store.apply_edits(pid, [Edit(AGE, "set", 42)], SCHEMA, source="optimizer")
    assert learned.persona.values[AGE] == 42 and not learned.persona.set_by_user(AGE)
    sources = [h.source for h in await store.history(pid, field=AGE)]
    assert sources == ["optimizer", "user", "user"]  # newest first; the refusals made none


async def test_learning_off_refuses_automatic_edits_only(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    assert (await store.load_persona(pid)).learning is True
    assert await store.set_learning(pid, False) is True
    assert await store.set_learning(pid, False) is False  # no change
    off = await store.apply_edits(pid, [Edit(AGE, "set", 30)], SCHEMA, source="optimizer")
    assert off.changes == [] and "learning is off" in off.rejected[0].reason
    assert (
        await store.apply_edits(pid, [Edit(JOB, "set", "x")], SCHEMA, source="tool")
    ).changes == []
    mine = await store.apply_edits(pid, [Edit(AGE, "set", 30)], SCHEMA, source="user")
    assert mine.persona.values == {AGE: 30} and mine.persona.learning is False
    assert (await store.export(pid))["learning"] is False
    bob = await store.resolve_persona(BOB)
    assert (await store.load_persona(bob)).learning is True  # one person's switch
    assert await store.set_learning(pid, True) is True
    assert (await store.apply_edits(pid, [Edit(JOB, "set", "x")], SCHEMA, source="tool")).changes


async def test_history_pages_newest_first(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    for age in range(20, 32):
        await store.apply_edits(pid, [Edit(AGE, "set", age)], SCHEMA, source="optimizer")
    await store.apply_edits(pid, [Edit(JOB, "set", "nurse")], SCHEMA, source="user")
    first = await store.history(pid, limit=5)
    second = await store.history(pid, limit=5, offset=5)
    rest = await store.history(pid, limit=5, offset=10)
    ids = [h.id for h in first + second + rest]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 13
    assert first[0].field == JOB and first[0].source == "user"
    assert [h.new_value for h in await store.history(pid, field=AGE, limit=2, offset=1)] == [30, 29]
    assert await store.history(pid, offset=100) == []


async def test_first_contact_is_noticed_once_per_person(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    first = await store.begin_turn(pid, ALICE, "c", "hi", T0)
    again = await store.begin_turn(pid, ALICE, "other chat", "hi again", T0 + 1)
    assert first is not None and first.first_contact is True
    assert again is not None and again.first_contact is False
    bob = await store.resolve_persona(BOB)
    start = await store.begin_turn(bob, BOB, "c", "hello", T0 + 2)
    assert start is not None and start.first_contact is True


async def test_usage_counts_per_person_chat_and_day(backend: Backend) -> None:
    store = backend.storage
    alice = await store.resolve_persona(ALICE)
    bob = await store.resolve_persona(BOB)
    day2 = T0 + DAY
    await store.begin_turn(alice, ALICE, "group", "hi", day2)
    await store.add_reply(alice, "cli", "group", "a", day2, Tokens(100, 20))
    await store.add_reply(alice, "cli", "group", "b", day2 + 1, Tokens(10, 5))
    await store.add_reply(alice, "cli", "dm", "c", day2 + 2, Tokens(1, 1))
    await store.add_reply(alice, "cli", "group", "old", T0, Tokens(1000, 0))  # a day before
    await store.begin_turn(bob, BOB, "group", "hey", day2)
    await store.add_reply(bob, "cli", "group", "d", day2 + 3, Tokens(7, 3))

    used = await store.usage(alice, "cli", "group", day2 + 10)
    assert (used.today, used.chat_today) == (137, 145)  # the chat: alice's 135 + bob's 10
    assert used.month == 1137  # 1970-01-12 and 1970-01-13: one month
    assert (await store.usage(bob, "cli", "dm", day2)).chat_today == 2

    report = await store.usage_report(day2)
    mine = [r for r in report if r["persona_id"] == alice]
    assert sorted((r["chat_id"], r["calls"], r["prompt_tokens"]) for r in mine) == [
        ("dm", 1, 1),
        ("group", 2, 110),
    ]
    assert {r["who"] for r in report} == {"cli:alice", "cli:bob"}
    assert all(r["day"] >= "1970-01-13" for r in report)


async def test_optimizer_tokens_count_for_the_person(backend: Backend) -> None:
    store = backend.storage
    pid = await persona_with_sessions(backend, ALICE, 2)
    [update] = await store.pending_updates(pid)
    await store.claim_update(update.id, store.worker_id, T0, 60)
    outcome = UpdateOutcome(update.id, (), Tokens(400, 100))
    await store.apply_edits(pid, [], SCHEMA, source="optimizer", outcome=outcome)
    used = await store.usage(pid, "cli", "c", time.time())  # counted when it ran: now
    assert used.today == 500 and used.chat_today == 0  # the optimizer is no chat's
    [row] = [r for r in await store.usage_report(T0) if r["role"] == "optimizer"]
    assert (row["persona_id"], row["prompt_tokens"], row["completion_tokens"]) == (pid, 400, 100)


async def test_retention_deletes_learned_texts_only_after_their_update(backend: Backend) -> None:
    store = backend.storage
    pid = await persona_with_sessions(backend, ALICE, 2)  # k = 2: one update over both
    [update] = await store.pending_updates(pid)
    open_turn = await store.begin_turn(pid, ALICE, "c", "the current session", T0 + 5000)
    assert open_turn is not None
    bob = await persona_with_sessions(backend, BOB, 1)  # ended, not learned from yet

    assert await store.purge_messages(learned_before=T0 + 10 * DAY) == 0  # nothing learned
    await store.claim_update(update.id, store.worker_id, T0, 60)
    await store.apply_edits(pid, [], SCHEMA, source="optimizer", outcome=UpdateOutcome(update.id))
    [finished] = [u for u in (await store.export(pid))["persona_updates"] if u["id"] == update.id]
    learned_at = finished["finished_at"]

    assert await store.purge_messages(learned_before=learned_at - 1) == 0  # not old enough
    assert await store.purge_messages(learned_before=learned_at) == 4  # 2 sessions x 2
    assert await store.purge_messages(learned_before=learned_at + DAY) == 0  # done once
    data = await store.export(pid)
    assert [m["content"] for m in data["messages"]] == ["the current session"]
    assert len(data["sessions"]) == 3  # the sessions stay, without their texts
    assert len((await store.export(bob))["messages"]) == 2


async def test_failed_updates_release_their_texts_too(backend: Backend) -> None:
    store = backend.storage
    pid = await persona_with_sessions(backend, ALICE, 2)
    [update] = await store.pending_updates(pid)
    assert await store.fail_update(update.id, "boom", max_attempts=1) is True
    assert await store.purge_messages(learned_before=2**40) == 4


# -- encryption at rest -------------------------------------------------------------------------

MARKER = "zebra-marker-7731"


async def test_no_plaintext_at_rest_and_every_text_reads_back(backend: Backend) -> None:
    if backend.keyring is None:
        pytest.skip("encryption is off in this variant")
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    start = await store.begin_turn(pid, ALICE, "c", f"my secret is {MARKER}", T0)
    assert start is not None
    await store.add_reply(pid, "cli", "c", f"noted: {MARKER}", T0 + 1)
    job = Edit(JOB, "set", f"keeper of {MARKER}", f"I said {MARKER}")
    await store.apply_edits(pid, [job], SCHEMA, source="optimizer")
    await store.apply_edits(pid, [Edit(JOB, "set", "nurse", MARKER)], SCHEMA, source="user")
    other = await store.resolve_persona(Identity("telegram", "9"))
    await store.begin_turn(other, Identity("telegram", "9"), "t", f"also {MARKER}", T0)
    await store.link(ALICE, Identity("telegram", "9"))  # re-sealed under alice's key

    raw = await backend.raw_texts()
    assert raw and not [t for t in raw if MARKER in t], "plaintext at rest"
    data = await store.export(pid)
    texts = [m["content"] for m in data["messages"]]
    assert f"my secret is {MARKER}" in texts and f"also {MARKER}" in texts
    assert data["history"][0]["new_value"] == f"keeper of {MARKER}"
    assert data["history"][0]["evidence"] == f"I said {MARKER}"
    assert (await store.load_persona(pid)).values[JOB] == "nurse"
    assert (await store.transcripts(pid, [start.session_id]))[0].messages[0]["content"] == (
        f"my secret is {MARKER}"
    )
    again = await store.begin_turn(pid, ALICE, "c", "and?", T0 + 2)
    assert again is not None and again.history[0]["content"] == f"my secret is {MARKER}"
    assert data["encryption"]["on"] is True


async def test_wrong_or_missing_key_is_refused_and_changes_nothing(backend: Backend) -> None:
    if backend.keyring is None:
        pytest.skip("encryption is off in this variant")
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    await store.begin_turn(pid, ALICE, "c", f"hello {MARKER}", T0)
    before = await backend.raw_texts()
    backend_key = backend.keyring
    try:
        for wrong in (None, Keyring(bytes(32))):
            backend.keyring = wrong
            with pytest.raises(StorageError, match="encrypt"):
                await backend.another()
    finally:
        backend.keyring = backend_key
    assert await backend.raw_texts() == before


async def test_rotation_rewraps_every_key_and_retires_the_old_one(backend: Backend) -> None:
    if backend.keyring is None:
        pytest.skip("encryption is off in this variant")
    store = backend.storage
    for ident in (ALICE, BOB):
        pid = await store.resolve_persona(ident)
        await store.begin_turn(pid, ident, "c", f"{ident.user_id} {MARKER}", T0)
    new = Keyring(bytes(range(100, 132)))
    assert await store.rewrap_keys(new) == 2
    old = backend.keyring
    try:
        backend.keyring = new
        rotated = await backend.another()
        pid = await rotated.resolve_persona(BOB)
        data = await rotated.export(pid)
        assert data["messages"][0]["content"] == f"bob {MARKER}"
        backend.keyring = old
        with pytest.raises(StorageError, match="another key"):
            await backend.another()
    finally:
        backend.keyring = old


async def test_deleting_a_person_destroys_their_data_key(backend: Backend) -> None:
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    await store.begin_turn(pid, ALICE, "c", "bye", T0)
    expected = 1 if backend.keyring is not None else 0
    assert (await backend.rows_of(pid))["persona_keys"] == expected
    assert await store.delete_persona(pid) is True
    assert (await backend.rows_of(pid))["persona_keys"] == 0
