"""A toy chat platform in memory, and its adapter, built only on the adapter kit.

It is the proof that the kit is enough for a new platform: the adapter below translates the
platform's events into the kit's ``Incoming``, implements the kit's two outlets and passes
the whole adapter contract. (The "platform" is a list of posts; a private chat is named
after its user, the group is "group", the bot is "@toybot".)
"""

from __future__ import annotations

import contextlib
import dataclasses
from contextlib import AbstractAsyncContextManager

from aipersona.adapters.kit import (
    AdapterSettings,
    Answer,
    Bridge,
    File,
    Incoming,
    split_message,
    texts,
)
from aipersona.core import Identity, PersonaCore

BOT = "@toybot"
LIMIT = 500  # the platform's longest message


@dataclasses.dataclass
class Post:
    """A bot message in a chat."""

    chat: str
    text: str
    file: File | None = None
    edits: int = 0
    deleted: bool = False


@dataclasses.dataclass
class ToyPlatform:
    """The remote service: every post, and the users whose private chat is closed."""

    posts: list[Post] = dataclasses.field(default_factory=list)
    closed: set[str] = dataclasses.field(default_factory=set)

    def shown(self, chat: str) -> list[Post]:
        return [p for p in self.posts if p.chat == chat and not p.deleted]


class ToyOutlet:
    """Replies and command answers for one event (both kit outlets)."""

    delivery_errors: tuple[type[Exception], ...] = (ConnectionError,)
    must_answer = False

    def __init__(self, platform: ToyPlatform, chat: str, user: str) -> None:
        self.platform, self.chat, self.user = platform, chat, user

    def _post(self, chat: str, text: str, file: File | None = None) -> Post:
        post = Post(chat, text, file)
        self.platform.posts.append(post)
        return post

    def chunks(self, text: str, *, formatted: bool) -> list[str]:
        return split_message(text, LIMIT)

    async def send(self, chunk: str, *, first: bool, formatted: bool, final: bool) -> Post:
        return self._post(self.chat, chunk)

    async def edit(self, sent: Post, chunk: str, *, formatted: bool, final: bool) -> None:
        sent.text, sent.edits = chunk, sent.edits + 1

    async def delete(self, sent: Post) -> None:
        sent.deleted = True

    def typing(self) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def send_private(self, text: str) -> bool:
        if self.user in self.platform.closed:
            return False
        for chunk in split_message(text, LIMIT):
            self._post(self.user, chunk)
        return True

    async def acknowledge(self) -> None:
        return None

    async def answer(self, answer: Answer, *, privately: bool) -> bool:
        if privately and self.user in self.platform.closed:
            return False
        chat = self.user if privately else self.chat
        for i, chunk in enumerate(split_message(answer.text, LIMIT)):
            self._post(chat, chunk, answer.file if i == 0 else None)
        return True

    def private_closed(self, command: str) -> str:
        return texts.open_private_chat(BOT[1:], command)


class ToyAdapter:
    """The translator: a toy event becomes an ``Incoming`` for the kit's ``Bridge``."""

    def __init__(self, core: PersonaCore, settings: AdapterSettings, platform: ToyPlatform) -> None:
        self.bridge = Bridge(core, settings, message_limit=LIMIT)
        self.platform = platform

    async def receive(self, user: str, chat: str, text: str = "", *, media: bool = False) -> None:
        """``user`` posts ``text`` (and maybe a picture) in ``chat``."""
        words = text.replace(BOT, "").strip()
        incoming = Incoming(
            Identity("toy", user, user.title()),
            chat,
            words,
            private=chat == user,
            addressed=BOT in text,
            media_only=media and not words,
        )
        outlet = ToyOutlet(self.platform, chat, user)
        command = self.bridge.command(words)
        if command is None:
            await self.bridge.on_message(incoming, outlet)
        else:
            spec, arg = command
            await self.bridge.on_command(spec.name, arg, incoming, outlet)
