"""Discord adapter: embed ``PersonaCog`` in your bot, or run the standalone bot.

Embedded::

    await bot.add_cog(PersonaCog(core))           # settings from core.config's [discord]

Standalone (inside a running event loop)::

    await run_discord(core, DiscordSettings.from_config(core.config), stop_event)

The standalone bot reads message text: enable the privileged Message Content intent for the
application in the Discord developer portal (Bot → Privileged Gateway Intents).
"""

from __future__ import annotations

from ..kit import AdapterSpec
from .bot import bot_intents, build_bot, run_discord, sync_app_commands
from .cog import EXPORT_FILENAME, PersonaCog, identity_of
from .settings import DiscordSettings

__all__ = [
    "ADAPTER",
    "EXPORT_FILENAME",
    "DiscordSettings",
    "PersonaCog",
    "bot_intents",
    "build_bot",
    "identity_of",
    "run_discord",
    "sync_app_commands",
]

ADAPTER = AdapterSpec("discord", DiscordSettings, run_discord)
"""The platform's entry in ``aipersona.adapters`` (its config table and runner)."""
