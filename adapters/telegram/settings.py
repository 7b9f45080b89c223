"""The ``[telegram]`` config section."""

from __future__ import annotations

import os
import re
import secrets
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from aipersona.adapters.kit import AdapterSettings
from aipersona.core import Config, ConfigError

_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")


class TelegramSettings(AdapterSettings):
    """Settings of the Telegram adapter (every key of ``AdapterSettings`` plus these)."""

    token_env: str = "TELEGRAM_BOT_TOKEN"
    mode: Literal["polling", "webhook"] = "polling"
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, ge=1, le=65535)
    webhook_url: str = ""
    webhook_path: str = "telegram"
    webhook_secret_env: str = ""
    # several worker processes serve webhook_url (behind a load balancer), each any user
    webhook_shared: bool = False
    # Telegram's setWebhook max_connections: updates in flight at once, over all workers
    webhook_max_connections: int = Field(40, ge=1, le=100)
    base_url: str = ""
    parse_mode: Literal["HTML", "none"] = "HTML"
    poll_timeout: float = Field(10.0, ge=0, le=300)
    # flood control of the standalone bot (flood.FloodLimiter); 0 messages = no limit
    flood_overall_messages: int = Field(30, ge=0)
    flood_overall_seconds: float = Field(1.0, gt=0)
    flood_group_messages: int = Field(20, ge=0)
    flood_group_seconds: float = Field(60.0, gt=0)
    flood_max_retries: int = Field(3, ge=0)

    @field_validator("webhook_shared")
    @classmethod
    def _shared_needs_a_common_secret(cls, value: bool, info: ValidationInfo) -> bool:
        """Several workers must check one secret: each worker's setWebhook replaces the
        secret Telegram sends, so with a random one per worker only the last one started
        would accept the updates (the others answer 403 and Telegram retries elsewhere,
        late, or gives up)."""
        if not value:
            return value
        if info.data.get("mode", "webhook") != "webhook":
            raise ValueError(
                'webhook_shared needs mode = "webhook" (only one process may poll a bot: '
                "Telegram ends the other getUpdates)"
            )
        if not info.data.get("webhook_secret_env", "x"):
            raise ValueError(
                "webhook_shared needs webhook_secret_env: every worker must use the same "
                "webhook secret (a random one per worker makes the others refuse the updates)"
            )
        return value

    @classmethod
    def from_config(cls, config: Config) -> TelegramSettings:
        """Validate the raw ``[telegram]`` table of a Config (ConfigError if invalid)."""
        return cls.parse("telegram", config.table("telegram"))

    @property
    def html(self) -> bool:
        return self.parse_mode == "HTML"

    def api_urls(self) -> tuple[str, str] | None:
        """(base_url, base_file_url) for a self-hosted Bot API server, or None for Telegram's.

        ``base_url`` may be the server root (``http://127.0.0.1:8081``) or already end in
        ``/bot`` (python-telegram-bot's form); the token is appended by the library.
        """
        url = self.base_url.strip().rstrip("/")
        if not url:
            return None
        root = url.removesuffix("/bot")
        return f"{root}/bot", f"{root}/file/bot"

    def webhook_secret(self) -> str:
        """The webhook secret token: from ``webhook_secret_env``, else a random one per run
        (for a single worker only: see ``webhook_shared``)."""
        if not self.webhook_secret_env:
            return secrets.token_urlsafe(32)
        value = os.environ.get(self.webhook_secret_env, "").strip()
        if not _SECRET_RE.fullmatch(value):
            raise ConfigError(
                f"environment variable {self.webhook_secret_env} (the webhook secret) must hold "
                "1-256 characters A-Z, a-z, 0-9, _ or -"
            )
        return value

    def check_webhook(self) -> None:
        if self.mode == "webhook" and not self.webhook_url:
            raise ConfigError(
                "telegram.webhook_url is required in webhook mode (the public HTTPS URL "
                "Telegram posts updates to)"
            )
