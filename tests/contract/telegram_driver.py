"""The contract's driver for Telegram: ``run_telegram`` (real python-telegram-bot, polling)
on FakeTelegramAPI.

Private = the user's private chat (whose id is the user's id); the group = supergroup
-100123, where a message is addressed to the bot by an @mention.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aipersona.adapters.telegram import TelegramSettings, run_telegram
from aipersona.core import Identity
from tests.fakes.telegram import FakeTelegramAPI

from .driver import Driver

TOKEN = "123456:TEST-TOKEN"
BOT = "persona_test_bot"
USERS = {"alice": 11, "bob": 22}
GROUP = -100123


class TelegramDriver(Driver):
    name = "telegram"
    message_limit = 4096
    stream_interval = 0.2  # an edit of a 4,096-character HTML draft takes a while
    fake: FakeTelegramAPI

    @classmethod
    @asynccontextmanager
    async def open(cls, core: Any, llm: Any, **fixtures: Any) -> AsyncIterator[Any]:
        fixtures["monkeypatch"].setenv("TELEGRAM_BOT_TOKEN", TOKEN)
        driver = cls(core, llm)
        async with FakeTelegramAPI(bot_username=BOT) as driver.fake:
            yield driver

    @asynccontextmanager
    async def running(self, **settings: Any) -> AsyncIterator[None]:
        values = TelegramSettings(base_url=self.fake.origin, poll_timeout=1, **settings)
        stop = asyncio.Event()
        polls = len(self.fake.calls_to("getUpdates"))
        task = asyncio.create_task(run_telegram(self.core, values, stop))
        try:
            await self.fake.wait_for(lambda: len(self.fake.calls_to("getUpdates")) > polls)
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    def identity(self, user: str) -> Identity:
        return Identity("telegram", str(USERS[user]))

    def group_id(self) -> str:
        return str(GROUP)

    def _push(self, user: str, text: str, group: bool) -> None:
        if group:
            self.fake.push_message(GROUP, USERS[user], text, chat_type="supergroup")
        else:
            self.fake.push_message(USERS[user], USERS[user], text)

    async def send(
        self, user: str, text: str, *, group: bool = False, addressed: bool = True
    ) -> None:
        self._push(user, f"@{BOT} {text}" if group and addressed else text, group)

    async def send_media(self, user: str, *, group: bool = False, addressed: bool = True) -> None:
        if group:
            caption = f"@{BOT}" if addressed else None
            self.fake.push_media(
                GROUP, USERS[user], "photo", caption=caption, chat_type="supergroup"
            )
        else:
            self.fake.push_media(USERS[user], USERS[user], "sticker")

    async def command(self, user: str, name: str, arg: str = "", *, group: bool = False) -> None:
        self._push(user, f"/{name} {arg}".strip(), group)

    def private(self, user: str) -> list[str]:
        return [m["parsed_text"] for m in self.fake.sent_messages(USERS[user])]

    def public(self) -> list[str]:
        return [m["parsed_text"] for m in self.fake.sent_messages(GROUP)]

    def files(self, user: str) -> list[tuple[str, bytes]]:
        return [(d.filename, d.data) for d in self.fake.documents if int(d.chat_id) == USERS[user]]

    def public_files(self) -> list[str]:
        return [d.filename for d in self.fake.documents if int(d.chat_id) == GROUP]

    def edited(self, user: str) -> bool:
        return any(int(c["chat_id"]) == USERS[user] for c in self.fake.calls_to("editMessageText"))

    async def wait(self, predicate: Any, within: float = 10.0) -> Any:
        return await self.fake.wait_for(predicate, within)

    async def settle(self) -> None:
        await self.fake.wait_for(lambda: not self.fake.pending_updates)
        await super().settle()
