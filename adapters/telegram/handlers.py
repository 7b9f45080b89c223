"""The persona handlers: chat messages and the /persona, /forget, /export, /end, /help commands.

They work in a bot of their own (``bot.build_application``) or inside an operator's existing
python-telegram-bot Application (``register_persona_handlers``), in a handler group of their
own so the host's handlers and commands keep working.

Access control: updates from users not in ``allowed_users`` or chats not in ``allowed_chats``
(private chats count by their chat id, which is the user's id) are ignored silently, so the
bot cannot be used to probe who is allowed or to spam a chat.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telegram import Bot, Message, MessageEntity, Update, User
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, BaseHandler, CommandHandler, ContextTypes, MessageHandler
from telegram.ext import filters as f

from aipersona.adapters.common import (
    ONLY_TEXT,
    RateLimiter,
    persona_text,
    rate_limited_text,
    too_long_text,
)
from aipersona.core import FieldValidationError, Identity, PersonaCore
from aipersona.core.locks import KeyedLocks

from .menu import PERSONA_COMMANDS, help_text, setup_commands
from .outbox import LiveReply, Outbox, Target, typing
from .settings import TelegramSettings

log = logging.getLogger(__name__)

ALBUM_MEMORY = 120.0  # seconds an album (media group) is remembered as answered
DEFAULT_GROUP = 100  # after the host's handlers in the default group 0
EXPORT_FILENAME = "aipersona-export.json"
SENT_PRIVATELY = "I've sent it to you privately."
OPEN_PRIVATE_CHAT = (
    "I can't message you privately yet. Open a private chat with me (@{bot}), press Start, "
    "then send /{command} again."
)

Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


def identity_of(user: User) -> Identity:
    """The persona key: the Telegram user id (never the display name)."""
    return Identity("telegram", str(user.id), user.full_name or user.username)


def is_private(message: Message) -> bool:
    return message.chat.type == ChatType.PRIVATE


class PersonaHandlers:
    """The handlers, sharing one rate limiter and the per-speaker turn order."""

    def __init__(self, core: PersonaCore, settings: TelegramSettings) -> None:
        self.core = core
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self._quiet_until: dict[str, float] = {}  # rate-limited users already told to wait
        self._turns = KeyedLocks()  # one speaker's messages in one chat run in order
        self._albums: dict[str, float] = {}  # "chat:media group" answered -> time first seen

    def handlers(self, skip: set[str] | frozenset[str] = frozenset()) -> list[BaseHandler]:
        """New messages in private chats and groups; edits, channels and bots are ignored.

        Text goes to the chat; photos, stickers, voice notes and other media to ``on_media``.
        """
        new = f.UpdateType.MESSAGE & (f.ChatType.PRIVATE | f.ChatType.GROUPS)
        commands: dict[str, Callback] = {
            "persona": self.cmd_persona,
            "forget": self.cmd_forget,
            "export": self.cmd_export,
            "end": self.cmd_end,
            "help": self.cmd_help,
        }
        out: list[BaseHandler] = [
            CommandHandler(name, callback, filters=new, block=False)
            for name, callback in commands.items()
            if name not in skip
        ]
        out.append(MessageHandler(new & f.TEXT & ~f.COMMAND, self.on_message, block=False))
        media = f.ATTACHMENT & ~f.TEXT & ~f.SUCCESSFUL_PAYMENT & ~f.PASSPORT_DATA
        out.append(MessageHandler(new & media, self.on_media, block=False))
        return out

    # -- gates ----------------------------------------------------------------------------

    def _sender(self, update: Update) -> tuple[Message, User] | None:
        message = update.message
        user = message.from_user if message is not None else None
        if message is None or user is None or user.is_bot:
            return None
        if not (
            self.settings.user_allowed(user.id) and self.settings.chat_allowed(message.chat_id)
        ):
            log.debug("ignoring user %s in chat %s (not allowed)", user.id, message.chat_id)
            return None
        return message, user

    async def _within_rate(self, message: Message, user: User) -> bool:
        """Count the event; if over the limit, say so once per waiting period."""
        key = str(user.id)
        wait = self.limiter.hit(key)
        if not wait:
            self._quiet_until.pop(key, None)
            return True
        now = time.monotonic()
        if self._quiet_until.get(key, 0.0) <= now:
            self._quiet_until[key] = now + wait
            try:
                await self._say(message, rate_limited_text(wait))
            except TelegramError as exc:
                log.warning("Telegram error in chat %s: %s", message.chat_id, exc)
        return False

    async def _admit_command(self, update: Update) -> tuple[Message, User] | None:
        got = self._sender(update)
        if got is None or not await self._within_rate(*got):
            return None
        return got

    def _group_text(self, message: Message, bot: Bot) -> str | None:
        """In groups: the text (or media caption) addressed to the bot, mention removed; None
        if the message isn't addressed to the bot."""
        kinds = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
        if message.text is not None:
            text, entities = message.text, message.parse_entities(kinds)
        else:
            text, entities = message.caption or "", message.parse_caption_entities(kinds)
        username = (bot.username or "").lower()
        mentioned = False
        for entity, value in entities.items():
            if entity.type == MessageEntity.MENTION and value[1:].lower() == username:
                mentioned = True
            elif entity.user is not None and entity.user.id == bot.id:
                mentioned = True
        replied = message.reply_to_message
        to_bot = (
            replied is not None and replied.from_user is not None and replied.from_user.id == bot.id
        )
        listed = str(message.chat_id) in self.settings.reply_channels
        if not (mentioned or to_bot or listed):
            return None
        if username:
            text = re.sub(rf"@{re.escape(username)}\b", "", text, flags=re.IGNORECASE)
        return text.strip()

    # -- chat -----------------------------------------------------------------------------

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got = self._sender(update)
        if got is None:
            return
        message, user = got
        text: str | None = message.text or ""
        if not is_private(message):
            text = self._group_text(message, context.bot)
            if text is None:
                return
        await self._guard(message, self._chat(message, user, text, context.bot))

    async def on_media(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo, sticker, voice note...: its caption is answered as text; without one the
        sender is told once that only text is understood.

        Only where a text would be answered (private chats; in groups when addressed to the
        bot). An album arrives as one message per item with a shared ``media_group_id`` (its
        caption on the first item): it gets one answer, so the first item decides and the
        others are skipped. That decision is made before the first ``await``, i.e. in update
        order. (A caption on a later item is still answered as text.)
        """
        got = self._sender(update)
        if got is None:
            return
        message, user = got
        text = (message.caption or "").strip()
        if not is_private(message):
            addressed = self._group_text(message, context.bot)
            if addressed is None:
                return
            text = addressed
        album = message.media_group_id
        first_of_album = album is None or self._first_of_album(f"{message.chat_id}:{album}")
        if text:
            await self._guard(message, self._chat(message, user, text, context.bot))
        elif first_of_album:
            await self._guard(message, self._only_text(message, user))

    def _first_of_album(self, album: str) -> bool:
        """Mark a media group as answered; False if it already was."""
        now = time.monotonic()
        if len(self._albums) > 1000:
            self._albums = {k: t for k, t in self._albums.items() if now - t < ALBUM_MEMORY}
        seen = self._albums.get(album)
        if seen is not None and now - seen < ALBUM_MEMORY:
            return False
        self._albums[album] = now
        return True

    async def _only_text(self, message: Message, user: User) -> None:
        """The notice for non-text messages; counted by the per-user rate limit like a text."""
        if await self._within_rate(message, user):
            await self._say(message, ONLY_TEXT)

    async def _chat(self, message: Message, user: User, text: str, bot: Bot) -> None:
        # no await suspends before the turn lock is queued for, so turns keep their order
        if not await self._within_rate(message, user):
            return
        limit = self.settings.max_input_chars
        if len(text) > limit:
            await self._say(message, too_long_text(len(text), limit))
            return
        async with self._turns.hold((message.chat_id, user.id)):
            outbox = Outbox(bot, html=self.settings.html)
            target = Target.answering(message, quote=not is_private(message))
            ident, chat_id = identity_of(user), str(message.chat_id)
            if self.settings.stream_edits:
                live = LiveReply(outbox, target, self.settings.stream_edit_interval)
                async with typing(bot, target, enabled=self.settings.typing):
                    reply = await self.core.respond(ident, chat_id, text, on_delta=live.on_delta)
                await live.finish(reply.text)
            else:
                async with typing(bot, target, enabled=self.settings.typing):
                    reply = await self.core.respond(ident, chat_id, text)
                await outbox.send_markdown(target, reply.text)
            if not reply.ok:
                log.info("reply to %s not ok (%s); sent %r", user.id, reply.error, reply.text)

    # -- commands -------------------------------------------------------------------------

    async def cmd_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got = await self._admit_command(update)
        if got is not None:
            await self._guard(got[0], self._say(got[0], help_text()))

    async def cmd_persona(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got = await self._admit_command(update)
        if got is None:
            return
        message, user = got

        async def run() -> None:
            text = persona_text(await self.core.persona(identity_of(user)))
            outbox = Outbox(context.bot)

            async def deliver(chat_id: int) -> None:
                await outbox.send_plain(Target(chat_id), text)

            await self._privately(message, user, context.bot, "persona", deliver)

        await self._guard(message, run())

    async def cmd_export(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got = await self._admit_command(update)
        if got is None:
            return
        message, user = got

        async def run() -> None:
            data = await self.core.export(identity_of(user))
            if data is None:
                await self._say(message, "I have no data about you.")
                return
            payload = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode()

            async def deliver(chat_id: int) -> None:
                await context.bot.send_document(
                    chat_id,
                    document=payload,
                    filename=EXPORT_FILENAME,
                    caption="Everything I store about you (persona, history, messages).",
                )

            await self._privately(message, user, context.bot, "export", deliver)

        await self._guard(message, run())

    async def cmd_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got = await self._admit_command(update)
        if got is None:
            return
        message, user = got
        await self._guard(message, self._forget(message, user, list(context.args or [])))

    async def _forget(self, message: Message, user: User, args: list[str]) -> None:
        ident = identity_of(user)
        if not args:
            await self._say(
                message,
                "Usage: /forget FIELD (e.g. /forget Demographics.Age) or /forget all "
                "(deletes your persona, its history and our messages).",
            )
            return
        if len(args) == 1 and args[0].lower() == "all":
            deleted = await self.core.forget_all(ident)
            await self._say(
                message,
                "Done: I deleted everything I stored about you (persona, history, messages)."
                if deleted
                else "I had nothing stored about you.",
            )
            return
        name = " ".join(args)
        try:
            changed = await self.core.forget_field(ident, name)
        except FieldValidationError as exc:
            await self._say(message, f"I can't forget that: {exc}. /persona shows the fields.")
            return
        await self._say(message, f"Forgotten: {name}." if changed else f"I didn't know {name}.")

    async def cmd_end(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got = await self._admit_command(update)
        if got is None:
            return
        message, user = got

        async def run() -> None:
            async with self._turns.hold((message.chat_id, user.id)):
                ended = await self.core.end_session(identity_of(user), str(message.chat_id))
            await self._say(
                message,
                "Session ended. I'll learn from it in the background."
                if ended is not None
                else "There is no open session here.",
            )

        await self._guard(message, run())

    # -- helpers --------------------------------------------------------------------------

    async def _privately(
        self,
        message: Message,
        user: User,
        bot: Bot,
        command: str,
        deliver: Callable[[int], Awaitable[None]],
    ) -> None:
        """Deliver persona content to the user's private chat, never into a group."""
        if is_private(message):
            await deliver(message.chat_id)
            return
        try:
            await deliver(user.id)
        except (Forbidden, BadRequest) as exc:
            if isinstance(exc, BadRequest) and "chat not found" not in str(exc).lower():
                raise
            log.info("cannot message user %s privately: %s", user.id, exc)
            await self._say(message, OPEN_PRIVATE_CHAT.format(bot=bot.username, command=command))
            return
        await self._say(message, SENT_PRIVATELY)

    async def _say(self, message: Message, text: str) -> None:
        """Our own plain-text answer to a message (quoting it in groups)."""
        outbox = Outbox(message.get_bot(), html=False)
        await outbox.send_plain(Target.answering(message, quote=not is_private(message)), text)

    async def _guard(self, message: Message, work: Coroutine[Any, Any, None]) -> None:
        """Run a handler's work; Telegram errors are logged, never raised into the host bot."""
        try:
            await work
        except TelegramError as exc:
            log.warning("Telegram error in chat %s: %s", message.chat_id, exc)
        except Exception:
            log.exception("persona handler failed in chat %s", message.chat_id)
            try:
                await self._say(message, "Sorry, something went wrong. Please try again.")
            except TelegramError as exc:
                log.warning("Telegram error in chat %s: %s", message.chat_id, exc)


def host_commands(application: Application) -> set[str]:
    """Commands the application already handles (so ours don't answer them twice)."""
    names: set[str] = set()
    for handlers in application.handlers.values():
        for handler in handlers:
            if isinstance(handler, CommandHandler):
                names.update(handler.commands)
    return names


def register_persona_handlers(
    application: Application,
    core: PersonaCore,
    settings: TelegramSettings | None = None,
    *,
    group: int = DEFAULT_GROUP,
    menu: bool = True,
) -> PersonaHandlers:
    """Add the persona handlers to an existing Application (the embedded mode).

    They go into handler ``group`` (default 100), so the host's own handlers in other groups
    still see every update. Persona commands the host already handles (e.g. its own /help)
    are left to the host: register after your own handlers. ``settings`` defaults to the
    ``[telegram]`` section of ``core.config``. The core must be started by the caller.

    With ``menu`` the persona commands are merged into the command menu at start-up (in
    ``post_init``, which python-telegram-bot runs in ``run_polling``/``run_webhook``); hosts
    that start the Application themselves call ``await setup_commands(application.bot)``.
    """
    settings = settings or TelegramSettings.from_config(core.config)
    persona = PersonaHandlers(core, settings)
    taken = host_commands(application)
    skipped = taken & {name for name, _ in PERSONA_COMMANDS}
    if skipped:
        log.info("leaving /%s to the host bot", ", /".join(sorted(skipped)))
    application.add_handlers(persona.handlers(skip=skipped), group=group)
    if menu:
        host_init = application.post_init

        async def post_init(app: Application) -> None:
            if host_init is not None:
                await host_init(app)
            try:
                await setup_commands(app.bot)
            except TelegramError as exc:
                log.warning("could not update the command menu: %s", exc)

        application.post_init = post_init
    return persona
