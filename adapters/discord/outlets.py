"""The kit's outlets on Discord: replies posted into a channel (quoting the message in guilds)
and command answers, ephemeral for slash commands and by DM or in place for prefix ones."""

from __future__ import annotations

import io
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

import discord
from discord.ext import commands

from aipersona.adapters.kit import Answer, texts

from .sending import NO_MENTIONS, chunks_of, send_chunk, typing

log = logging.getLogger(__name__)


class ChannelOutlet:
    """Replies to one message (kit.ReplyOutlet)."""

    delivery_errors: tuple[type[Exception], ...] = (discord.HTTPException,)

    def __init__(self, message: discord.Message) -> None:
        self.channel = message.channel
        self.author = message.author
        self.reference = message if message.guild is not None else None

    def chunks(self, text: str, *, formatted: bool) -> list[str]:
        return chunks_of(text)  # Discord renders the Markdown itself

    async def send(
        self, chunk: str, *, first: bool, formatted: bool, final: bool
    ) -> discord.Message | None:
        return await send_chunk(self.channel, chunk, self.reference if first else None)

    async def edit(
        self, sent: discord.Message, chunk: str, *, formatted: bool, final: bool
    ) -> None:
        await sent.edit(content=chunk, allowed_mentions=NO_MENTIONS)

    async def delete(self, sent: discord.Message) -> None:
        await sent.delete()

    def typing(self) -> AbstractAsyncContextManager[None]:
        return typing(self.channel)

    async def send_private(self, text: str) -> bool:
        """A DM to the author; False if their DMs are closed to the bot."""
        try:
            for chunk in chunks_of(text):
                await self.author.send(chunk, allowed_mentions=NO_MENTIONS)
        except discord.Forbidden:
            return False
        return True


def _file(answer: Answer, index: int) -> dict[str, Any]:
    """The ``file=`` of the first message of an answer that has one."""
    if answer.file is None or index:
        return {}
    return {"file": discord.File(io.BytesIO(answer.file.data), filename=answer.file.name)}


class CommandOutlet:
    """Answers to one hybrid command (kit.AnswerOutlet): a slash command is answered
    ephemerally (only the user sees it); a prefix command in place, or by DM."""

    delivery_errors: tuple[type[Exception], ...] = (discord.HTTPException,)

    def __init__(self, ctx: commands.Context[Any]) -> None:
        self.ctx = ctx

    @property
    def must_answer(self) -> bool:
        return self.ctx.interaction is not None

    async def acknowledge(self) -> None:
        """A slash command is deferred at once: its answer may wait for a running turn, and
        Discord wants an acknowledgement within 3 s."""
        try:
            await self.ctx.defer(ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("discord: deferring /%s failed: %s", self.ctx.command, exc)

    async def answer(self, answer: Answer, *, privately: bool) -> bool:
        ctx = self.ctx
        if ctx.interaction is not None:  # ephemeral: already private
            for i, chunk in enumerate(chunks_of(answer.text)):
                extra = _file(answer, i)
                await ctx.send(chunk, ephemeral=True, allowed_mentions=NO_MENTIONS, **extra)
            return True
        here = not privately and ctx.guild is not None
        target: discord.abc.Messageable = ctx.author if privately else ctx.channel
        try:
            for i, chunk in enumerate(chunks_of(answer.text)):
                extra = _file(answer, i)
                if here and i == 0:
                    extra["reference"] = ctx.message.to_reference(fail_if_not_exists=False)
                    extra["mention_author"] = False
                # only the author can be pinged (the DM-closed notice mentions them)
                mentions = discord.AllowedMentions(everyone=False, roles=False, users=[ctx.author])
                await target.send(chunk, allowed_mentions=mentions, **extra)
        except discord.Forbidden:
            if not privately:
                raise
            return False
        return True

    def private_closed(self, command: str) -> str:
        return texts.dm_closed(self.ctx.author.mention, command)
