"""``aipersona run``: the standalone bot: every configured platform in one process."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from aipersona.core import ConfigError, PersonaCore, freeze_startup_objects
from aipersona.core.cli import add_config_options, load_config, stop_on_signals

from .kit import Runner, installed_adapters

log = logging.getLogger(__name__)


def _platforms(cfg: Any, only: list[str] | None) -> list[tuple[str, Runner, Any]]:
    """The enabled platform sections, each with its runner and validated settings."""
    adapters = installed_adapters()
    unknown = sorted(set(only or []) - set(adapters))
    if unknown:
        raise ConfigError(
            f"unknown platform {', '.join(unknown)}; installed: {', '.join(sorted(adapters))}"
        )
    out: list[tuple[str, Runner, Any]] = []
    for name, spec in sorted(adapters.items()):
        table = cfg.table(name)
        if (only and name not in only) or not table or not table.get("enabled", True):
            continue
        out.append((name, spec.run, spec.validate_section(name, table)))
    if not out:
        raise ConfigError(
            "nothing to run: add a platform section such as [discord] or [telegram] to the "
            f"config (see bot.example.toml); installed platforms: {', '.join(sorted(adapters))}"
        )
    for _, _, settings in out:
        settings.token()  # fail early, with a clear message, if a token variable is empty
    return out


def _beside(cfg: Any) -> list[tuple[str, Runner, Any]]:
    """What runs beside the platforms: the dashboard with ``[dashboard] enabled = true``
    (its token checked now, so a missing one stops the start with a clear line)."""
    if not cfg.table("dashboard").get("enabled", False):
        return []
    from aipersona.dashboard.server import serve  # only when enabled
    from aipersona.dashboard.settings import dashboard_settings

    settings = dashboard_settings(cfg)
    settings.token()
    return [("dashboard", serve, settings)]


async def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    platforms = _platforms(cfg, args.platform) + _beside(cfg)
    with stop_on_signals() as stop:
        return await _serve(cfg, platforms, stop)


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
    """The ``run`` sub-command (entry point ``aipersona.commands``)."""
    p = sub.add_parser("run", help="run the configured platforms (Discord, Telegram, ...)")
    add_config_options(p, required=True)
    p.add_argument(
        "--platform",
        action="append",
        help="run only this platform (repeatable; default: every configured one)",
    )
    p.set_defaults(func=_run)
