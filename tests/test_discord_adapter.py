"""The Discord adapter end to end: real discord.py against the loopback FakeDiscord, the real
PersonaCore on a temporary SQLite database, and the FakeOpenAI model server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from discord.ext import commands

from aipersona.adapters.common import ONLY_TEXT, rate_limited_text, split_message
from aipersona.adapters.discord import (
    EXPORT_FILENAME,
    DiscordSettings,
    PersonaCog,
    build_bot,
    run_discord,
)
from aipersona.core import ConfigError, Edit, Identity, PersonaCore
from tests.conftest import make_config
from tests.fakes.discord import (
    FAKE_TOKEN,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    InteractionResponse,
    SentMessage,
    patched_discord,
    running_bot,
)
from tests.fakes.openai_server import (
    CutStream,
    Error,
    FakeOpenAI,
    last_user_text,
    system_text,
    updates,
)

pytestmark = pytest.mark.timeout(60)

BOT = 1000
GUILD, CHANNEL = 5000, 5001
ALICE, BOB = 42, 43
DM_ALICE, DM_BOB = 7042, 7043
SHARD1_GUILD = (1 << 22) + 6000  # (id >> 22) % 2 == 1
SHARD1_CHANNEL = 6001
MENTION = f"<@{BOT}>"
NURSE = Edit("Demographics.Career_Information", "set", "nurse")
PILOT = Edit("Demographics.Career_Information", "set", "airline pilot")


def ident(user_id: int) -> Identity:
    return Identity("discord", str(user_id))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fd:
        with patched_discord(fd):
            yield fd


@contextlib.asynccontextmanager
async def persona_bot(core: PersonaCore, **settings: Any) -> AsyncIterator[commands.Bot]:
    """The standalone bot (build_bot) logged in to the fake and ready."""
    bot = build_bot(core, DiscordSettings(**settings), guild_ready_timeout=0.1)
    async with running_bot(bot):
        yield bot


async def chat(
    fake: FakeDiscord, channel: int, user: int, text: str, **kwargs: Any
) -> list[SentMessage]:
    """Send a message and wait for one more bot message in that channel; return them all."""
    before = len(fake.sent_messages(channel))
    await fake.send_message(channel, user, text, **kwargs)
    return await fake.wait_for(
        lambda: len(fake.sent_messages(channel)) > before and fake.sent_messages(channel)
    )


async def command(fake: FakeDiscord, name: str, user: int, **kwargs: Any) -> InteractionResponse:
    """Invoke a slash command and return its final (content-carrying) response."""
    before = len(fake.interaction_responses)
    payload = await fake.send_interaction(name, user, **kwargs)

    def answered() -> list[InteractionResponse]:
        return [
            r
            for r in fake.interaction_responses[before:]
            if r.interaction_id == int(payload["id"]) and r.content
        ]

    return (await fake.wait_for(answered))[-1]


def count_rows(db_path: Path, table: str, persona_id: int) -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            f"SELECT COUNT(*) FROM {table} WHERE persona_id = ?", (persona_id,)
        ).fetchone()[0]


def fences_balanced(text: str) -> bool:
    return sum(1 for line in text.split("\n") if line.strip().startswith("```")) % 2 == 0


# ------------------------------------------------------------------ settings


def test_settings_from_config_defaults_and_ids(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path / "x.db",
        "http://127.0.0.1:9/v1",
        discord={"allowed_guilds": [5000], "guild_ids": ["5000"], "reply_channels": [5001]},
    )
    s = DiscordSettings.from_config(cfg)
    assert s.token_env == "DISCORD_BOT_TOKEN" and s.command_prefix == "!"
    assert s.sharded is False and s.shard_count == 0 and s.sync_commands is True
    assert s.allowed_guilds == ["5000"] and s.guild_ids == ["5000"]
    assert s.reply_channels == ["5001"]
    with pytest.raises(ConfigError, match=r"discord\.tokn"):
        DiscordSettings.parse("discord", {"tokn": "x"})


def test_build_bot_intents_and_sharding(core: PersonaCore) -> None:
    bot = build_bot(core, DiscordSettings())
    assert not isinstance(bot, commands.AutoShardedBot)
    assert bot.intents.message_content and bot.intents.dm_messages and bot.intents.guild_messages
    sharded = build_bot(core, DiscordSettings(sharded=True, shard_count=3))
    assert isinstance(sharded, commands.AutoShardedBot) and sharded.shard_count == 3


# ------------------------------------------------------------------ learning a persona


async def test_three_sessions_update_the_persona_and_the_next_prompt(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    fake_llm.push(
        "json", updates(("Demographics.Career_Information", "set", "nurse", "I am a nurse"))
    )
    async with persona_bot(core) as bot:
        assert {c["name"] for c in fake.synced_commands[None]} == {
            "persona",
            "forget",
            "export",
            "end",
            "help",
        }
        for i in range(3):
            sent = await chat(fake, DM_ALICE, ALICE, f"session {i}: I am a nurse")
            assert sent[-1].content == f"echo: session {i}: I am a nurse"
            assert sent[-1].reference_message_id is None  # plain messages in DMs
            if i < 2:
                ended = await command(fake, "end", ALICE)
                assert ended.ephemeral and "Conversation ended" in (ended.content or "")
            else:
                sent = await chat(fake, DM_ALICE, ALICE, "!end")
                assert "Conversation ended" in sent[-1].content
        await core.wait_for_updates()
        assert len(fake_llm.json_requests()) == 1
        persona = await core.persona(ident(ALICE))
        assert persona is not None
        assert persona.values["Demographics.Career_Information"] == "nurse"

        await chat(fake, DM_ALICE, ALICE, "what should I do this weekend?")
        assert '"Career_Information":"nurse"' in system_text(fake_llm.chat_requests()[-1])
        assert DM_ALICE in fake.typing_calls
        assert bot.user is not None and bot.user.id == BOT
    exported = await core.export(ident(ALICE))
    assert exported is not None
    assert exported["identities"][0]["user_id"] == str(ALICE)
    assert exported["identities"][0]["display_name"] == "alice"
    assert {s["chat_id"] for s in exported["sessions"]} == {str(DM_ALICE)}


async def test_two_users_in_one_channel_get_their_own_persona(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    await core.edit_persona(ident(ALICE), [NURSE])
    await core.edit_persona(ident(BOB), [PILOT])
    async with persona_bot(core):
        await fake.send_message(CHANNEL, ALICE, "nobody mentioned the bot here")
        a = await chat(fake, CHANNEL, ALICE, f"{MENTION} hi, alice here", mentions_bot=True)
        b = await chat(fake, CHANNEL, BOB, f"hey {MENTION} bob here", mentions_bot=True)
        # a reply to one of the bot's messages is a trigger too, without a mention
        c = await chat(fake, CHANNEL, ALICE, "and again", reference_message_id=a[0].id)
        await fake.send_message(CHANNEL, BOB, "still talking to humans")
        await chat(fake, DM_ALICE, ALICE, "a barrier: earlier events are handled")
    incoming = {int(m["id"]): m["content"] for m in fake.incoming_messages}
    assert incoming[b[1].reference_message_id or 0] == f"hey {MENTION} bob here"
    assert [m.content for m in fake.sent_messages(CHANNEL)] == [
        "echo: hi, alice here",
        "echo: hey bob here",
        "echo: and again",
    ]
    assert all(m.reference_message_id is not None for m in c)
    requests = fake_llm.chat_requests()
    assert len(requests) == 4
    for request in requests:
        system, user = system_text(request), last_user_text(request)
        if "bob" not in user:
            assert "nurse" in system and "pilot" not in system
        else:
            assert "pilot" in system and "nurse" not in system
    alice, bob = await core.persona(ident(ALICE)), await core.persona(ident(BOB))
    assert alice is not None and bob is not None and alice.id != bob.id


async def test_reply_channels_bots_and_allowlists(core: PersonaCore, fake_llm: FakeOpenAI) -> None:
    guild = FakeGuild(
        channels=[FakeChannel(5001, "general"), FakeChannel(5002, "ask-the-bot")],
        members=[FakeMember(ALICE, "alice"), FakeMember(BOB, "bob"), FakeMember(99, "hook")],
    )
    async with FakeDiscord(guilds=[guild]) as fd:
        with patched_discord(fd):
            async with persona_bot(core, reply_channels=["5002"], allowed_users=[str(ALICE)]):
                sent = await chat(fd, 5002, ALICE, "no mention needed here")
                assert sent[0].content == "echo: no mention needed here"
                await fd.send_message(5002, BOB, "bob is not on the allow list")
                await fd.send_message(5002, 99, "a bot talking", bot_author=True)
                await fd.send_message(DM_BOB, BOB, "bob in a DM")
                await fd.send_message(5001, ALICE, "no mention in another channel")
                await fd.send_message(5002, ALICE, "!nosuchcommand for another bot")
                mention = await chat(fd, 5002, ALICE, f"<@{BOB}>  and I ask \\1 things")
                assert mention[-1].content == "echo: @bob and I ask \\1 things"
                await chat(fd, DM_ALICE, ALICE, "!wow, in a DM this is chat")
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == [
        "no mention needed here",
        "@bob and I ask \\1 things",
        "!wow, in a DM this is chat",
    ]
    assert await core.persona(ident(BOB)) is None


# ------------------------------------------------------------------ non-text messages

PNG = bytes.fromhex("89504e470d0a1a0a")  # enough of an image for the fake


async def test_text_with_attachments_is_answered_as_text(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    async with persona_bot(core):
        sent = await chat(
            fake, DM_ALICE, ALICE, "what breed is this cat?", attachments=[("cat.png", PNG)]
        )
        assert [m.content for m in sent] == ["echo: what breed is this cat?"]
        sent = await chat(
            fake,
            CHANNEL,
            BOB,
            f"{MENTION} rate my photos",
            mentions_bot=True,
            attachments=[("a.png", PNG), ("b.png", PNG)],
        )
        assert [m.content for m in sent] == ["echo: rate my photos"]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == [
        "what breed is this cat?",
        "rate my photos",
    ]


async def test_attachment_or_sticker_only_gets_exactly_one_notice(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    async with persona_bot(core):
        sent = await chat(fake, DM_ALICE, ALICE, "", attachments=[("voice-message.ogg", b"OggS")])
        assert [m.content for m in sent] == [ONLY_TEXT]
        sent = await chat(fake, DM_ALICE, ALICE, "", attachments=[(f"{i}.png", PNG) for i in "abc"])
        assert [m.content for m in sent] == [ONLY_TEXT] * 2  # one per message, not per file
        sent = await chat(fake, DM_ALICE, ALICE, "", stickers=["wave"])
        assert [m.content for m in sent] == [ONLY_TEXT] * 3
        await chat(fake, DM_ALICE, ALICE, "a barrier: earlier events are handled")
    assert [m.content for m in fake.sent_messages(DM_ALICE)] == [ONLY_TEXT] * 3 + [
        "echo: a barrier: earlier events are handled"
    ]
    assert all(m.reference_message_id is None for m in fake.sent_messages(DM_ALICE))
    assert len(fake_llm.chat_requests()) == 1


async def test_guild_media_gets_a_notice_only_when_addressed_to_the_bot(
    core: PersonaCore, fake_llm: FakeOpenAI
) -> None:
    guild = FakeGuild(channels=[FakeChannel(5001, "general"), FakeChannel(5002, "ask-the-bot")])
    async with FakeDiscord(guilds=[guild]) as fd:
        with patched_discord(fd):
            async with persona_bot(core, reply_channels=["5002"]):
                await fd.send_message(CHANNEL, ALICE, "", attachments=[("cat.png", PNG)])
                await fd.send_message(CHANNEL, ALICE, "my cat", attachments=[("cat.png", PNG)])
                await fd.send_message(CHANNEL, BOB, "", stickers=["wave"])
                asked = await chat(fd, CHANNEL, ALICE, f"{MENTION} hi", mentions_bot=True)
                sent = await chat(
                    fd, CHANNEL, BOB, "", stickers=["wave"], reference_message_id=asked[0].id
                )
                assert sent[-1].content == ONLY_TEXT and sent[-1].reference_message_id
                sent = await chat(
                    fd, CHANNEL, ALICE, MENTION, mentions_bot=True, attachments=[("x.png", PNG)]
                )
                assert sent[-1].content == ONLY_TEXT
                sent = await chat(fd, 5002, BOB, "", attachments=[("y.png", PNG)])
                assert [m.content for m in sent] == [ONLY_TEXT]
                await chat(fd, DM_ALICE, ALICE, "a barrier: earlier events are handled")
    assert [m.content for m in fd.sent_messages(CHANNEL)] == ["echo: hi", ONLY_TEXT, ONLY_TEXT]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == [
        "hi",
        "a barrier: earlier events are handled",
    ]


async def test_media_notices_count_towards_the_rate_limit(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    async with persona_bot(core, rate_limit_per_minute=1):
        sent = await chat(fake, DM_ALICE, ALICE, "", stickers=["wave"])
        assert sent[-1].content == ONLY_TEXT
        sent = await chat(fake, DM_ALICE, ALICE, "", stickers=["wave"])
        assert sent[-1].content in (rate_limited_text(60), rate_limited_text(59))
    assert len(fake.sent_messages(DM_ALICE)) == 2


# ------------------------------------------------------------------ persona commands


async def test_slash_persona_is_ephemeral_and_prefix_persona_goes_to_dm(
    core: PersonaCore, fake: FakeDiscord
) -> None:
    await core.edit_persona(ident(ALICE), [NURSE])
    async with persona_bot(core):
        answer = await command(fake, "persona", ALICE, guild_id=GUILD)
        assert answer.kind == "callback" and answer.flags == 64
        assert "Demographics.Career_Information: nurse" in (answer.content or "")

        await fake.send_message(CHANNEL, ALICE, "!persona")
        dm = await fake.wait_for(lambda: fake.dm_channels.get(ALICE))
        sent = await fake.wait_for(lambda: fake.sent_messages(int(dm["id"])))
        assert "nurse" in sent[0].content

        # DMs closed: a notice in the channel, without the persona
        fake.fail_next(
            "POST",
            rf"/channels/{dm['id']}/messages$",
            status=403,
            body={"message": "Cannot send messages to this user", "code": 50007},
        )
        await fake.send_message(CHANNEL, ALICE, "!persona")
        notice = await fake.wait_for(lambda: fake.sent_messages(CHANNEL))
        assert "couldn't send you a DM" in notice[0].content
        assert "nurse" not in notice[0].content

        help_ = await command(fake, "help", BOB, guild_id=GUILD)
        assert help_.ephemeral and "!forget all" in (help_.content or "")
    assert len(fake.sent_messages(CHANNEL)) == 1
    assert fake.errors == []


async def test_forget_field_and_forget_all_really_delete(
    core: PersonaCore, fake: FakeDiscord, db_path: Path
) -> None:
    await core.edit_persona(ident(ALICE), [NURSE, Edit("Demographics.Age", "set", 31)])
    await core.edit_persona(ident(BOB), [PILOT])
    async with persona_bot(core):
        await chat(fake, CHANNEL, ALICE, f"{MENTION} remember me", mentions_bot=True)
        await chat(fake, DM_ALICE, ALICE, "and in private")
        await chat(fake, CHANNEL, BOB, f"{MENTION} I'm bob", mentions_bot=True)
        alice_id = await core.storage.find_persona(ident(ALICE))
        assert alice_id is not None and count_rows(db_path, "messages", alice_id) == 4

        one = await command(
            fake, "forget", ALICE, guild_id=GUILD, options={"field": "Demographics.Age"}
        )
        assert one.ephemeral and one.content == "Forgot Demographics.Age."
        bad = await command(fake, "forget", ALICE, guild_id=GUILD, options={"field": "Foo.Bar"})
        assert "unknown persona field" in (bad.content or "")
        persona = await core.persona(ident(ALICE))
        assert persona is not None and "Demographics.Age" not in persona.values

        done = await command(fake, "forget", ALICE, guild_id=GUILD, options={"field": "all"})
        assert done.ephemeral and "deleted everything" in (done.content or "")
    for table in ("persona_fields", "persona_versions", "sessions", "messages", "persona_updates"):
        assert count_rows(db_path, table, alice_id) == 0, table
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM personas WHERE id = ?", (alice_id,)).fetchone()
        assert conn.execute(
            "SELECT COUNT(*) FROM identities WHERE platform_user_id = ?", (str(ALICE),)
        ).fetchone() == (0,)
    assert await core.persona(ident(ALICE)) is None
    bob = await core.persona(ident(BOB))
    assert bob is not None and bob.values["Demographics.Career_Information"] == "airline pilot"


async def test_export_is_an_ephemeral_json_file(core: PersonaCore, fake: FakeDiscord) -> None:
    await core.edit_persona(ident(ALICE), [NURSE])
    async with persona_bot(core):
        await chat(fake, DM_ALICE, ALICE, "my export should hold this")
        answer = await command(fake, "export", ALICE, guild_id=GUILD)
        deferred = [r for r in fake.interaction_responses if r.kind == "callback"][-1]
        assert deferred.type == 5 and deferred.ephemeral
        assert answer.kind == "followup" and answer.ephemeral
        [file] = answer.files
        assert file.filename == EXPORT_FILENAME
        data = json.loads(file.data)
        assert data["persona"]["Demographics"]["Career_Information"] == "nurse"
        assert "my export should hold this" in [m["content"] for m in data["messages"]]

        # the prefix form sends the file by DM, nothing in the guild channel
        await fake.send_message(CHANNEL, ALICE, "!export")
        sent = await fake.wait_for(lambda: [m for m in fake.sent_messages(DM_ALICE) if m.files])
        assert sent[0].files[0].filename == EXPORT_FILENAME
        assert fake.sent_messages(CHANNEL) == []


# ------------------------------------------------------------------ replies


async def test_long_reply_is_split_with_balanced_code_fences(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    prose = " ".join(f"Sentence number {i} explains a detail." for i in range(90))
    code = "```python\n" + "\n".join(f"value_{i} = compute({i}) * 2" for i in range(140)) + "\n```"
    reply = f"{prose}\n\n{code}\n\n{prose}\n\nDone."
    assert len(reply) >= 10_000
    fake_llm.push("chat", reply)
    async with persona_bot(core):
        incoming = await fake.send_message(CHANNEL, ALICE, f"{MENTION} long one", mentions_bot=True)
        expected = split_message(reply, 2000)
        await fake.wait_for(lambda: len(fake.sent_messages(CHANNEL)) == len(expected))
        sent = fake.sent_messages(CHANNEL)
    assert len(sent) >= 5
    assert all(len(m.content) <= 2000 for m in sent)
    assert all(fences_balanced(m.content) for m in sent)
    assert sent[0].reference_message_id == int(incoming["id"])
    assert all(m.reference_message_id is None for m in sent[1:])
    joined = "\n".join(m.content for m in sent)
    assert all(f"value_{i} = compute({i}) * 2" in joined for i in range(140))
    assert [m.content for m in sent] == expected


async def test_streaming_edits_end_with_the_final_chunks(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    reply = "\n\n".join(f"Paragraph {i}: " + "words and more words " * 12 for i in range(18))
    assert 4000 < len(reply) < 6000
    fake_llm.push("chat", reply)
    async with persona_bot(core, stream_edits=True, stream_edit_interval=0.02):
        await chat(fake, DM_ALICE, ALICE, "stream please")
        expected = split_message(reply, 2000)
        await fake.wait_for(
            lambda: [m.content for m in fake.sent_messages(DM_ALICE)] == expected, timeout=10
        )
        sent = fake.sent_messages(DM_ALICE)
    assert fake_llm.chat_requests()[-1]["stream"] is True
    assert len(sent) == len(expected) >= 3
    assert sent[0].edits, "the first message grew by edits"
    assert all(len(edit["content"]) <= 2000 for m in sent for edit in m.edits)


async def test_streaming_failure_keeps_the_partial_text_and_apologizes(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord, db_path: Path
) -> None:
    fake_llm.push("chat", CutStream("The first half of an answer"))
    async with persona_bot(core, stream_edits=True, stream_edit_interval=0.01):
        await chat(fake, DM_ALICE, ALICE, "tell me everything")
        final = f"The first half of an answer\n\n{core.config.chat.apology}"
        await fake.wait_for(lambda: fake.sent_messages(DM_ALICE)[-1].content == final)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT role, content FROM messages").fetchall()
    assert rows == [("user", "tell me everything")]


async def test_rate_limit_and_too_long_messages(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    async with persona_bot(core, rate_limit_per_minute=2, max_input_chars=100):
        await chat(fake, DM_ALICE, ALICE, "one")
        await chat(fake, DM_ALICE, ALICE, "two")
        sent = await chat(fake, DM_ALICE, ALICE, "three")
        assert sent[-1].content in (rate_limited_text(60), rate_limited_text(59))
        await fake.send_message(DM_ALICE, ALICE, "four")  # no second notice
        # bob has his own budget; his reply also shows "four" was handled by then
        too_long = await chat(fake, CHANNEL, BOB, f"{MENTION} " + "x" * 150, mentions_bot=True)
        assert "too long (150 characters; the limit is 100)" in too_long[0].content
    assert len(fake.sent_messages(DM_ALICE)) == 3
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == ["one", "two"]


async def test_llm_failure_apologizes_and_keeps_the_message(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord, db_path: Path
) -> None:
    fake_llm.push("chat", Error(500))
    async with persona_bot(core):
        sent = await chat(fake, CHANNEL, ALICE, f"{MENTION} are you there?", mentions_bot=True)
        assert sent[0].content == core.config.chat.apology
        sent = await chat(fake, CHANNEL, ALICE, f"{MENTION} again?", mentions_bot=True)
        assert sent[-1].content == "echo: again?"
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert rows == [("user", "are you there?"), ("user", "again?"), ("assistant", "echo: again?")]


async def test_send_errors_are_logged_without_the_token(
    core: PersonaCore, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with persona_bot(core):
        fake.fail_next(
            "POST",
            rf"/channels/{CHANNEL}/messages$",
            status=403,
            body={"message": "Missing Permissions", "code": 50013},
        )
        await fake.send_message(CHANNEL, ALICE, f"{MENTION} hello", mentions_bot=True)
        await fake.wait_for(lambda: "sending to channel 5001 failed" in caplog.text)
        sent = await chat(fake, CHANNEL, ALICE, f"{MENTION} hello again", mentions_bot=True)
        assert sent[0].content == "echo: hello again"
    assert FAKE_TOKEN not in caplog.text


# ------------------------------------------------------------------ embedding and running


async def test_embedded_cog_keeps_the_host_commands_and_listener(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    intents = discord.Intents.default()
    intents.message_content = True
    host = commands.Bot(
        command_prefix=commands.when_mentioned_or("!"), intents=intents, guild_ready_timeout=0.1
    )
    seen: list[str] = []

    @host.command()
    async def ping(ctx: commands.Context[commands.Bot]) -> None:
        await ctx.send("pong")

    @host.listen("on_message")
    async def host_listener(message: discord.Message) -> None:
        seen.append(message.content)

    await host.add_cog(PersonaCog(core, DiscordSettings()))
    help_command = host.get_command("help")
    assert help_command is not None and help_command.cog is None  # the host's help stays
    assert host.get_command("persona") is not None
    async with running_bot(host):
        await host.tree.sync()
        pong = await chat(fake, CHANNEL, ALICE, "!ping")
        assert pong[0].content == "pong"
        dm_pong = await chat(fake, DM_ALICE, ALICE, "!ping")
        assert dm_pong[0].content == "pong"
        reply = await chat(fake, DM_ALICE, ALICE, "hello persona")
        assert reply[-1].content == "echo: hello persona"
        # a mention is the host's command prefix too: "@bot hi" is chat, not a command
        mention = await chat(fake, CHANNEL, BOB, f"{MENTION} hi from bob", mentions_bot=True)
        assert mention[-1].content == "echo: hi from bob"
        answer = await command(fake, "persona", ALICE, guild_id=GUILD)
        assert answer.ephemeral
    assert "!ping" in seen and "hello persona" in seen
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == [
        "hello persona",
        "hi from bob",
    ]
    assert len(fake.sent_messages(CHANNEL)) == 2


async def test_autosharded_bot_with_two_shards(core: PersonaCore, fake_llm: FakeOpenAI) -> None:
    guilds = [
        FakeGuild(),
        FakeGuild(
            id=SHARD1_GUILD,
            name="Second",
            channels=[FakeChannel(SHARD1_CHANNEL, "lobby")],
            members=[FakeMember(ALICE, "alice")],
        ),
    ]
    async with FakeDiscord(guilds=guilds, shards=2) as fd:
        with patched_discord(fd):
            async with persona_bot(core, sharded=True) as bot:
                assert isinstance(bot, commands.AutoShardedBot) and bot.shard_count == 2
                assert fd.connected_shards == [(0, 2), (1, 2)]
                one = await chat(
                    fd, SHARD1_CHANNEL, ALICE, f"{MENTION} shard one", mentions_bot=True
                )
                zero = await chat(fd, CHANNEL, ALICE, f"{MENTION} shard zero", mentions_bot=True)
                dm = await chat(fd, DM_ALICE, ALICE, "a DM")
    assert one[0].content == "echo: shard one" and zero[0].content == "echo: shard zero"
    assert dm[0].content == "echo: a DM"
    sessions = await core.export(ident(ALICE))
    assert sessions is not None
    assert {s["chat_id"] for s in sessions["sessions"]} == {
        str(SHARD1_CHANNEL),
        str(CHANNEL),
        str(DM_ALICE),
    }


async def test_run_discord_reconnects_and_stops_cleanly(
    core: PersonaCore, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_BOT_TOKEN", FAKE_TOKEN)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_discord(core, DiscordSettings(guild_ids=[str(GUILD)]), stop, guild_ready_timeout=0.1)
    )
    await fake.wait_for(lambda: fake.connected_shards and GUILD in fake.synced_commands)
    first = await chat(fake, DM_ALICE, ALICE, "before the drop")
    assert first[-1].content == "echo: before the drop"

    await fake.disconnect_all(code=4000)
    after = await chat(fake, DM_ALICE, ALICE, "after the drop")
    assert after[-1].content == "echo: after the drop"
    assert len(fake.resumes) == 1
    answer = await command(fake, "persona", ALICE, guild_id=GUILD)
    assert answer.ephemeral

    stop.set()
    await asyncio.wait_for(task, 10)
    assert task.result() is None
    await fake.wait_for(lambda: not fake.connected_shards)


async def test_run_discord_reports_token_and_intent_problems(
    core: PersonaCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
        await run_discord(core, DiscordSettings(), asyncio.Event())

    monkeypatch.setenv("DISCORD_BOT_TOKEN", FAKE_TOKEN)
    async with FakeDiscord(allowed_intents=0) as fd:
        with patched_discord(fd):
            with pytest.raises(ConfigError, match="Message Content intent"):
                await run_discord(core, DiscordSettings(), asyncio.Event())
    async with FakeDiscord(token="FAKE.OTHER.TOKEN") as fd:
        with patched_discord(fd):
            with pytest.raises(ConfigError, match="rejected the bot token") as info:
                await run_discord(core, DiscordSettings(), asyncio.Event())
    assert FAKE_TOKEN not in str(info.value)
