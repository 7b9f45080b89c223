"""The state every part of the Telegram fake shares: recordings, chats, messages, files,
pending updates, the webhook, and the change notification that wakes waiters and long polls.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .models import (
    LOOPBACK_HOSTS,
    InjectedFault,
    JSONDict,
    StoredDocument,
    _StoredFile,
    _Webhook,
)


class TelegramState:
    """Configuration and state of :class:`~.server.FakeTelegramAPI` (its constructor)."""

    def __init__(
        self,
        *,
        bot_id: int = 999000,
        bot_username: str = "persona_test_bot",
        bot_first_name: str = "PersonaBot",
        token: str | None = None,
        host: str = "127.0.0.1",
        max_poll_wait: float = 1.0,
    ) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError("FakeTelegramAPI only listens on loopback")
        self.bot_user: JSONDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.token = token  # if set, other tokens get 401 Unauthorized
        self.host = host
        self.max_poll_wait = max_poll_wait
        self.port: int | None = None

        # recordings
        self.calls: list[tuple[str, JSONDict]] = []
        self.call_times: list[float] = []  # time.monotonic() each call arrived, as in calls
        self.unknown_methods: list[str] = []
        self.documents: list[StoredDocument] = []
        self.chat_actions: list[tuple[int | str, str]] = []
        self.commands: dict[str, list[JSONDict]] = {}
        self.callback_answers: list[JSONDict] = []
        self.webhook_deliveries: list[tuple[JSONDict, int]] = []

        self._pending: list[JSONDict] = []
        self._next_update_id = 1000
        self._allowed_updates: list[str] | None = None
        self._faults: dict[str, list[InjectedFault]] = {}
        self._chats: dict[int | str, JSONDict] = {}
        self._next_message_id: dict[int | str, int] = {}
        self._messages: dict[tuple[int | str, int], JSONDict] = {}
        self._sent: list[JSONDict] = []
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._next_file = 1
        self._next_callback = 1
        self._next_media_group = 1
        self.webhook = _Webhook()

        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- state change notification

    def _bump(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait_changed(self, seconds: float) -> None:
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
