"""What the adapter contract needs from a platform: a driver that plays the users.

A driver runs one platform's real adapter (on the real library, against its loopback fake)
on a shared core, sends messages, media and commands as the users "alice" and "bob", and
shows what each of them can see: their private chat (with ephemeral answers) and the group.
A platform that cannot do something the contract checks lists it in ``lacks``; scenarios
needing it are skipped for that platform, with the reason.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import pytest

from aipersona.core import Identity, PersonaCore
from tests.fakes.openai_server import FakeOpenAI

T = TypeVar("T")

# capabilities a platform may lack
GROUPS = "groups"  # chats with several people, where the bot answers when addressed
MEDIA = "media"  # messages with a photo, sticker... and no text
RATE_LIMIT = "rate limit"  # [platform] rate_limit_per_minute
ALLOW_LISTS = "allow-lists"  # [platform] allowed_users, allowed_chats
MESSAGE_LIMIT = "message size limit"


class Driver(abc.ABC):
    name: str
    lacks: frozenset[str] = frozenset()
    message_limit: int = 0  # the platform's longest message (when it has a limit)
    stream_interval = 0.01  # seconds between streaming edits: a few edits, not one per delta

    def __init__(self, core: PersonaCore, llm: FakeOpenAI) -> None:
        self.core = core
        self.llm = llm

    def need(self, *capabilities: str) -> None:
        """Skip the scenario (visibly) on a platform that lacks one of ``capabilities``."""
        missing = [c for c in capabilities if c in self.lacks]
        if missing:
            pytest.skip(f"{self.name} has no {', '.join(missing)}")

    @classmethod
    @asynccontextmanager
    async def open(cls, core: PersonaCore, llm: FakeOpenAI, **fixtures: Any) -> AsyncIterator[Any]:
        """The driver with its platform's fake started (``fixtures``: tmp_path, monkeypatch)."""
        yield cls(core, llm)

    @abc.abstractmethod
    def running(self, **settings: Any) -> AbstractAsyncContextManager[None]:
        """The adapter serving, with these settings of its config table."""

    @abc.abstractmethod
    def identity(self, user: str) -> Identity: ...

    def user_id(self, user: str) -> str:
        """The id that ``allowed_users`` lists (and a private chat goes by)."""
        return self.identity(user).user_id

    def group_id(self) -> str:
        """The id of the group chat (sessions, ``allowed_chats``)."""
        raise NotImplementedError

    @abc.abstractmethod
    async def send(
        self, user: str, text: str, *, group: bool = False, addressed: bool = True
    ) -> None:
        """``user`` writes ``text`` privately, or into the group (mentioning the bot or not)."""

    async def send_media(self, user: str, *, group: bool = False, addressed: bool = True) -> None:
        """``user`` sends a picture or sticker without words."""
        raise NotImplementedError

    @abc.abstractmethod
    async def command(self, user: str, name: str, arg: str = "", *, group: bool = False) -> None:
        """``user`` gives the command ``name`` (with ``arg``) privately or in the group."""

    @abc.abstractmethod
    def private(self, user: str) -> list[str]:
        """Every bot message only ``user`` sees (private chat, ephemeral answers), in order,
        as shown now (after edits, without deleted ones)."""

    def public(self) -> list[str]:
        """Every bot message in the group, as shown now."""
        return []

    @abc.abstractmethod
    def files(self, user: str) -> list[tuple[str, bytes]]:
        """Files only ``user`` received: (name, content)."""

    def public_files(self) -> list[str]:
        """Names of files posted into the group."""
        return []

    @abc.abstractmethod
    def edited(self, user: str) -> bool:
        """Whether a message in ``user``'s private chat was edited (a streaming draft)."""

    async def wait(self, predicate: Callable[[], T], within: float = 10.0) -> T:
        """Wait until ``predicate()`` is truthy; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (result := predicate()):
            if loop.time() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {predicate}")
            await asyncio.sleep(0.02)
        return result

    async def settle(self) -> None:
        """Give the adapter time to handle everything sent (before asserting silence)."""
        await asyncio.sleep(0.4)

    # -- helpers for scenarios ----------------------------------------------------------------

    async def ask(self, user: str, text: str, *, group: bool = False) -> str:
        """Send ``text`` (addressed to the bot) and return the bot's next message there."""
        seen = self.public if group else (lambda: self.private(user))
        before = len(seen())
        await self.send(user, text, group=group)
        return (await self.wait(lambda: seen()[before:]))[0]

    async def run(self, user: str, name: str, arg: str = "", *, group: bool = False) -> str:
        """Give a command and return the next message ``user`` sees privately, or in the
        group if the answer went there."""
        before = len(self.private(user)), len(self.public())
        await self.command(user, name, arg, group=group)
        news = await self.wait(
            lambda: self.private(user)[before[0] :] or self.public()[before[1] :]
        )
        return news[0]
