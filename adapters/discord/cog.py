"""PersonaCog: the persona chat and persona commands as a discord.py Cog.

Embed it in an existing bot with ``await bot.add_cog(PersonaCog(core))``. It only adds an
``on_message`` listener (the host's own ``on_message`` and command processing are left
alone), slash commands and prefix commands. Commands whose names the host already uses are
skipped (logged), so adding the cog never breaks the host's commands.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import MISSING

from aipersona.core import FieldValidationError, Identity, PersonaCore

from ..common import (
    ONLY_TEXT,
    RateLimiter,
    any_in,
    persona_text,
    rate_limited_text,
    too_long_text,
)
from .sending import NO_MENTIONS, StreamingReply, chunks_of, send_text, typing
from .settings import DiscordSettings

log = logging.getLogger(__name__)

PLATFORM = "discord"
EXPORT_FILENAME = "aipersona-export.json"
_CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def identity_of(user: discord.abc.User) -> Identity:
    """The core identity of a Discord user: always by id, never by name."""
    return Identity(PLATFORM, str(user.id), user.display_name)


def help_text(prefix: str) -> str:
    return (
        "I remember what you tell me about yourself (a persona) to personalize my answers.\n"
        "Talk to me in a DM, mention me in a channel, or reply to one of my messages.\n"
        "Commands (slash commands answer only you; prefix commands answer by DM):\n"
        f"  /persona or {prefix}persona - show what I know about you\n"
        f"  /forget FIELD or {prefix}forget FIELD - forget one field, e.g. Demographics.Age\n"
        f"  /forget all or {prefix}forget all - delete everything I stored about you "
        "(persona, history, messages)\n"
        f"  /export or {prefix}export - get all your data as a JSON file\n"
        f"  /end or {prefix}end - end the current conversation session now\n"
        f"  /help or {prefix}help - this text"
    )


def _channel_ids(channel: object) -> list[object]:
    """The channel's id, plus its parent's for threads (settings may name either)."""
    ids: list[object] = [getattr(channel, "id", None)]
    parent = getattr(channel, "parent_id", None)
    if parent is not None:
        ids.append(parent)
    return ids


@dataclass
class Answer:
    """What a persona command answers: text and maybe an export file."""

    text: str
    export: dict[str, Any] | None = None

    def file(self) -> discord.File | None:
        if self.export is None:
            return None
        data = json.dumps(self.export, ensure_ascii=False, indent=2).encode()
        return discord.File(io.BytesIO(data), filename=EXPORT_FILENAME)


class PersonaCog(commands.Cog, name="Persona"):
    """Persona chat (DMs, mentions, replies, reply channels) and the persona commands."""

    def __init__(self, core: PersonaCore, settings: DiscordSettings | None = None) -> None:
        self.core = core
        self.settings = settings or DiscordSettings.from_config(core.config)
        self.limiter = RateLimiter(self.settings.rate_limit_per_minute)
        self.bot: commands.Bot | None = None
        self._notified: dict[str, float] = {}  # user id -> time a rate-limit notice was sent

    # -- embedding --------------------------------------------------------------------------

    async def _inject(
        self,
        bot: commands.Bot,  # type: ignore[override]
        override: bool,
        guild: discord.abc.Snowflake | None,
        guilds: Sequence[discord.abc.Snowflake],
    ) -> PersonaCog:
        """Remember the bot and skip commands whose names the host bot already uses."""
        self.bot = bot
        mine = self.__cog_commands__
        keep = [c for c in mine if bot.get_command(c.name) is None]
        if len(keep) != len(mine):
            skipped = sorted({c.name for c in mine} - {c.name for c in keep})
            log.warning("discord: host bot already has prefix command(s) %s; skipped", skipped)
            self.__cog_commands__ = tuple(keep)  # type: ignore[misc]
        if not override:
            apps = self.__cog_app_commands__
            scopes: list[Any] = [None]
            if guilds is not MISSING and guilds:
                scopes = list(guilds)
            elif guild is not MISSING and guild is not None:
                scopes = [guild]
            taken = {c.name for scope in scopes for c in bot.tree.get_commands(guild=scope)}
            keep_apps = [c for c in apps if c.name not in taken]
            if len(keep_apps) != len(apps):
                skipped = sorted({c.name for c in apps} - {c.name for c in keep_apps})
                log.warning("discord: host bot already has slash command(s) %s; skipped", skipped)
                self.__cog_app_commands__ = keep_apps
        return await super()._inject(bot, override, guild, guilds)  # type: ignore[arg-type]

    # -- chat -------------------------------------------------------------------------------

    @commands.Cog.listener("on_message")
    async def on_persona_message(self, message: discord.Message) -> None:
        text = await self._chat_text(message)
        if text is None:
            return
        try:
            if text or not (message.attachments or message.stickers):
                await self._chat(message, text)
            else:  # a file, image, voice message or sticker without words
                await self._only_text(message)
        except Exception:
            log.exception("discord: answering message %s failed", message.id)
            await send_text(message.channel, "Sorry, something went wrong. Please try again.")

    async def _chat_text(self, message: discord.Message) -> str | None:
        """The text to answer ('' if it has none, e.g. only an image), or None when the bot
        should stay silent."""
        bot = self.bot
        me = bot.user if bot is not None else None
        author = message.author
        if me is None or author.bot or message.webhook_id is not None:
            return None
        if message.type not in _CHAT_TYPES or not self._allowed(message):
            return None
        mentioned = message.guild is None or me in message.mentions
        if not (mentioned or self._replies_to_me(message, me.id)):
            if not any_in(_channel_ids(message.channel), self.settings.reply_channels):
                return None
        if await self._is_command(message):
            return None  # the bot's command processing answers it
        return self._clean(message, me.id)

    def _allowed(self, message: discord.Message) -> bool:
        s = self.settings
        if not s.user_allowed(message.author.id):
            return False
        if message.guild is None:
            return s.allow_dms
        if not s.guild_allowed(message.guild.id):
            return False
        return not s.allowed_chats or any_in(_channel_ids(message.channel), s.allowed_chats)

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
        text = re.sub(rf"<@!?{my_id}>", " ", message.content)
        for user in message.mentions:
            if user.id != my_id:
                name = f"@{user.display_name}"
                text = re.sub(rf"<@!?{user.id}>", lambda _, name=name: name, text)
        return re.sub(r"[ \t]{2,}", " ", text).strip()

    async def _within_rate(self, message: discord.Message) -> bool:
        """Count a chat event of the author; if over the limit, say so (once per wait)."""
        user_key = str(message.author.id)
        wait = self.limiter.hit(user_key)
        if wait:
            await self._rate_limit_notice(message, user_key, wait)
            return False
        return True

    async def _only_text(self, message: discord.Message) -> None:
        """One notice per message that has attachments or stickers but no text (the text of a
        message with attachments is answered like any other); rate-limited like a chat turn."""
        if await self._within_rate(message):
            reference = message if message.guild is not None else None
            await send_text(message.channel, ONLY_TEXT, reference)

    async def _chat(self, message: discord.Message, text: str) -> None:
        s = self.settings
        channel = message.channel
        reference = message if message.guild is not None else None
        if not await self._within_rate(message):
            return
        if len(text) > s.max_input_chars:
            await send_text(channel, too_long_text(len(text), s.max_input_chars), reference)
            return
        identity = identity_of(message.author)
        chat_id = str(channel.id)
        if not s.stream_edits:
            async with typing(channel, s.typing):
                reply = await self.core.respond(identity, chat_id, text)
            await send_text(channel, reply.text, reference)
            return
        stream = StreamingReply(channel, reference, s.stream_edit_interval)
        async with typing(channel, s.typing):
            reply = await self.core.respond(identity, chat_id, text, on_delta=stream.feed)
        final = reply.text
        if not reply.ok and stream.text.strip():
            final = f"{stream.text.strip()}\n\n{reply.text}"  # keep the partial answer visible
        await stream.finish(final)

    async def _rate_limit_notice(self, message: discord.Message, key: str, wait: float) -> None:
        """Tell the user once per wait, not on every message (that would spam the channel)."""
        now = time.monotonic()
        if self._notified.get(key, 0.0) > now:
            return
        self._notified[key] = now + wait
        if len(self._notified) > 10_000:
            self._notified = {k: v for k, v in self._notified.items() if v > now}
        reference = message if message.guild is not None else None
        await send_text(message.channel, rate_limited_text(wait), reference)

    # -- persona commands (shared by slash and prefix forms) ---------------------------------

    async def _persona(self, user: discord.abc.User) -> Answer:
        return Answer(persona_text(await self.core.persona(identity_of(user))))

    async def _forget(self, user: discord.abc.User, field: str) -> Answer:
        field = field.strip()
        prefix = self.settings.command_prefix
        if not field:
            return Answer(f"Tell me what to forget: /forget FIELD or {prefix}forget all.")
        identity = identity_of(user)
        if field.casefold() == "all":
            if await self.core.forget_all(identity):
                return Answer("Done: I deleted everything I stored about you.")
            return Answer("I had nothing stored about you.")
        try:
            done = await self.core.forget_field(identity, field)
        except FieldValidationError as exc:
            return Answer(f"I can't forget that: {exc}. Use /persona to see the field names.")
        return Answer(f"Forgot {field}." if done else f"I had nothing stored for {field}.")

    async def _export(self, user: discord.abc.User) -> Answer:
        """The only command counted by the rate limiter: it reads everything stored."""
        wait = self.limiter.hit(str(user.id))
        if wait:
            return Answer(rate_limited_text(wait))
        data = await self.core.export(identity_of(user))
        if data is None:
            return Answer("I have no data about you.")
        return Answer("All the data I keep about you:", export=data)

    async def _end(self, user: discord.abc.User, chat_id: object) -> Answer:
        if await self.core.end_session(identity_of(user), str(chat_id)) is None:
            return Answer("There is no open conversation here.")
        return Answer("Conversation ended. I'll update what I know about you in the background.")

    # -- slash commands (answered ephemerally: only the user sees them) ----------------------

    @app_commands.command(
        name="persona", description="Show what I know about you (only you see it)"
    )
    async def persona_slash(self, interaction: discord.Interaction) -> None:
        await self._respond(interaction, await self._persona(interaction.user))

    @app_commands.command(name="forget", description="Forget one field of your persona, or all")
    @app_commands.describe(field="A field such as Demographics.Age, or 'all' to delete everything")
    async def forget_slash(self, interaction: discord.Interaction, field: str) -> None:
        await self._defer(interaction)
        await self._respond(interaction, await self._forget(interaction.user, field))

    @forget_slash.autocomplete("field")
    async def _forget_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        needle = current.casefold()
        names = ["all", *(spec.name for spec in self.core.schema.ordered())]
        return [app_commands.Choice(name=n, value=n) for n in names if needle in n.casefold()][:25]

    @app_commands.command(name="export", description="Get all your data as a JSON file")
    async def export_slash(self, interaction: discord.Interaction) -> None:
        await self._defer(interaction)
        await self._respond(interaction, await self._export(interaction.user))

    @app_commands.command(name="end", description="End the current conversation session now")
    async def end_slash(self, interaction: discord.Interaction) -> None:
        await self._defer(interaction)
        await self._respond(interaction, await self._end(interaction.user, interaction.channel_id))

    @app_commands.command(name="help", description="What I do and my commands")
    async def help_slash(self, interaction: discord.Interaction) -> None:
        await self._respond(interaction, Answer(help_text(self.settings.command_prefix)))

    @staticmethod
    async def _defer(interaction: discord.Interaction) -> None:
        """Acknowledge now: the command may wait for a running chat turn (3 s limit)."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as exc:
            log.warning("discord: deferring /%s failed: %s", _command_name(interaction), exc)

    @staticmethod
    async def _respond(interaction: discord.Interaction, answer: Answer) -> None:
        try:
            for i, chunk in enumerate(chunks_of(answer.text)):
                file = answer.file() if i == 0 else None
                extra: dict[str, Any] = {"file": file} if file is not None else {}
                if interaction.response.is_done():
                    await interaction.followup.send(
                        chunk, ephemeral=True, allowed_mentions=NO_MENTIONS, **extra
                    )
                else:
                    await interaction.response.send_message(
                        chunk, ephemeral=True, allowed_mentions=NO_MENTIONS, **extra
                    )
        except discord.HTTPException as exc:
            log.warning("discord: answering /%s failed: %s", _command_name(interaction), exc)

    # -- prefix commands (answered by DM when used in a guild) -------------------------------

    @commands.command(name="persona", help="Show what I know about you (sent by DM)")
    async def persona_prefix(self, ctx: commands.Context[Any]) -> None:
        await self._reply_private(ctx, await self._persona(ctx.author))

    @commands.command(name="forget", help="Forget one field (e.g. Demographics.Age) or 'all'")
    async def forget_prefix(self, ctx: commands.Context[Any], *, field: str = "") -> None:
        await self._reply_private(ctx, await self._forget(ctx.author, field))

    @commands.command(name="export", help="Get all your data as a JSON file (sent by DM)")
    async def export_prefix(self, ctx: commands.Context[Any]) -> None:
        await self._reply_private(ctx, await self._export(ctx.author))

    @commands.command(name="end", help="End the current conversation session now")
    async def end_prefix(self, ctx: commands.Context[Any]) -> None:
        await self._reply_private(ctx, await self._end(ctx.author, ctx.channel.id))

    @commands.command(name="help", help="What I do and my commands")
    async def help_prefix(self, ctx: commands.Context[Any]) -> None:
        await self._reply_private(ctx, Answer(help_text(ctx.clean_prefix or "!")))

    async def _reply_private(self, ctx: commands.Context[Any], answer: Answer) -> None:
        """Answer in the DM channel; from a guild, send it by DM and never in the channel."""
        in_guild = ctx.guild is not None
        target: discord.abc.Messageable = ctx.author if in_guild else ctx.channel
        try:
            for i, chunk in enumerate(chunks_of(answer.text)):
                file = answer.file() if i == 0 else None
                if file is not None:
                    await target.send(chunk, file=file, allowed_mentions=NO_MENTIONS)
                else:
                    await target.send(chunk, allowed_mentions=NO_MENTIONS)
        except discord.Forbidden:
            if not in_guild:
                log.warning("discord: cannot answer %s in a DM", ctx.command)
                return
            notice = (
                f"{ctx.author.mention} I couldn't send you a DM (your DMs are closed for me). "
                f"Use the slash command /{ctx.command} instead; only you will see the answer."
            )
            try:
                await ctx.send(notice, allowed_mentions=discord.AllowedMentions(users=True))
            except discord.HTTPException as exc:
                log.warning("discord: DM-closed notice failed: %s", exc)
        except discord.HTTPException as exc:
            log.warning("discord: answering %s%s failed: %s", ctx.prefix, ctx.command, exc)

    async def cog_command_error(
        self, ctx: commands.Context[Any], error: commands.CommandError
    ) -> None:
        if isinstance(error, commands.UserInputError):
            await self._reply_private(ctx, Answer(f"{error} See {ctx.clean_prefix}help."))
            return
        log.error("discord: command %s failed", ctx.command, exc_info=error)
        await self._reply_private(ctx, Answer("Sorry, something went wrong. Please try again."))


def _command_name(interaction: discord.Interaction) -> str:
    command = interaction.command
    return command.name if command is not None else "?"
