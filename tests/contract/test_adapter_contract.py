"""The adapter contract: one list of scenarios, run against every platform's driver.

Each scenario drives a real adapter (discord.py, python-telegram-bot, the terminal chat, and
the in-memory toy built only on the kit) on a real core and asserts what the users see and,
through the core's API, what is stored. A platform without a capability a scenario needs
skips it, with the reason (see ``Driver.lacks``).
"""

from __future__ import annotations

import json

import pytest

from aipersona.adapters.kit import COMMANDS, EXPORT_FILENAME, split_message, texts
from aipersona.core import Edit
from tests.fakes.openai_server import CutStream, Error, last_user_text, system_text, updates

from .driver import ALLOW_LISTS, GROUPS, MEDIA, MESSAGE_LIMIT, RATE_LIMIT, Driver

pytestmark = pytest.mark.timeout(60)

NURSE = Edit("Demographics.Career_Information", "set", "nurse")
PILOT = Edit("Demographics.Career_Information", "set", "airline pilot")


def words(texts_shown: list[str]) -> list[str]:
    return " ".join(texts_shown).split()


def long_reply(chars: int) -> str:
    """Plain sentences (no Markdown) of at least ``chars`` characters."""
    out, i = [], 0
    while sum(len(s) + 1 for s in out) < chars:
        out.append(f"Sentence number {i} explains one more detail of the answer.")
        i += 1
    return " ".join(out)


# -- chatting -------------------------------------------------------------------------------


async def test_private_chat_is_answered_with_the_persona_in_the_prompt(driver: Driver) -> None:
    await driver.core.edit_persona(driver.identity("alice"), [NURSE])
    async with driver.running():
        assert await driver.ask("alice", "hello there") == "echo: hello there"
    system = system_text(driver.llm.chat_requests()[-1])
    assert '"Career_Information":"nurse"' in system


async def test_three_sessions_update_the_persona_and_the_next_prompt(driver: Driver) -> None:
    alice = driver.identity("alice")
    driver.llm.push(
        "json", updates(("Demographics.Career_Information", "set", "nurse", "I am a nurse"))
    )
    async with driver.running():
        for i in range(3):
            said = f"session {i}: I am a nurse"
            assert await driver.ask("alice", said) == f"echo: {said}"
            assert await driver.run("alice", "end") == texts.SESSION_ENDED
        await driver.core.wait_for_updates()
        assert len(driver.llm.json_requests()) == 1
        persona = await driver.core.persona(alice)
        assert persona is not None
        assert persona.values == {"Demographics.Career_Information": "nurse"}
        await driver.ask("alice", "what should I do this weekend?")
    assert '"Career_Information":"nurse"' in system_text(driver.llm.chat_requests()[-1])
    data = await driver.core.export(alice)
    assert data is not None
    assert [s["end_reason"] for s in data["sessions"][:3]] == ["explicit"] * 3


async def test_group_answers_when_addressed_and_keeps_speakers_apart(driver: Driver) -> None:
    driver.need(GROUPS)
    core = driver.core
    await core.edit_persona(driver.identity("alice"), [NURSE])
    await core.edit_persona(driver.identity("bob"), [PILOT])
    async with driver.running():
        await driver.send("alice", "just talking to bob", group=True, addressed=False)
        a = await driver.ask("alice", "hi, alice here", group=True)
        b = await driver.ask("bob", "hey, bob here", group=True)
        await driver.send("bob", "still only humans", group=True, addressed=False)
        await driver.settle()
    assert (a, b) == ("echo: hi, alice here", "echo: hey, bob here")
    assert driver.public() == [a, b]
    first, second = driver.llm.chat_requests()
    assert "nurse" in system_text(first) and "pilot" not in system_text(first)
    assert "pilot" in system_text(second) and "nurse" not in system_text(second)
    for user, said in (("alice", "hi, alice here"), ("bob", "hey, bob here")):
        data = await core.export(driver.identity(user))
        assert data is not None
        stored = [(m["content"], m["chat_id"]) for m in data["messages"] if m["role"] == "user"]
        assert stored == [(said, driver.group_id())]


async def test_reply_channels_are_answered_without_a_mention(driver: Driver) -> None:
    driver.need(GROUPS)
    async with driver.running(reply_channels=[driver.group_id()]):
        await driver.send("alice", "no mention needed here", group=True, addressed=False)
        await driver.wait(lambda: driver.public())
        await driver.settle()
    assert driver.public() == ["echo: no mention needed here"]


async def test_too_long_gets_the_kits_sentence_and_nothing_is_stored(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the kit's sentence, translated: the core's own wording must not reach the user
    monkeypatch.setattr(texts, "TOO_LONG", "Trop long : {length} caractères, {limit} au plus.")
    limit = driver.core.max_input_chars
    async with driver.running():
        shown = await driver.ask("alice", "x" * (limit + 1))
    assert shown == f"Trop long : {limit + 1} caractères, {limit} au plus."
    assert await driver.core.export(driver.identity("alice")) is None
    assert driver.llm.chat_requests() == []


async def test_a_bare_mention_gets_the_kits_empty_sentence(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver.need(GROUPS)
    monkeypatch.setattr(texts, "EMPTY", "Ton message est vide.")
    async with driver.running():
        assert await driver.ask("alice", "", group=True) == "Ton message est vide."
    assert await driver.core.export(driver.identity("alice")) is None


async def test_model_down_apologizes_and_keeps_the_message(driver: Driver) -> None:
    driver.llm.push("chat", Error(500))
    async with driver.running():
        assert await driver.ask("alice", "are you there?") == driver.core.config.chat.apology
        assert await driver.ask("alice", "and now?") == "echo: and now?"
    data = await driver.core.export(driver.identity("alice"))
    assert data is not None
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "are you there?"),
        ("user", "and now?"),
        ("assistant", "echo: and now?"),
    ]
    history = driver.llm.chat_requests()[-1]["messages"][1:]
    assert [m["content"] for m in history] == ["are you there?", "and now?"]


# -- commands -------------------------------------------------------------------------------


async def test_persona_and_export_are_answered_privately(driver: Driver) -> None:
    async with driver.running():
        assert await driver.run("alice", "export") == texts.EXPORT_NOTHING
        await driver.core.edit_persona(driver.identity("alice"), [NURSE])
        shown = await driver.run("alice", "persona")
        assert "Demographics.Career_Information: nurse" in shown
        await driver.command("alice", "export")
        [(name, data)] = await driver.wait(lambda: driver.files("alice"))
    assert name == EXPORT_FILENAME
    exported = json.loads(data)
    assert exported["persona"] == {"Demographics": {"Career_Information": "nurse"}}
    assert exported["identities"][0]["user_id"] == driver.user_id("alice")


async def test_persona_and_export_asked_in_a_group_never_go_there(driver: Driver) -> None:
    driver.need(GROUPS)
    await driver.core.edit_persona(driver.identity("alice"), [NURSE])
    async with driver.running():
        await driver.command("alice", "persona", group=True)
        await driver.wait(lambda: any("nurse" in t for t in driver.private("alice")))
        await driver.command("alice", "export", group=True)
        await driver.wait(lambda: driver.files("alice"))
        await driver.settle()
    assert not any("nurse" in t for t in driver.public())
    assert driver.public_files() == []
    assert driver.private("bob") == [] and driver.files("bob") == []


async def test_forget_a_field_and_forget_all_really_delete(driver: Driver) -> None:
    core = driver.core
    alice, bob = driver.identity("alice"), driver.identity("bob")
    await core.edit_persona(alice, [NURSE, Edit("Demographics.Age", "set", 31)])
    await core.edit_persona(bob, [PILOT])
    async with driver.running():
        await driver.ask("alice", "remember me")
        done = await driver.run("alice", "forget", "Demographics.Age")
        assert done == texts.forgot_field("Demographics.Age", True)
        persona = await core.persona(alice)
        assert persona is not None and persona.values == {
            "Demographics.Career_Information": "nurse"
        }
        assert [h.op for h in await core.history(alice, "Demographics.Age")] == ["delete", "set"]
        refused = await driver.run("alice", "forget", "Foo.Bar")
        assert refused.startswith("I can't forget that") and "Foo.Bar" in refused
        assert await driver.run("alice", "forget") == texts.FORGET_USAGE
        assert await driver.run("alice", "forget", "all") == texts.forgot_all(True)
    assert await core.persona(alice) is None
    assert await core.export(alice) is None and await core.history(alice) == []
    kept = await core.persona(bob)
    assert kept is not None and kept.values == {"Demographics.Career_Information": "airline pilot"}


async def test_end_closes_the_open_session(driver: Driver) -> None:
    async with driver.running():
        assert await driver.run("alice", "end") == texts.NO_OPEN_SESSION
        await driver.ask("alice", "a short chat")
        assert await driver.run("alice", "end") == texts.SESSION_ENDED
    data = await driver.core.export(driver.identity("alice"))
    assert data is not None
    [session] = data["sessions"]
    assert session["end_reason"] == "explicit" and session["ended_at"]


async def test_help_lists_every_command_of_the_table(driver: Driver) -> None:
    def listed() -> str:  # the help may take several messages where they are short
        said = "\n".join(driver.private("alice"))
        return said if all(spec.description in said for spec in COMMANDS) else ""

    async with driver.running():
        first = await driver.run("alice", "help")
        shown = await driver.wait(listed)
    assert first.startswith(texts.INTRO)
    for spec in COMMANDS:
        assert f"/{spec.name}{spec.usage_arguments}" in shown and spec.description in shown
    assert "/persona [history [FIELD] [PAGE]]" in shown and "/correct FIELD VALUE" in shown
    assert "/undo [VERSION]" in shown and "/learning [off|on]" in shown
    if driver.message_limit:
        assert all(len(t) <= driver.message_limit for t in driver.private("alice"))


# -- the gate -------------------------------------------------------------------------------


async def test_rate_limit_tells_once_per_wait(driver: Driver) -> None:
    driver.need(RATE_LIMIT)
    async with driver.running(rate_limit_per_minute=2):
        await driver.ask("alice", "one")
        await driver.ask("alice", "two")
        notice = await driver.ask("alice", "three")
        await driver.send("alice", "four")  # no second notice during the wait
        assert await driver.ask("bob", "bob has his own budget") == "echo: bob has his own budget"
        await driver.settle()
    assert notice in (texts.rate_limited(60), texts.rate_limited(59))
    assert driver.private("alice") == ["echo: one", "echo: two", notice]
    assert [last_user_text(r) for r in driver.llm.chat_requests()] == [
        "one",
        "two",
        "bob has his own budget",
    ]


async def test_media_without_text_gets_one_notice(driver: Driver) -> None:
    driver.need(MEDIA)
    async with driver.running():
        await driver.send_media("alice")
        await driver.wait(lambda: driver.private("alice"))
        await driver.send_media("bob")
        await driver.wait(lambda: driver.private("bob"))
        await driver.settle()
    assert driver.private("alice") == driver.private("bob") == [texts.ONLY_TEXT]
    assert driver.llm.chat_requests() == []


async def test_media_counts_towards_the_rate_limit(driver: Driver) -> None:
    driver.need(MEDIA, RATE_LIMIT)
    async with driver.running(rate_limit_per_minute=1):
        await driver.send_media("alice")
        await driver.wait(lambda: driver.private("alice"))
        await driver.send_media("alice")
        await driver.wait(lambda: len(driver.private("alice")) == 2)
        await driver.settle()
    assert driver.private("alice")[0] == texts.ONLY_TEXT
    assert driver.private("alice")[1] in (texts.rate_limited(60), texts.rate_limited(59))


async def test_group_media_gets_a_notice_only_when_addressed(driver: Driver) -> None:
    driver.need(GROUPS, MEDIA)
    async with driver.running():
        await driver.send_media("alice", group=True, addressed=False)
        await driver.send_media("bob", group=True)
        await driver.wait(lambda: driver.public())
        await driver.settle()
    assert driver.public() == [texts.ONLY_TEXT]
    assert driver.llm.chat_requests() == []


async def test_allow_lists_mean_silence(driver: Driver) -> None:
    driver.need(ALLOW_LISTS)
    async with driver.running(allowed_users=[driver.user_id("alice")]):
        await driver.send("bob", "let me in")
        await driver.command("bob", "persona")
        assert await driver.ask("alice", "hello") == "echo: hello"
        await driver.settle()
    assert driver.private("bob") == []
    # only bob's private chat (a private chat goes by its user's id)
    async with driver.running(allowed_chats=[driver.user_id("bob")]):
        await driver.send("alice", "and me?")
        await driver.command("alice", "help")
        assert await driver.ask("bob", "my chat is listed") == "echo: my chat is listed"
        await driver.settle()
    assert driver.private("alice") == ["echo: hello"]
    assert [last_user_text(r) for r in driver.llm.chat_requests()] == [
        "hello",
        "my chat is listed",
    ]


# -- long replies ---------------------------------------------------------------------------


async def test_long_replies_are_split_under_the_platform_limit(driver: Driver) -> None:
    driver.need(MESSAGE_LIMIT)
    limit = driver.message_limit
    reply = long_reply(int(limit * 2.5))
    driver.llm.push("chat", reply)
    async with driver.running():
        await driver.send("alice", "a long answer, please")
        await driver.wait(lambda: words(driver.private("alice")) == words([reply]))
        await driver.settle()
    shown = driver.private("alice")
    assert shown == split_message(reply, limit)
    assert len(shown) >= 3 and all(len(t) <= limit for t in shown)


async def test_streaming_by_edits_ends_with_the_exact_final_text(driver: Driver) -> None:
    limit = driver.message_limit
    reply = long_reply(int((limit or 1000) * 2.5))
    driver.llm.push("chat", reply)
    async with driver.running(stream_edits=True, stream_edit_interval=driver.stream_interval):
        await driver.send("alice", "stream it, please")
        await driver.wait(lambda: words(driver.private("alice")) == words([reply]))
        await driver.settle()
    assert driver.llm.chat_requests()[-1]["stream"] is True
    assert driver.edited("alice"), "the drafts grew by edits"
    assert driver.private("alice") == (split_message(reply, limit) if limit else [reply])


async def test_a_cut_stream_keeps_the_partial_text_and_apologizes(driver: Driver) -> None:
    driver.llm.push("chat", CutStream("The first half of an answer"))
    async with driver.running(stream_edits=True, stream_edit_interval=driver.stream_interval):
        await driver.send("alice", "tell me everything")
        final = f"The first half of an answer\n\n{driver.core.config.chat.apology}"
        await driver.wait(lambda: driver.private("alice") == [final])
    data = await driver.core.export(driver.identity("alice"))
    assert data is not None
    assert [(m["role"], m["content"]) for m in data["messages"]] == [("user", "tell me everything")]
