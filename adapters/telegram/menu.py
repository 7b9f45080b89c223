"""The persona commands and their place in the bot's command menu."""

from __future__ import annotations

import logging
import re

from telegram import Bot, BotCommand, BotCommandScope

from aipersona.adapters.common import HELP_TEXT

log = logging.getLogger(__name__)

PERSONA_COMMANDS: tuple[tuple[str, str], ...] = (
    ("persona", "Show what I know about you (sent privately)"),
    ("forget", "Forget one field (/forget Demographics.Age) or everything (/forget all)"),
    ("export", "Get all your data as a JSON file (sent privately)"),
    ("end", "End the current conversation session"),
    ("help", "How I personalize my answers"),
)


def help_text() -> str:
    """The shared help text with Telegram's slash commands."""
    text = re.sub(r"^  (persona|forget|export|end|help)\b", r"  /\1", HELP_TEXT, flags=re.M)
    return text.replace("e.g. forget ", "e.g. /forget ")


async def setup_commands(
    bot: Bot,
    commands: tuple[tuple[str, str], ...] | list[tuple[str, str]] = PERSONA_COMMANDS,
    *,
    scope: BotCommandScope | None = None,
    language_code: str | None = None,
) -> list[BotCommand]:
    """Add the persona commands to the bot's command menu, keeping the commands already there.

    Reads ``getMyCommands`` and appends only the commands not yet listed (a host command of
    the same name keeps its description); writes only if something changed. Returns the menu.
    """
    existing = list(await bot.get_my_commands(scope=scope, language_code=language_code))
    names = {c.command for c in existing}
    merged = existing + [BotCommand(name, text) for name, text in commands if name not in names]
    merged = merged[:100]  # Telegram's maximum
    if len(merged) != len(existing):
        await bot.set_my_commands(merged, scope=scope, language_code=language_code)
        log.info("command menu: %s", ", ".join(c.command for c in merged))
    return merged
