"""The terminal chat (``aipersona chat``): an adapter like Discord and Telegram, on stdin and
stdout, platform ``cli``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from typing import Any

from aipersona.core import FieldValidationError, Identity, PersonaCore, freeze_startup_objects
from aipersona.core.cli import add_config_options, format_persona, load_config

CHAT_HELP = """Commands:
  /end       end this session now (the persona learns every few sessions)
  /persona   show what I know about you
  /forget F  forget one field (e.g. /forget Demographics.Age); /forget all = everything
  /help      this help
End with Ctrl-D (end of input)."""

INVALID_UTF8_NOTICE = (
    "(your input had bytes that are not valid UTF-8; they were replaced by \ufffd)"
)


class LineReader:
    """Lines of a file descriptor, read on a daemon thread.

    A daemon thread (not the loop's default executor) so that Ctrl-C or SIGTERM never waits
    for the user to type a line: asyncio.run joins executor threads on exit. It reads the
    raw descriptor with ``os.read``: a thread blocked inside ``sys.stdin.buffer`` would hold
    the buffer's lock, and interpreter shutdown aborts on that lock. Bytes that are not
    UTF-8 are replaced by U+FFFD, visibly, instead of being dropped.
    """

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[tuple[str, bool] | None] = asyncio.Queue()
        self._fd = fd
        threading.Thread(target=self._read, name="aipersona-stdin", daemon=True).start()

    def _put(self, item: tuple[str, bool] | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._lines.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closed: nobody is listening any more

    def _emit(self, raw: bytes) -> None:
        try:
            self._put((raw.decode("utf-8"), False))
        except UnicodeDecodeError:
            self._put((raw.decode("utf-8", errors="replace"), True))

    def _read(self) -> None:
        pending = b""
        try:
            while chunk := os.read(self._fd, 65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._emit(raw + b"\n")
        except OSError:
            pass  # the descriptor was closed
        if pending:
            self._emit(pending)
        self._put(None)

    async def readline(self) -> tuple[str, bool] | None:
        """(line, had invalid bytes), or None at end of input."""
        return await self._lines.get()


async def _chat(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.stream is not None:
        cfg.llm.stream = args.stream
    ident = Identity("cli", args.user, args.user)
    chat_id = f"cli:{args.user}"
    out = sys.stdout
    interactive = sys.stdin.isatty()
    async with PersonaCore(cfg) as core:
        freeze_startup_objects()
        if interactive:
            print(f"aipersona chat as {args.user!r}. /help for commands.", file=out)
        reader = LineReader(sys.stdin.fileno())
        while True:
            if interactive:
                print("you> ", end="", flush=True, file=out)
            got = await reader.readline()
            if got is None:
                break
            line, invalid = got
            if invalid:
                print(INVALID_UTF8_NOTICE, file=out, flush=True)
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if await _chat_command(core, ident, chat_id, text, out):
                    continue
            if cfg.llm.stream:
                print("bot> ", end="", flush=True, file=out)

                async def show(delta: str) -> None:
                    print(delta, end="", flush=True, file=out)

                reply = await core.respond(ident, chat_id, text, on_delta=show)
                print("" if reply.ok else reply.text, file=out, flush=True)
            else:
                reply = await core.respond(ident, chat_id, text)
                print(f"bot> {reply.text}", file=out, flush=True)
        # end of input: close the session so it counts, and let a due update finish
        await core.end_session(ident, chat_id)
        await core.wait_for_updates()
    return 0


async def _chat_command(
    core: PersonaCore, ident: Identity, chat_id: str, text: str, out: Any
) -> bool:
    """Handle a /command; return False if it is not one (then it is chatted as text)."""
    cmd, _, arg = text.partition(" ")
    cmd, arg = cmd.lower(), arg.strip()
    if cmd == "/help":
        print(CHAT_HELP, file=out)
    elif cmd == "/end":
        sid = await core.end_session(ident, chat_id)
        print("Session ended." if sid else "No open session.", file=out)
        await core.wait_for_updates()
    elif cmd == "/persona":
        persona = await core.persona(ident)
        print(format_persona(persona.nested() if persona else {}), file=out)
    elif cmd == "/forget":
        if not arg:
            print("Usage: /forget Category.Field  or  /forget all", file=out)
        elif arg.lower() == "all":
            await core.forget_all(ident)
            print("Everything about you is deleted.", file=out)
        else:
            try:
                done = await core.forget_field(ident, arg)
            except FieldValidationError as exc:
                print(str(exc), file=out)
            else:
                print("Forgotten." if done else "That field was empty.", file=out)
    else:
        return False
    out.flush()
    return True


def register(sub: Any) -> None:
    """The ``chat`` sub-command (entry point ``aipersona.commands``)."""
    p = sub.add_parser("chat", help="chat in the terminal (platform 'cli')")
    add_config_options(p)
    p.add_argument("--user", "-u", default="me", help="your user name (default: me)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=_chat)
