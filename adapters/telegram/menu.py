"""The bot's command menu: the kit's command table merged into what the host already lists."""

from __future__ import annotations

import logging

from telegram import Bot, BotCommand, BotCommandScope

from aipersona.adapters.kit import COMMANDS

log = logging.getLogger(__name__)

PERSONA_COMMANDS: tuple[tuple[str, str], ...] = tuple(
    (spec.name, spec.description) for spec in COMMANDS
)
"""``(command, description)`` of every persona command, in menu order."""


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
