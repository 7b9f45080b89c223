"""The kit's outlets on Telegram: posting replies into the chat of one message (HTML with a
plain fallback, quoting in groups, forum topics kept) and delivering command answers, in
place or in the user's private chat."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

from telegram import Bot, Message, ReplyParameters, User
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from aipersona.adapters.kit import Answer, Pause, texts

from .format import plain_chunks
from .outbox import Outbox, Target, retry_seconds, typing
from .settings import TelegramSettings

log = logging.getLogger(__name__)


def is_private(message: Message) -> bool:
    return message.chat.type == ChatType.PRIVATE


class ChatOutlet:
    """Replies to ``message`` (from ``user``) and answers to its commands."""

    delivery_errors: tuple[type[Exception], ...] = (TelegramError,)
    must_answer = False

    def __init__(self, message: Message, user: User, bot: Bot, settings: TelegramSettings) -> None:
        self.bot = bot
        self.user = user
        self.html = settings.html
        self.outbox = Outbox(bot, html=settings.html)
        self.target = Target.answering(message, quote=not is_private(message))

    # -- replies (kit.ReplyOutlet) ----------------------------------------------------------

    def chunks(self, text: str, *, formatted: bool) -> list[str]:
        if formatted:
            return self.outbox.chunks(text)
        return plain_chunks(text, self.outbox.limit)

    async def send(self, chunk: str, *, first: bool, formatted: bool, final: bool) -> Message:
        target = self.target if first else self.target.follow_up()
        html = formatted and self.html
        try:
            return await self.outbox.send_one(target, chunk, formatted=html, patient=final)
        except RetryAfter as exc:  # a draft: hold the drafts back, the model keeps going
            if final:
                raise
            raise Pause(retry_seconds(exc)) from exc

    async def edit(self, sent: Message, chunk: str, *, formatted: bool, final: bool) -> None:
        html = formatted and self.html
        try:
            await self.outbox.edit(sent, chunk, formatted=html, patient=final)
        except RetryAfter as exc:
            if final:
                raise
            raise Pause(retry_seconds(exc)) from exc

    async def delete(self, sent: Message) -> None:
        await self.outbox.delete(sent)

    def typing(self) -> AbstractAsyncContextManager[None]:
        return typing(self.bot, self.target)

    async def send_private(self, text: str) -> bool:
        """To the user's private chat; False if they never opened one with the bot."""
        return await self.answer(Answer(text), privately=True)

    # -- command answers (kit.AnswerOutlet) -------------------------------------------------

    async def acknowledge(self) -> None:
        return None

    async def answer(self, answer: Answer, *, privately: bool) -> bool:
        target = Target(self.user.id) if privately else self.target
        try:
            await self._deliver(target, answer)
        except (Forbidden, BadRequest) as exc:
            closed = isinstance(exc, Forbidden) or "chat not found" in str(exc).lower()
            if not (privately and closed):
                raise
            log.info("cannot message user %s privately: %s", self.user.id, exc)
            return False
        return True

    async def _deliver(self, target: Target, answer: Answer) -> None:
        if answer.file is None:
            await self.outbox.send_plain(target, answer.text)
            return
        reply = None
        if target.reply_to is not None:
            reply = ReplyParameters(target.reply_to, allow_sending_without_reply=True)
        await self.bot.send_document(
            target.chat_id,
            document=answer.file.data,
            filename=answer.file.name,
            caption=answer.text,
            message_thread_id=target.thread_id,
            reply_parameters=reply,
        )

    def private_closed(self, command: str) -> str:
        return texts.open_private_chat(self.bot.username or "", command)
