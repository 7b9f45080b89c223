"""Tests proving the loopback Discord fake works with the real discord.py client library."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

try:  # works whether or not tests/ is a package
    from tests.fakes.discord import (
        FAKE_TOKEN,
        FakeChannel,
        FakeDiscord,
        FakeGuild,
        FakeMember,
        patched_discord,
        running_bot,
    )
except ImportError:  # pragma: no cover - rootdir-less import mode
    from fakes.discord import (  # type: ignore[no-redef]
        FAKE_TOKEN,
        FakeChannel,
        FakeDiscord,
        FakeGuild,
        FakeMember,
        patched_discord,
        running_bot,
    )

pytestmark = pytest.mark.timeout(30)

GUILD = 5000
CHANNEL = 5001
ALICE = 42
SHARD1_GUILD = (1 << 22) + 6000  # (id >> 22) % 2 == 1
SHARD1_CHANNEL = 6001


# ------------------------------------------------------------------ fixtures / helpers


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fd:
        with patched_discord(fd):
            yield fd


def make_bot(*, message_content: bool = True, sharded: bool = False) -> commands.Bot:
    intents = discord.Intents.default()
    intents.message_content = message_content
    cls = commands.AutoShardedBot if sharded else commands.Bot
    return cls(command_prefix="!", intents=intents, guild_ready_timeout=0.1, help_command=None)


def event_flag(bot: commands.Bot, event: str) -> asyncio.Event:
    """An asyncio.Event set whenever ``event`` (e.g. ``on_ready``) is dispatched."""
    flag = asyncio.Event()

    async def listener(*_: object) -> None:
        flag.set()

    bot.add_listener(listener, event)
    return flag


def add_reply_listener(bot: commands.Bot) -> list[discord.Message]:
    """on_message listener: 'hello' → channel.send, 'reply me' → message.reply."""
    seen: list[discord.Message] = []

    @bot.listen("on_message")
    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        seen.append(message)
        if message.content == "hello":
            await message.channel.send(f"hi {message.author.name}")
        elif message.content == "reply me":
            await message.reply("replied")

    return seen


# ------------------------------------------------------------------ connection / cache


async def test_ready_and_guild_cache(fake: FakeDiscord) -> None:
    bot = make_bot()
    ready = event_flag(bot, "on_ready")

    async with running_bot(bot):
        await asyncio.wait_for(ready.wait(), 2)
        assert bot.user is not None and bot.user.id == 1000 and bot.user.name == "PersonaBot"
        assert bot.application_id == 1000
        guild = bot.get_guild(GUILD)
        assert guild is not None and guild.name == "Fake Guild"
        channel = guild.get_channel(CHANNEL)
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        assert guild.me is not None and guild.me.id == 1000
        assert channel.permissions_for(guild.me).send_messages
        assert guild.member_count == 3  # alice, bob and the bot
        assert guild.default_role.id == GUILD

    identify = fake.identifies[0]
    assert identify["token"] == FAKE_TOKEN
    assert identify["intents"] & discord.Intents(message_content=True).value
    assert fake.heartbeats >= 1
    assert fake.gateway_queries[0] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    paths = [r.path for r in fake.requests]
    assert "/users/@me" in paths and "/oauth2/applications/@me" in paths
    assert fake.unknown_requests == [] and fake.errors == []
    assert fake.connected_shards == [], fake.gateway_closes


async def test_patched_discord_restores_globals() -> None:
    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    hook = discord.Client.before_identify_hook
    async with FakeDiscord() as fd:
        with patched_discord(fd):
            assert discord.http.Route.BASE == fd.api_base
            assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fd.gateway_url
            assert discord.Client.before_identify_hook is not hook
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == before
    assert discord.Client.before_identify_hook is hook


async def test_wrong_token_fails_login() -> None:
    async with FakeDiscord(token=FAKE_TOKEN) as fd:
        with patched_discord(fd):
            bot = make_bot()
            with pytest.raises(discord.LoginFailure):
                await bot.login("FAKE.WRONG.TOKEN")
            await bot.close()


async def test_privileged_intent_rejected() -> None:
    async with FakeDiscord(allowed_intents=0) as fd:
        with patched_discord(fd):
            with pytest.raises(discord.PrivilegedIntentsRequired):
                async with running_bot(make_bot(message_content=True)):
                    pass


# ------------------------------------------------------------------ messages


async def test_guild_and_dm_messages_get_replies(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen = add_reply_listener(bot)
    async with running_bot(bot):
        incoming = await fake.send_message(CHANNEL, ALICE, "hello")
        sent = await fake.wait_for(lambda: fake.sent_messages(CHANNEL))
        assert sent[0].content == "hi alice"
        assert sent[0].message["author"]["id"] == "1000"
        assert sent[0].message["guild_id"] == str(GUILD)
        assert seen[0].guild is not None and seen[0].guild.id == GUILD
        assert isinstance(seen[0].author, discord.Member)
        assert seen[0].id == int(incoming["id"])

        dm = await fake.send_message(7001, ALICE, "reply me")
        assert "guild_id" not in dm
        assert fake.dm_channels[ALICE]["id"] == "7001"
        replies = await fake.wait_for(lambda: fake.sent_messages(7001))
        assert replies[0].content == "replied"
        assert replies[0].reference_message_id == int(dm["id"])
        assert replies[0].message["referenced_message"]["content"] == "reply me"
        assert isinstance(seen[1].channel, discord.DMChannel) and seen[1].guild is None

        # The bot's own messages are echoed back and ignored by the listener: no loops.
        await asyncio.sleep(0.1)
        assert len(fake.sent_messages()) == 2


async def test_message_content_intent_is_enforced(fake: FakeDiscord) -> None:
    bot = make_bot(message_content=False)
    seen = add_reply_listener(bot)
    async with running_bot(bot):
        await fake.send_message(CHANNEL, ALICE, "hello")
        await fake.send_message(CHANNEL, ALICE, "<@1000> hello", mentions_bot=True)
        await fake.send_message(7001, ALICE, "hello")
        await fake.wait_for(lambda: len(seen) == 3)
    assert [m.content for m in seen] == ["", "<@1000> hello", "hello"]
    assert bot.user is not None and bot.user.mentioned_in(seen[1])


async def test_stickers_and_attachments_on_incoming_messages(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen = add_reply_listener(bot)
    async with running_bot(bot):
        await fake.send_message(7001, ALICE, "", stickers=["wave"])
        await fake.send_message(CHANNEL, ALICE, "", attachments=[("a.png", b"png")])
        await fake.wait_for(lambda: len(seen) == 2)
    sticker, attached = seen
    assert [s.name for s in sticker.stickers] == ["wave"] and sticker.content == ""
    assert sticker.stickers[0].format is discord.StickerFormatType.png
    assert [a.filename for a in attached.attachments] == ["a.png"] and not attached.stickers


async def test_prefix_command(fake: FakeDiscord) -> None:
    bot = make_bot()

    @bot.command()
    async def ping(ctx: commands.Context[commands.Bot]) -> None:
        await ctx.send("pong")

    async with running_bot(bot):
        await fake.send_message(CHANNEL, ALICE, "!ping")
        sent = await fake.wait_for(lambda: fake.sent_messages(CHANNEL))
        assert sent[0].content == "pong"


async def test_typing_and_file_upload(fake: FakeDiscord) -> None:
    bot = make_bot()

    @bot.command()
    async def file(ctx: commands.Context[commands.Bot]) -> None:
        async with ctx.typing():
            await ctx.send("here", file=discord.File(io.BytesIO(b"hello-bytes"), "note.txt"))

    async with running_bot(bot):
        await fake.send_message(CHANNEL, ALICE, "!file")
        sent = (await fake.wait_for(lambda: fake.sent_messages(CHANNEL)))[0]
        assert fake.typing_calls == [CHANNEL]
        assert sent.content == "here"
        assert [(f.filename, f.data) for f in sent.files] == [("note.txt", b"hello-bytes")]
        attachment = sent.attachments[0]
        assert attachment["filename"] == "note.txt" and attachment["size"] == 11
        assert fake.attachment_bytes(attachment["id"]) == b"hello-bytes"
        async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as resp:
            assert await resp.read() == b"hello-bytes"


async def test_dm_user_edit_react_delete_and_history(fake: FakeDiscord) -> None:
    bot = make_bot()
    async with running_bot(bot):
        user = await bot.fetch_user(ALICE)
        message = await user.send("private hello")
        dm = fake.dm_channels[ALICE]
        assert dm["type"] == 1 and dm["recipients"][0]["id"] == str(ALICE)
        dm_id = int(dm["id"])
        sent = fake.sent_messages(dm_id)[0]
        assert sent.content == "private hello" and message.id == sent.id

        await message.edit(content="edited")
        assert sent.content == "edited" and sent.edits[0]["content"] == "edited"
        await message.add_reaction("\N{THUMBS UP SIGN}")
        assert fake.reactions == [(dm_id, message.id, "\N{THUMBS UP SIGN}")]

        channel = bot.get_channel(CHANNEL)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("one")
        await channel.send("two")
        history = [m.content async for m in channel.history(limit=10)]
        assert history == ["two", "one"]
        assert (await channel.fetch_message(first.id)).content == "one"

        await message.delete()
        assert sent.deleted
        with pytest.raises(discord.NotFound):
            await message.channel.fetch_message(message.id)


async def test_rest_errors_and_rate_limit(fake: FakeDiscord) -> None:
    bot = make_bot()
    async with running_bot(bot):
        channel = bot.get_channel(CHANNEL)
        assert isinstance(channel, discord.TextChannel)

        with pytest.raises(discord.HTTPException) as info:
            await channel.send("x" * 2001)
        assert info.value.status == 400 and info.value.code == 50035
        assert "Must be 2000 or fewer in length." in info.value.text

        fake.fail_next("POST", rf"/channels/{CHANNEL}/messages$", status=429)
        message = await channel.send("after rate limit")
        assert message.content == "after rate limit"
        posts = fake.requests_to("POST", rf"/channels/{CHANNEL}/messages$")
        assert [r.status for r in posts] == [400, 429, 200]

        fake.fail_next("*", r"/channels/", status=403, body={"message": "Nope", "code": 50013})
        with pytest.raises(discord.Forbidden):
            await channel.send("forbidden")

        with pytest.raises(discord.NotFound):
            await bot.http.request(discord.http.Route("GET", "/nope/{x}", x=1))
        assert [r.path for r in fake.unknown_requests] == ["/nope/1"]


# ------------------------------------------------------------------ application commands


async def test_app_commands_sync_and_interactions(fake: FakeDiscord) -> None:
    bot = make_bot()
    calls: list[tuple[str, str | None]] = []

    @bot.tree.command(description="Echo text back")
    @app_commands.describe(text="what to echo")
    async def echo(interaction: discord.Interaction, text: str) -> None:
        calls.append(("echo", text))
        await interaction.response.send_message(f"echo: {text}", ephemeral=True)
        await interaction.followup.send("followup")

    @bot.tree.command(description="Guild only", guild=discord.Object(GUILD))
    async def whois(interaction: discord.Interaction, user: discord.Member) -> None:
        calls.append(("whois", user.name))
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content=f"that is {user.display_name}")

    async with running_bot(bot):
        global_cmds = await bot.tree.sync()
        guild_cmds = await bot.tree.sync(guild=discord.Object(GUILD))
        assert [c.name for c in global_cmds] == ["echo"]
        assert [c.name for c in guild_cmds] == ["whois"]
        assert global_cmds[0].id == fake.command_id("echo")
        assert guild_cmds[0].id == fake.command_id("whois", GUILD)
        assert fake.synced_commands[None][0]["options"][0]["name"] == "text"
        # re-syncing keeps ids stable, like Discord does
        assert (await bot.tree.sync())[0].id == global_cmds[0].id

        await fake.send_interaction("echo", ALICE, options={"text": "hi"}, guild_id=GUILD)
        responses = await fake.wait_for(
            lambda: len(fake.interaction_responses) >= 2 and fake.interaction_responses
        )
        callback, followup = responses
        assert callback.kind == "callback" and callback.type == 4
        assert callback.content == "echo: hi" and callback.flags == 64 and callback.ephemeral
        assert followup.kind == "followup" and followup.content == "followup"
        assert not followup.ephemeral and followup.message is not None
        assert followup.message["channel_id"] == str(CHANNEL)

        # DM interaction with the global command
        payload = await fake.send_interaction("echo", ALICE, options={"text": "dm"})
        assert "guild_id" not in payload and payload["context"] == 1
        await fake.wait_for(lambda: len(fake.interaction_responses) >= 4)

        # guild command with a resolved member option, deferred then edited
        await fake.send_interaction("whois", ALICE, options={"user": 43}, guild_id=GUILD)
        edit = await fake.wait_for(
            lambda: [r for r in fake.interaction_responses if r.kind == "edit_original"]
        )
        deferred = fake.interaction_responses[-2]
        assert deferred.type == 5
        assert edit[0].message is not None and edit[0].message["content"] == "that is bob"
        assert edit[0].message["flags"] & 128 == 0  # no longer "thinking"

    assert calls == [("echo", "hi"), ("echo", "dm"), ("whois", "bob")]
    assert fake.errors == []


async def test_interaction_file_response_and_original(fake: FakeDiscord) -> None:
    bot = make_bot()
    originals: list[discord.InteractionMessage] = []

    @bot.tree.command(description="Upload a file")
    async def upload(interaction: discord.Interaction) -> None:
        data = io.BytesIO(b"persona-export")
        await interaction.response.send_message("file", file=discord.File(data, "p.json"))
        originals.append(await interaction.original_response())
        await interaction.delete_original_response()

    async with running_bot(bot):
        await bot.tree.sync()
        await fake.send_interaction("upload", ALICE, channel_id=CHANNEL)
        await fake.wait_for(lambda: len(fake.interaction_responses) == 2)
    callback, delete = fake.interaction_responses
    assert callback.type == 4 and callback.content == "file" and not callback.ephemeral
    assert [(f.filename, f.data) for f in callback.files] == [("p.json", b"persona-export")]
    assert callback.message is not None
    assert callback.message["attachments"][0]["filename"] == "p.json"
    assert originals[0].id == int(callback.message["id"])
    assert originals[0].attachments[0].filename == "p.json"
    assert delete.kind == "delete_original"
    assert fake.message(int(callback.message["id"])) is None


async def test_interaction_error_responses(fake: FakeDiscord) -> None:
    bot = make_bot()
    errors: list[discord.HTTPException] = []

    @bot.tree.command(description="Followup that is too long")
    async def toolong(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("one")
        try:
            await interaction.followup.send("x" * 2001)
        except discord.HTTPException as exc:
            errors.append(exc)

    async with running_bot(bot):
        await bot.tree.sync()
        payload = await fake.send_interaction("toolong", ALICE, guild_id=GUILD)
        await fake.wait_for(lambda: errors)
        assert errors[0].status == 400 and errors[0].code == 50035

        # discord.py guards double responses itself; the fake rejects them like Discord.
        url = f"{fake.api_base}/interactions/{payload['id']}/{payload['token']}/callback"
        async with aiohttp.ClientSession() as session:
            body = {"type": 4, "data": {"content": "again"}}
            async with session.post(url, json=body) as resp:
                assert resp.status == 400 and (await resp.json())["code"] == 40060
            async with session.post(url.replace(payload["token"], "bad"), json=body) as resp:
                assert resp.status == 404 and (await resp.json())["code"] == 10062

        with pytest.raises(LookupError):
            await fake.send_interaction("missing", ALICE)


# ------------------------------------------------------------------ reconnects / sharding


async def test_forced_disconnect_resumes_and_replays(fake: FakeDiscord) -> None:
    bot = make_bot()
    add_reply_listener(bot)
    resumed = event_flag(bot, "on_resumed")

    async with running_bot(bot):
        await fake.disconnect_all(code=4000)
        # sent while the bot is disconnected: buffered and replayed on RESUME
        await fake.send_message(CHANNEL, ALICE, "hello")
        await asyncio.wait_for(resumed.wait(), 5)
        assert len(fake.resumes) == 1 and len(fake.identifies) == 1
        sent = await fake.wait_for(lambda: fake.sent_messages(CHANNEL))
        assert sent[0].content == "hi alice"

        await fake.request_reconnect()  # op 7
        await fake.wait_for(lambda: len(fake.resumes) == 2)
        await fake.send_message(CHANNEL, ALICE, "reply me")
        await fake.wait_for(lambda: len(fake.sent_messages(CHANNEL)) == 2)
        assert fake.connections == 3


async def test_invalid_session_reidentifies(fake: FakeDiscord) -> None:
    bot = make_bot()
    add_reply_listener(bot)
    async with running_bot(bot):
        await fake.invalidate_sessions(resumable=False)
        await fake.wait_for(lambda: len(fake.identifies) == 2 and fake.connected_shards)
        await fake.send_message(CHANNEL, ALICE, "hello")
        await fake.wait_for(lambda: fake.sent_messages(CHANNEL))


async def test_autosharded_bot_connects_both_shards() -> None:
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
            bot = make_bot(sharded=True)
            seen = add_reply_listener(bot)
            async with running_bot(bot):
                assert isinstance(bot, commands.AutoShardedBot)
                assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
                assert fd.connected_shards == [(0, 2), (1, 2)]
                assert sorted(i["shard"][0] for i in fd.identifies) == [0, 1]
                first, second = bot.get_guild(GUILD), bot.get_guild(SHARD1_GUILD)
                assert first is not None and first.shard_id == 0
                assert second is not None and second.shard_id == 1

                await fd.send_message(SHARD1_CHANNEL, ALICE, "hello")
                await fd.send_message(CHANNEL, ALICE, "hello")
                await fd.wait_for(lambda: len(fd.sent_messages()) == 2)
                assert sorted(m.guild.shard_id for m in seen if m.guild) == [0, 1]
