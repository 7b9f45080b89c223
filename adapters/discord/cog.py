"""PersonaCog: Discord messages and commands translated for the adapter kit.

Embed it in an existing bot with ``await bot.add_cog(PersonaCog(core))``. It adds an
``on_message`` listener (the host's own ``on_message`` and command processing are left
alone) and one hybrid command per spec of the kit's command table: one definition serves
the slash form (answered ephemerally: ``ctx.interaction`` is set) and the prefix form
(answered in place, or by DM when it shows persona data). Commands whose names the host
already uses are skipped (logged), so adding the cog never breaks the host's commands.

What is Discord's is here: who is speaking, whether a guild message is meant for the bot
(a mention or a reply to it), prefix commands versus chat, threads, ``allowed_guilds`` and
``allow_dms``. Everything else (allow-lists, rate limit, notices, the commands' answers,
every sentence) is the kit's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from discord.ext.commands.bot import BotBase

from aipersona.adapters.kit import (
    COMMANDS,
    EXPORT_FILENAME,
    Answer,
    Bridge,
    CommandSpec,
    Incoming,
    Usage,
    command_line,
    texts,
)
from aipersona.core import Identity, PersonaCore

from .outlets import ChannelOutlet, CommandOutlet
from .sending import MESSAGE_LIMIT
from .settings import DiscordSettings

log = logging.getLogger(__name__)

PLATFORM = "discord"
_CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)
__all__ = ["EXPORT_FILENAME", "PersonaCog", "identity_of"]


def identity_of(user: discord.abc.User) -> Identity:
    """The core identity of a Discord user: always by id, never by name."""
    return Identity(PLATFORM, str(user.id), user.display_name)


def discord_usage(prefix: str) -> Usage:
    """Help lines show both forms: ``/forget FIELD or !forget FIELD``."""

    def usage(spec: CommandSpec) -> str:
        args = spec.usage_arguments
        return f"/{spec.name}{args} or {prefix}{spec.name}{args}"

    return usage


def _aliases(channel: object, author: discord.abc.User, private: bool) -> tuple[str, ...]:
    """Other ids the chat goes by in the settings: a thread's parent channel; a DM's user."""
    if private:
        return (str(author.id),)
    parent = getattr(channel, "parent_id", None)
    return (str(parent),) if parent is not None else ()


# -- the command table as hybrid commands -------------------------------------------------


class _TableCommands:
    """One hybrid command per spec of the kit's table (filled in below; discord.py collects
    the commands of every class in a cog's MRO)."""


def _as_method(func: Any, name: str) -> Any:
    """Name a generated function like a method of ``_TableCommands``: discord.py tells
    methods (whose first parameter is the cog) from functions by the qualified name."""
    func.__name__ = name
    func.__qualname__ = f"{_TableCommands.__qualname__}.{name}"
    return func


Callback = Callable[..., Coroutine[Any, Any, None]]


def _callback(spec: CommandSpec) -> Callback:
    """The command's callback: one parameter per argument, the last one keyword-only (the
    prefix form gives it the rest of the line). discord.py reads the parameters from the
    signature, so there is one function per number of arguments; the parameters are
    renamed to the arguments' names for the slash form."""
    name = spec.name

    async def run(cog: PersonaCog, ctx: commands.Context[Any], *values: str) -> None:
        await cog.run_command(ctx, name, command_line(values))

    async def none(cog: PersonaCog, ctx: commands.Context[Any]) -> None:
        await run(cog, ctx)

    async def one(cog: PersonaCog, ctx: commands.Context[Any], *, a: str = "") -> None:
        await run(cog, ctx, a)

    async def two(cog: PersonaCog, ctx: commands.Context[Any], a: str = "", *, b: str = "") -> None:
        await run(cog, ctx, a, b)

    async def three(
        cog: PersonaCog, ctx: commands.Context[Any], a: str = "", b: str = "", *, c: str = ""
    ) -> None:
        await run(cog, ctx, a, b, c)

    callbacks: tuple[Callback, ...] = (none, one, two, three)
    if len(spec.arguments) >= len(callbacks):
        raise ValueError(f"/{name}: at most {len(callbacks) - 1} arguments on Discord")
    return _as_method(callbacks[len(spec.arguments)], f"{name}_command")


_PARAMETERS = ("a", "b", "c")  # the callbacks' parameters, in order


def _hybrid(spec: CommandSpec) -> commands.HybridCommand[Any, ..., None]:
    """The spec as a hybrid command calling ``PersonaCog.run_command``: one slash option
    per argument (named, described, with its choices or suggestions); the prefix form
    takes words, the last argument the rest of the line. Every option may be left out
    (as every platform lets a user type the command alone): the kit answers how to use
    the command."""
    params = dict(zip(_PARAMETERS, spec.arguments, strict=False))
    callback = _callback(spec)
    if params:
        choices = {
            p: [app_commands.Choice(name=c, value=c) for c in arg.choices]
            for p, arg in params.items()
            if arg.choices
        }
        if choices:
            callback = app_commands.choices(**choices)(callback)
        callback = app_commands.describe(**{p: arg.description for p, arg in params.items()})(
            callback
        )
        callback = app_commands.rename(**{p: arg.name for p, arg in params.items()})(callback)
    make = commands.hybrid_command(
        name=spec.name, description=spec.description, help=spec.description
    )
    command: commands.HybridCommand[Any, ..., None] = make(callback)
    for p, arg in params.items():
        if arg.suggest is not None:
            command.autocomplete(p)(_as_method(_completer(arg.suggest), f"{spec.name}_{p}"))
    return command


def _completer(
    suggest: Callable[[PersonaCore], list[str]],
) -> Callable[..., Coroutine[Any, Any, list[app_commands.Choice[str]]]]:
    async def complete(
        cog: PersonaCog, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        needle = current.casefold()
        values = [v for v in suggest(cog.core) if needle in v.casefold()]
        return [app_commands.Choice(name=v, value=v) for v in values[:25]]

    return complete


for _spec in COMMANDS:
    setattr(_TableCommands, f"{_spec.name}_command", _hybrid(_spec))


class PersonaCog(_TableCommands, commands.Cog, name="Persona"):
    """Persona chat (DMs, mentions, replies, reply channels) and the persona commands."""

    def __init__(self, core: PersonaCore, settings: DiscordSettings | None = None) -> None:
        self.core = core
        self.settings = settings or DiscordSettings.from_config(core.config)
        usage = discord_usage(self.settings.command_prefix)
        self.bridge = Bridge(core, self.settings, usage=usage, message_limit=MESSAGE_LIMIT)
        self.bot: commands.Bot | commands.AutoShardedBot | None = None

    # -- embedding --------------------------------------------------------------------------

    async def _inject(
        self,
        bot: BotBase,
        override: bool,
        guild: discord.abc.Snowflake | None,
        guilds: Sequence[discord.abc.Snowflake],
    ) -> PersonaCog:
        """Remember the bot and skip commands whose names the host bot already uses (as a
        prefix or a slash command)."""
        if isinstance(bot, commands.Bot | commands.AutoShardedBot):
            self.bot = bot
        mine = list(self.__cog_commands__)
        keep = [c for c in mine if not (bot.get_command(c.name) or bot.tree.get_command(c.name))]
        if len(keep) != len(mine):
            skipped = sorted({c.name for c in mine} - {c.name for c in keep})
            log.warning("discord: host bot already has command(s) %s; skipped", skipped)
            self.__cog_commands__ = keep
        return await super()._inject(bot, override, guild, guilds)

    # -- chat -------------------------------------------------------------------------------

    @commands.Cog.listener("on_message")
    async def on_persona_message(self, message: discord.Message) -> None:
        incoming = await self._incoming(message)
        if incoming is not None:
            await self.bridge.on_message(incoming, ChannelOutlet(message))

    async def _incoming(self, message: discord.Message) -> Incoming | None:
        """The message as the kit's :class:`Incoming`; None for messages that are not a
        person's chat (bots, webhooks, system messages, commands, other guilds)."""
        me = self.bot.user if self.bot is not None else None
        author = message.author
        if me is None or author.bot or message.webhook_id is not None:
            return None
        if message.type not in _CHAT_TYPES or not self._platform_allows(message.guild):
            return None
        if await self._is_command(message):
            return None  # the bot's command processing answers it
        text = self._clean(message, me.id)
        private = message.guild is None
        return Incoming(
            identity_of(author),
            str(message.channel.id),
            text,
            private=private,
            addressed=me in message.mentions or self._replies_to_me(message, me.id),
            media_only=not text and bool(message.attachments or message.stickers),
            aliases=_aliases(message.channel, author, private),
        )

    def _platform_allows(self, guild: discord.Guild | None) -> bool:
        """Discord's own lists: ``allow_dms`` and ``allowed_guilds``."""
        if guild is None:
            return self.settings.allow_dms
        return self.settings.guild_allowed(guild.id)

    @staticmethod
    def _replies_to_me(message: discord.Message, my_id: int) -> bool:
        ref = message.reference
        if ref is None:
            return False
        target = ref.resolved if ref.resolved is not None else ref.cached_message
        return isinstance(target, discord.Message) and target.author.id == my_id

    async def _is_command(self, message: discord.Message) -> bool:
        assert self.bot is not None
        try:
            ctx = await self.bot.get_context(message)
        except Exception:  # a failing host prefix callable must not stop the chat
            log.exception("discord: resolving the command prefix failed")
            return False
        if ctx.valid:
            return True
        if message.guild is None:
            return False  # in a DM "!wow" can only be meant for us: chat
        # In a guild "!unknown" is meant as a command for some bot, not as chat; "@bot hi"
        # (a mention prefix) is chat.
        prefix = ctx.prefix or ""
        return bool(prefix and ctx.invoked_with and not re.fullmatch(r"<@!?\d+>\s*", prefix))

    @staticmethod
    def _clean(message: discord.Message, my_id: int) -> str:
        """The content without the bot's mention; other mentions as ``@name``."""
        text = re.sub(rf"<@!?{my_id}>", " ", message.content)
        for user in message.mentions:
            if user.id != my_id:
                name = f"@{user.display_name}"
                text = text.replace(f"<@{user.id}>", name).replace(f"<@!{user.id}>", name)
        return re.sub(r"[ \t]{2,}", " ", text).strip()

    # -- commands ---------------------------------------------------------------------------

    async def run_command(self, ctx: commands.Context[Any], name: str, arg: str) -> None:
        """Every command of the table, slash or prefix: translated and run by the kit
        (``arg``: the arguments as one line)."""
        if not self._platform_allows(ctx.guild):
            return
        private = ctx.interaction is not None or ctx.guild is None
        incoming = Incoming(
            identity_of(ctx.author),
            str(ctx.channel.id),
            arg.strip(),
            private=private,
            addressed=True,
            aliases=_aliases(ctx.channel, ctx.author, ctx.guild is None),
        )
        await self.bridge.on_command(name, arg, incoming, CommandOutlet(ctx))

    async def cog_command_error(self, ctx: commands.Context[Any], error: Exception) -> None:
        """Errors of discord.py's own (the kit handles the rest): bad input is explained."""
        if isinstance(error, commands.UserInputError):
            text = texts.bad_command_input(error, f"{ctx.clean_prefix}help")
        else:
            log.error("discord: command %s failed", ctx.command, exc_info=error)
            text = texts.SOMETHING_WENT_WRONG
        try:
            await CommandOutlet(ctx).answer(Answer(text, private=False), privately=False)
        except discord.HTTPException as exc:
            log.warning("discord: answering %s failed: %s", ctx.command, exc)
