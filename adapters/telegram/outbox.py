"""Sending to Telegram: formatted chunks with a plain-text fallback, flood control and the
typing indicator (streaming by edits is the kit's ``EditStream`` on top of this)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from telegram import Bot, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, RetryAfter, TelegramError

from .flood import retries_flood_control
from .format import TELEGRAM_LIMIT, html_chunks, html_to_plain, plain_chunks

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0  # Telegram shows "typing…" for about 5 s
MAX_FLOOD_WAIT = 60.0  # longer flood-control waits are given up (and logged)
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """Where a reply goes: a chat, its forum topic, and the message it answers (quoted)."""

    chat_id: int
    thread_id: int | None = None
    reply_to: int | None = None

    @classmethod
    def answering(cls, message: Message, *, quote: bool) -> Target:
        return cls(
            message.chat_id,
            message.message_thread_id if message.is_topic_message else None,
            message.message_id if quote else None,
        )

    def follow_up(self) -> Target:
        """The same chat and topic, without quoting (for a reply's later parts)."""
        return Target(self.chat_id, self.thread_id)


def retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # int vs timedelta deprecation in PTB 22
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def is_parse_error(exc: TelegramError) -> bool:
    return isinstance(exc, BadRequest) and "parse entities" in str(exc).lower()


def is_not_modified(exc: TelegramError) -> bool:
    return isinstance(exc, BadRequest) and "not modified" in str(exc).lower()


class Outbox:
    """Sends texts to one bot. Methods raise ``TelegramError`` (except entity-parse errors,
    which are retried as plain text)."""

    def __init__(self, bot: Bot, *, html: bool = True, limit: int = TELEGRAM_LIMIT) -> None:
        self.bot = bot
        self.html = html
        self.limit = limit

    def chunks(self, markdown: str) -> list[str]:
        """The messages a Markdown reply becomes (HTML, or plain text if HTML is off)."""
        if self.html:
            return html_chunks(markdown, self.limit)
        return plain_chunks(markdown, self.limit)

    async def send_plain(self, target: Target, text: str) -> list[Message]:
        """Our own texts: no parse mode, so nothing can fail to parse."""
        return await self._send_all(target, plain_chunks(text, self.limit), formatted=False)

    async def _send_all(
        self, target: Target, chunks: list[str], *, formatted: bool
    ) -> list[Message]:
        sent = []
        for i, chunk in enumerate(chunks):
            part = target if i == 0 else target.follow_up()
            sent.append(await self.send_one(part, chunk, formatted=formatted))
        return sent

    async def send_one(
        self, target: Target, text: str, *, formatted: bool, patient: bool = True
    ) -> Message:
        """Send one message; on an entity-parse error resend it as plain text."""
        reply = None
        if target.reply_to is not None:
            reply = ReplyParameters(target.reply_to, allow_sending_without_reply=True)
        kwargs: dict[str, Any] = {
            "chat_id": target.chat_id,
            "message_thread_id": target.thread_id,
            "reply_parameters": reply,
        }
        if formatted:
            try:
                return await self._call(
                    lambda: self.bot.send_message(text=text, parse_mode=ParseMode.HTML, **kwargs),
                    patient,
                )
            except BadRequest as exc:
                if not is_parse_error(exc):
                    raise
                log.warning("Telegram rejected our HTML (%s); sending plain text", exc)
        plain = html_to_plain(text) if formatted else text
        return await self._call(lambda: self.bot.send_message(text=plain, **kwargs), patient)

    async def edit(
        self, message: Message, text: str, *, formatted: bool, patient: bool = True
    ) -> None:
        """Replace a sent message's text; 'not modified' is not an error."""
        chat_id, message_id = message.chat_id, message.message_id
        try:
            try:
                await self._call(
                    lambda: self.bot.edit_message_text(
                        text,
                        chat_id=chat_id,
                        message_id=message_id,
                        parse_mode=ParseMode.HTML if formatted else None,
                    ),
                    patient,
                )
            except BadRequest as exc:
                if not (formatted and is_parse_error(exc)):
                    raise
                log.warning("Telegram rejected our HTML (%s); editing as plain text", exc)
                plain = html_to_plain(text)
                await self._call(
                    lambda: self.bot.edit_message_text(
                        plain, chat_id=chat_id, message_id=message_id
                    ),
                    patient,
                )
        except BadRequest as exc:
            if not is_not_modified(exc):
                raise

    async def _call(self, request: Callable[[], Awaitable[T]], patient: bool) -> T:
        """Make a request; on ``RetryAfter`` wait once and retry, unless the bot's limiter did.

        The standalone bot's Application has a ``FloodLimiter`` (PTB's ``AIORateLimiter``):
        it keeps under Telegram's limits and retries a ``RetryAfter`` itself, up to
        ``flood_max_retries`` times, holding back all requests meanwhile. A ``RetryAfter``
        that still reaches us means those retries are used up; waiting again here would only
        make one attempt more than configured, so it is raised. A host Application (embedded
        mode) may have no limiter, or one whose retries we can't know: then we fall back to
        waiting once (if ``patient`` and at most ``MAX_FLOOD_WAIT``) and retrying.
        """
        try:
            return await request()
        except RetryAfter as exc:
            delay = retry_seconds(exc)
            if not patient or delay > MAX_FLOOD_WAIT or retries_flood_control(self.bot):
                raise
            log.info("Telegram flood control: retrying in %.0f s", delay)
            await asyncio.sleep(delay)
            return await request()

    async def delete(self, message: Message) -> None:
        await self.bot.delete_message(message.chat_id, message.message_id)


@contextlib.asynccontextmanager
async def typing(
    bot: Bot, target: Target, *, enabled: bool = True, every: float | None = None
) -> AsyncIterator[None]:
    """Show "typing…" in the chat, repeated every ``every`` seconds, while the block runs."""
    if not enabled:
        yield
        return
    pause = TYPING_EVERY if every is None else every

    async def loop() -> None:
        while True:
            try:
                await bot.send_chat_action(
                    target.chat_id, ChatAction.TYPING, message_thread_id=target.thread_id
                )
            except TelegramError as exc:
                log.debug("typing indicator failed: %s", exc)
            await asyncio.sleep(pause)

    task = asyncio.create_task(loop(), name=f"telegram-typing-{target.chat_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
