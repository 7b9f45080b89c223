"""The contract's driver for the in-memory toy platform (tests/contract/toy.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aipersona.adapters.kit import AdapterSettings
from aipersona.core import Identity, PersonaCore
from tests.fakes.openai_server import FakeOpenAI

from .driver import Driver
from .toy import BOT, LIMIT, ToyAdapter, ToyPlatform

GROUP = "group"


class ToyDriver(Driver):
    name = "toy"
    message_limit = LIMIT

    def __init__(self, core: PersonaCore, llm: FakeOpenAI) -> None:
        super().__init__(core, llm)
        self.platform = ToyPlatform()
        self.adapter: ToyAdapter | None = None

    @asynccontextmanager
    async def running(self, **settings: Any) -> AsyncIterator[None]:
        self.adapter = ToyAdapter(self.core, AdapterSettings(**settings), self.platform)
        try:
            yield
        finally:
            self.adapter = None

    def identity(self, user: str) -> Identity:
        return Identity("toy", user)

    def group_id(self) -> str:
        return GROUP

    async def _receive(self, user: str, text: str, *, group: bool, media: bool = False) -> None:
        assert self.adapter is not None, "not running"
        await self.adapter.receive(user, GROUP if group else user, text, media=media)

    async def send(
        self, user: str, text: str, *, group: bool = False, addressed: bool = True
    ) -> None:
        await self._receive(user, f"{BOT} {text}" if group and addressed else text, group=group)

    async def send_media(self, user: str, *, group: bool = False, addressed: bool = True) -> None:
        await self._receive(user, BOT if group and addressed else "", group=group, media=True)

    async def command(self, user: str, name: str, arg: str = "", *, group: bool = False) -> None:
        await self._receive(user, f"/{name} {arg}".strip(), group=group)

    def private(self, user: str) -> list[str]:
        return [p.text for p in self.platform.shown(user)]

    def public(self) -> list[str]:
        return [p.text for p in self.platform.shown(GROUP)]

    def files(self, user: str) -> list[tuple[str, bytes]]:
        return [(p.file.name, p.file.data) for p in self.platform.shown(user) if p.file]

    def public_files(self) -> list[str]:
        return [p.file.name for p in self.platform.shown(GROUP) if p.file]

    def edited(self, user: str) -> bool:
        return any(p.edits for p in self.platform.shown(user))
