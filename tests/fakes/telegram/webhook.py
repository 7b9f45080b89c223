"""Webhooks: setWebhook, deleteWebhook, getWebhookInfo and delivering updates to the
registered (loopback) URL.
"""

from __future__ import annotations

import re

import aiohttp
from yarl import URL

from .models import LOOPBACK_HOSTS, ApiError, JSONDict, _Webhook
from .state import TelegramState

_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")


class WebhookMixin(TelegramState):
    """The webhook registration methods and :meth:`deliver_webhook`."""

    @property
    def webhook_url(self) -> str:
        """URL registered via setWebhook ('' if none)."""
        return self.webhook.url

    async def deliver_webhook(
        self,
        update: JSONDict,
        *,
        secret_token: str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - passed to aiohttp.ClientTimeout
    ) -> int:
        """POST ``update`` to the registered webhook (loopback only); return the HTTP status.

        The registered secret token is sent unless ``secret_token`` overrides it.
        """
        if not self.webhook.url:
            raise RuntimeError("no webhook registered via setWebhook")
        url = URL(self.webhook.url)
        if url.host not in LOOPBACK_HOSTS:
            raise ValueError(f"refusing to deliver to non-loopback webhook {url}")
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
        self._next_update_id = max(self._next_update_id, int(update["update_id"])) + 1
        self._pending = [u for u in self._pending if u.get("update_id") != update["update_id"]]
        headers: dict[str, str] = {}
        token = secret_token if secret_token is not None else self.webhook.secret_token
        if token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, json=update, headers=headers) as resp,
        ):
            await resp.read()
            status = resp.status
        self.webhook_deliveries.append((update, status))
        self._bump()
        return status

    async def _set_webhook(self, params: JSONDict) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_RE.fullmatch(str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if url:
            parsed = URL(url)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ApiError(400, "Bad Request: bad webhook: invalid webhook URL specified")
        if params.get("drop_pending_updates"):
            self._pending.clear()
        if not url:
            self.webhook = _Webhook()
            return True
        self.webhook = _Webhook(
            url=url,
            secret_token=str(secret) if secret else None,
            max_connections=int(params.get("max_connections") or 40),
            allowed_updates=params.get("allowed_updates"),
            ip_address=params.get("ip_address"),
            has_custom_certificate=params.get("certificate") is not None,
        )
        return True

    async def _delete_webhook(self, params: JSONDict) -> bool:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook = _Webhook()
        return True

    async def _get_webhook_info(self, params: JSONDict) -> JSONDict:
        info: JSONDict = {
            "url": self.webhook.url,
            "has_custom_certificate": self.webhook.has_custom_certificate,
            "pending_update_count": len(self._pending),
        }
        if self.webhook.url:
            info["max_connections"] = self.webhook.max_connections
            if self.webhook.allowed_updates:
                info["allowed_updates"] = self.webhook.allowed_updates
            if self.webhook.ip_address:
                info["ip_address"] = self.webhook.ip_address
        return info
