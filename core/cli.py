"""The ``aipersona`` command.

Core's own sub-commands administer personas and storage (``persona``, ``link``, ``migrate``,
``plugins``). Every other sub-command comes from an installed package through the
entry-point group ``aipersona.commands``: each entry is a ``register(subparsers)`` function
that adds its parser and sets ``func`` to an ``async def (args) -> int``. The terminal chat
(``chat``) and the bot (``run``) come from ``aipersona.adapters``, ``bench`` from
``aipersona.personabench``; core imports none of them.

Errors meant for the user (``AipersonaError``) are printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Any

from .config import Config, DatabaseSettings
from .engine import PersonaCore
from .errors import AipersonaError
from .storage import SessionRules, open_storage
from .storage.copy import copy_store
from .types import Identity

log = logging.getLogger("aipersona")

COMMAND_GROUP = "aipersona.commands"
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class CliError(AipersonaError):
    """A user-facing error of a command: printed without a traceback, exit status 2."""


def add_config_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--config`` and ``--database``, as every command that opens the store has them."""
    parser.add_argument(
        "--config", "-c", required=required, help="TOML config file (default: built-in defaults)"
    )
    parser.add_argument("--database", help="override [database] path")


def load_config(args: argparse.Namespace) -> Config:
    return Config.load(args.config, database=getattr(args, "database", None))


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


async def admin_core(args: argparse.Namespace) -> PersonaCore:
    """A core for administration: storage and plugins, no model, no background work."""
    core = PersonaCore(load_config(args))
    await core.start(chat=False)
    return core


# -- persona administration -------------------------------------------------------------------


async def _persona(args: argparse.Namespace) -> int:
    if args.action == "rollback" and args.version is None:
        raise CliError("rollback needs --version (a history entry id; see persona history)")
    if args.action == "delete" and not args.yes:
        raise CliError("delete removes the persona and all messages; add --yes")
    ident = Identity(args.platform, args.user)
    core = await admin_core(args)
    try:
        await _persona_action(core, ident, args)
    finally:
        await core.close()
    return 0


async def _persona_action(core: PersonaCore, ident: Identity, args: argparse.Namespace) -> None:
    missing = f"no persona for {ident.platform}:{ident.user_id}"
    action = args.action
    if action == "show":
        persona = await core.persona(ident)
        if persona is None:
            raise CliError(missing)
        if args.json:
            print(json.dumps(persona.nested(), ensure_ascii=False, indent=2))
        else:
            print(format_persona(persona.nested()))
            if not persona.learning:
                print("(learning is off for this user: /learning on turns it back on)")
    elif action == "export":
        data = await core.export(ident)
        if data is None:
            raise CliError(missing)
        text = json.dumps(data, ensure_ascii=False, indent=2)
        if args.output:
            await asyncio.to_thread(Path(args.output).write_text, text + "\n", encoding="utf-8")
            print(f"wrote {args.output}")
        else:
            print(text)
    elif action == "history":
        rows = await core.history(ident, args.field)
        if args.json:
            print(json.dumps([r.as_dict() for r in rows], ensure_ascii=False, indent=2))
            return
        if not rows:
            print("(no history)")
        for row in rows:
            when = datetime.fromtimestamp(row.created_at, UTC).strftime("%Y-%m-%d %H:%M")
            print(
                f"#{row.id} {when} {row.field} v{row.version} {row.op} by {row.source}: "
                f"{json.dumps(row.old_value, ensure_ascii=False)} -> "
                f"{json.dumps(row.new_value, ensure_ascii=False)}"
                + (f"  (evidence: {row.evidence})" if row.evidence else "")
            )
    elif action == "rollback":
        changes = await core.rollback(ident, args.version)
        print(
            "nothing to do: the field already has that value"
            if not changes
            else f"{changes[0].field} rolled back to history entry #{args.version}"
        )
    elif action == "delete":
        if not await core.forget_all(ident):
            raise CliError(missing)
        print(f"deleted everything stored for {ident.platform}:{ident.user_id}")


async def _link(args: argparse.Namespace) -> int:
    core = await admin_core(args)
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
    cfg = load_config(args)
    storage = await open_storage(cfg.database, SessionRules(), verify_key=False)
    try:
        applied = await storage.migrate()
        at = await storage.schema_version()
    finally:
        await storage.close()
    for name in applied:
        print(f"applied {name}")
    print(f"database {storage.location} is at version {at}")
    return 0


def _store_settings(where: str, password_env: str) -> DatabaseSettings:
    """``[database]`` settings for a SQLite path or a postgresql:// URL."""
    if "://" in where:
        return DatabaseSettings(url=where, password_env=password_env)
    return DatabaseSettings(path=where)


class ProgressBar:
    """``table  [#####.....]  12,345/50,000`` on stderr, redrawn in place on a terminal."""

    def __init__(self, stream: Any = sys.stderr, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.live = stream.isatty()
        self._last = ("", -1)

    def __call__(self, table: str, done: int, total: int) -> None:
        share = done / total if total else 1.0
        bar = "#" * round(share * self.width)
        line = f"{table:<17} [{bar:<{self.width}}] {done:>10,}/{total:,}"
        if self.live:
            end = "\n" if done >= total else ""
            print(f"\r{line}", end=end, file=self.stream, flush=True)
        elif done >= total and self._last != (table, done):
            print(line, file=self.stream, flush=True)
        self._last = (table, done)


async def _db_copy(args: argparse.Namespace) -> int:
    if args.source == args.target:
        raise CliError("--from and --to are the same store")
    rules = SessionRules()
    source = await open_storage(
        _store_settings(args.source, args.from_password_env), rules, verify_key=False
    )
    try:
        target = await open_storage(
            _store_settings(args.target, args.to_password_env), rules, verify_key=False
        )
        try:
            await source.migrate()
            await target.migrate()
            print(f"copying {source.location} -> {target.location}", file=sys.stderr)
            reports = await copy_store(source, target, batch=args.batch, progress=ProgressBar())
        finally:
            await target.close()
    finally:
        await source.close()
    bad = [r for r in reports if not r.ok]
    for r in reports:
        state = "ok" if r.ok else f"MISMATCH: {r.target_rows:,} rows in the target"
        print(f"{r.table}: {r.rows:,} rows, sha256 {r.source_digest[:12]} {state}")
    if bad:
        raise CliError(
            f"the copy does not match in {', '.join(r.table for r in bad)} (the source changed "
            "during the copy, or the target held other data): stop the bot and run it again"
        )
    print(f"verified: {sum(r.rows for r in reports):,} rows in {len(reports)} tables")
    return 0


async def _plugins(args: argparse.Namespace) -> int:
    core = await admin_core(args)
    try:
        infos = core.plugins()
    finally:
        await core.close()
    if args.json:
        print(json.dumps([vars(i) for i in infos], indent=2))
        return 0
    if not infos:
        print("(no plugins loaded)")
    for info in infos:
        print(info.name)
        for label, items in (("fields", info.fields), ("tools", info.tools), ("hooks", info.hooks)):
            if items:
                print(f"  {label}: {', '.join(items)}")
    return 0


# -- parser -----------------------------------------------------------------------------------


def _register_core_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("persona", help="show, export, history, rollback or delete a persona")
    p.add_argument("action", choices=["show", "export", "history", "rollback", "delete"])
    add_config_options(p)
    p.add_argument("--platform", "-p", required=True, help="cli, discord, telegram, ...")
    p.add_argument("--user", "-u", required=True, help="platform user id")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--field", help="history: only this field")
    p.add_argument("--version", type=int, help="rollback: history entry id (see history)")
    p.add_argument("--output", "-o", help="export: write to this file")
    p.add_argument("--yes", action="store_true", help="delete: confirm")
    p.set_defaults(func=_persona)

    p = sub.add_parser("link", help="let a second platform identity share a persona")
    add_config_options(p)
    p.add_argument("--platform", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--to-platform", required=True, help="the identity to attach")
    p.add_argument("--to-user", required=True)
    p.set_defaults(func=_link)

    p = sub.add_parser("migrate", help="apply database migrations")
    add_config_options(p)
    p.set_defaults(func=_migrate)

    p = sub.add_parser("db", help="database tools: copy one store into another")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    p = dbsub.add_parser(
        "copy",
        help="copy everything from SRC to DST (SQLite paths or postgresql:// URLs), verified",
    )
    p.add_argument("--from", dest="source", required=True, metavar="SRC")
    p.add_argument("--to", dest="target", required=True, metavar="DST")
    p.add_argument("--from-password-env", default="PGPASSWORD", metavar="VAR")
    p.add_argument("--to-password-env", default="PGPASSWORD", metavar="VAR")
    p.add_argument("--batch", type=int, default=1000, help="rows per transaction")
    p.set_defaults(func=_db_copy)

    p = sub.add_parser("plugins", help="list the loaded plugins, their fields and tools")
    add_config_options(p)
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=_plugins)


def _installed_commands() -> list[Register]:
    out = []
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            out.append(ep.load())
        except ImportError as exc:  # a broken optional package must not break the rest
            log.warning("command %s is unavailable: %s", ep.name, exc)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aipersona",
        description="Life-long personalization for chat bots (AI PERSONA framework).",
    )
    parser.add_argument("--version", action="version", version=f"aipersona {version('aipersona')}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_core_commands(sub)
    for register in _installed_commands():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING - 10 * min(args.verbose, 2))
    try:
        return run_command(args.func(args))
    except AipersonaError as exc:
        print(f"aipersona: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs, for a command that serves
    until stopped (``run``, ``dashboard``) and then closes what it opened and exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
            pass
    try:
        yield stop
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


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


if __name__ == "__main__":
    sys.exit(main())
