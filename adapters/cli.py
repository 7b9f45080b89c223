"""``aipersona run``: the standalone bot — Discord, Telegram, or both in one process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aipersona.core import cli
from aipersona.core.config import ConfigError
from aipersona.core.engine import PersonaCore, freeze_startup_objects

log = logging.getLogger(__name__)

Runner = Callable[[PersonaCore, Any, asyncio.Event], Awaitable[None]]


def _platforms(cfg: Any, only: list[str] | None) -> list[tuple[str, Runner, Any]]:
    """The enabled platform sections, each with its runner and validated settings."""
    out: list[tuple[str, Runner, Any]] = []
    wanted = only or ["discord", "telegram"]
    if "discord" in wanted and cfg.discord and cfg.discord.get("enabled", True):
        from aipersona.adapters.discord import DiscordSettings, run_discord

        out.append(("discord", run_discord, DiscordSettings.parse("discord", cfg.discord)))
    if "telegram" in wanted and cfg.telegram and cfg.telegram.get("enabled", True):
        from aipersona.adapters.telegram import TelegramSettings, run_telegram

        out.append(("telegram", run_telegram, TelegramSettings.parse("telegram", cfg.telegram)))
    if not out:
        raise ConfigError(
            "nothing to run: add a [discord] and/or [telegram] section to the config "
            "(see bot.example.toml)"
        )
    for _, _, settings in out:
        settings.token()  # fail early, with a clear message, if a token variable is empty
    return out


async def _run(args: argparse.Namespace) -> int:
    cfg = cli._config(args)
    platforms = _platforms(cfg, args.platform)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        return await _serve(cfg, platforms, stop)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _serve(cfg: Any, platforms: list[tuple[str, Runner, Any]], stop: asyncio.Event) -> int:
    async with PersonaCore(cfg) as core:
        freeze_startup_objects()
        tasks = [
            asyncio.create_task(runner(core, settings, stop), name=f"aipersona-{name}")
            for name, runner, settings in platforms
        ]
        log.warning("aipersona running: %s", ", ".join(name for name, _, _ in platforms))
        stopper = asyncio.create_task(stop.wait())
        # run until a signal, or until any adapter ends (an error or a clean stop)
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await stopper
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    for exc in failed:
        log.error("adapter stopped with an error: %s", exc)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the Discord and/or Telegram bot from the config")
    p.add_argument("--config", "-c", required=True, help="TOML config file")
    p.add_argument("--database", help="override [database] path")
    p.add_argument(
        "--platform",
        action="append",
        choices=["discord", "telegram"],
        help="run only this platform (repeatable; default: every configured one)",
    )
    p.set_defaults(func=_run)


cli.COMMANDS.append(register)
