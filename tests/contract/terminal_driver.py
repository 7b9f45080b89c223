"""The contract's driver for the terminal chat: ``TerminalChat`` in-process on a pipe."""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aipersona.adapters.terminal import TerminalChat
from aipersona.adapters.terminal.chat import PROMPT
from aipersona.core import Identity, PersonaCore
from tests.fakes.openai_server import FakeOpenAI

from .driver import ALLOW_LISTS, GROUPS, MEDIA, MESSAGE_LIMIT, RATE_LIMIT, Driver


class Screen(io.StringIO):
    """The terminal's output, remembering how it was written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


class TerminalDriver(Driver):
    """One user ("alice") at a terminal: no groups, no media, no platform settings."""

    name = "terminal"
    lacks = frozenset({GROUPS, MEDIA, RATE_LIMIT, ALLOW_LISTS, MESSAGE_LIMIT})

    def __init__(self, core: PersonaCore, llm: FakeOpenAI, files_dir: Path) -> None:
        super().__init__(core, llm)
        self.files_dir = files_dir
        self.screen = Screen()
        self._input: int | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, core: PersonaCore, llm: FakeOpenAI, **fixtures: Any) -> AsyncIterator[Any]:
        files = fixtures["tmp_path"] / "files"
        files.mkdir()
        yield cls(core, llm, files)

    @asynccontextmanager
    async def running(self, **settings: Any) -> AsyncIterator[None]:
        unknown = set(settings) - {"stream_edits", "stream_edit_interval"}
        assert not unknown, f"the terminal has no settings {unknown}"
        read, self._input = os.pipe()
        chat = TerminalChat(
            self.core,
            "alice",
            fd=read,
            out=self.screen,
            stream=settings.get("stream_edits", False),
            files_dir=self.files_dir,
        )
        task = asyncio.create_task(chat.run())
        try:
            yield
        finally:
            os.close(self._input)  # end of input: the chat ends its session and returns
            self._input = None
            await asyncio.wait_for(task, 10)
            os.close(read)

    def identity(self, user: str) -> Identity:
        return Identity("cli", user)

    async def _type(self, user: str, line: str) -> None:
        assert user == "alice" and self._input is not None, "the terminal has one user"
        os.write(self._input, line.encode() + b"\n")

    async def send(
        self, user: str, text: str, *, group: bool = False, addressed: bool = True
    ) -> None:
        assert not group
        await self._type(user, text)

    async def command(self, user: str, name: str, arg: str = "", *, group: bool = False) -> None:
        assert not group
        await self._type(user, f"/{name} {arg}".strip())

    def private(self, user: str) -> list[str]:
        """What the bot said: each ``bot> `` utterance (up to the next one), once finished."""
        text = self.screen.getvalue()
        if not text.endswith("\n"):  # a reply is still being written
            text = text[: text.rfind(PROMPT)] if PROMPT in text else ""
        return [u.rstrip("\n") for u in re.split(rf"(?m)^{re.escape(PROMPT)}", text)[1:]]

    def files(self, user: str) -> list[tuple[str, bytes]]:
        return [(p.name, p.read_bytes()) for p in sorted(self.files_dir.iterdir())]

    def edited(self, user: str) -> bool:
        """A reply printed in pieces (its line grew, the terminal's edit)."""
        return any(not w.startswith(PROMPT) and not w.endswith("\n") for w in self.screen.writes)
