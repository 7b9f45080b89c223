"""``aipersona dashboard``: the operator dashboard of a bot's store, in its own process (the
same dashboard runs inside ``aipersona run`` with ``[dashboard] enabled = true``)."""

from __future__ import annotations

import argparse

from aipersona.core import PersonaCore, freeze_startup_objects
from aipersona.core.cli import add_config_options, load_config, stop_on_signals

from .server import serve
from .settings import dashboard_settings


async def _dashboard(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    settings = dashboard_settings(cfg)
    settings.token()  # refuse to start without a token, before the store is opened
    core = PersonaCore(cfg)
    await core.start(chat=False)  # storage and plugins: no model, no background work
    freeze_startup_objects()  # full garbage collections then skip the start-up objects
    try:
        with stop_on_signals() as stop:
            await serve(core, settings, stop, host=args.host, port=args.port)
    finally:
        await core.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``dashboard`` sub-command (entry point ``aipersona.commands``)."""
    p = sub.add_parser(
        "dashboard", help="serve the operator dashboard (what the bot learns, costs, /metrics)"
    )
    add_config_options(p)
    p.add_argument("--host", help="address to listen on (default: [dashboard] host, 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help="port (default: [dashboard] port, 8765; 0 picks a free one)"
    )
    p.set_defaults(func=_dashboard)
