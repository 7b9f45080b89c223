"""Loopback fake of the Discord gateway (websocket) and REST API for the real discord.py.

The fake is an ``aiohttp.web`` server on 127.0.0.1 (ephemeral port) that speaks enough of the
Discord v10 protocol for ``discord.Client`` / ``commands.Bot`` / ``AutoShardedBot`` to log in,
connect, shard, resume, receive messages and interactions, and call the REST routes a chat bot
uses.  Point discord.py at it with :func:`patched_discord`::

    async with FakeDiscord() as fake:
        with patched_discord(fake):
            bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.1)
            async with running_bot(bot):
                await fake.send_message(5001, 42, "hello")
                sent = await fake.wait_for(lambda: fake.sent_messages(5001))

A worker subprocess (e.g. ``aipersona run``) uses the fake when started with
``env={**os.environ, **subprocess_env(fake)}`` (a ``sitecustomize`` points its discord.py at it).

Behaviour that mirrors real Discord (and that adapters must cope with):

* the bot's own messages are echoed back as ``MESSAGE_CREATE`` (``echo_bot_messages``);
* guild messages arrive with empty content unless the MESSAGE_CONTENT intent was identified
  (DMs, messages mentioning the bot and the bot's own messages keep their content);
* events are only delivered for identified intents (GUILD_MESSAGES / DIRECT_MESSAGES);
* guild events go to the shard ``(guild_id >> 22) % num_shards``; DMs go to shard 0;
* content over 2000 characters is rejected with the 50035 "Invalid Form Body" error;
* a second response to the same interaction fails with 40060, unknown interactions with 10062.

:class:`FakeDiscord` (``server``) is composed of one mixin per concern on the shared state of
``state``: ``gateway`` (websocket protocol, sessions, shards, event dispatch), ``messages``
(message objects and incoming user messages), ``rest`` (REST plumbing and user, application,
gateway and guild routes), ``channels`` (channel and message routes), ``commands`` (application
commands), ``interactions`` (incoming interactions, callbacks, followups) and ``faults``.
``patching`` points discord.py at the fake; ``constants``, ``models``, ``connection`` and
``responses`` hold the protocol numbers, records, websocket connections and error bodies.
"""

from .constants import DEFAULT_EVERYONE_PERMISSIONS, EPHEMERAL, FAKE_TOKEN
from .models import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    InteractionResponse,
    RecordedFile,
    RecordedRequest,
    SentMessage,
)
from .patching import patched_discord, point_discord_at, running_bot, subprocess_env
from .server import FakeDiscord

__all__ = [
    "DEFAULT_EVERYONE_PERMISSIONS",
    "EPHEMERAL",
    "FAKE_TOKEN",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "InteractionResponse",
    "RecordedFile",
    "RecordedRequest",
    "SentMessage",
    "patched_discord",
    "point_discord_at",
    "running_bot",
    "subprocess_env",
]
