"""The persona handlers: Telegram updates translated for the adapter kit.

Text (and media captions) go to the kit's chat, media without words to its "only text"
notice, and every command of the kit's table becomes a CommandHandler. They work in a bot of
their own (``bot.build_application``) or inside an operator's existing python-telegram-bot
Application (``register_persona_handlers``), in a handler group of their own so the host's
handlers and commands keep working. Allow-lists, rate limits, the commands' answers and
every sentence are the kit's; what is Telegram's is here: who is speaking, whether a group
message is meant for the bot (an @mention or a reply to it) and albums.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Bot, Message, MessageEntity, Update, User
from telegram.error import TelegramError
from telegram.ext import Application, BaseHandler, CommandHandler, ContextTypes, MessageHandler
from telegram.ext import filters as f

from aipersona.adapters.kit import Bridge, Incoming
from aipersona.core import Identity, PersonaCore

from .format import TELEGRAM_LIMIT
from .menu import setup_commands
from .outlet import ChatOutlet, is_private
from .settings import TelegramSettings

log = logging.getLogger(__name__)

DEFAULT_GROUP = 100  # after the host's handlers in the default group 0
_MENTIONS: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]

Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


def identity_of(user: User) -> Identity:
    """The persona key: the Telegram user id (never the display name)."""
    return Identity("telegram", str(user.id), user.full_name or user.username)


class PersonaHandlers:
    """The handlers of one Application, sharing one kit :class:`Bridge`."""

    def __init__(self, core: PersonaCore, settings: TelegramSettings) -> None:
        self.core = core
        self.settings = settings
        self.bridge = Bridge(core, settings, message_limit=TELEGRAM_LIMIT)

    def handlers(self, skip: set[str] | frozenset[str] = frozenset()) -> list[BaseHandler]:
        """New messages in private chats and groups; edits, channels and bots are ignored.

        Text goes to the chat; photos, stickers, voice notes and other media to ``on_media``.
        """
        new = f.UpdateType.MESSAGE & (f.ChatType.PRIVATE | f.ChatType.GROUPS)
        out: list[BaseHandler] = [
            CommandHandler(spec.name, self._command(spec.name), filters=new, block=False)
            for spec in self.bridge.commands
            if spec.name not in skip
        ]
        out.append(MessageHandler(new & f.TEXT & ~f.COMMAND, self.on_message, block=False))
        media = f.ATTACHMENT & ~f.TEXT & ~f.SUCCESSFUL_PAYMENT & ~f.PASSPORT_DATA
        out.append(MessageHandler(new & media, self.on_media, block=False))
        return out

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got = self._translate(update, context.bot)
        if got is not None:
            await self.bridge.on_message(*got)

    async def on_media(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo, sticker, voice note...: its caption is answered as text; without one the
        kit's "only text" notice (once per album: the items of an album share a
        ``media_group_id`` and arrive as separate messages, the caption on the first)."""
        got = self._translate(update, context.bot, media=True)
        if got is not None:
            await self.bridge.on_message(*got)

    def _command(self, name: str) -> Callback:
        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            arg = " ".join(context.args or [])
            got = self._translate(update, context.bot, command_arg=arg)
            if got is not None:
                await self.bridge.on_command(name, arg, *got)

        return run

    def _translate(
        self, update: Update, bot: Bot, *, media: bool = False, command_arg: str | None = None
    ) -> tuple[Incoming, ChatOutlet] | None:
        """The update as the kit's :class:`Incoming` (with its outlet); None for updates that
        are not a person's new message. No await: updates are decided in arrival order."""
        message = update.message
        user = message.from_user if message is not None else None
        if message is None or user is None or user.is_bot:
            return None
        private = is_private(message)
        text = message.text if message.text is not None else (message.caption or "")
        addressed = private or self._addressed(message, bot)
        if not private and bot.username:
            text = re.sub(rf"@{re.escape(bot.username)}\b", "", text, flags=re.IGNORECASE)
        if command_arg is not None:
            text = command_arg
        text = text.strip()
        incoming = Incoming(
            identity_of(user),
            str(message.chat_id),
            text,
            private=private,
            addressed=addressed,
            media_only=media and not text,
            album=message.media_group_id if media else None,
        )
        return incoming, ChatOutlet(message, user, bot, self.settings)

    @staticmethod
    def _addressed(message: Message, bot: Bot) -> bool:
        """An @mention of the bot (in the text or a caption), or a reply to one of its
        messages."""
        if message.text is not None:
            entities = message.parse_entities(_MENTIONS)
        else:
            entities = message.parse_caption_entities(_MENTIONS)
        username = (bot.username or "").lower()
        for entity, value in entities.items():
            if entity.type == MessageEntity.MENTION and value[1:].lower() == username:
                return True
            if entity.user is not None and entity.user.id == bot.id:
                return True
        replied = message.reply_to_message
        author = replied.from_user if replied is not None else None
        return author is not None and author.id == bot.id


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
    skipped = taken & {spec.name for spec in persona.bridge.commands}
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
