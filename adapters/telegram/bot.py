"""The standalone Telegram bot: an Application with only the persona handlers, run by long
polling or a webhook inside an already running asyncio loop until a stop event is set."""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging

from telegram import Update
from telegram.error import NetworkError, TelegramError
from telegram.ext import Application, ContextTypes

from aipersona.core import PersonaCore

from .flood import flood_limiter
from .handlers import register_persona_handlers
from .menu import setup_commands
from .settings import TelegramSettings

log = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE]  # edits, channel posts, callbacks are never used
_DRAIN_TIMEOUT = 10.0  # at stop: for updates already received to reach their handlers


class RedactToken(logging.Filter):
    """Replaces the bot token in log records (httpx logs request URLs, which contain it)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "<bot-token>"), ()
        return True


def redact_token_in_logs(token: str) -> None:
    for name in ("httpx", "telegram.ext.Updater", "telegram.ext.Application"):
        logger = logging.getLogger(name)
        if not any(isinstance(x, RedactToken) and x.token == token for x in logger.filters):
            logger.addFilter(RedactToken(token))


async def log_errors(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Error handler: network trouble is a warning (PTB retries polling), the rest a bug."""
    error = context.error
    if isinstance(error, NetworkError):
        log.warning("Telegram network error: %s", error)
    elif isinstance(error, TelegramError):
        log.warning("Telegram error: %s", error)
    else:
        log.error("error while handling a Telegram update", exc_info=error)


def build_application(core: PersonaCore, settings: TelegramSettings | None = None) -> Application:
    """An Application (not yet initialized) with the persona handlers and an error handler.

    The token comes from the environment variable ``settings.token_env``; ``base_url``
    points it at a self-hosted Bot API server. Sends are throttled and ``RetryAfter`` retried
    by a :class:`~.flood.FloodLimiter` configured by the ``flood_*`` settings.
    """
    settings = settings or TelegramSettings.from_config(core.config)
    token = settings.token()
    redact_token_in_logs(token)
    builder = Application.builder().token(token)
    urls = settings.api_urls()
    if urls is not None:
        builder = builder.base_url(urls[0]).base_file_url(urls[1])
    limiter = flood_limiter(settings)
    application: Application
    if limiter is not None:  # the limiter's type parameter changes the builder's type
        application = builder.rate_limiter(limiter).build()
    else:
        application = builder.build()
    register_persona_handlers(application, core, settings, group=0)
    application.add_error_handler(log_errors)
    return application


async def run_telegram(
    core: PersonaCore,
    settings: TelegramSettings | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Run the bot until ``stop_event`` is set (forever if None), then stop cleanly.

    The core must be started. Polling by default; ``mode = "webhook"`` serves
    ``http://webhook_listen:webhook_port/webhook_path`` and registers ``webhook_url`` with
    Telegram (secret token from ``webhook_secret_env``, else a random one per run).

    Several workers may serve one ``webhook_url`` (``webhook_shared``, behind a load
    balancer): each registers the same URL, secret, ``allowed_updates`` and
    ``max_connections``, which changes nothing at Telegram; none drops pending updates, and
    none deletes the webhook when it stops. A stopping worker first closes its webhook
    server (the balancer sends new updates to the others), then finishes every update it
    has already acknowledged before it returns.
    """
    settings = settings or TelegramSettings.from_config(core.config)
    settings.check_webhook()
    secret = settings.webhook_secret() if settings.mode == "webhook" else None
    if settings.mode == "webhook" and not settings.webhook_secret_env:
        log.warning(
            "Telegram webhook with a random secret for this run: only this one process may "
            "serve %s (for several workers set webhook_secret_env and webhook_shared = true)",
            settings.webhook_url,
        )
    stop_event = stop_event or asyncio.Event()
    application = build_application(core, settings)
    async with application:
        try:
            await setup_commands(application.bot)
        except TelegramError as exc:
            log.warning("could not update the command menu: %s", exc)
        await application.start()
        updater = application.updater
        assert updater is not None
        try:
            if settings.mode == "webhook":
                # setWebhook with exactly what every other worker sends (and never
                # drop_pending_updates: they would be the other workers' updates)
                await updater.start_webhook(
                    listen=settings.webhook_listen,
                    port=settings.webhook_port,
                    url_path=settings.webhook_path,
                    webhook_url=settings.webhook_url,
                    secret_token=secret,
                    allowed_updates=ALLOWED_UPDATES,
                    max_connections=settings.webhook_max_connections,
                    bootstrap_retries=3,
                )
            else:
                await updater.start_polling(
                    timeout=dtm.timedelta(seconds=settings.poll_timeout),
                    allowed_updates=ALLOWED_UPDATES,
                    bootstrap_retries=3,
                )
            log.info("Telegram bot @%s running (%s)", application.bot.username, settings.mode)
            await stop_event.wait()
        finally:
            # The webhook stays registered (other workers may serve it; Telegram keeps
            # updates for a stopped bot): stop receiving, then answer what was received.
            if updater.running:
                await updater.stop()
            if application.running:
                await _drain(application)
                await application.stop()
    log.info("Telegram bot stopped")


async def _drain(application: Application) -> None:
    """Let the updates already received (acknowledged to Telegram, which won't send them
    again) reach their handlers while the Application still runs: ``Application.stop``
    awaits the handlers started before it, but a handler started during ``stop`` would not
    be awaited and could still be running when the core closes."""
    try:
        await asyncio.wait_for(application.update_queue.join(), _DRAIN_TIMEOUT)
    except TimeoutError:
        log.warning("Telegram: updates still queued after %.0f s at stop", _DRAIN_TIMEOUT)
