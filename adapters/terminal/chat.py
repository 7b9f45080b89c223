"""The terminal chat on the adapter kit: one user, one private chat, on a file descriptor
for input and a text stream for output.

Lines starting with ``/`` and naming a command of the kit's table run it (``/end`` also
waits for a due persona update, so the next ``/persona`` shows it); other lines are chat.
Everything the bot says is printed after ``bot> ``; a streamed reply grows on its line
(the kit's streaming by edits, where an edit prints what was added). A file answer
(``/export``) is written to ``files_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TextIO

from aipersona.adapters.kit import AdapterSettings, Answer, Bridge, File, Incoming, texts
from aipersona.core import Identity, PersonaCore

from .reader import LineReader

PLATFORM = "cli"
PROMPT = "bot> "
STREAM_INTERVAL = 0.05  # seconds between two prints of a streamed reply


class TerminalOutlet:
    """Printing the bot's side of the chat (kit.ReplyOutlet and kit.AnswerOutlet)."""

    delivery_errors: tuple[type[Exception], ...] = (OSError,)
    must_answer = False

    def __init__(self, out: TextIO, files_dir: Path) -> None:
        self.out = out
        self.files_dir = files_dir
        self._shown = ""  # the text of the open line (a reply being streamed)
        self._open = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def end_line(self) -> None:
        """Finish a reply's line (a streamed one stays open until the turn is done)."""
        if self._open:
            self._write("\n")
            self._open = False

    def say(self, text: str) -> None:
        self.end_line()
        self._write(text + "\n")

    def prompt(self, text: str) -> None:
        """The user's prompt (the cursor stays on its line)."""
        self._write(text)

    # -- replies ----------------------------------------------------------------------------

    def chunks(self, text: str, *, formatted: bool) -> list[str]:
        return [text] if text else []  # a terminal has no message size limit

    async def send(self, chunk: str, *, first: bool, formatted: bool, final: bool) -> str:
        self.end_line()
        self._write(PROMPT + chunk)
        self._shown, self._open = chunk, True
        return chunk

    async def edit(self, sent: str, chunk: str, *, formatted: bool, final: bool) -> None:
        """Print what the text gained (a streamed reply only grows)."""
        grown = chunk.startswith(self._shown)
        self._write(chunk[len(self._shown) :] if grown else "\n" + PROMPT + chunk)
        self._shown = chunk

    async def delete(self, sent: str) -> None:
        return None  # one chunk per reply: nothing to delete

    def typing(self) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def send_private(self, text: str) -> bool:
        self.say(PROMPT + text)  # the terminal is a private chat
        return True

    # -- command answers --------------------------------------------------------------------

    async def acknowledge(self) -> None:
        return None

    async def answer(self, answer: Answer, *, privately: bool) -> bool:
        self.say(PROMPT + answer.text)
        if answer.file is not None:
            self.say(texts.file_saved(self._save(answer.file)))
        return True

    def private_closed(self, command: str) -> str:
        return ""  # the terminal is a private chat: never asked

    def _save(self, file: File) -> Path:
        """Write ``file`` into ``files_dir`` under a name not taken yet."""
        stem, suffix = Path(file.name).stem, Path(file.name).suffix
        path = self.files_dir / file.name
        n = 1
        while path.exists():
            path = self.files_dir / f"{stem}-{n}{suffix}"
            n += 1
        path.write_bytes(file.data)
        return path


class TerminalChat:
    """``user`` chatting on ``fd`` (input) and ``out`` until the end of input."""

    def __init__(
        self,
        core: PersonaCore,
        user: str,
        *,
        fd: int,
        out: TextIO,
        stream: bool = False,
        interactive: bool = False,
        files_dir: Path | None = None,
    ) -> None:
        self.core = core
        self.user = user
        self.fd = fd
        self.interactive = interactive
        self.incoming = Incoming(Identity(PLATFORM, user, user), f"cli:{user}", private=True)
        settings = AdapterSettings(
            rate_limit_per_minute=0,
            stream_edits=stream,
            stream_edit_interval=STREAM_INTERVAL,
            typing=False,
        )
        self.bridge = Bridge(core, settings, how_to_talk=texts.HOW_TO_LEAVE_TERMINAL)
        self.outlet = TerminalOutlet(out, files_dir or Path.cwd())

    async def run(self) -> None:
        if self.interactive:
            self.outlet.say(texts.terminal_greeting(self.user))
        reader = LineReader(self.fd)
        while True:
            if self.interactive:
                self.outlet.prompt("you> ")
            got = await reader.readline()
            if got is None:
                break
            line, invalid = got
            if invalid:
                self.outlet.say(texts.INVALID_UTF8)
            if line.strip():
                await self.handle(line.strip())
            self.outlet.end_line()
        # end of input: close the session so it counts, and let a due update finish
        await self.core.end_session(self.incoming.identity, self.incoming.chat_id)
        await self.core.wait_for_updates()

    async def handle(self, text: str) -> None:
        incoming = dataclasses.replace(self.incoming, text=text)
        command = self.bridge.command(text)
        if command is None:
            await self.bridge.on_message(incoming, self.outlet)
            return
        spec, arg = command
        await self.bridge.on_command(spec.name, arg, incoming, self.outlet)
        if spec.name == "end":
            await self.core.wait_for_updates()
