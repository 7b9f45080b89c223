"""The Discord adapter end to end: real discord.py against the loopback FakeDiscord, the real
PersonaCore on a temporary SQLite database, and the FakeOpenAI model server.

What every platform does alike (chat, commands, the gate, splitting, streaming) is the
adapter contract (tests/contract); here is what is Discord's own: slash and prefix forms,
ephemeral answers and DMs, mentions, replies and threads, embedding, sharding, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from discord.ext import commands

from aipersona.adapters.discord import (
    EXPORT_FILENAME,
    DiscordSettings,
    PersonaCog,
    build_bot,
    run_discord,
)
from aipersona.adapters.kit import COMMANDS, split_message, texts
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
from tests.fakes.openai_server import FakeOpenAI, last_user_text

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
async def core(fake_llm: FakeOpenAI, db_path: Path) -> AsyncIterator[PersonaCore]:
    """The core without the privacy notice (the tests about it turn it on)."""
    config = make_config(db_path, fake_llm.base_url, privacy={"notice": ""})
    async with PersonaCore(config) as c:
        yield c


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


def test_shard_ids_are_checked_and_name_the_key(core: PersonaCore) -> None:
    s = DiscordSettings.parse("discord", {"shard_ids": [3, 2], "shard_count": 4})
    bot = build_bot(core, s)  # a range of shards: an AutoShardedBot even without `sharded`
    assert isinstance(bot, commands.AutoShardedBot)
    assert bot.shard_ids == [3, 2] and bot.shard_count == 4
    bad = [
        ({"shard_ids": [0]}, "needs shard_count"),
        ({"shard_ids": [0, 4], "shard_count": 4}, r"\[4\] are out of range.* 0 to 3"),
        ({"shard_ids": [-1, 1], "shard_count": 2}, r"\[-1\] are out of range"),
        ({"shard_ids": [1, 0, 1], "shard_count": 2}, r"\[1\] are listed more than once"),
        ({"shard_ids": ["zero"], "shard_count": 2}, "integer"),
    ]
    for table, reason in bad:
        with pytest.raises(ConfigError, match=rf"discord\.shard_ids\b.*{reason}"):
            DiscordSettings.parse("discord", table)
    with pytest.raises(ConfigError, match=r"discord\.shard_ids"):  # at load, before any run
        make_config(Path("unused.db"), "http://127.0.0.1:9/v1", discord={"shard_ids": [2]})
    single = DiscordSettings.parse("discord", {"sharded": True, "shard_count": 3})
    assert single.shard_ids == [] and single.autosharded  # one process runs every shard


# ------------------------------------------------------------------ the command table


async def test_commands_come_from_the_table_in_both_forms(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    async with persona_bot(core) as bot:
        synced = {c["name"]: c for c in fake.synced_commands[None]}
        assert list(synced) == [spec.name for spec in COMMANDS]
        assert {c.name for c in bot.commands} == {spec.name for spec in COMMANDS}
        assert synced["forget"]["options"][0]["name"] == "field"
        assert synced["forget"]["options"][0]["autocomplete"] is True
        for spec in COMMANDS:
            assert synced[spec.name]["description"] == spec.description

        sent = await chat(fake, DM_ALICE, ALICE, "hello in a DM")
        assert sent[-1].content == "echo: hello in a DM"
        assert sent[-1].reference_message_id is None  # plain messages in DMs
        assert DM_ALICE in fake.typing_calls
        ended = await command(fake, "end", ALICE)  # the slash form: ephemeral
        assert ended.ephemeral and ended.content == texts.SESSION_ENDED
        await chat(fake, DM_ALICE, ALICE, "and again")
        sent = await chat(fake, DM_ALICE, ALICE, "!end")  # the prefix form
        assert sent[-1].content == texts.SESSION_ENDED
    exported = await core.export(ident(ALICE))
    assert exported is not None
    assert exported["identities"][0]["display_name"] == "alice"  # stored beside the id
    assert [s["end_reason"] for s in exported["sessions"]] == ["explicit", "explicit"]


async def test_forget_suggests_the_field_names(core: PersonaCore, fake: FakeDiscord) -> None:
    async with persona_bot(core) as bot:
        forget = bot.get_command("forget")
        assert isinstance(forget, commands.HybridCommand) and forget.app_command is not None
        cog = bot.get_cog("Persona")
        # discord.py keeps it with the parameter (named "a" in the code, "field" on Discord)
        complete = forget.app_command._params["a"].autocomplete
        assert complete is not None
        choices = await complete(cog, None, "demographics.a")
    assert [c.value for c in choices] == ["Demographics.Age"]


async def test_replies_quote_in_guilds_and_a_reply_to_the_bot_addresses_it(
    core: PersonaCore, fake_llm: FakeOpenAI, fake: FakeDiscord
) -> None:
    async with persona_bot(core):
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
    assert [last_user_text(r) for r in fake_llm.chat_requests()][:3] == [
        "hi, alice here",
        "hey bob here",
        "and again",
    ]


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
        assert [m.content for m in sent] == [texts.ONLY_TEXT]
        sent = await chat(fake, DM_ALICE, ALICE, "", attachments=[(f"{i}.png", PNG) for i in "abc"])
        assert [m.content for m in sent] == [texts.ONLY_TEXT] * 2  # one per message, not per file
        sent = await chat(fake, DM_ALICE, ALICE, "", stickers=["wave"])
        assert [m.content for m in sent] == [texts.ONLY_TEXT] * 3
        await chat(fake, DM_ALICE, ALICE, "a barrier: earlier events are handled")
    assert [m.content for m in fake.sent_messages(DM_ALICE)] == [texts.ONLY_TEXT] * 3 + [
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
                assert sent[-1].content == texts.ONLY_TEXT and sent[-1].reference_message_id
                sent = await chat(
                    fd, CHANNEL, ALICE, MENTION, mentions_bot=True, attachments=[("x.png", PNG)]
                )
                assert sent[-1].content == texts.ONLY_TEXT
                sent = await chat(fd, 5002, BOB, "", attachments=[("y.png", PNG)])
                assert [m.content for m in sent] == [texts.ONLY_TEXT]
                await chat(fd, DM_ALICE, ALICE, "a barrier: earlier events are handled")
    assert [m.content for m in fd.sent_messages(CHANNEL)] == [
        "echo: hi",
        texts.ONLY_TEXT,
        texts.ONLY_TEXT,
    ]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == [
        "hi",
        "a barrier: earlier events are handled",
    ]


# ------------------------------------------------------------------ persona commands


async def test_slash_persona_is_ephemeral_and_prefix_persona_goes_to_dm(
    core: PersonaCore, fake: FakeDiscord
) -> None:
    await core.edit_persona(ident(ALICE), [NURSE])
    async with persona_bot(core):
        answer = await command(fake, "persona", ALICE, guild_id=GUILD)
        assert answer.ephemeral
        assert "Demographics.Career_Information: nurse" in (answer.content or "")
        assert fake.sent_messages(CHANNEL) == []

        asked = await fake.send_message(CHANNEL, ALICE, "!persona")
        dm = await fake.wait_for(lambda: fake.dm_channels.get(ALICE))
        sent = await fake.wait_for(lambda: fake.sent_messages(int(dm["id"])))
        assert "nurse" in sent[0].content
        said = await fake.wait_for(lambda: fake.sent_messages(CHANNEL))
        assert said[0].content == texts.SENT_PRIVATELY
        assert said[0].reference_message_id == int(asked["id"])

        # DMs closed: a notice in the channel (pinging the user), without the persona
        fake.fail_next(
            "POST",
            rf"/channels/{dm['id']}/messages$",
            status=403,
            body={"message": "Cannot send messages to this user", "code": 50007},
        )
        await fake.send_message(CHANNEL, ALICE, "!persona")
        notices = await fake.wait_for(lambda: fake.sent_messages(CHANNEL)[1:])
        assert notices[0].content == texts.dm_closed(f"<@{ALICE}>", "persona")
        pinged = notices[0].payload["allowed_mentions"]["users"]
        assert [str(u) for u in pinged] == [str(ALICE)]

        help_ = await command(fake, "help", BOB, guild_id=GUILD)
        assert help_.ephemeral and "/forget FIELD or !forget FIELD" in (help_.content or "")
        # a prefix command that shows no persona data is answered in the channel
        await fake.send_message(CHANNEL, BOB, "!help")
        helped = await fake.wait_for(lambda: fake.sent_messages(CHANNEL)[2:])
        assert helped[0].content.startswith(texts.INTRO)
    assert not any("nurse" in m.content for m in fake.sent_messages(CHANNEL))
    assert fake.errors == []


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

        # the prefix form sends the file by DM; the guild channel only hears where it went
        await fake.send_message(CHANNEL, ALICE, "!export")
        sent = await fake.wait_for(lambda: [m for m in fake.sent_messages(DM_ALICE) if m.files])
        assert sent[0].files[0].filename == EXPORT_FILENAME
        said = await fake.wait_for(lambda: fake.sent_messages(CHANNEL))
    assert [(m.content, m.files) for m in said] == [(texts.SENT_PRIVATELY, [])]


async def test_slash_commands_are_always_answered_even_when_rate_limited(
    core: PersonaCore, fake: FakeDiscord
) -> None:
    async with persona_bot(core, rate_limit_per_minute=1):
        first = await command(fake, "persona", ALICE)
        assert first.content == texts.PERSONA_EMPTY
        for _ in range(2):  # a slash command must be answered: the notice is repeated
            limited = await command(fake, "persona", ALICE)
            assert limited.ephemeral
            assert limited.content in (texts.rate_limited(60), texts.rate_limited(59))
        forgot = await command(fake, "forget", ALICE, options={"field": "all"})
        assert forgot.content == texts.forgot_all(False)  # never rate limited


async def test_allow_dms_and_allowed_guilds(core: PersonaCore, fake_llm: FakeOpenAI) -> None:
    guild = FakeGuild(id=SHARD1_GUILD, channels=[FakeChannel(SHARD1_CHANNEL, "lobby")])
    async with FakeDiscord(guilds=[FakeGuild(), guild]) as fd:
        with patched_discord(fd):
            async with persona_bot(core, allow_dms=False, allowed_guilds=[str(GUILD)]):
                await fd.send_message(DM_ALICE, ALICE, "a DM")
                await fd.send_message(SHARD1_CHANNEL, ALICE, f"{MENTION} hi", mentions_bot=True)
                await fd.send_interaction("persona", ALICE, channel_id=DM_ALICE)
                sent = await chat(fd, CHANNEL, ALICE, f"{MENTION} allowed", mentions_bot=True)
                await asyncio.sleep(0.3)
    assert [m.content for m in sent] == ["echo: allowed"]
    assert fd.sent_messages(DM_ALICE) == fd.sent_messages(SHARD1_CHANNEL) == []
    assert [r for r in fd.interaction_responses if r.content] == []
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == ["allowed"]


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


async def test_two_bots_split_the_shards(core: PersonaCore, fake_llm: FakeOpenAI) -> None:
    """Two bots (as two processes would) with shard_ids [0] and [1] of 2: each gets only its
    shard's guilds and answers their messages, once; DMs go to shard 0's bot."""
    guilds = [
        FakeGuild(),
        FakeGuild(id=SHARD1_GUILD, name="Second", channels=[FakeChannel(SHARD1_CHANNEL, "x")]),
    ]
    async with FakeDiscord(guilds=guilds, shards=2) as fd:
        with patched_discord(fd):
            async with (
                persona_bot(core, shard_ids=[0], shard_count=2) as zero_bot,
                persona_bot(core, shard_ids=[1], shard_count=2, sync_commands=False) as one_bot,
            ):
                assert fd.connected_shards == [(0, 2), (1, 2)]
                assert list(zero_bot.shards) == [0] and list(one_bot.shards) == [1]
                assert [g.id for g in zero_bot.guilds] == [GUILD]
                assert [g.id for g in one_bot.guilds] == [SHARD1_GUILD]
                one = await chat(fd, SHARD1_CHANNEL, ALICE, f"{MENTION} one", mentions_bot=True)
                zero = await chat(fd, CHANNEL, ALICE, f"{MENTION} zero", mentions_bot=True)
                dm = await chat(fd, DM_ALICE, ALICE, "a DM")
                assert zero_bot.get_channel(CHANNEL) is not None
                assert one_bot.get_channel(CHANNEL) is None  # shard 1 never saw guild 0
    assert [m.content for m in one] == ["echo: one"]
    assert [m.content for m in zero] == ["echo: zero"]
    assert [m.content for m in dm] == ["echo: a DM"]
    assert sorted(last_user_text(r) for r in fake_llm.chat_requests()) == ["a DM", "one", "zero"]


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
