"""The ``aipersona`` command line: terminal chat, persona administration, migrations.

Other sub-commands (``run``, ``bench``) register themselves through ``COMMANDS`` so each lives
in its own module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Config, ConfigError
from .db import Database, StorageError
from .engine import PersonaCore, freeze_startup_objects
from .local_model import LocalModelError
from .personas import Identity, PersonaNotFound
from .schema import FieldValidationError

log = logging.getLogger("aipersona")

CHAT_HELP = """Commands:
  /end       end this session now (the persona learns every few sessions)
  /persona   show what I know about you
  /forget F  forget one field (e.g. /forget Demographics.Age); /forget all = everything
  /help      this help
End with Ctrl-D (end of input)."""


class CliError(RuntimeError):
    """A user-facing error: printed without a traceback, exit status 2."""


def _config(args: argparse.Namespace) -> Config:
    cfg = Config.load(args.config)
    if getattr(args, "database", None):
        cfg.database.path = args.database
    return cfg


def format_persona(persona: dict[str, dict[str, Any]]) -> str:
    if not persona:
        return "(empty: nothing learned yet)"
    lines = []
    for category, fields in persona.items():
        lines.append(f"{category}:")
        for name, value in fields.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            lines.append(f"  {name}: {shown}")
    return "\n".join(lines)


# -- chat -----------------------------------------------------------------------------------

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
    cfg = _config(args)
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


# -- persona administration -------------------------------------------------------------------


async def _persona(args: argparse.Namespace) -> int:
    cfg = _config(args)
    ident = Identity(args.platform, args.user)
    core = PersonaCore(cfg)
    await core.start(chat=False)
    try:
        action = args.action
        if action == "show":
            persona = await core.persona(ident)
            if persona is None:
                raise CliError(f"no persona for {ident.platform}:{ident.user_id}")
            if args.json:
                print(json.dumps(persona.nested(), ensure_ascii=False, indent=2))
            else:
                print(format_persona(persona.nested()))
        elif action == "export":
            data = await core.export(ident)
            if data is None:
                raise CliError(f"no persona for {ident.platform}:{ident.user_id}")
            text = json.dumps(data, ensure_ascii=False, indent=2)
            if args.output:
                await asyncio.to_thread(Path(args.output).write_text, text + "\n", encoding="utf-8")
                print(f"wrote {args.output}")
            else:
                print(text)
        elif action == "history":
            rows = await core.history(ident, args.field)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
            elif not rows:
                print("(no history)")
            for row in [] if args.json else rows:
                when = datetime.fromtimestamp(row["created_at"], UTC).strftime("%Y-%m-%d %H:%M")
                print(
                    f"#{row['id']} {when} {row['field']} v{row['version']} {row['op']} by "
                    f"{row['source']}: {json.dumps(row['old_value'], ensure_ascii=False)} -> "
                    f"{json.dumps(row['new_value'], ensure_ascii=False)}"
                    + (f"  (evidence: {row['evidence']})" if row["evidence"] else "")
                )
        elif action == "rollback":
            changes = await core.rollback(ident, args.version)
            print(
                "nothing to do: the field already has that value"
                if not changes
                else f"{changes[0].field} rolled back to history entry #{args.version}"
            )
        elif action == "delete":
            if not args.yes:
                raise CliError("delete removes the persona and all messages; add --yes")
            if not await core.forget_all(ident):
                raise CliError(f"no persona for {ident.platform}:{ident.user_id}")
            print(f"deleted everything stored for {ident.platform}:{ident.user_id}")
    finally:
        await core.close()
    return 0


async def _link(args: argparse.Namespace) -> int:
    cfg = _config(args)
    core = PersonaCore(cfg)
    await core.start(chat=False)
    try:
        pid = await core.link(
            Identity(args.platform, args.user), Identity(args.to_platform, args.to_user)
        )
    finally:
        await core.close()
    print(
        f"{args.to_platform}:{args.to_user} now shares persona {pid} with "
        f"{args.platform}:{args.user}"
    )
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    cfg = _config(args)
    db = await Database.open(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
    try:
        applied = await db.migrate()
        done = await db.applied_migrations()
    finally:
        await db.close()
    for mig in applied:
        print(f"applied {mig.version:04d}_{mig.name}")
    print(f"database {cfg.database.path} is at version {max(done) if done else 0}")
    return 0


# -- parser -----------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aipersona",
        description="Life-long personalization for chat bots (AI PERSONA framework).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="TOML config file (default: built-in defaults)")
        p.add_argument("--database", help="override [database] path")

    p = sub.add_parser("chat", help="chat in the terminal (platform 'cli')")
    common(p)
    p.add_argument("--user", "-u", default="me", help="your user name (default: me)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=_chat)

    p = sub.add_parser("persona", help="show, export, history, rollback or delete a persona")
    p.add_argument("action", choices=["show", "export", "history", "rollback", "delete"])
    common(p)
    p.add_argument("--platform", "-p", required=True, help="cli, discord, telegram, ...")
    p.add_argument("--user", "-u", required=True, help="platform user id")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--field", help="history: only this field")
    p.add_argument("--version", type=int, help="rollback: history entry id (see history)")
    p.add_argument("--output", "-o", help="export: write to this file")
    p.add_argument("--yes", action="store_true", help="delete: confirm")
    p.set_defaults(func=_persona)

    p = sub.add_parser("link", help="let a second platform identity share a persona")
    common(p)
    p.add_argument("--platform", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--to-platform", required=True, help="the identity to attach")
    p.add_argument("--to-user", required=True)
    p.set_defaults(func=_link)

    p = sub.add_parser("migrate", help="apply database migrations")
    common(p)
    p.set_defaults(func=_migrate)

    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _load_optional_commands()
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "persona" and args.action == "rollback" and args.version is None:
        print("aipersona: rollback needs --version (a history entry id)", file=sys.stderr)
        return 2
    try:
        return run_command(args.func(args))
    except (
        CliError,
        ConfigError,
        StorageError,
        LocalModelError,
        PersonaNotFound,
        FieldValidationError,
        ImportError,
    ) as exc:
        print(f"aipersona: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_command(command: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(command)`` with SIGTERM handled like Ctrl-C: the command is cancelled,
    its ``finally`` blocks and context managers close what it opened, and the exit status is
    143 (128 + SIGTERM)."""

    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        terminated = False

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
            return await command
        try:
            return await command
        except asyncio.CancelledError:
            if terminated:
                return 128 + signal.SIGTERM
            raise
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def _load_optional_commands() -> None:
    """Import modules that add sub-commands (adapters, bench) if they are present."""
    import importlib

    for name in ("aipersona.adapters.cli", "aipersona.personabench.cli"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


if __name__ == "__main__":
    sys.exit(main())
