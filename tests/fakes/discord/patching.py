"""discord.py glue: point discord.py's REST base, gateway URL and CDN at a running fake, and
run a bot against it until ready.

In this process: ``with patched_discord(fake): ...``. In a subprocess (``aipersona run`` as a
worker process): start it with ``subprocess_env(fake)`` in its environment, which puts the
``subprocess_site`` directory (its ``sitecustomize`` calls :func:`point_discord_at`) first on
its ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import discord
import discord.asset
import discord.gateway
import discord.http
import yarl

from .constants import FAKE_TOKEN
from .server import FakeDiscord

_log = logging.getLogger(__name__)


async def _fast_before_identify_hook(
    self: discord.Client, shard_id: int | None, *, initial: bool = False
) -> None:
    """Replacement for ``Client.before_identify_hook`` without the 5 s non-initial sleep."""
    return None


FAKE_URL_ENV = "AIPERSONA_FAKE_DISCORD_URL"
_SITE = Path(__file__).resolve().parent / "subprocess_site"
_ROOT = Path(__file__).resolve().parents[3]  # the directory holding the ``tests`` package


def point_discord_at(base_url: str, *, fast_identify: bool = True) -> None:
    """Point discord.py at the fake serving ``base_url`` (``http://127.0.0.1:PORT``): its
    REST base, gateway URL and CDN (the ``sitecustomize`` of a worker subprocess calls it).

    With ``fast_identify`` the default ``Client.before_identify_hook`` (which sleeps 5 s
    before every non-initial IDENTIFY, e.g. shard 1 or a re-identify) becomes a no-op;
    subclasses that override the hook are unaffected.
    """
    base_url = base_url.rstrip("/")
    discord.http.Route.BASE = f"{base_url}/api/v10"
    ws_url = base_url.replace("http://", "ws://", 1) + "/"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(ws_url)
    discord.asset.Asset.BASE = f"{base_url}/cdn"
    if fast_identify:
        discord.Client.before_identify_hook = _fast_before_identify_hook  # type: ignore[method-assign]


def subprocess_env(fake: FakeDiscord) -> dict[str, str]:
    """Environment additions that make a Python subprocess's discord.py use ``fake``."""
    path = os.pathsep.join([str(_SITE), str(_ROOT), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path.rstrip(os.pathsep), FAKE_URL_ENV: fake.base_url}


@contextlib.contextmanager
def patched_discord(fake: FakeDiscord, *, fast_identify: bool = True) -> Iterator[FakeDiscord]:
    """Point discord.py at ``fake`` (:func:`point_discord_at`) and restore afterwards."""
    route_cls = discord.http.Route
    ws_cls = discord.gateway.DiscordWebSocket
    asset_cls = discord.asset.Asset
    saved = (
        route_cls.BASE,
        ws_cls.DEFAULT_GATEWAY,
        asset_cls.BASE,
        discord.Client.__dict__["before_identify_hook"],
    )
    point_discord_at(fake.base_url, fast_identify=fast_identify)
    try:
        yield fake
    finally:
        route_cls.BASE, ws_cls.DEFAULT_GATEWAY, asset_cls.BASE = saved[:3]
        discord.Client.before_identify_hook = saved[3]  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running_bot(
    bot: discord.Client, token: str = FAKE_TOKEN, *, ready_timeout: float = 10.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Log ``bot`` in, run ``connect()`` in a task until ready, and close it cleanly on exit.

    Yields the connect task. Raises the connect error (e.g. ``LoginFailure``,
    ``PrivilegedIntentsRequired``) if the bot dies before becoming ready.
    """
    await bot.login(token)
    task = asyncio.create_task(bot.connect(reconnect=True), name="fake-discord-bot-connect")
    ready = asyncio.create_task(bot.wait_until_ready(), name="fake-discord-bot-ready")
    try:
        done, _ = await asyncio.wait(
            {task, ready}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()
                raise RuntimeError("bot.connect() returned before the bot became ready")
            raise TimeoutError(f"bot not ready after {ready_timeout}s")
        yield task
    finally:
        ready.cancel()
        await bot.close()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        elif not task.cancelled() and task.exception() is not None:
            _log.debug("bot connect task ended with %r", task.exception())
