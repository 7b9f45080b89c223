"""Telegram adapter (python-telegram-bot 22).

Standalone::

    settings = TelegramSettings.from_config(core.config)
    await run_telegram(core, settings, stop_event)

Embedded in an existing Application::

    register_persona_handlers(application, core)          # handler group 100
    await setup_commands(application.bot)                 # if you don't use run_polling

Flood control for a host Application: ``builder.rate_limiter(FloodLimiter(settings))``.
"""

from ..kit import AdapterSpec
from .bot import build_application, run_telegram
from .flood import FloodLimiter
from .format import html_chunks, markdown_to_html
from .handlers import DEFAULT_GROUP, PersonaHandlers, identity_of, register_persona_handlers
from .menu import PERSONA_COMMANDS, setup_commands
from .settings import TelegramSettings

__all__ = [
    "ADAPTER",
    "DEFAULT_GROUP",
    "PERSONA_COMMANDS",
    "FloodLimiter",
    "PersonaHandlers",
    "TelegramSettings",
    "build_application",
    "html_chunks",
    "identity_of",
    "markdown_to_html",
    "register_persona_handlers",
    "run_telegram",
    "setup_commands",
]

ADAPTER = AdapterSpec("telegram", TelegramSettings, run_telegram)
"""The platform's entry in ``aipersona.adapters`` (its config table and runner)."""
