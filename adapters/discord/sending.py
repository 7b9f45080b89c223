"""Posting to Discord: 2000-character chunks, replies and the typing indicator.

Every Discord call here logs ``discord.HTTPException`` instead of raising, so a failed send
never crashes the bot (the user's message and the reply are already stored by the core).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import discord

from ..kit import split_message

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
NO_MENTIONS = discord.AllowedMentions.none()


def chunks_of(text: str) -> list[str]:
    """``text`` split for Discord (code fences balanced per chunk); never empty."""
    return split_message(text, MESSAGE_LIMIT) or ["…"]


def _where(channel: discord.abc.Messageable) -> str:
    return str(getattr(channel, "id", "?"))


async def send_chunk(
    channel: discord.abc.Messageable,
    text: str,
    reference: discord.Message | None = None,
) -> discord.Message | None:
    """Send one chunk (as a reply to ``reference`` if given); None if Discord refused."""
    try:
        if reference is not None:
            return await channel.send(
                text,
                reference=reference.to_reference(fail_if_not_exists=False),
                mention_author=False,
                allowed_mentions=NO_MENTIONS,
            )
        return await channel.send(text, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as exc:
        log.warning("discord: sending to channel %s failed: %s", _where(channel), exc)
        return None


@contextlib.asynccontextmanager
async def typing(channel: discord.abc.Messageable, enabled: bool = True) -> AsyncIterator[None]:
    """``channel.typing()`` that never fails the turn (e.g. without permission to type)."""
    if not enabled:
        yield
        return
    indicator = channel.typing()
    try:
        await indicator.__aenter__()
    except discord.HTTPException as exc:
        log.debug("discord: typing indicator failed in %s: %s", _where(channel), exc)
        yield
        return
    try:
        yield
    finally:
        await indicator.__aexit__(None, None, None)
