"""Fault tolerance: a failing model endpoint, hostile replies, and isolation between 200
concurrent users. Deterministic and bounded in time. (Crashes mid-transaction and several
processes on one file are the SQLite backend's own tests: tests/storage/.)"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import openai._base_client
import pytest

from aipersona.core import Edit, Identity, PersonaCore
from tests.conftest import make_config
from tests.fakes.openai_server import (
    CutStream,
    Error,
    FakeOpenAI,
    Hang,
    Json,
    Raw,
    Tools,
    system_text,
)

pytestmark = pytest.mark.timeout(60)

ALICE = Identity("cli", "alice")
BOB = Identity("cli", "bob")
KNOWN = {"Demographics.Name": "Alice", "Demographics.Age": 30}
UPDATE = Json(
    {
        "updates": [
            {"field": "Demographics.Name", "op": "set", "value": "Alicia", "evidence": "call me"},
            {"field": "Demographics.Age", "op": "set", "value": 31, "evidence": "I'm 31"},
            {
                "field": "Personality.Values_and_Interests",
                "op": "append",
                "value": ["climbing"],
                "evidence": "I climb",
            },
        ]
    }
)
AFTER = {
    "Demographics.Name": "Alicia",
    "Demographics.Age": 31,
    "Personality.Values_and_Interests": ["climbing"],
}


@pytest.fixture
async def raw_fake() -> Any:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def tiny_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """openai's default backoff is 0.5 s, 1 s...: make retries without Retry-After fast."""
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01)


async def known_persona(core: PersonaCore) -> None:
    await core.edit_persona(  # learned earlier, not set by the user
        ALICE,
        [Edit("Demographics.Name", "set", "Alice"), Edit("Demographics.Age", "set", 30)],
        source="seed",
    )


async def assert_message_kept_persona_untouched(core: PersonaCore, texts: list[str]) -> None:
    persona = await core.persona(ALICE)
    assert persona is not None and persona.values == KNOWN
    data = await core.export(ALICE)
    assert data is not None
    assert [m["content"] for m in data["messages"] if m["role"] == "user"] == texts
    assert [h["source"] for h in data["history"]] == ["seed", "seed"]


# -- a failing model endpoint ----------------------------------------------------------------

# item scripted for every request; how many requests max_retries=2 allows (HTTP failures are
# retried twice; a 200 whose body is unusable is not retried by the openai client)
FAILURES: dict[str, tuple[Any, int]] = {
    "500": (Error(500, headers={"retry-after-ms": "10"}), 3),
    "429_retry_after": (Error(429, headers={"Retry-After": "0.05"}), 3),
    "hang_past_timeout": (Hang(1.0), 3),
    "invalid_json_body": (Raw(200, "this is not json {"), 1),
    "not_a_completion": (Raw(200, '{"choices": [{"message": 5}]}'), 1),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_endpoint_failure_is_short_bounded_and_keeps_the_message(
    case: str, raw_fake: FakeOpenAI, db_path: Path, tiny_backoff: None
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2, "timeout_seconds": 0.3})
    async with PersonaCore(cfg) as core:
        await known_persona(core)
        item, expected = FAILURES[case]
        raw_fake.push("chat", *[item] * expected)
        t0 = time.monotonic()
        reply = await core.respond(ALICE, "c1", "hello?")
        elapsed = time.monotonic() - t0
        assert not reply.ok and reply.error == "llm_unavailable"
        assert reply.text == cfg.chat.apology and len(reply.text) < 120
        assert len(raw_fake.chat_requests()) == expected
        assert elapsed < 3.0
        if case == "429_retry_after":
            assert elapsed >= 0.1  # the two waits honoured Retry-After: 0.05 s each
        await assert_message_kept_persona_untouched(core, ["hello?"])
        # and the endpoint recovering is enough: the next message works
        reply = await core.respond(ALICE, "c1", "and now?")
        assert reply.ok and reply.text == "echo: and now?"


async def test_transient_500s_then_success_is_one_good_reply(
    raw_fake: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2})
    async with PersonaCore(cfg) as core:
        raw_fake.push("chat", *[Error(503, headers={"retry-after-ms": "5"})] * 2)
        reply = await core.respond(ALICE, "c1", "hi")
        assert reply.ok and reply.text == "echo: hi"
        assert len(raw_fake.chat_requests()) == 3
        data = await core.export(ALICE)
    assert data is not None and [m["role"] for m in data["messages"]] == ["user", "assistant"]


async def test_stream_cut_half_way(raw_fake: FakeOpenAI, db_path: Path) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2, "stream": True})
    pieces: list[str] = []

    async def on_delta(delta: str) -> None:
        pieces.append(delta)

    async with PersonaCore(cfg) as core:
        await known_persona(core)
        raw_fake.push("chat", CutStream("a partial answer that is cut"))
        reply = await core.respond(ALICE, "c1", "tell me a story", on_delta=on_delta)
        assert not reply.ok and reply.error == "llm_unavailable"
        assert len(raw_fake.chat_requests()) <= 3
        await assert_message_kept_persona_untouched(core, ["tell me a story"])
        data = await core.export(ALICE)
        assert data is not None and all(m["role"] == "user" for m in data["messages"])


async def test_invalid_tool_arguments_leave_persona_valid(
    raw_fake: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2})
    async with PersonaCore(cfg) as core:
        await known_persona(core)
        raw_fake.push(
            "chat",
            Tools(
                [
                    ("persona", "{not json"),
                    ("persona", "[1, 2]"),
                    ("persona", {"op": "set", "field": "Demographics.Age", "value": "old"}),
                    ("persona", {"op": "set", "field": "No.Such", "value": "x"}),
                    ("persona", {"op": "set", "value": 3}),
                    ("persona", {"op": "delete", "field": 7}),
                    ("persona", {"op": "rewrite", "field": "Age", "value": 3}),
                ]
            ),
            "done",
        )
        reply = await core.respond(ALICE, "c1", "hello")
        assert reply.ok and reply.text == "done"
        assert len(reply.tool_results) == 7 and all(r.error for r in reply.tool_results)
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values == KNOWN


async def test_invalid_optimizer_json_is_bounded_and_changes_nothing(
    raw_fake: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, persona={"update_every": 1})
    raw_fake.json_default = lambda req: "not json at all {"
    async with PersonaCore(cfg) as core:
        await known_persona(core)
        for i in range(3):  # three attempts (max_update_attempts) at the same update
            await core.respond(ALICE, "c1", f"message {i}")
            if i == 0:
                await core.end_session(ALICE, "c1")
            else:
                await core.run_pending_updates()  # retry the same update
            await core.wait_for_updates()
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values == KNOWN
        data = await core.export(ALICE)
    assert data is not None
    assert [(u["status"], u["attempts"]) for u in data["persona_updates"]] == [("failed", 3)]
    assert len(raw_fake.json_requests()) == 3


# -- isolation under load ---------------------------------------------------------------------


async def test_200_concurrent_users_never_see_each_other(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    users = [Identity("tg", f"user{i:03d}") for i in range(200)]
    marker = {u.user_id: f"Zq{i:03d}q" for i, u in enumerate(users)}
    async with PersonaCore(make_config(db_path, fake_llm.base_url)) as core:
        await asyncio.gather(
            *[
                core.edit_persona(u, [Edit("Demographics.Name", "set", marker[u.user_id])])
                for u in users
            ]
        )

        async def talk(u: Identity) -> None:
            for turn in range(2):
                reply = await core.respond(u, "group", f"{u.user_id} turn {turn}")
                assert reply.ok and reply.text == f"echo: {u.user_id} turn {turn}"

        await asyncio.gather(*[talk(u) for u in users])
    chats = fake_llm.chat_requests()
    assert len(chats) == 400
    for req in chats:
        who = req["messages"][-1]["content"].split()[0]
        seen = set(re.findall(r"Zq\d{3}q", json.dumps(req)))
        assert seen == {marker[who]}, (who, seen)
        assert marker[who] in system_text(req)
        for msg in req["messages"][1:]:
            assert msg["content"].split()[0] in (who, "echo:")
            assert who in msg["content"]


async def test_identity_cache_notices_changes_made_by_another_process(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    """Core A caches alice -> persona; core B (think: another process) forgets her, then
    links her to bob. A's next message must follow the database, not its cache."""
    cfg = make_config(db_path, fake_llm.base_url)
    async with PersonaCore(cfg) as a, PersonaCore(cfg) as b:
        first = await a.respond(ALICE, "c", "hello")
        assert first.ok and first.persona_id is not None
        assert await b.forget_all(ALICE)
        again = await a.respond(ALICE, "c", "still there?")  # a fresh persona, no FK error
        assert again.ok
        data = await a.export(ALICE)
        assert data is not None and [m["content"] for m in data["messages"]] == [
            "still there?",
            "echo: still there?",
        ]
        await b.edit_persona(BOB, [Edit("Demographics.Name", "set", "Bob")])
        bob_id = await b.link(BOB, ALICE)
        third = await a.respond(ALICE, "c", "who am I?")
        assert third.ok and third.persona_id == bob_id
        assert '"Name":"Bob"' in system_text(fake_llm.chat_requests()[-1])
