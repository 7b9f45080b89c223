"""The standalone Discord bot: ``build_bot`` and ``run_discord``.

The bot reads message text, so the privileged **Message Content intent** must be enabled for
the application in the Discord developer portal (Bot → Privileged Gateway Intents); without
it Discord refuses the connection and ``run_discord`` raises ``ConfigError`` saying so.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from discord.ext import commands

from aipersona.core import ConfigError, PersonaCore

from .cog import PersonaCog
from .settings import DiscordSettings

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 10.0

AnyBot = commands.Bot | commands.AutoShardedBot


def bot_intents() -> discord.Intents:
    """Default intents plus message content, DMs and guild messages."""
    intents = discord.Intents.default()
    intents.message_content = True
    intents.dm_messages = True
    intents.guild_messages = True
    return intents


async def sync_app_commands(bot: AnyBot, settings: DiscordSettings) -> None:
    """Register the slash commands: globally, or per guild in ``guild_ids`` (instant)."""
    try:
        if not settings.guild_ids:
            synced = await bot.tree.sync()
            log.info("discord: synced %d global slash command(s)", len(synced))
            return
        for gid in settings.guild_ids:
            guild = discord.Object(id=int(gid))
            bot.tree.copy_global_to(guild=guild)
            synced = await bot.tree.sync(guild=guild)
            log.info("discord: synced %d slash command(s) to guild %s", len(synced), gid)
    except discord.HTTPException as exc:
        log.warning("discord: syncing slash commands failed: %s", exc)


class _PersonaBotMixin:
    """setup_hook: add the PersonaCog, then sync the slash commands if configured."""

    persona_core: PersonaCore
    persona_settings: DiscordSettings

    async def setup_hook(self) -> None:
        bot: Any = self
        await bot.add_cog(PersonaCog(self.persona_core, self.persona_settings))
        bot.add_listener(_on_command_error, "on_command_error")
        if self.persona_settings.sync_commands:
            await sync_app_commands(bot, self.persona_settings)


class PersonaBot(_PersonaBotMixin, commands.Bot):
    """A ``commands.Bot`` running the PersonaCog."""


class ShardedPersonaBot(_PersonaBotMixin, commands.AutoShardedBot):
    """An ``AutoShardedBot`` running the PersonaCog."""


async def _on_command_error(ctx: commands.Context[Any], error: commands.CommandError) -> None:
    """Unknown commands are silent (other bots may share the prefix); the rest is logged."""
    if isinstance(error, commands.CommandNotFound):
        return
    cog = ctx.cog
    if cog is not None and cog.has_error_handler():
        return
    log.error("discord: command %s failed", ctx.command, exc_info=error)


def build_bot(
    core: PersonaCore, settings: DiscordSettings | None = None, **bot_options: Any
) -> PersonaBot | ShardedPersonaBot:
    """A bot ready to ``login``/``connect``; ``bot_options`` go to the discord.py constructor.

    ``settings`` defaults to the ``[discord]`` section of ``core.config``. With
    ``settings.sharded`` it is an ``AutoShardedBot`` (``shard_count`` 0 = as Discord
    recommends); with ``settings.shard_ids`` an ``AutoShardedBot`` running only those of
    ``shard_count`` shards, so that several processes (on several machines, sharing one
    PostgreSQL store) split one bot: Discord sends each guild's events to shard
    ``(guild_id >> 22) % shard_count`` and direct messages to shard 0.
    """
    settings = settings or DiscordSettings.from_config(core.config)
    options: dict[str, Any] = {
        "command_prefix": settings.command_prefix,
        "intents": bot_intents(),
        "help_command": None,  # the cog's help command replaces it
        "allowed_mentions": discord.AllowedMentions.none(),
    }
    cls: type[PersonaBot] | type[ShardedPersonaBot] = PersonaBot
    if settings.autosharded:
        cls = ShardedPersonaBot
        if settings.shard_count:
            options["shard_count"] = settings.shard_count
        if settings.shard_ids:  # this process runs these shards; others run the rest
            options["shard_ids"] = list(settings.shard_ids)
    options.update(bot_options)
    bot = cls(**options)
    bot.persona_core = core
    bot.persona_settings = settings
    return bot


async def run_discord(
    core: PersonaCore,
    settings: DiscordSettings | None = None,
    stop_event: asyncio.Event | None = None,
    **bot_options: Any,
) -> None:
    """Run the bot in the current event loop until ``stop_event`` is set (or forever).

    Logs in with the token from the environment variable ``settings.token_env``, connects
    with automatic reconnects, and closes cleanly on stop or cancellation. Raises
    ``ConfigError`` for a missing or rejected token or a missing privileged intent.
    """
    settings = settings or DiscordSettings.from_config(core.config)
    token = settings.token()
    stop_event = stop_event or asyncio.Event()
    bot = build_bot(core, settings, **bot_options)
    connect: asyncio.Task[None] | None = None
    stop = asyncio.create_task(stop_event.wait(), name="discord-stop")
    try:
        try:
            await bot.login(token)
        except discord.LoginFailure:
            raise ConfigError(
                f"Discord rejected the bot token from ${settings.token_env}"
            ) from None
        connect = asyncio.create_task(bot.connect(reconnect=True), name="discord-connect")
        if settings.shard_ids:
            log.info(
                "discord: connecting shards %s of %d", settings.shard_ids, settings.shard_count
            )
        else:
            log.info("discord: connecting")
        await asyncio.wait({connect, stop}, return_when=asyncio.FIRST_COMPLETED)
        if connect.done():
            _raise_connect_error(connect, settings)
            return
        log.info("discord: stopping")
    finally:
        stop.cancel()
        await _close(bot, connect)


def _raise_connect_error(connect: asyncio.Task[None], settings: DiscordSettings) -> None:
    if connect.cancelled():
        return
    exc = connect.exception()
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        raise ConfigError(
            "Discord refused the connection: enable the Message Content intent for this bot "
            "in the developer portal (Bot → Privileged Gateway Intents)"
        ) from None
    if isinstance(exc, discord.LoginFailure):
        raise ConfigError(f"Discord rejected the bot token from ${settings.token_env}") from None
    if exc is not None:
        raise exc


async def _close(bot: AnyBot, connect: asyncio.Task[None] | None) -> None:
    try:
        await bot.close()
    except Exception as exc:
        log.warning("discord: closing the bot failed: %s", exc)
    if connect is None:
        return
    done, _ = await asyncio.wait({connect}, timeout=_CLOSE_TIMEOUT)
    if not done:
        connect.cancel()
        await asyncio.wait({connect})
    if not connect.cancelled() and connect.exception() is not None:
        log.debug("discord: connect ended with %r", connect.exception())
