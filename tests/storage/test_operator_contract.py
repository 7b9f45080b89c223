"""The operators' views of the storage contract, on every backend (plain and encrypted): the
counters per day, the people list (keyset pages over every index, searches that are literal
text), one person in full, and the optimizer log."""

from __future__ import annotations

import time

import pytest

from aipersona.core import BadQuery, Edit, Identity, PersonaNotFound, PersonaQuery
from aipersona.core.insights import encode_cursor
from aipersona.core.schema import PersonaSchema
from aipersona.core.storage import Storage, Tokens, UpdateOutcome
from aipersona.core.storage.shared import utc_day
from tests.storage.conftest import Backend

pytestmark = pytest.mark.timeout(60)

SCHEMA = PersonaSchema.build()
ALICE = Identity("cli", "alice", "Alice")


async def ended_sessions(store: Storage, pid: int, ident: Identity, n: int, at: float) -> None:
    for i in range(n):
        start = await store.begin_turn(pid, ident, "c", f"{ident.user_id} says {i}", at + i)
        assert start is not None
        await store.add_reply(pid, ident.platform, "c", f"reply {i}", at + i, Tokens(10, 2))
        await store.end_open_session(pid, ident.platform, "c", "explicit", at + i)


# -- counters per day -------------------------------------------------------------------------


async def test_overview_counts_each_day_and_survives_retention(backend: Backend) -> None:
    now = time.time()  # the clock of the writes that stamp with it
    yesterday = now - 86_400
    store = backend.storage
    pid = await store.resolve_persona(ALICE)  # a new user today
    await ended_sessions(store, pid, ALICE, 2, yesterday)  # k = 2: one update scheduled
    start = await store.begin_turn(pid, ALICE, "c", "today", now)
    assert start is not None
    [update] = await store.pending_updates(pid)
    await store.apply_edits(
        pid,
        [Edit("Demographics.Age", "set", 30, "I am 30"), Edit("Nope.Field", "set", 1)],
        SCHEMA,
        source="optimizer",
        session_ids=update.session_ids,
        outcome=UpdateOutcome(update.id, ("note",), Tokens(100, 20), seconds=1.5),
    )
    await store.record_counts(pid, {"chat_llm_errors": 1, "budget_refusals": 2}, now)
    with pytest.raises(ValueError, match="unknown counters"):
        await store.record_counts(pid, {"made_up": 1}, now)

    data = await store.overview(yesterday, now)
    assert data.days == [utc_day(yesterday), utc_day(now)]
    assert (data.users, data.open_sessions, data.pending_updates) == (1, 1, 0)
    before, today = (data.counts[d] for d in data.days)
    assert before["messages"] == 2 and before["chat_calls"] == 2
    assert (before["chat_prompt_tokens"], before["chat_completion_tokens"]) == (20, 4)
    assert today["messages"] == 1 and today["new_users"] == 1
    assert today["updates_applied"] == 1 and today["edits_applied"] == 1
    assert today["edits_refused"] == 2  # the reply's note and the unknown field
    assert (today["optimizer_calls"], today["optimizer_prompt_tokens"]) == (1, 100)
    assert (today["chat_llm_errors"], today["budget_refusals"]) == (1, 2)
    assert data.series("messages") == [2, 1]
    # retention deletes the texts, not the counts
    assert await store.purge_messages(time.time() + 1) == 4
    again = await store.overview(yesterday, now)
    assert again.series("messages") == [2, 1]
    assert await store.open_sessions() == 1


async def test_failed_attempts_and_outcomes_are_counted(backend: Backend) -> None:
    now = time.time()  # the clock of the writes that stamp with it
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    await ended_sessions(store, pid, ALICE, 6, now - 100)
    failing, vetoed, empty = await store.pending_updates(pid)
    assert await store.fail_update(failing.id, "the model endpoint answered HTTP 500", 2) is False
    assert await store.fail_update(failing.id, "again", 2) is True
    await store.finish_update(vetoed.id, ("vetoed by a plugin",), seconds=0.25)
    await store.apply_edits(
        pid, [], SCHEMA, source="optimizer", outcome=UpdateOutcome(empty.id, ())
    )
    today = (await store.overview(now, now)).counts[utc_day(now)]
    assert today["update_attempts_failed"] == 2 and today["updates_failed"] == 1
    assert today["updates_rejected"] == 1 and today["updates_unchanged"] == 1
    assert "updates_applied" not in today


async def test_the_number_of_people_follows_creations_links_and_deletions(
    backend: Backend,
) -> None:
    now = time.time()  # the clock of the writes that stamp with it
    store = backend.storage
    a, b, c = (Identity("cli", n) for n in "abc")
    for ident in (a, b, c):
        await store.resolve_persona(ident)
    await store.resolve_persona(a)  # known already: nobody new
    assert (await store.overview(now, now)).users == 3
    await store.link(a, b)  # b's persona merges into a's
    await store.link(a, Identity("telegram", "9"))  # a new identity, no new persona
    assert (await store.overview(now, now)).users == 2
    pid = await store.find_persona(c)
    assert pid is not None and await store.delete_persona(pid)
    assert not await store.delete_persona(pid)  # gone already: counted once
    data = await store.overview(now, now)
    assert data.users == 1
    assert data.counts[utc_day(now)] == {"new_users": 3, "users_removed": 2}


# -- the people list ------------------------------------------------------------------------


PEOPLE = (
    [
        Identity("discord", f"{i:03}", name)
        for i, name in enumerate(
            [
                "Ana",
                "anabel",
                "ANDRE",
                "Bob",
                "bobby",
                "Carl",
                "100%_off",
                "100x",
                "O'Brien",
                "Élodie",
            ]
        )
    ]
    + [Identity("telegram", f"{i:03}", f"Ana T{i}") for i in range(8)]
    + [Identity("cli", "noname")]
)


async def every_page(store: Storage, query: PersonaQuery) -> list[tuple[str, str]]:
    """Follow the cursors to the end: (platform, user id) of every row, in order."""
    seen: list[tuple[str, str]] = []
    while True:
        page = await store.search_personas(query)
        assert len(page.rows) <= query.limit
        seen += [(r.platform, r.user_id) for r in page.rows]
        if not page.next:
            return seen
        query = PersonaQuery(query.text, query.by, query.platform, page.next, query.limit)


async def test_people_pages_cover_every_match_once(backend: Backend) -> None:
    store = backend.storage
    ids = {p.key: await store.resolve_persona(p) for p in PEOPLE}
    names = {p.key: p.display_name for p in PEOPLE}
    # no text: everyone, newest first
    newest = await every_page(store, PersonaQuery(limit=4))
    assert newest == sorted(ids, key=lambda k: -ids[k])
    # one platform, by user id
    telegram = await every_page(store, PersonaQuery(platform="telegram", limit=3))
    assert telegram == [("telegram", f"{i:03}") for i in range(8)]
    # display names starting with "ana", any case, any platform
    ana = await every_page(store, PersonaQuery("ana", limit=3))
    assert [names[k] for k in ana] == [
        "Ana",
        "Ana T0",
        *[f"Ana T{i}" for i in range(1, 8)],
        "anabel",
    ]
    assert await every_page(store, PersonaQuery("ANA", platform="discord", limit=1)) == [
        ("discord", "000"),
        ("discord", "001"),
    ]
    # user ids starting with "00"
    by_id = await every_page(store, PersonaQuery("00", by="user_id", limit=5))
    assert by_id == sorted((k for k in ids if k[1].startswith("00")), key=lambda k: (k[1], k[0]))
    assert await every_page(store, PersonaQuery("noname", by="user_id")) == [("cli", "noname")]
    # every row knows its persona
    page = await store.search_personas(PersonaQuery("bob"))
    assert {r.persona_id for r in page.rows} == {ids[("discord", "003")], ids[("discord", "004")]}
    assert await store.platforms() == ["cli", "discord", "telegram"]


async def test_search_text_is_literal(backend: Backend) -> None:
    store = backend.storage
    for p in PEOPLE:
        await store.resolve_persona(p)

    async def names(text: str, by: str = "name") -> list[str | None]:
        page = await store.search_personas(PersonaQuery(text, by=by))
        return sorted(r.display_name or r.user_id for r in page.rows)

    assert await names("100%") == ["100%_off"]  # not "100x": % is no wildcard
    assert await names("100_") == []  # _ is no wildcard either
    assert await names("%") == [] and await names("_") == []
    assert await names("o'b") == ["O'Brien"]
    assert await names("\\") == [] and await names("' OR 1=1 --") == []
    assert await names("Élo") == ["Élodie"]  # beyond ASCII: as written
    assert await names("0", by="user_id") == sorted(
        p.display_name or p.user_id for p in PEOPLE if p.user_id.startswith("0")
    )


async def test_a_cursor_belongs_to_its_search(backend: Backend) -> None:
    store = backend.storage
    for p in PEOPLE:
        await store.resolve_persona(p)
    page = await store.search_personas(PersonaQuery("ana", limit=2))
    assert page.next
    with pytest.raises(BadQuery):  # another search's cursor
        await store.search_personas(PersonaQuery("00", by="user_id", after=page.next))
    for bad in ("!!!", "e30", encode_cursor("name", [1, 2, 3]), encode_cursor("name", ["a"])):
        with pytest.raises(BadQuery):
            await store.search_personas(PersonaQuery("ana", after=bad))
    with pytest.raises(BadQuery):
        PersonaQuery("x", by="email")


# -- one person and the optimizer log ----------------------------------------------------------


async def test_persona_detail(backend: Backend) -> None:
    now = time.time()  # the clock of the writes that stamp with it
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    await store.link(ALICE, Identity("telegram", "42", "Al"))
    for age in range(20, 25):
        await store.apply_edits(
            pid, [Edit("Demographics.Age", "set", age, f"I am {age}")], SCHEMA, source="user"
        )
    await ended_sessions(store, pid, ALICE, 2, now - 50)
    [update] = await store.pending_updates(pid)
    await store.fail_update(update.id, "the reply had no 'updates' list", 3)
    detail = await store.persona_detail(pid, history_limit=3)
    assert detail.persona.values == {"Demographics.Age": 24}
    assert [(i.platform, i.user_id, i.display_name) for i in detail.identities] == [
        ("cli", "alice", "Alice"),
        ("telegram", "42", "Al"),
    ]
    assert [h.new_value for h in detail.history] == [24, 23, 22] and detail.more_history
    assert detail.history[0].evidence == "I am 24"  # opened when encrypted
    older = await store.persona_detail(pid, history_limit=3, history_before=detail.history[-1].id)
    assert [h.new_value for h in older.history] == [21, 20] and not older.more_history
    [pending] = detail.pending
    assert (pending.id, pending.attempts, pending.status) == (update.id, 1, "pending")
    assert pending.notes == "the reply had no 'updates' list"
    assert [s.messages for s in detail.sessions] == [2, 2]
    assert detail.sessions[0].id > detail.sessions[1].id and detail.tokens_30_days == 24
    with pytest.raises(PersonaNotFound):
        await store.persona_detail(pid + 1000)


async def test_optimizer_log(backend: Backend) -> None:
    now = time.time()  # the clock of the writes that stamp with it
    store = backend.storage
    pid = await store.resolve_persona(ALICE)
    bob = await store.resolve_persona(Identity("discord", "7", "Bob"))
    await ended_sessions(store, pid, ALICE, 8, now - 100)
    await ended_sessions(store, bob, Identity("discord", "7", "Bob"), 2, now - 100)
    applied, rejected, unchanged, failed = await store.pending_updates(pid)
    [bobs] = await store.pending_updates(bob)
    await store.apply_edits(
        pid,
        [
            Edit("Demographics.Age", "set", 30, "I turned 30"),
            Edit("Demographics.Name", "set", "Al"),
        ],
        SCHEMA,
        source="optimizer",
        session_ids=applied.session_ids,
        outcome=UpdateOutcome(applied.id, (), Tokens(300, 40), seconds=2.5),
    )
    await store.apply_edits(
        pid,
        [Edit("Nope.Field", "set", 1)],
        SCHEMA,
        source="optimizer",
        outcome=UpdateOutcome(rejected.id, ("Made.Up: unknown",)),
    )
    await store.apply_edits(
        pid, [], SCHEMA, source="optimizer", outcome=UpdateOutcome(unchanged.id)
    )
    await store.fail_update(failed.id, "the model endpoint answered HTTP 500", 1)

    log = await store.optimizer_log()
    assert [e.update.id for e in log.entries] == [
        bobs.id,
        failed.id,
        unchanged.id,
        rejected.id,
        applied.id,
    ]
    by_id = {e.update.id: e for e in log.entries}
    first = by_id[applied.id]
    assert first.update.outcome == "applied" and first.who == "cli:alice (Alice)"
    assert (first.update.prompt_tokens, first.update.completion_tokens) == (300, 40)
    assert first.update.seconds == 2.5 and first.update.edits_applied == 2
    assert [(c.field, c.new_value, c.evidence) for c in first.changes] == [
        ("Demographics.Age", 30, "I turned 30"),
        ("Demographics.Name", "Al", ""),
    ]
    assert by_id[rejected.id].update.outcome == "rejected"
    assert by_id[rejected.id].update.reasons == [
        "Made.Up: unknown",
        "unknown persona field 'Nope.Field'",
    ]
    assert by_id[unchanged.id].update.outcome == "unchanged" and not by_id[unchanged.id].changes
    assert by_id[failed.id].update.outcome == "failed"
    assert by_id[failed.id].update.notes == "the model endpoint answered HTTP 500"
    assert by_id[bobs.id].update.status == "pending" and by_id[bobs.id].who == "discord:7 (Bob)"
    # filters and pages
    only = await store.optimizer_log(outcome="failed")
    assert [e.update.id for e in only.entries] == [failed.id]
    pending = await store.optimizer_log(outcome="pending")
    assert [e.update.id for e in pending.entries] == [bobs.id]
    mine = await store.optimizer_log(persona_id=bob)
    assert [e.update.id for e in mine.entries] == [bobs.id]
    page = await store.optimizer_log(limit=2)
    assert [e.update.id for e in page.entries] == [
        bobs.id,
        failed.id,
    ] and page.next_before == failed.id
    page = await store.optimizer_log(limit=2, before=page.next_before)
    assert [e.update.id for e in page.entries] == [unchanged.id, rejected.id]
    last = await store.optimizer_log(limit=2, before=page.next_before)
    assert [e.update.id for e in last.entries] == [applied.id] and last.next_before is None
    with pytest.raises(BadQuery):
        await store.optimizer_log(outcome="maybe")
    # a link carries the updates and their versions over
    await store.link(Identity("discord", "7"), ALICE)
    moved = await store.optimizer_log(outcome="applied")
    assert moved.entries[0].update.persona_id == bob and len(moved.entries[0].changes) == 2
    assert (await store.export(bob))["persona_updates"][0]["outcome"] == "applied"
