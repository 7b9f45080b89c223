"""The terminal chat (``aipersona chat``): an adapter like Discord and Telegram, on stdin and
stdout, platform ``cli``. Input may be piped; the end of input ends the session and waits for
a due persona update; Ctrl-C and SIGTERM end the chat at once (see ``reader``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aipersona.core import PersonaCore, freeze_startup_objects
from aipersona.core.cli import add_config_options, load_config

from .chat import TerminalChat, TerminalOutlet
from .reader import LineReader

__all__ = ["LineReader", "TerminalChat", "TerminalOutlet", "register"]


async def _chat(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    stream = cfg.llm.stream if args.stream is None else args.stream
    async with PersonaCore(cfg) as core:
        freeze_startup_objects()
        chat = TerminalChat(
            core,
            args.user,
            fd=sys.stdin.fileno(),
            out=sys.stdout,
            stream=stream,
            interactive=sys.stdin.isatty(),
        )
        await chat.run()
    return 0


def register(sub: Any) -> None:
    """The ``chat`` sub-command (entry point ``aipersona.commands``)."""
    p = sub.add_parser("chat", help="chat in the terminal (platform 'cli')")
    add_config_options(p)
    p.add_argument("--user", "-u", default="me", help="your user name (default: me)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=_chat)
